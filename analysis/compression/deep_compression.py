"""The Deep Compression pipeline (Han, Mao and Dally, 2016) as one call: prune, retrain with the zeros kept,
share weights by k-means, fine-tune the centroids, Huffman-code; the paper's stage-by-stage size table.

The weight sharing, storage formats and centroid fine-tuning it builds on are `analysis.transforms.sharing`;
the retraining is `analysis.compression.finetune` (hence this module sits in `compression`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import prune as torch_prune

from analysis.compression.finetune import finetune
from analysis.compression.finetune_settings import FinetuneSettings
from analysis.data import Dataset
from analysis.evaluate import evaluate
from analysis.metrics import Scoring, scoring
from analysis.model.layers import copy_model
from analysis.progress import Progress
from analysis.transforms import sharing
from analysis.transforms.pruning import make_permanent, prune_unstructured


@dataclass(frozen=True)
class DeepCompressionResult:
    """The compressed model and the paper's stage-by-stage table: per stage, `size_bytes`, `ratio`
    (float32 size / size), `accuracy` (top-1 in [0, 1]) and `loss` (nats)."""

    model: nn.Module = field(repr=False)
    stages: list[dict]
    shared: dict[str, sharing.SharedWeight] = field(repr=False)
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.stages).set_index("stage")

    def to_dict(self) -> dict:
        return {"stages": self.stages, "notes": list(self.notes), "seconds": self.seconds}


def deep_compression(
    model: nn.Module,
    data: Dataset,
    prune: float | Mapping[str, float] = 0.9,
    bits: int | Mapping[str, int] = 4,
    layers: Sequence[str] | None = None,
    retrain_epochs: int = 0,
    centroid_epochs: int = 1,
    centroid_lr: float = 1e-4,
    index_bits: Mapping[str, int] | None = None,
    eval_limit: int | None = None,
    progress: Progress | None = None,
    metric: str = "auto",
) -> DeepCompressionResult:
    """Han et al.'s pipeline on a copy of `model`: unstructured magnitude pruning at `prune` (a ratio or
    per-layer ratios), optional retraining with the zeros kept (`retrain_epochs`, `analysis.finetune`),
    k-means sharing at `bits`, optional centroid fine-tuning (`centroid_epochs`), then Huffman coding.

    Each stage's score in `metric` (accuracy for a labelled classifier; the stages' `accuracy` key holds
    it) is measured on the evaluation split (first `eval_limit` samples), against `model`. Sizes count the
    whole model: float32 dense, then the sparse/shared/Huffman formats of the module docstring.
    """
    start = time.perf_counter()
    names, ratios, bits_map = _resolve(model, prune, bits, layers)
    tick = (lambda done: progress(done, 5)) if progress else (lambda done: None)
    stages = _Stages(model, data, eval_limit, scoring(metric, model, data))  # scored against `model`
    work = copy_model(model).eval()
    stages.record("original (float32)", work, stages.original_size)
    prune_unstructured(work, ratios)
    make_permanent(work)
    stages.record("pruned", work, sharing.sparse_float_size_bytes(work, names, index_bits))
    tick(1)
    if retrain_epochs > 0:
        work = _retrain(work, model, data, names, retrain_epochs)
        stages.record("pruned + retrained", work, sharing.sparse_float_size_bytes(work, names, index_bits))
    tick(2)
    work, shared = sharing.share_weights(work, bits_map)
    shared_acc = stages.evaluate(work)
    stages.record(
        "shared (k-means)", work, sharing.model_size_bytes(work, shared, False, index_bits), shared_acc
    )
    tick(3)
    if centroid_epochs > 0:
        work, shared = sharing.finetune_centroids(work, shared, data, epochs=centroid_epochs, lr=centroid_lr)
        shared_acc = stages.evaluate(work)
        size = sharing.model_size_bytes(work, shared, False, index_bits)
        stages.record("shared + centroid fine-tuning", work, size, shared_acc)
    tick(4)
    stages.record("Huffman-coded", work, sharing.model_size_bytes(work, shared, True, index_bits), shared_acc)
    tick(5)
    notes = (
        "sizes count every parameter and buffer; biases and norms stay float32; weights are simulated "
        "(stored as float32 in the model, counted at their coded size)",
    )
    return DeepCompressionResult(work, stages.rows, shared, notes, time.perf_counter() - start)


def _resolve(
    model: nn.Module, prune: float | Mapping[str, float], bits: int | Mapping[str, int], layers
) -> tuple[list[str], dict[str, float], dict[str, int]]:
    """The layers to compress, each one's prune ratio and sharing bits (unknown layers are one line)."""
    names = list(prune) if isinstance(prune, Mapping) else sharing._resolve(model, layers)
    ratios = dict(prune) if isinstance(prune, Mapping) else {name: float(prune) for name in names}
    sharing._resolve(model, list(ratios))
    bits_map = (
        sharing._bits_map(model, bits, names)
        if not isinstance(bits, Mapping)
        else sharing._bits_map(model, bits, None)
    )
    return names, ratios, bits_map


class _Stages:
    """The stage table: each stage's size, ratio to the float32 original, score and loss."""

    def __init__(self, model: nn.Module, data: Dataset, eval_limit: int | None, score: Scoring) -> None:
        self.data, self.eval_limit, self.score = data, eval_limit, score
        self.original_size = sum(t.numel() * 4 for t in list(model.parameters()) + list(model.buffers()))
        self.rows: list[dict] = []

    def evaluate(self, m: nn.Module):
        return evaluate(m, self.data, limit=self.eval_limit, metric=self.score)

    def record(self, stage: str, m: nn.Module, size: int, result=None) -> None:
        result = result or self.evaluate(m)
        self.rows.append(
            {
                "stage": stage,
                "size_bytes": int(size),
                "ratio": self.original_size / size,
                "accuracy": result.accuracy,
                "loss": result.loss,
            }
        )


def _retrain(work: nn.Module, model: nn.Module, data: Dataset, names: list[str], epochs: int) -> nn.Module:
    """`work` retrained for `epochs` with its zeros kept (a mask equal to the current nonzero pattern);
    without labels it learns `model`'s outputs."""
    for name in names:
        module = work.get_submodule(name)
        torch_prune.custom_from_mask(module, "weight", module.weight.detach() != 0)
    teacher = model if data.y_train is None else None
    work = finetune(work, data, FinetuneSettings(epochs=epochs), teacher, inplace=True).model
    make_permanent(work)
    return work


__all__ = ["DeepCompressionResult", "deep_compression"]
