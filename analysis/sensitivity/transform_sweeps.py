"""The transforms' sensitivity sweeps and comparisons (the plan fields are applied in `transforms`).

Sensitivity kinds `lowrank` (accuracy vs kept rank fraction, with MACs and params saved per point) and
`share` (accuracy vs codebook bits) return `analysis.sensitivity.SensitivityResult`s, computed with the same
cached downstream evaluation as the other sweeps: a factored layer computes exactly W_r x (+ b), so the
sweep evaluates the model with the weight replaced by its rank-r truncation W_r (the test checks the
equality against the factored model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.fx.edits import Edit, RunnerResult
from analysis.metrics import ACCURACY, MetricInfo, Scoring, scoring
from analysis.model.layers import copy_model
from analysis.progress import Forward, Progress
from analysis.sensitivity.result import _TOLERANCE, LowRankSensitivity, SensitivityCurve, SensitivityResult
from analysis.transforms import lowrank, sharing
from analysis.transforms.quantization import fake_quantize
from analysis.transforms.registry import Rank, ShareBits
from analysis.validate import few

DEFAULT_RANK_FRACTIONS = Rank.sweep_values  # the handlers' (analysis.transforms.registry)
DEFAULT_SHARE_BITS = ShareBits.sweep_values


def _weight_edit(name: str, new: torch.Tensor, key) -> Edit:
    def apply(model: nn.Module) -> None:
        model.get_submodule(name).weight.copy_(new)

    return Edit((name,), apply, key)


def _run(work, data, edits, split, limit, batch_size, progress, metric, should_stop=None, runtime=None):
    """The runner (on `runtime`, scoring `metric`) over each layer's edits in turn (`should_stop()` asked
    before each layer): a RunnerResult over the edits of the layers that finished, and those edits."""
    from analysis.runtime.edit_runner import runner_class

    runner = runner_class(runtime).from_data(
        work, data, split=split, limit=limit, batch_size=batch_size, copy_model=False,
        scoring=scoring(metric, work, data),
    )  # fmt: skip
    chunks: dict[str, list[Edit]] = {}
    for edit in edits:
        chunks.setdefault(edit.key[0], []).append(edit)
    step = Forward(progress, len(edits)).part(0, len(edits))  # evaluations
    outs = runner.evaluate_chunks(list(chunks.values()), progress=step, should_stop=should_stop)
    if not outs:  # stopped before the first layer: the baseline is still reported
        return runner.evaluate([]), []
    done = [e for chunk in list(chunks.values())[: len(outs)] for e in chunk]
    results = [r for out in outs for r in out.results]
    return RunnerResult(outs[0].baseline, results, outs[0].notes), done


def _finished(names: Sequence[str], edits: Sequence[Edit], done: Sequence[Edit]) -> list[str]:
    """The layers whose points were all evaluated: every layer unless stopped, else the swept ones."""
    if len(done) == len(edits):
        return list(names)
    swept = {e.key[0] for e in done}
    return [n for n in names if n in swept]


def _check_split(split: str) -> None:
    if split not in ("test", "train"):
        raise WorkbenchError(f"unknown split {split!r}: use 'test' or 'train'")


def factorable_layers(model: nn.Module) -> list[str]:
    """Linear and groups=1 Conv2d layers: the ones `lowrank` can factor."""
    return [n for n, m in model.named_modules() if n and lowrank.factorable(m)]


def lowrank_sensitivity(
    model: nn.Module,
    data: Dataset,
    rank_fractions: Sequence[float] = DEFAULT_RANK_FRACTIONS,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    metric: str | Scoring = "auto",
    should_stop: Callable[[], bool] | None = None,
    runtime: str | None = None,
) -> LowRankSensitivity:
    """The score in `metric` (`analysis.metrics`) and loss with each layer alone factored at each kept rank fraction (kind "lowrank"), plus
    the MACs and params each point saves. A fraction at which a layer's rank saves nothing is left out of
    that layer's curve, with a note. `should_stop()` is asked before each layer: the layers finished are
    returned, `partial=True`. The model is not changed."""
    start = time.perf_counter()
    _check_split(split)
    fractions = sorted({lowrank.check_rank(f) for f in rank_fractions}, reverse=True)
    if not fractions:
        raise WorkbenchError("no rank fractions given: give at least one in (0, 1), e.g. 0.5,0.25")
    work = copy_model(model).eval()
    names = _factorable(model, work, layers)
    edits, info, refused = _lowrank_edits(work, data, names, fractions)
    out, done = _run(work, data, edits, split, limit, batch_size, progress, metric, should_stop, runtime)
    finished = _finished(names, edits, done)
    points: dict[str, list] = {name: [] for name in finished}
    for edit, result in zip(done, out.results, strict=True):
        points[edit.key[0]].append((edit.key[1], result))
    curves = {
        name: SensitivityCurve(
            tuple(f for f, _ in points[name]),
            tuple(r.accuracy for _, r in points[name]),
            tuple(r.loss for _, r in points[name]),
        )
        for name in finished
    }
    per_point = {  # each layer's rank and savings at its curve's fractions
        key: {name: tuple(getattr(info[(name, f)], attr) for f in curves[name].values) for name in finished}
        for key, attr in (("ranks", "rank"), ("macs_saved", "macs_saved"), ("params_saved", "params_saved"))
    }
    notes = list(out.notes)
    if refused:
        notes.append(f"ranks that would save no MACs were left out: {few(refused)}")
    notes.append("values are kept rank fractions (smaller = more compressed); accuracy is before fine-tuning")
    if len(finished) < len(names):
        notes.append(f"stopped by request after {len(finished)} of {len(names)} layers")
    return LowRankSensitivity(
        kind="lowrank",
        baseline_accuracy=out.baseline.accuracy,
        baseline_loss=out.baseline.loss,
        seconds=time.perf_counter() - start,
        layers=curves,
        notes=tuple(notes),
        samples=out.baseline.samples,
        metric=out.baseline.metric,
        partial=len(finished) < len(names),
        **per_point,
    )


def _factorable(model: nn.Module, work: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The layers to factor: `layers` (each checked: one line for a name the model lacks or SVD cannot
    factor), or every factorable one."""
    names = factorable_layers(model) if layers is None else list(dict.fromkeys(layers))
    if not names:
        raise WorkbenchError("the model has no Linear or Conv2d (groups=1) layers to factor")
    modules = dict(work.named_modules())
    for name in names:
        if name not in modules or not name:
            raise WorkbenchError(
                f"no layer named {name!r} in the model: choose one of {few(factorable_layers(model))}"
            )
        lowrank._check_layer(name, modules[name])
    return names


def _lowrank_edits(work: nn.Module, data: Dataset, names: list[str], fractions: list[float]):
    """One edit per layer and kept fraction (the weight replaced by its rank-r approximation, calibrated on
    training samples), the rank chosen for each (layer, fraction), and the points that would save nothing."""
    positions = lowrank.output_positions(work, names, data.input_shape)
    moments = lowrank.output_moments(work, names, data.x_train[: lowrank.CALIBRATION_SAMPLES])
    edits: list[Edit] = []
    info: dict[tuple, lowrank.LowRankChoice] = {}
    refused: list[str] = []
    for name in names:
        module = work.get_submodule(name)
        for f in fractions:
            try:
                choice = lowrank.choose_rank(name, module, f, positions[name], moments.get(name))
            except WorkbenchError:
                refused.append(f"{name}@{f}")
                continue
            info[(name, f)] = choice
            new = lowrank.truncated_weight(module, choice.rank, moments.get(name))
            edits.append(_weight_edit(name, new, (name, f)))
    return edits, info, refused


def share_sensitivity(
    model: nn.Module,
    data: Dataset,
    bits_list: Sequence[int] = DEFAULT_SHARE_BITS,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    metric: str | Scoring = "auto",
    should_stop: Callable[[], bool] | None = None,
    runtime: str | None = None,
) -> SensitivityResult:
    """The score in `metric` and loss with each layer alone weight-shared by k-means at each codebook width
    (kind "share"; values are bits, widest first). `should_stop()` is asked before each layer (the finished
    ones are returned, `partial=True`). The model is not changed."""
    start = time.perf_counter()
    _check_split(split)
    widths = sorted({sharing.check_share_bits(b) for b in bits_list}, reverse=True)
    if not widths:
        raise WorkbenchError("no bit widths given: give at least one in 1..8, e.g. 4,2")
    work = copy_model(model).eval()
    names = sharing._resolve(work, layers)
    if not names:
        raise WorkbenchError("the model has no Conv or Linear layers to share")
    edits = []
    for name in names:
        w = work.get_submodule(name).weight
        for b in widths:
            edits.append(_weight_edit(name, sharing.share_weight(w, b).weight(w.dtype), (name, b)))
    out, done = _run(work, data, edits, split, limit, batch_size, progress, metric, should_stop, runtime)
    finished = _finished(names, edits, done)
    points: dict[str, list] = {name: [] for name in finished}
    for edit, result in zip(done, out.results, strict=True):
        points[edit.key[0]].append((edit.key[1], result))
    curves = {
        name: SensitivityCurve(
            tuple(float(b) for b, _ in pts), tuple(r.accuracy for _, r in pts), tuple(r.loss for _, r in pts)
        )
        for name, pts in points.items()
    }
    return SensitivityResult(
        kind="share",
        baseline_accuracy=out.baseline.accuracy,
        baseline_loss=out.baseline.loss,
        seconds=time.perf_counter() - start,
        layers=curves,
        notes=tuple(out.notes)
        + ("values are codebook bits (2^bits centroids per layer, k-means)",)
        + (
            (f"stopped by request after {len(finished)} of {len(names)} layers",)
            if len(finished) < len(names)
            else ()
        ),
        samples=out.baseline.samples,
        metric=out.baseline.metric,
        partial=len(finished) < len(names),
    )


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum w^2 / sum (w - q)^2) in dB (inf for no error)."""
    ref = reference.detach().double()
    noise = float(((ref - approx.detach().double()) ** 2).sum())
    signal = float((ref**2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


@dataclass(frozen=True)
class QuantVsKmeans:
    """Per layer (each alone) and for all layers together ("(all layers)"): SQNR (dB), the score in `metric`
    (`accuracy_uniform`/`accuracy_kmeans` hold it whatever the metric), loss and weight bytes of uniform
    fake quantization and of k-means sharing at the same bits."""

    bits: int
    baseline_accuracy: float
    rows: list[dict]
    seconds: float
    notes: tuple[str, ...] = ()
    metric: MetricInfo = ACCURACY

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("layer")

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "baseline_accuracy": self.baseline_accuracy,
            "rows": self.rows,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "metric": self.metric.to_dict(self.baseline_accuracy),
        }


def quant_vs_kmeans(
    model: nn.Module,
    data: Dataset,
    bits: int = 4,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    metric: str | Scoring = "auto",
) -> QuantVsKmeans:
    """Uniform (symmetric per-channel, `analysis.quantization.fake_quantize`) vs k-means sharing at the same
    `bits` (2..8), per layer alone and all together: SQNR in dB, accuracy and loss, stored bytes (b bits per
    weight plus a float32 scale per channel, or plus the 2^b float32 centroids). The model is not changed."""
    start = time.perf_counter()
    _check_split(split)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= sharing.MAX_SHARE_BITS:
        raise WorkbenchError(f"bits must be a whole number in 2..8 for this comparison, got {bits!r}")
    work = copy_model(model).eval()
    names = sharing._resolve(work, layers)
    if not names:
        raise WorkbenchError("the model has no Conv or Linear layers to compare")
    uniform, kmeans, rows = _coded_weights(work, names, bits)
    edits = _comparison_edits(names, uniform, kmeans)
    out, _ = _run(work, data, edits, split, limit, batch_size, progress, metric)
    found = {e.key: r for e, r in zip(edits, out.results, strict=True)}
    weights = torch.cat([work.get_submodule(n).weight.flatten() for n in names])
    rows.append(
        {
            "layer": "(all layers)",
            "sqnr_uniform_db": sqnr_db(weights, torch.cat([uniform[n].flatten() for n in names])),
            "sqnr_kmeans_db": sqnr_db(weights, torch.cat([kmeans[n].flatten() for n in names])),
            "bytes_uniform": sum(r["bytes_uniform"] for r in rows),
            "bytes_kmeans": sum(r["bytes_kmeans"] for r in rows),
        }
    )
    for row in rows:
        for method in ("uniform", "kmeans"):
            r = found[(row["layer"], method)]
            row[f"accuracy_{method}"] = r.accuracy
            row[f"loss_{method}"] = r.loss
    notes = (
        f"uniform has 2^{bits} - 1 levels per channel (symmetric, zero included), k-means 2^{bits} centroids per "
        "layer (zeros of a pruned layer kept)",
    )
    return QuantVsKmeans(
        bits, out.baseline.accuracy, rows, time.perf_counter() - start, tuple(out.notes) + notes,
        out.baseline.metric,
    )  # fmt: skip


def _coded_weights(work: nn.Module, names: list[str], bits: int) -> tuple[dict, dict, list[dict]]:
    """Each layer's weight quantized uniformly and shared by k-means at `bits`, and its table row (SQNR and
    stored bytes of each)."""
    uniform, kmeans, rows = {}, {}, []
    for name in names:
        w = work.get_submodule(name).weight.detach()
        uniform[name] = fake_quantize(w, bits)[0]
        kmeans[name] = sharing.share_weight(w, bits).weight(w.dtype)
        n = w.numel()
        rows.append(
            {
                "layer": name,
                "sqnr_uniform_db": sqnr_db(w, uniform[name]),
                "sqnr_kmeans_db": sqnr_db(w, kmeans[name]),
                "bytes_uniform": math.ceil(n * bits / 8) + w.shape[0] * sharing.CENTROID_BYTES,
                "bytes_kmeans": math.ceil(n * bits / 8) + 2**bits * sharing.CENTROID_BYTES,
            }
        )
    return uniform, kmeans, rows


def _comparison_edits(names: list[str], uniform: dict, kmeans: dict) -> list[Edit]:
    """Each layer alone with its uniform, then its k-means weight; then every layer at once, each way."""
    edits = []
    for name in names:
        edits.append(_weight_edit(name, uniform[name], (name, "uniform")))
        edits.append(_weight_edit(name, kmeans[name], (name, "kmeans")))

    def all_edit(table, key) -> Edit:
        def apply(m: nn.Module) -> None:
            for name in names:
                m.get_submodule(name).weight.copy_(table[name])

        return Edit(tuple(names), apply, key)

    return edits + [
        all_edit(uniform, ("(all layers)", "uniform")),
        all_edit(kmeans, ("(all layers)", "kmeans")),
    ]


def cut_at_drop(result: SensitivityResult, max_drop: float | None) -> SensitivityResult:
    """Each curve ended at its first point whose drop exceeds `max_drop` (as the other kinds' early stop
    ends it; here every point was computed, so this only trims)."""
    if max_drop is None:
        return result
    layers, extra, cut = {}, {}, []
    keys = [k for k in ("ranks", "macs_saved", "params_saved") if hasattr(result, k)]
    for name, curve in result.layers.items():
        n = len(curve.values)
        for i, acc in enumerate(curve.accuracy):
            if result.metric.drop(result.baseline_accuracy, acc) > max_drop + _TOLERANCE:
                n = i + 1
                break
        if n < len(curve.values):
            cut.append(name)
        layers[name] = SensitivityCurve(curve.values[:n], curve.accuracy[:n], curve.loss[:n], curve.members)
        for key in keys:
            extra.setdefault(key, {})[name] = tuple(getattr(result, key).get(name, ()))[:n]
    notes = result.notes + (
        (f"early stop at drop > {max_drop}: {few(cut)} cut at their first bad point",) if cut else ()
    )
    return replace(result, layers=layers, notes=notes, max_drop=max_drop, **extra)


__all__ = [
    "DEFAULT_RANK_FRACTIONS",
    "DEFAULT_SHARE_BITS",
    "QuantVsKmeans",
    "cut_at_drop",
    "factorable_layers",
    "lowrank_sensitivity",
    "quant_vs_kmeans",
    "share_sensitivity",
    "sqnr_db",
]
