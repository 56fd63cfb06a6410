"""Every criterion for every layer in one call, and how the criteria agree with each other and the oracle.

`rank_channels` calls every criterion through its one interface: the activation statistics they need are
gathered in ONE calibration pass first, and the expensive one (the oracle: one evaluation per channel) runs
last; `RankingResult` holds the
scores, summary statistics, Spearman correlations with the oracle and the top-k overlap between criteria.

Conventions:
- Every comparison takes each criterion in its importance direction (higher = keep), so APoZ is negated.
- Spearman's rho per layer over the layer's channels; **pooled** over all channels of all layers, with each
  criterion's scores divided by their L2 norm within the layer first (the layer-wise normalisation of
  Molchanov et al. 2017, which makes scales comparable across layers; the oracle, a loss change, is already
  comparable and stays raw). Layers where a criterion is NaN (`bn-scale` without a norm) or constant are left
  out of that criterion's correlations.
- Top-k overlap of two criteria in a layer: Jaccard |A n B| / |A u B| of the k channels each would prune
  first, k = max(1, round(topk_fraction x channels)); the table holds its mean over layers.

One module: the rank statistics and `rank_channels` define the one comparison table together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.importance.base import (
    CRITERIA_REGISTRY,
    Criterion,
    ScoringContext,
    Stopped,
    criterion_names,
    default_criteria,
    get_importance,
    has_nan_scores,
)
from analysis.importance.calibration import calibrate
from analysis.importance.features import find_features
from analysis.progress import Forward, Progress
from analysis.validate import whole

if TYPE_CHECKING:
    import pandas as pd

    from analysis.data import Dataset

DEFAULT_TOPK_FRACTION = 0.25
STATISTICS = ("mean", "std", "min", "median", "max")


def rankdata(values: Iterable[float]) -> np.ndarray:
    """Ranks 1..n, ties at their average rank (`scipy.stats.rankdata`; scipy.stats loads on first use)."""
    from scipy.stats import rankdata as scipy_rankdata

    return scipy_rankdata(np.asarray(values, dtype=np.float64))


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman's rank correlation (`scipy.stats.spearmanr`, ties at their average rank) of two
    equal-length sequences over the pairs where both are finite.

    NaN where fewer than 2 such pairs remain or either side is constant (rho is undefined then).
    """
    a = np.asarray(list(a) if not isinstance(a, np.ndarray) else a, dtype=np.float64)
    b = np.asarray(list(b) if not isinstance(b, np.ndarray) else b, dtype=np.float64)
    if a.shape != b.shape:
        raise WorkbenchError(f"spearman needs equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # loading scipy.stats takes about a second: only when asked

    return float(spearmanr(a[keep], b[keep]).statistic)


def prune_first(scores: np.ndarray, higher_is_important: bool, k: int) -> set[int]:
    """Indices of the k channels a criterion would prune first (ties: lower index first)."""
    importance = scores if higher_is_important else -scores
    return {int(i) for i in np.argsort(importance, kind="mergesort")[:k]}


def jaccard(a: set[int], b: set[int]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def _direction(criterion: str) -> bool:
    return get_importance(criterion).higher_is_important


def _statistics(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return dict.fromkeys(STATISTICS, float("nan"))
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "median": float(np.median(finite)),
        "max": float(finite.max()),
    }


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _none_to_nan(value: Any) -> Any:
    if value is None:
        return float("nan")
    if isinstance(value, dict):
        return {k: _none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_none_to_nan(v) for v in value)
    return value


@dataclass(frozen=True)
class RankingResult:
    """Per-layer, per-criterion channel scores and how the criteria agree (see the module docstring).

    `layers[layer][criterion]`: one score per output channel, in the criterion's own units and direction
    (APoZ raw). `spearman_per_layer[layer][criterion]`, `spearman_vs_oracle[criterion]` (pooled) and
    `spearman_mean_per_layer[criterion]` exist where the oracle was computed. `topk_overlap[a][b]`: mean
    Jaccard over layers of the first-pruned channels. `samples`: calibration samples (train split);
    `oracle_samples`: samples per oracle evaluation; `oracle_baseline_loss`: unedited loss (nats) on them.
    """

    criteria: tuple[str, ...]
    layers: dict[str, dict[str, tuple[float, ...]]]
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    spearman_per_layer: dict[str, dict[str, float]] = field(default_factory=dict)
    spearman_vs_oracle: dict[str, float] = field(default_factory=dict)
    spearman_mean_per_layer: dict[str, float] = field(default_factory=dict)
    topk_fraction: float = DEFAULT_TOPK_FRACTION
    topk_overlap: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: int = 0
    oracle_samples: int = 0
    oracle_baseline_loss: float = float("nan")
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @classmethod
    def from_scores(
        cls,
        scores: dict[str, dict[str, torch.Tensor | Iterable[float]]],
        topk_fraction: float = DEFAULT_TOPK_FRACTION,
        **fields: Any,
    ) -> RankingResult:
        """Build a result (statistics, correlations, overlaps) from `scores[criterion][layer]`."""
        known = criterion_names()
        criteria = tuple(c for c in known if c in scores) + tuple(c for c in scores if c not in known)
        layer_names: list[str] = []
        for c in criteria:
            layer_names += [n for n in scores[c] if n not in layer_names]
        arrays = {
            c: {n: np.asarray(torch.as_tensor(v).double().cpu().numpy()) for n, v in scores[c].items()}
            for c in criteria
        }
        layers = {
            n: {c: tuple(float(v) for v in arrays[c][n]) for c in criteria if n in arrays[c]}
            for n in layer_names
        }
        summary = {n: {c: _statistics(arrays[c][n]) for c in criteria if n in arrays[c]} for n in layer_names}
        directions = {c: _direction(c) if c in known else True for c in criteria}

        per_layer: dict[str, dict[str, float]] = {}
        pooled: dict[str, float] = {}
        mean_per_layer: dict[str, float] = {}
        if "oracle" in arrays:
            oracle = arrays["oracle"]
            for c in criteria:
                if c == "oracle":
                    continue
                xs, ys, rhos = [], [], []
                for n in layer_names:
                    if n not in arrays[c] or n not in oracle:
                        continue
                    s = arrays[c][n] if directions[c] else -arrays[c][n]
                    rho = spearman(s, oracle[n])
                    per_layer.setdefault(n, {})[c] = rho
                    if not math.isfinite(rho):
                        continue
                    rhos.append(rho)
                    norm = float(np.sqrt((s * s).sum()))
                    xs.append(s / norm if norm > 0 else s)
                    ys.append(oracle[n])
                pooled[c] = spearman(np.concatenate(xs), np.concatenate(ys)) if xs else float("nan")
                mean_per_layer[c] = float(np.mean(rhos)) if rhos else float("nan")

        overlap: dict[str, dict[str, float]] = {a: {} for a in criteria}
        for i, a in enumerate(criteria):
            for b in criteria[i:]:
                values = []
                for n in layer_names:
                    if n not in arrays[a] or n not in arrays[b]:
                        continue
                    sa, sb = arrays[a][n], arrays[b][n]
                    if not (np.isfinite(sa).all() and np.isfinite(sb).all()):
                        continue
                    k = max(1, round(topk_fraction * len(sa)))
                    values.append(
                        jaccard(prune_first(sa, directions[a], k), prune_first(sb, directions[b], k))
                    )
                overlap[a][b] = overlap[b][a] = float(np.mean(values)) if values else float("nan")
        return cls(
            criteria=criteria,
            layers=layers,
            summary=summary,
            spearman_per_layer=per_layer,
            spearman_vs_oracle=pooled,
            spearman_mean_per_layer=mean_per_layer,
            topk_fraction=float(topk_fraction),
            topk_overlap=overlap,
            **fields,
        )

    def scores(self, criterion: str) -> dict[str, torch.Tensor]:
        """One criterion's scores as `{layer: tensor}` (the shape a `Criterion` returns)."""
        if criterion not in self.criteria:
            raise WorkbenchError(f"criterion {criterion!r} was not computed: have {', '.join(self.criteria)}")
        return {n: torch.tensor(v[criterion]) for n, v in self.layers.items() if criterion in v}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as null): the CLI `rank` keys of docs/contract.md section 3 and more."""
        return _nan_to_none(
            {
                "criteria": list(self.criteria),
                "layers": {n: {c: list(v) for c, v in crit.items()} for n, crit in self.layers.items()},
                "spearman_vs_oracle": dict(self.spearman_vs_oracle),
                "spearman_mean_per_layer": dict(self.spearman_mean_per_layer),
                "spearman_per_layer": self.spearman_per_layer,
                "topk_fraction": self.topk_fraction,
                "topk_overlap": self.topk_overlap,
                "summary": self.summary,
                "features": self.features,
                "samples": self.samples,
                "oracle_samples": self.oracle_samples,
                "oracle_baseline_loss": self.oracle_baseline_loss,
                "seconds": self.seconds,
                "notes": list(self.notes),
            }
        )

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RankingResult:
        """Inverse of `to_dict` (null read back as NaN)."""
        try:
            return cls(
                criteria=tuple(payload["criteria"]),
                layers={
                    n: {c: tuple(_none_to_nan(list(v))) for c, v in crit.items()}
                    for n, crit in payload["layers"].items()
                },
                features=dict(payload.get("features", {})),
                summary=_none_to_nan(payload.get("summary", {})),
                spearman_per_layer=_none_to_nan(payload.get("spearman_per_layer", {})),
                spearman_vs_oracle=_none_to_nan(payload.get("spearman_vs_oracle", {})),
                spearman_mean_per_layer=_none_to_nan(payload.get("spearman_mean_per_layer", {})),
                topk_fraction=float(payload.get("topk_fraction", DEFAULT_TOPK_FRACTION)),
                topk_overlap=_none_to_nan(payload.get("topk_overlap", {})),
                samples=int(payload.get("samples", 0)),
                oracle_samples=int(payload.get("oracle_samples", 0)),
                oracle_baseline_loss=_none_to_nan(payload.get("oracle_baseline_loss")),
                seconds=float(payload.get("seconds", 0.0)),
                notes=tuple(payload.get("notes", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise WorkbenchError(
                f"not a ranking result: {exc!s}: expected the keys RankingResult.to_dict writes"
            ) from exc

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, channel), one column per criterion."""
        import pandas as pd

        rows = []
        for n, crit in self.layers.items():
            channels = max(len(v) for v in crit.values())
            for ch in range(channels):
                row: dict[str, Any] = {"layer": n, "channel": ch}
                row.update({c: crit[c][ch] for c in self.criteria if c in crit})
                rows.append(row)
        return pd.DataFrame(rows, columns=["layer", "channel", *self.criteria])

    def spearman_frame(self) -> pd.DataFrame:
        """Spearman's rho vs the oracle: one row per layer plus 'mean per layer' and 'pooled' rows."""
        import pandas as pd

        columns = [c for c in self.criteria if c != "oracle"]
        rows = {n: {c: v.get(c, float("nan")) for c in columns} for n, v in self.spearman_per_layer.items()}
        rows["mean per layer"] = {c: self.spearman_mean_per_layer.get(c, float("nan")) for c in columns}
        rows["pooled"] = {c: self.spearman_vs_oracle.get(c, float("nan")) for c in columns}
        return pd.DataFrame.from_dict(rows, orient="index", columns=columns)

    def topk_frame(self) -> pd.DataFrame:
        """Mean top-k Jaccard overlap between every pair of criteria (symmetric, 1 on the diagonal)."""
        import pandas as pd

        return pd.DataFrame(self.topk_overlap, index=list(self.criteria), columns=list(self.criteria))


def _wanted(criteria: Iterable[str] | None, oracle: bool) -> list[str]:
    """The criteria to compute, canonical and in registry order: `criteria` (default: every criterion
    that is not expensive), plus the expensive ones when `oracle`."""
    names = default_criteria() if criteria is None else [CRITERIA_REGISTRY.key(c) for c in criteria]
    if oracle:
        names = [*names, *(n for n, cls in CRITERIA_REGISTRY.items() if cls.expensive)]
    return [c for c in criterion_names() if c in names]


def _check_finite(built: dict[str, Criterion], scores: dict[str, dict[str, torch.Tensor]]) -> None:
    for c, per_layer in scores.items():
        # NaN by design (a criterion that says so, like bn-scale without a norm); anything else is broken input.
        bad = [n for n, t in per_layer.items() if not torch.isfinite(t).all() and not built[c].may_be_nan]
        if bad:
            raise WorkbenchError(
                f"criterion {c!r} gave NaN or infinite scores for {bad[0]!r}: "
                "the model or the data holds NaN/Inf (check weights and inputs)"
            )


def rank_channels(
    model: nn.Module,
    data: Dataset | None,
    criteria: Iterable[str] | None = None,
    layers: Iterable[str] | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    oracle: bool = True,
    progress: Progress | None = None,
    *,
    oracle_max_samples: int | None = None,
    topk_fraction: float = DEFAULT_TOPK_FRACTION,
    device: str | torch.device | None = None,
    should_stop: Callable[[], bool] | None = None,
    runner: type | None = None,
) -> RankingResult:
    """Score every channel of every prunable layer (or those in `layers`) by each criterion.

    `criteria` defaults to every registered criterion that is not `expensive`; `oracle=True` adds the
    expensive ones (the oracle: one evaluation per channel, over `oracle_max_samples`, default
    `max_samples`, train samples). The activation statistics every criterion `needs` are gathered in ONE
    calibration pass over at most `max_samples` train samples. `progress(done, total)` counts the
    expensive criteria's channels when they run (the calibration pass before them counts 0), else the
    calibration samples. The model is not changed. `device` (auto, cpu, cuda[:N]) runs the calibration pass
    and the oracle on a private copy there; the weight criteria stay on the CPU. `runner` is the
    class that runs the oracle's evaluations (`analysis.runtime.edit_runner.runner_class(runtime)`; None:
    eager). `should_stop()` (Ctrl-C, a Stop button) is asked at every progress step: once True, the
    criteria finished so far are returned and the rest are left out, with a note (the calibration pass and
    the oracle are each kept whole or not at all).
    """
    wanted = _wanted(criteria, oracle)
    if not 0 < topk_fraction <= 1:
        raise WorkbenchError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
    max_samples = whole(max_samples, "max_samples")
    oracle_cap = whole(oracle_max_samples or max_samples, "max_samples")
    layer_list = None if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    classes = {c: CRITERIA_REGISTRY.get(c) for c in wanted}
    built = {c: cls(max_samples=oracle_cap if cls.expensive else max_samples) for c, cls in classes.items()}
    needs = tuple(dict.fromkeys(s for cls in classes.values() for s in cls.needs))
    expensive = [c for c, cls in classes.items() if cls.expensive]

    start = time.perf_counter()
    features = find_features(model, layer_list)
    n_train = len(data.x_train) if data is not None else 0
    n_channels = sum(lf.channels for lf in features.layers.values())
    # Progress in what the page says it costs: the expensive criteria's channels (the short calibration
    # pass before them counts 0), else the calibration pass's samples.
    if expensive:
        forward = Forward(progress, n_channels * len(expensive))
        calibration_progress = None
    else:
        forward = Forward(progress, min(max_samples, n_train) if needs else 1)
        calibration_progress = forward.part(0, forward.total)
    forward.report(0)
    context = ScoringContext(features=features, device=device, runner=runner, should_stop=should_stop)
    if features.note:
        context.notes.append(features.note)

    scores: dict[str, dict[str, torch.Tensor]] = {}
    # Cheap criteria first (they are not stopped), then those needing the calibration pass (run once for
    # all of them), then the expensive ones, each with its share of the progress bar.
    order = sorted(wanted, key=lambda c: (classes[c].expensive, bool(classes[c].needs)))
    try:
        for c in order:
            cls, call = classes[c], context
            if not cls.needs and not cls.expensive:
                call = ScoringContext(features=features)
            elif cls.expensive:
                i = expensive.index(c)
                context.progress = forward.part(i * n_channels, n_channels)
            elif context.calibration is None:
                context.progress = calibration_progress
                context.calibration = calibrate(
                    model, data, layer_list, needs, max_samples=max_samples, progress=context.report,
                    features=features, device=device,
                )  # fmt: skip
            scores[c] = built[c](model, data, layer_list, context=call)
    except Stopped:
        missing = [c for c in wanted if c not in scores]
        context.notes.append(f"stopped by request: not computed: {', '.join(missing)}")
        wanted = [c for c in wanted if c in scores]
    _check_finite(built, scores)
    for c in wanted:
        nan_layers = has_nan_scores(scores[c]) if built[c].may_be_nan else []
        if nan_layers:
            context.notes.append(f"{c} {built[c].nan_note}: {', '.join(nan_layers)}")
    forward.report(forward.total)
    return RankingResult.from_scores(
        {c: scores[c] for c in wanted},
        topk_fraction=topk_fraction,
        features={n: lf.to_dict() for n, lf in features.layers.items()},
        samples=context.calibration.samples if context.calibration is not None else 0,
        oracle_samples=int(context.details.get("samples", 0)),
        oracle_baseline_loss=float(context.details.get("baseline_loss", float("nan"))),
        seconds=time.perf_counter() - start,
        notes=tuple(context.notes),
    )
