"""torch.fx graph work: tracing, out-of-place rewriting, slicing and the downstream runner."""
