"""One registry style (analysis.registry.Registry) for criteria, runtimes, schedule methods and metrics: the
contract every registry keeps (each name builds, has a one-line description, unknown names are one line
listing the known ones, the CLI lists exactly the registry's names), and extension by one class plus one
registration (a toy criterion ranked and offered by the CLI; a third runtime measured through its own class,
not as an ONNX export)."""

from __future__ import annotations

import argparse
import json
from typing import ClassVar

import pytest
import torch

from analysis import WorkbenchError, load_data, load_model
from analysis.cli.main import build_parser, main
from analysis.importance import CRITERIA_REGISTRY, criterion_names, default_criteria, rank_channels
from analysis.importance.base import Criterion, WeightCriterion
from analysis.registry import Registry


def _registries() -> dict[str, Registry]:
    from analysis.compression.schedules import SCHEDULE_REGISTRY
    from analysis.metrics import METRICS
    from analysis.runtime.base import RUNTIMES

    return {
        "criterion": CRITERIA_REGISTRY,
        "runtime": RUNTIMES,
        "schedule": SCHEDULE_REGISTRY,
        "metric": METRICS,
    }


REGISTRIES = ("criterion", "runtime", "schedule", "metric")


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _help_of(command: str, option: str) -> str:
    action = next(a for a in _subcommand(command)._actions if option in a.option_strings)
    return str(action.help)


def _listed(help_text: str) -> list[str]:
    """The comma-separated names after the last ': ' of a help text (before any parenthesis)."""
    tail = help_text.rsplit(": ", 1)[-1].split(" (")[0]
    return [n.strip() for n in tail.split(",")]


@pytest.mark.parametrize("which", REGISTRIES)
def test_every_registered_name_builds_and_has_a_one_line_description(which):
    registry = _registries()[which]
    assert len(registry) >= 2
    for name in registry.names():
        entry = registry.get(name)
        built = entry() if which in ("criterion", "runtime") else entry
        assert built is not None
        if which == "criterion":
            assert isinstance(built, Criterion) and built.name == name
        if which == "runtime":
            assert built.name == name
        description = registry.describe(name)
        assert description and "\n" not in description, (name, description)


@pytest.mark.parametrize("which", REGISTRIES)
def test_unknown_names_are_one_line_listing_the_known_ones(which):
    registry = _registries()[which]
    with pytest.raises(WorkbenchError) as caught:
        registry.get("no-such-thing")
    message = str(caught.value)
    assert "\n" not in message and "'no-such-thing'" in message
    assert message.endswith(", ".join(registry.names()))
    assert registry.get(f"  {registry.names()[0].upper()} ") is registry.get(registry.names()[0])


def test_the_cli_lists_exactly_each_registrys_names():
    from analysis.compression.schedules import SCHEDULE_REGISTRY
    from analysis.metrics import METRICS
    from analysis.runtime.base import RUNTIMES

    assert _listed(_help_of("rank", "--criteria")) == list(criterion_names())
    assert _listed(_help_of("evaluate", "--runtime")) == list(RUNTIMES.names())
    assert _listed(_help_of("rank", "--runtime")) == list(RUNTIMES.names())
    metric_help = _help_of("evaluate", "--metric").split(": ", 1)[1].split(" or module:callable")[0]
    assert metric_help.split(", ") == ["auto", *METRICS.names()]
    assert list(SCHEDULE_REGISTRY.names()) == ["oneshot", "iterative", "agp", "slimming", "group-lasso"]


def test_registering_twice_under_one_name_is_refused():
    registry: Registry[type] = Registry("thing")
    registry.register("a", int)
    with pytest.raises(WorkbenchError, match="thing 'a' is already registered"):
        registry.register("A", float)


# --- a toy criterion: one class + one registration, nothing else edited -------------------------------


class MaxAbsImportance(WeightCriterion):
    """Largest |weight| of each output channel's filter (a toy criterion for the registry test)."""

    name: ClassVar[str] = "toy-max-abs"

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        return filters.abs().amax(dim=1)


@pytest.fixture
def toy_criterion():
    CRITERIA_REGISTRY.register(MaxAbsImportance)
    yield MaxAbsImportance.name
    CRITERIA_REGISTRY.unregister(MaxAbsImportance.name)


def _reference_max_abs(model: torch.nn.Module, layer: str) -> list[float]:
    weight = model.get_submodule(layer).weight.detach()
    return [float(max(abs(v) for v in weight[c].flatten().tolist())) for c in range(weight.shape[0])]


def test_a_toy_criterion_is_ranked_with_no_other_edit(toy_criterion):
    model, data = load_model("zoo:digits-mlp"), load_data("digits").subset(16)
    assert toy_criterion in criterion_names() and toy_criterion in default_criteria()
    result = rank_channels(model, data, max_samples=16, oracle=False)
    assert result.criteria[-1] == toy_criterion
    for layer, per_criterion in result.layers.items():
        assert per_criterion[toy_criterion] == pytest.approx(_reference_max_abs(model, layer), rel=1e-6)
    assert set(result.topk_overlap[toy_criterion]) == set(result.criteria)


def test_a_toy_criterion_is_offered_by_the_rank_command(toy_criterion, tmp_path):
    assert toy_criterion in _listed(_help_of("rank", "--criteria"))
    out = tmp_path / "rank.json"
    args = ["rank", "--model", "zoo:digits-mlp", "--criteria", f"l1,{toy_criterion}", "--no-oracle"]
    code = main([*args, "--max-samples", "16", "--no-record", "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["criteria"] == ["l1", toy_criterion]
    model = load_model("zoo:digits-mlp")
    for layer, per_criterion in payload["layers"].items():
        assert per_criterion[toy_criterion] == pytest.approx(_reference_max_abs(model, layer), rel=1e-6)


# --- a third runtime: measured through its own class, never as an ONNX export ---------------------------


class _FakePrepared:
    """Runs the module itself; labelled as the fake runtime so the results show who ran them."""

    runtime, version, provider, kind = "fake-rt", "0.1", "CPU", "real"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def run(self, *args, **kwargs):
        with torch.inference_mode():
            return self.model(*args, **kwargs)

    def as_module(self) -> torch.nn.Module:
        return self.model


@pytest.fixture
def fake_runtime():
    from analysis.runtime.base import RUNTIMES
    from analysis.runtime.types import Runtime

    calls: list[str] = []

    class FakeRuntime(Runtime):
        """A toy third runtime (runs the module itself) for the registry test."""

        name = "fake-rt"
        version = "0.1"
        provider = "CPU"

        def prepare(self, model, example_input, threads=None):
            calls.append("prepare")
            return _FakePrepared(model)

    RUNTIMES.register(FakeRuntime)
    yield calls
    RUNTIMES.unregister("fake-rt")


def test_a_third_runtime_is_measured_through_its_own_class(fake_runtime, monkeypatch):
    from analysis import compress
    from analysis.runtime import int8, onnx

    def no_onnx(*args, **kwargs):
        raise AssertionError("the fake runtime was sent through ONNX")

    monkeypatch.setattr(onnx, "export_onnx", no_onnx)
    monkeypatch.setattr(int8, "prepare_int8", no_onnx)
    model, data = load_model("zoo:digits-mlp"), load_data("digits").subset(32)
    plan = {"layers": {"net.1": {"prune": 0.5}, "net.3": {"bits": 4}}}
    result = compress(model, plan, data, runtimes=("fake-rt",), latency_rounds=2, runs_per_round=2, warmup=1)
    assert fake_runtime == ["prepare", "prepare"]  # before and after, by the fake class
    payload = result.to_dict()
    assert set(payload["runtimes"]) >= {"fake-rt"}
    after = payload["runtimes"]["fake-rt"]["after"]
    assert after["runtime"] == "fake-rt" and after["runtime_version"] == "0.1"
    assert after["latency_kind"] == "simulated"  # net.3 at 4 bits runs as float on its grid
    # Its score is its own evaluation: the module it ran is the compressed model, so it equals eager's.
    assert after["accuracy"] == pytest.approx(result.after.accuracy)


def test_a_toy_activation_criterion_shares_the_one_calibration_pass(monkeypatch):
    """A criterion that declares `needs` gets them from the pass rank_channels runs once for all criteria."""
    from analysis.importance import rankings
    from analysis.importance.base import ActivationCriterion

    class ZeroCount(ActivationCriterion):
        """Exact zeros per channel after norm and activation, over the calibration samples (a toy)."""

        name: ClassVar[str] = "toy-zero-count"
        needs: ClassVar[tuple[str, ...]] = ("zeros",)

        def from_statistics(self, statistics, samples):
            return statistics["zeros"]

    passes = []
    real = rankings.calibrate
    monkeypatch.setattr(rankings, "calibrate", lambda *a, **k: passes.append(k) or real(*a, **k))
    CRITERIA_REGISTRY.register(ZeroCount)
    try:
        model, data = load_model("zoo:digits-mlp"), load_data("digits").subset(16)
        result = rank_channels(model, data, ["apoz", "toy-zero-count"], max_samples=16, oracle=False)
    finally:
        CRITERIA_REGISTRY.unregister("toy-zero-count")
    assert len(passes) == 1
    # Reference: a plain forward with hooks after each ReLU, counting exact zeros per output unit.
    layers = {"net.1": "net.2", "net.3": "net.4"}
    counts: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(act).register_forward_hook(
            lambda m, i, out, name=name: counts.__setitem__(name, (out == 0).sum(0).double())
        )
        for name, act in layers.items()
    ]
    with torch.no_grad():
        model(data.x_train[:16])
    for h in hooks:
        h.remove()
    for name in layers:
        assert result.layers[name]["toy-zero-count"] == pytest.approx(counts[name].tolist())
        assert result.layers[name]["apoz"] == pytest.approx((counts[name] / 16).tolist(), abs=1e-6)
