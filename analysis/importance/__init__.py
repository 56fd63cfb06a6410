"""Filter-importance criteria: one score per output channel per prunable layer (CONTRACT section 5)."""

from analysis.importance.base import (
    CRITERIA,
    DEFAULT_MAX_SAMPLES,
    Importance,
    get_importance,
    has_nan_scores,
    is_prunable,
    out_channels,
    prunable_layers,
)
from analysis.importance.rankings import RankingResult, rank_channels, spearman

__all__ = [
    "CRITERIA",
    "DEFAULT_MAX_SAMPLES",
    "Importance",
    "get_importance",
    "has_nan_scores",
    "is_prunable",
    "out_channels",
    "prunable_layers",
    "RankingResult",
    "rank_channels",
    "spearman",
]
