"""Metrics (analysis.metrics): the registry's contract, and each metric against a plain computation by hand."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.metrics import (
    HIGHER,
    LOWER,
    METRIC_CHOICES,
    METRICS,
    PSNR_CAP_DB,
    MetricInfo,
    auto_metric,
    get_metric,
    scoring,
)
from tests.reach_models import build_dict_output, build_map_output, build_tuple_output


def _batches(n: int = 12, classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, classes, generator=g)
    out = ref + 0.8 * torch.randn(n, classes, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return out, ref, labels


def _feed(metric, out, ref, labels, split: int = 5) -> float:
    """Two batches (split at `split`), as evaluation feeds them."""
    for sl in (slice(0, split), slice(split, None)):
        metric.update({"output": out[sl]}, labels[sl], {"output": ref[sl]})
    return metric.value()


@pytest.mark.parametrize("name", list(METRICS))
def test_registry_contract(name):
    cls = METRICS[name]
    info = cls.info()
    assert cls.name == name == info.name and info.direction in (HIGHER, LOWER)
    out, ref, labels = _batches()
    value = _feed(cls(), out, ref, labels)
    assert math.isfinite(value)
    same = _feed(cls(), ref, ref, labels)  # the original against itself scores its best
    best = {"agreement": 1.0, "kl": 0.0, "mse": 0.0, "cosine": 1.0, "psnr": PSNR_CAP_DB}
    if name in best:
        assert same == pytest.approx(best[name], abs=1e-6)
        assert info.drop(same, value) >= 0  # worse than the original, measured in the metric's direction
    assert MetricInfo.from_dict(info.to_dict(value)) == info
    assert MetricInfo.from_dict(None) == METRICS["accuracy"].info()  # results made before metrics
    assert get_metric(name.upper()) is cls


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(WorkbenchError) as exc:
        get_metric("f1")
    text = str(exc.value)
    assert "\n" not in text and all(name in text for name in METRIC_CHOICES)


def test_accuracy_and_top5_by_hand():
    out, ref, labels = _batches(n=20, classes=7)
    correct = sum(int(out[i].argmax()) == int(labels[i]) for i in range(20))
    in_top5 = sum(int(labels[i]) in sorted(range(7), key=lambda c: -float(out[i, c]))[:5] for i in range(20))
    assert _feed(METRICS["accuracy"](), out, ref, labels) == correct / 20
    assert _feed(METRICS["top5"](), out, ref, labels) == in_top5 / 20


def test_agreement_kl_cosine_by_hand():
    out, ref, labels = _batches(n=10, classes=4)
    agree = sum(int(out[i].argmax()) == int(ref[i].argmax()) for i in range(10)) / 10
    assert _feed(METRICS["agreement"](), out, ref, labels) == agree
    kl = 0.0
    for i in range(10):
        p = [math.exp(v) for v in ref[i].tolist()]
        q = [math.exp(v) for v in out[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert _feed(METRICS["kl"](), out, ref, labels) == pytest.approx(kl / 10, rel=1e-5)
    cos = 0.0
    for i in range(10):
        a, b = out[i].double(), ref[i].double()
        cos += float(a @ b / (a.norm() * b.norm()))
    assert _feed(METRICS["cosine"](), out, ref, labels) == pytest.approx(cos / 10, rel=1e-5)


def test_psnr_and_mse_by_hand_on_a_known_pair():
    """PSNR = 10 log10(R^2 / MSE), R the reference's range over the split, MSE over every element."""
    ref = torch.linspace(0.0, 2.0, 2 * 3 * 4 * 4).reshape(2 * 3, 1, 4, 4)  # range exactly 2
    out = ref.clone()
    out[0, 0, 0, 0] += 0.5  # one element off by 0.5, one by -0.25
    out[4, 0, 1, 2] -= 0.25
    mse = (0.5**2 + 0.25**2) / ref.numel()
    want = 10 * math.log10(2.0**2 / mse)
    got = METRICS["psnr"]()
    for sl in (slice(0, 2), slice(2, None)):
        got.update({"output": out[sl]}, None, {"output": ref[sl]})
    assert got.value() == pytest.approx(want, rel=1e-6)
    mse_metric = METRICS["mse"]()
    mse_metric.update({"output": out}, None, {"output": ref})
    assert mse_metric.value() == pytest.approx(mse, rel=1e-6)
    assert MetricInfo("mse", LOWER).drop(0.0, 0.3) == 0.3  # lower is better: worse is larger


def test_several_outputs_are_scored_each_then_averaged():
    out, ref, labels = _batches(n=8, classes=3)
    second_out, second_ref = out * 2, ref * 2 + 0.1
    both = METRICS["mse"]()
    both.update({"a": out, "b": second_out}, None, {"a": ref, "b": second_ref})
    one, two = ((out - ref) ** 2).mean(), ((second_out - second_ref) ** 2).mean()
    assert both.value() == pytest.approx(float((one + two) / 2), rel=1e-6)


def test_auto_picks_by_labels_and_outputs():
    scores, image = torch.randn(2, 10), torch.randn(2, 1, 4, 4)
    assert auto_metric({"output": scores}, has_labels=True) == "accuracy"
    assert auto_metric({"output": scores}, has_labels=False) == "agreement"
    assert auto_metric({"output": image}, has_labels=True) == "psnr"
    assert auto_metric({"0": scores, "1": image}, has_labels=True) == "psnr"
    assert auto_metric({"a": scores, "b": scores}, has_labels=True) == "agreement"


def _unlabelled(x) -> Dataset:
    return Dataset("random", x, None, x, None, 0, False)


def test_evaluate_psnr_of_a_changed_model_against_the_original():
    original = build_map_output()
    data = _unlabelled(torch.randn(10, 1, 12, 12, generator=torch.Generator().manual_seed(1)))
    changed = build_map_output()
    with torch.no_grad():
        changed.net[0].weight[0] = 0  # one filter of the first conv zeroed
    score = scoring("auto", original, data)
    assert score.name == "psnr" and not score.uses_labels
    result = evaluate(changed, data, batch_size=3, metric=score)
    with torch.no_grad():
        want_ref, got = original(data.x), changed(data.x)
    mse = float(((got - want_ref) ** 2).mean())
    peak = float(want_ref.max() - want_ref.min())
    assert result.accuracy == pytest.approx(10 * math.log10(peak**2 / mse), rel=1e-5)
    assert result.to_dict()["psnr"] == result.accuracy and result.to_dict()["metric"]["name"] == "psnr"
    assert evaluate(original, data).accuracy == PSNR_CAP_DB  # the original against itself


def test_accuracy_json_keeps_its_keys():
    scores = torch.randn(6, 3)
    model = torch.nn.Linear(3, 3)
    data = Dataset("t", scores, torch.tensor([0, 1, 2, 0, 1, 2]), scores, torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    payload = evaluate(model, data).to_dict()
    assert {"accuracy", "loss", "samples"} <= set(payload)
    assert payload["metric"] == {"name": "accuracy", "direction": "higher", "value": payload["accuracy"]}


def test_labels_needed_and_outputs_that_do_not_fit():
    data = _unlabelled(torch.randn(4, 20))
    with pytest.raises(WorkbenchError, match="needs labels"):
        scoring("accuracy", build_dict_output(), data)
    x = torch.randn(4, 3, 8, 8)
    labelled = Dataset("t", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 5)
    with pytest.raises(WorkbenchError, match=r"\(N, classes\)"):
        scoring("accuracy", build_tuple_output(), labelled)  # two outputs: labels fit none for sure


def test_custom_callable_metric(monkeypatch):
    module = types.ModuleType("my_metrics_for_test")

    def max_error(output, reference, labels):
        return (output - reference).abs().flatten(1).max(dim=1).values

    max_error.direction = "lower"
    module.max_error = max_error
    monkeypatch.setitem(sys.modules, "my_metrics_for_test", module)
    cls = get_metric("my_metrics_for_test:max_error")
    assert cls.info().direction == LOWER
    out, ref, labels = _batches(n=6)
    want = float((out - ref).abs().max(dim=1).values.mean())
    assert _feed(cls(), out, ref, labels) == pytest.approx(want, rel=1e-6)
    with pytest.raises(WorkbenchError):
        get_metric("os:system")  # standard-library callables are refused, as for model specs
