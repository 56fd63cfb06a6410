"""Evaluate against a plain loop; latency's percentiles in order; model modes restored."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis import evaluate
from analysis.latency import compare_latency, layer_times, measure_latency


def test_evaluate_matches_a_plain_loop(resnet, digits):
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(len(digits.x)):
            logits = resnet(digits.x[i : i + 1])
            correct += int(logits.argmax(1).item() == digits.y[i].item())
            loss += F.cross_entropy(logits, digits.y[i : i + 1]).item()
    result = evaluate(resnet, digits, batch_size=64)
    assert result.samples == len(digits.x)
    assert result.accuracy == correct / len(digits.x)
    assert result.loss == pytest.approx(loss / len(digits.x), rel=1e-5)


def test_evaluate_train_split_limit_and_progress(cnn, digits):
    seen = []
    r = evaluate(
        cnn, digits, split="train", batch_size=100, limit=250, progress=lambda d, t: seen.append((d, t))
    )
    assert r.samples == 250
    assert seen[-1] == (250, 250)


def test_evaluate_restores_training_mode(digits):
    from analysis import load_model

    model = load_model("zoo:digits-mlp").train()
    evaluate(model, digits.subset(10))
    assert model.training


def test_latency_percentiles_are_ordered(cnn):
    r = measure_latency(cnn, (1, 16, 16), batch_size=4, threads=1, runs=12, warmup=1)
    assert r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.runs == 12 and r.batch_size == 4 and r.threads == 1
    assert r.torch_version == torch.__version__ and r.cpu
    assert all(t > 0 for t in r.times_ms)


def test_latency_restores_threads(cnn):
    before = torch.get_num_threads()
    measure_latency(cnn, (1, 16, 16), batch_size=2, threads=1, runs=2, warmup=0)
    assert torch.get_num_threads() == before


def test_compare_latency_times_each_model_equally(cnn, resnet):
    out = compare_latency({"a": cnn, "b": resnet}, (1, 16, 16), batch_size=2, rounds=3, runs_per_round=2)
    assert out["a"].runs == out["b"].runs == 6
    assert out["a"].batch_size == out["b"].batch_size == 2


def test_layer_times_cover_leaf_modules(cnn):
    times = layer_times(cnn, (1, 16, 16), batch_size=2, runs=3, warmup=1)
    leaves = {n for n, m in cnn.named_modules() if next(m.children(), None) is None}
    assert set(times) == leaves
    assert all(math.isfinite(v) and v >= 0 for v in times.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())
