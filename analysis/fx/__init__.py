"""torch.fx graph work, split by job: `trace` (tracing, out-of-place rewriting), `alias` (which ops write in
place or share memory), `slicing` (downstream nodes, suffix and prefix graphs) and `runner` (the cached
downstream evaluation, `DownstreamRunner` and `Edit`)."""

from analysis.fx.edits import Edit, RunnerResult, Tally
from analysis.fx.runner import DEFAULT_MAX_CACHE_BYTES, DownstreamRunner
from analysis.fx.slicing import downstream_nodes
from analysis.fx.trace import trace_model

__all__ = [
    "DEFAULT_MAX_CACHE_BYTES",
    "DownstreamRunner",
    "Edit",
    "RunnerResult",
    "Tally",
    "downstream_nodes",
    "trace_model",
]
