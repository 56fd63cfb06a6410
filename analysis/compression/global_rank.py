"""Global channel ranking with layer normalization (Molchanov et al. 2017, "Pruning Convolutional Neural
Networks for Resource Efficient Inference", section 2.2).

Every prunable channel of the network is scored by a criterion from the importance registry. A coupled
group (`analysis.groups`: a conv with the layers tied to it by residual adds or concatenations) is one unit:
its score per channel is the SUM over the Conv/Linear layers whose outputs it removes, as Torch-Pruning's
group importance does (`analysis.importance.group_scores`). Scores are then normalized within each group so
that groups of different scale compete fairly, and the N lowest channels of the whole network go:

- `l2`:   s / ||s||_2 over the group (the paper's choice);
- `none`: raw scores (large-magnitude layers are then never pruned, small ones pruned first);
- `mean`: s / mean(s);
- `max`:  s / max(s).

No group is ever emptied: each keeps at least `min_keep` channels and `min_fraction` of its channels. The
final classifier's outputs are never candidates (its group is left out by `find_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.importance import group_scores
from analysis.importance.base import DEFAULT_MAX_SAMPLES
from analysis.transforms.groups import PruningGroup

NORMALIZATIONS: tuple[str, ...] = ("l2", "none", "mean", "max")
_EPS = 1e-12  # a group whose scores are all zero normalizes to zeros, not NaN


def check_normalize(normalize: str) -> str:
    """`normalize`, or a one-line WorkbenchError naming the choices."""
    if normalize not in NORMALIZATIONS:
        raise WorkbenchError(f"unknown normalization {normalize!r}: use one of {', '.join(NORMALIZATIONS)}")
    return normalize


def normalize_scores(scores: torch.Tensor, normalize: str = "l2") -> torch.Tensor:
    """One group's scores (float64) normalized within the group: `l2`, `none`, `mean` or `max`."""
    check_normalize(normalize)
    s = scores.detach().double()
    if normalize == "none":
        return s.clone()
    if normalize == "l2":
        denom = torch.linalg.vector_norm(s)
    elif normalize == "mean":
        denom = s.mean().abs()
    else:
        denom = s.abs().max()
    return s / max(float(denom), _EPS)


def keep_at_least(channels: int, min_keep: int = 1, min_fraction: float = 0.0) -> int:
    """Channels a group of `channels` always keeps: max(min_keep, ceil(min_fraction x channels)), at least 1."""
    return min(channels, max(1, int(min_keep), math.ceil(min_fraction * channels - 1e-9)))


@dataclass(frozen=True)
class GlobalRanking:
    """Per group: raw scores (higher = more important), normalized scores, and the root channel indices
    chosen for removal (sorted). `counts` gives how many channels each group loses."""

    scores: dict[str, torch.Tensor] = field(repr=False)
    normalized: dict[str, torch.Tensor] = field(repr=False)
    remove: dict[str, list[int]]
    order: list[tuple[str, int]] = field(repr=False, default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Group name -> number of channels to remove (0 for groups that keep everything)."""
        return {name: len(idxs) for name, idxs in self.remove.items()}

    @property
    def removable(self) -> int:
        """How many channels the ranking could remove at most (every group down to its floor)."""
        return len(self.order)


def rank_globally(
    scores: Mapping[str, torch.Tensor],
    channels: Mapping[str, int] | None = None,
    *,
    normalize: str = "l2",
    min_keep: int = 1,
    min_fraction: float = 0.0,
    floors: Mapping[str, int] | None = None,
) -> tuple[dict[str, torch.Tensor], list[tuple[str, int]]]:
    """Normalized scores per group and the global removal order: (group, channel) pairs, least important
    first, each group's floor (`keep_at_least`, or `floors[name]` where higher: a schedule's floor is a
    fraction of the ORIGINAL channels, so steps cannot ratchet a group down) excluded. Ties go to the
    earlier group, then lower index."""
    check_normalize(normalize)
    if not 0.0 <= min_fraction < 1.0:
        raise WorkbenchError(f"min_fraction must be in [0, 1), got {min_fraction}")
    normalized = {name: normalize_scores(s, normalize) for name, s in scores.items()}
    candidates: list[tuple[float, int, int, str]] = []
    for position, (name, s) in enumerate(normalized.items()):
        n = int(channels[name]) if channels is not None else len(s)
        floor = max(keep_at_least(n, min_keep, min_fraction), int((floors or {}).get(name, 0)))
        removable = max(0, n - floor)
        order = torch.argsort(s, stable=True)[:removable].tolist()  # a group can lose only its lowest ones
        # A channel scored inf or NaN (no gamma to read, say) is never a candidate.
        candidates.extend((float(s[c]), position, int(c), name) for c in order if math.isfinite(float(s[c])))
    candidates.sort(key=lambda t: (t[0], t[1], t[2]))
    return normalized, [(name, c) for _, _, c, name in candidates]


def select(order: Sequence[tuple[str, int]], n: int, names: Sequence[str]) -> dict[str, list[int]]:
    """The first `n` entries of a global removal `order`, as group name -> sorted root channel indices."""
    chosen: dict[str, list[int]] = {name: [] for name in names}
    for name, c in order[: max(0, int(n))]:
        chosen[name].append(c)
    return {name: sorted(idxs) for name, idxs in chosen.items()}


def global_rank(
    model: nn.Module,
    groups: Sequence[PruningGroup],
    n: int,
    *,
    criterion: str = "l1",
    normalize: str = "l2",
    data: Dataset | None = None,
    min_keep: int = 1,
    min_fraction: float = 0.0,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> GlobalRanking:
    """Rank every channel of `groups` globally and choose the `n` least important to remove.

    `scores` (group -> per-channel scores) skips scoring, for callers that have them. Asking for more than
    the groups can lose (each keeps `keep_at_least` channels) removes what they can. `model` is not changed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise WorkbenchError(f"the number of channels to remove must be a whole number >= 0, got {n!r}")
    if scores is None:
        scores = group_scores(model, groups, criterion, data, max_samples)
    channels = {g.name: g.channels for g in groups}
    missing = [name for name in channels if name not in scores]
    if missing:
        raise WorkbenchError(f"no scores for group {missing[0]!r}: score every group (group_scores)")
    chosen_scores = {name: scores[name] for name in channels}
    normalized, order = rank_globally(
        chosen_scores, channels, normalize=normalize, min_keep=min_keep, min_fraction=min_fraction
    )
    return GlobalRanking(
        scores=dict(chosen_scores),
        normalized=normalized,
        remove=select(order, n, list(channels)),
        order=order,
    )


__all__ = [
    "GlobalRanking",
    "NORMALIZATIONS",
    "check_normalize",
    "global_rank",
    "keep_at_least",
    "normalize_scores",
    "rank_globally",
    "select",
]
