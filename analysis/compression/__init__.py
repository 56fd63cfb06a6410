"""Compression: the plan, structured/unstructured pruning, quantization, fine-tuning, `compress` and `suggest`."""
