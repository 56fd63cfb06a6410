"""Filter-importance criteria: one score per output channel per prunable layer (CONTRACT section 5).

`get_importance(name)` is the only way to a criterion: rankings, pruning and the app all go through it.
"""

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.importance.base import CRITERIA, Importance, get_importance, has_nan_scores
from analysis.importance.rankings import RankingResult, rank_channels, spearman
from analysis.model.layers import is_prunable, out_channels, prunable_layers

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
