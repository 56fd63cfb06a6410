"""`deep_compression`: Han et al.'s pipeline, each stage's table row checked against numbers computed by hand
(parameter counts, a plain accuracy loop, the weights' zeros and distinct values)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from analysis.compression.deep_compression import deep_compression
from analysis.data import Dataset


def _data(labels: bool = True) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    return Dataset("synthetic", x, y if labels else None, x, y if labels else None, 3)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return sum(int(model(x[None]).argmax()) == int(y) for x, y in zip(data.x, data.y, strict=True)) / len(
            data.y
        )


def test_stages_sizes_zeros_and_codebooks_against_hand_counts():
    model, data = _model(), _data()
    before = copy.deepcopy(model.state_dict())
    calls = []
    out = deep_compression(model, data, prune=0.5, bits=2, progress=lambda i, n: calls.append((i, n)))
    rows = {row["stage"]: row for row in out.stages}
    assert list(rows) == [
        "original (float32)", "pruned", "shared (k-means)", "shared + centroid fine-tuning", "Huffman-coded"
    ]  # fmt: skip
    original = 4 * sum(p.numel() for p in model.parameters())
    assert rows["original (float32)"]["size_bytes"] == original
    assert rows["original (float32)"]["accuracy"] == _accuracy(model, data)
    assert rows["Huffman-coded"]["accuracy"] == _accuracy(out.model, data)
    for row in out.stages:
        assert row["ratio"] == original / row["size_bytes"]
    assert (
        rows["Huffman-coded"]["size_bytes"] <= rows["shared + centroid fine-tuning"]["size_bytes"] < original
    )
    for name in ("0", "2"):
        w = out.model.get_submodule(name).weight.detach()
        assert int((w == 0).sum()) >= round(0.5 * w.numel())  # pruned, and the zeros kept
        assert len(set(w[w != 0].tolist())) <= 2**2  # a 2-bit codebook
    assert calls[-1] == (5, 5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model


def test_retraining_keeps_the_zeros_and_without_labels_learns_the_outputs():
    model, data = _model(), _data(labels=False)
    out = deep_compression(model, data, prune={"0": 0.75}, bits=3, retrain_epochs=1, centroid_epochs=0)
    assert [row["stage"] for row in out.stages] == [
        "original (float32)", "pruned", "pruned + retrained", "shared (k-means)", "Huffman-coded"
    ]  # fmt: skip
    w = out.model.get_submodule("0").weight.detach()
    assert int((w == 0).sum()) >= round(0.75 * w.numel())
    assert len(set(w[w != 0].tolist())) <= 2**3
    other = out.model.get_submodule("2").weight.detach()  # not named: retrained, neither pruned nor shared
    assert int((other == 0).sum()) == 0 and len(set(other.flatten().tolist())) > 2**3
