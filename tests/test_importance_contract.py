"""One contract over the whole registry of importance criteria: every criterion, on every kind of model,
returns one finite score per output channel for every prunable layer, the same numbers twice, and leaves
the model exactly as it found it (weights, buffers, mode, gradients, hooks)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import Untraceable
from importance_models import build, make_data
from torch import nn

from analysis import WorkbenchError, load_data, load_model
from analysis.importance import CRITERIA, Criterion, get_importance, prunable_layers


def _zoo(spec: str):
    return load_model(spec), load_data("digits").subset(24)


MODELS = {
    "zoo:digits-cnn": lambda: _zoo("zoo:digits-cnn"),
    "zoo:digits-resnet": lambda: _zoo("zoo:digits-resnet"),
    "zoo:digits-mobilenet": lambda: _zoo("zoo:digits-mobilenet"),
    "functional-relu+residual+depthwise": lambda: build("functional"),
    "tokens+attention": lambda: build("tokens"),
    "tabular-mlp": lambda: build("tabular"),
    "untraceable": lambda: (Untraceable().eval(), make_data((1, 6, 6))),
}

SAMPLES = 16


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_data(request):
    model, data = MODELS[request.param]()
    return request.param, model, data


def _snapshot(model: nn.Module) -> dict[str, object]:
    """Everything a criterion must not change, as bytes and flags."""
    return {
        "state": {
            k: (v.dtype, tuple(v.shape), v.detach().numpy().tobytes()) for k, v in model.state_dict().items()
        },
        "training": [m.training for m in model.modules()],
        "grads": [p.grad is None for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "param_ids": [id(p) for p in model.parameters()],
        "modules": [(name, type(m)) for name, m in model.named_modules()],
    }


def _hook_count(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {})) + len(getattr(m, "_state_dict_hooks", {}))
    return total


def test_registry_lists_every_criterion_once():
    assert CRITERIA == ("l1", "l2", "fpgm", "bn-scale", "apoz", "mean-activation", "taylor", "oracle")
    for name in CRITERIA:
        criterion = get_importance(name)
        assert isinstance(criterion, Criterion)
        assert criterion.name == name
        assert criterion.higher_is_important is (name != "apoz")
        assert criterion.data_driven is (name in {"apoz", "mean-activation", "taylor", "oracle"})


def test_unknown_criterion_names_the_valid_ones():
    with pytest.raises(WorkbenchError, match="l1, l2, fpgm, bn-scale, apoz, mean-activation, taylor, oracle"):
        get_importance("magnitude")


@pytest.mark.parametrize("name", [c for c in CRITERIA if get_importance(c).data_driven])
def test_data_driven_criteria_ask_for_data(name):
    model, _ = build("tabular")
    with pytest.raises(WorkbenchError, match="data-driven"):
        get_importance(name)(model, None)


@pytest.mark.parametrize("name", CRITERIA)
def test_criterion_contract(name, model_and_data):
    label, model, data = model_and_data
    model.train(label == "tabular-mlp")  # one model handed over in train mode: it must come back that way
    before, hooks_before = _snapshot(model), _hook_count(model)
    criterion = get_importance(name)
    layers = None
    if name == "oracle" and label.startswith("zoo:"):
        # One evaluation per channel: on the zoo models check only the classifier (a cheap suffix); the
        # small models here cover every layer, and test_importance.py checks the numbers.
        layers = list(prunable_layers(model))[-1:]
    first = criterion(model, data, layers, max_samples=SAMPLES)
    second = criterion(model, data, layers, max_samples=SAMPLES)
    expected = prunable_layers(model, layers)

    assert list(first) == list(expected), f"{name} on {label}: wrong layers"
    for layer, module in expected.items():
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        scores = first[layer]
        assert scores.shape == (channels,), f"{name} {label} {layer}: {tuple(scores.shape)} != ({channels},)"
        assert scores.dtype.is_floating_point
        if name == "bn-scale" and torch.isnan(scores).any():
            # Only layers with no following per-channel norm may be NaN, and then every channel is.
            assert torch.isnan(scores).all()
        else:
            assert torch.isfinite(scores).all(), f"{name} {label} {layer}: non-finite scores"
        if name == "apoz":
            assert ((scores >= 0) & (scores <= 1)).all()
        if name in {"l1", "l2", "fpgm", "taylor", "oracle"}:
            assert (scores >= 0).all()
        torch.testing.assert_close(scores, second[layer], rtol=0, atol=0, equal_nan=True)  # repeatable

    assert _snapshot(model) == before, f"{name} changed the {label} model"
    assert _hook_count(model) == hooks_before, f"{name} left hooks on the {label} model"
    model.eval()


@pytest.mark.parametrize("name", CRITERIA)
def test_criterion_honours_layer_subset(name):
    model, data = build("functional")
    scores = get_importance(name)(model, data, ["fc1", "dw"], max_samples=SAMPLES)
    assert list(scores) == ["dw", "fc1"]  # module order, only those asked for
    assert [len(v) for v in scores.values()] == [6, 10]


def test_layer_subset_is_checked():
    model, data = build("functional")
    with pytest.raises(WorkbenchError, match="no layer named 'nope'"):
        get_importance("l1")(model, data, ["nope"])
    with pytest.raises(WorkbenchError, match="not a prunable layer"):
        get_importance("taylor")(model, data, ["bn_a"])


def test_bn_scale_nan_only_where_no_norm_follows():
    model, data = build("functional")
    scores = get_importance("bn-scale")(model, data)
    nan_layers = [n for n, s in scores.items() if math.isnan(float(s[0]))]
    assert nan_layers == ["conv_c", "fc1", "fc2"]
