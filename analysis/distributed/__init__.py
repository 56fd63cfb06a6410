"""Work shared over a Ray cluster (issue 15). Ray is imported only when one of these functions runs."""

from analysis.distributed.ray_sweep import (
    FaultPlan,
    connect,
    ray_rank_channels,
    ray_sensitivity_sweep,
)

__all__ = [
    "FaultPlan",
    "connect",
    "ray_rank_channels",
    "ray_sensitivity_sweep",
]
