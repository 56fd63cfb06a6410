"""Filter-importance criteria: one score per output channel per prunable layer (docs/contract.md).

`get_importance(name)` is the only way to a criterion: rankings, pruning and the app all go through it.
The built-in criteria register themselves when their modules load, below, in the order of tables and plots.
"""

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.importance.base import (
    CRITERIA_REGISTRY,
    Criterion,
    ScoringContext,
    criterion_names,
    default_criteria,
    get_importance,
    has_nan_scores,
)
from analysis.importance.groups import ChannelGroup, group_scores
from analysis.importance.rankings import RankingResult, rank_channels, spearman
from analysis.model.layers import is_prunable, out_channels, prunable_layers

# The built-in criteria, registered as their modules load: this order is the order of tables and plots.
import analysis.importance.l1  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.l2  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.fpgm  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.bn_scale  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.apoz  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.mean_activation  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.taylor  # noqa: E402, F401, I001  # isort: skip
import analysis.importance.oracle  # noqa: E402, F401, I001  # isort: skip

CRITERIA = criterion_names()  # the built-in criteria; `criterion_names()` also lists ones registered later

__all__ = [
    "CRITERIA",
    "CRITERIA_REGISTRY",
    "DEFAULT_MAX_SAMPLES",
    "Criterion",
    "ScoringContext",
    "criterion_names",
    "default_criteria",
    "get_importance",
    "group_scores",
    "ChannelGroup",
    "has_nan_scores",
    "is_prunable",
    "out_channels",
    "prunable_layers",
    "RankingResult",
    "rank_channels",
    "spearman",
]
