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
from analysis.metrics import scoring
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
    # Long: the pipeline's stages in order (prune, retrain, share, tune centroids, Huffman), each recorded.

    start = time.perf_counter()
    names = list(prune) if isinstance(prune, Mapping) else sharing._resolve(model, layers)
    ratios = dict(prune) if isinstance(prune, Mapping) else {name: float(prune) for name in names}
    sharing._resolve(model, list(ratios))
    bits_map = (
        sharing._bits_map(model, bits, names)
        if not isinstance(bits, Mapping)
        else sharing._bits_map(model, bits, None)
    )
    steps = ["prune", "retrain", "share", "centroids", "huffman"]
    total = len(steps)
    stages: list[dict] = []
    notes: list[str] = []
    score = scoring(metric, model, data)  # every stage is scored against the original model

    def record(stage: str, m: nn.Module, size: int, result=None) -> None:
        result = result or evaluate(m, data, limit=eval_limit, metric=score)
        stages.append(
            {
                "stage": stage,
                "size_bytes": int(size),
                "ratio": original_size / size,
                "accuracy": result.accuracy,
                "loss": result.loss,
            }
        )

    work = copy_model(model).eval()
    original_size = sum(t.numel() * 4 for t in list(work.parameters()) + list(work.buffers()))
    record("original (float32)", work, original_size)
    prune_unstructured(work, ratios)
    make_permanent(work)
    record("pruned", work, sharing.sparse_float_size_bytes(work, names, index_bits))
    if progress:
        progress(1, total)
    if retrain_epochs > 0:
        for name in names:
            # keep the zeros through retraining: a mask equal to the current nonzero pattern
            module = work.get_submodule(name)
            torch_prune.custom_from_mask(module, "weight", module.weight.detach() != 0)
        teacher = model if data.y_train is None else None  # unlabelled: learn the original's outputs
        work = finetune(work, data, FinetuneSettings(epochs=retrain_epochs), teacher, inplace=True).model
        make_permanent(work)
        record("pruned + retrained", work, sharing.sparse_float_size_bytes(work, names, index_bits))
    if progress:
        progress(2, total)
    work, shared = sharing.share_weights(work, bits_map)
    shared_acc = evaluate(work, data, limit=eval_limit, metric=score)
    record("shared (k-means)", work, sharing.model_size_bytes(work, shared, False, index_bits), shared_acc)
    if progress:
        progress(3, total)
    if centroid_epochs > 0:
        work, shared = sharing.finetune_centroids(work, shared, data, epochs=centroid_epochs, lr=centroid_lr)
        shared_acc = evaluate(work, data, limit=eval_limit, metric=score)
        record(
            "shared + centroid fine-tuning",
            work,
            sharing.model_size_bytes(work, shared, False, index_bits),
            shared_acc,
        )
    if progress:
        progress(4, total)
    record("Huffman-coded", work, sharing.model_size_bytes(work, shared, True, index_bits), shared_acc)
    if progress:
        progress(5, total)
    notes.append(
        "sizes count every parameter and buffer; biases and norms stay float32; weights are simulated "
        "(stored as float32 in the model, counted at their coded size)"
    )
    return DeepCompressionResult(work, stages, shared, tuple(notes), time.perf_counter() - start)


__all__ = ["DeepCompressionResult", "deep_compression"]
