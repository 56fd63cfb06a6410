"""CompressionPlan: docs/contract.md section 4 format, JSON round trip, key-by-key overrides, validation."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from torch import nn

from analysis.compression.plan import CompressionPlan, LayerSettings, load_plan
from analysis.errors import WorkbenchError

CONTRACT_EXAMPLE = {
    "default": {"prune": 0.0, "criterion": "l1", "structured": True, "bits": 32},
    "layers": {"features.3": {"prune": 0.5}, "classifier.2": {"prune": 0, "bits": 8}},
    "finetune": {"epochs": 0, "distill": False},
}


def test_contract_example_round_trips_through_json():
    plan = CompressionPlan.from_dict(CONTRACT_EXAMPLE)
    text = json.dumps(plan.to_dict())
    again = CompressionPlan.from_dict(json.loads(text))
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    out = plan.to_dict()
    assert out["default"] == CONTRACT_EXAMPLE["default"]
    assert out["layers"] == {"features.3": {"prune": 0.5}, "classifier.2": {"prune": 0.0, "bits": 8}}
    assert out["finetune"]["epochs"] == 0 and out["finetune"]["distill"] is False
    assert hash(again) == hash(plan)


def test_a_full_plan_round_trips_every_key():
    data = {
        "default": {"prune": 0.25, "criterion": "taylor", "structured": False, "bits": 6},
        "layers": {"a": {"criterion": "apoz", "structured": True}, "b": {"bits": 32}},
        "finetune": {"epochs": 3, "distill": True, "temperature": 2.5, "alpha": 0.9, "lr": 0.01},
    }
    plan = CompressionPlan.from_json(json.dumps(data))
    back = plan.to_dict()
    assert back["default"] == data["default"]
    assert back["layers"] == data["layers"]
    for key, value in data["finetune"].items():
        assert back["finetune"][key] == value
    assert CompressionPlan.from_dict(back) == plan


def test_layer_entries_override_the_default_key_by_key():
    plan = CompressionPlan.from_dict(
        {"default": {"prune": 0.3, "criterion": "l2", "bits": 8}, "layers": {"x": {"prune": 0.5}}}
    )
    assert plan.settings_for("x") == LayerSettings(prune=0.5, criterion="l2", structured=True, bits=8)
    assert plan.settings_for("y") == LayerSettings(prune=0.3, criterion="l2", structured=True, bits=8)
    assert plan.names("x", "prune") and not plan.names("x", "bits") and not plan.names("y")


def test_the_plan_owns_its_layers():
    layers = {"x": {"prune": 0.5}}
    plan = CompressionPlan(layers=layers)
    layers["x"]["prune"] = 0.9
    layers["z"] = {"prune": 0.1}
    assert plan.settings_for("x").prune == 0.5 and "z" not in plan.layers


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"layers": {"conv": {"prune": 1.0}}}, ["'conv'", "1.0", "[0, 1)"]),
        ({"layers": {"conv": {"prune": -0.1}}}, ["'conv'", "-0.1"]),
        ({"default": {"prune": 1.5}}, ["default", "1.5"]),
        ({"layers": {"fc": {"bits": 1}}}, ["'fc'", "bits 1", "2..16"]),
        ({"layers": {"fc": {"bits": 17}}}, ["'fc'", "17"]),
        ({"layers": {"fc": {"bits": 8.5}}}, ["'fc'", "8.5"]),
        ({"layers": {"fc": {"criterion": "magic"}}}, ["'fc'", "'magic'", "l1"]),
        ({"layers": {"fc": {"prnue": 0.5}}}, ["'fc'", "'prnue'"]),
        ({"layers": {"fc": {"structured": "yes"}}}, ["'fc'", "structured"]),
        ({"finetune": {"epochs": -1}}, ["epochs"]),
        ({"finetune": {"alpha": 2}}, ["alpha"]),
        ({"finetune": {"temperature": 0}}, ["temperature"]),
        ({"layer": {}}, ["'layer'"]),
    ],
)
def test_bad_values_raise_a_workbench_error_naming_them(data, words):
    with pytest.raises(WorkbenchError) as info:
        CompressionPlan.from_dict(data)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bits_32_means_untouched_and_16_is_allowed():
    plan = CompressionPlan.from_dict({"layers": {"a": {"bits": 32}, "b": {"bits": 16}, "c": {"bits": 2}}})
    assert not plan.settings_for("a").quantizes
    assert plan.settings_for("b").bits == 16 and plan.settings_for("c").bits == 2


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))


def test_unknown_or_unprunable_layers_are_named_when_checked_against_the_model():
    CompressionPlan.from_dict({"layers": {"0": {"prune": 0.5}, "4": {"bits": 8}}}).check_layers(_small())
    with pytest.raises(WorkbenchError, match="'features.99'"):
        CompressionPlan.from_dict({"layers": {"features.99": {"prune": 0.5}}}).check_layers(_small())
    with pytest.raises(WorkbenchError, match="'1'.*BatchNorm2d"):
        CompressionPlan.from_dict({"layers": {"1": {"prune": 0.5}}}).check_layers(_small())


def test_load_plan_reads_a_file_and_names_a_missing_or_broken_one(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(CONTRACT_EXAMPLE))
    assert load_plan(path) == CompressionPlan.from_dict(CONTRACT_EXAMPLE)
    with pytest.raises(WorkbenchError, match="not found"):
        load_plan(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(WorkbenchError, match="plan.json.*JSON"):
        load_plan(path)


def test_uniform_and_helpers_build_valid_plans():
    plan = CompressionPlan.uniform(0.4, bits=8, finetune={"epochs": 2})
    assert plan.default.prune == 0.4 and plan.default.bits == 8 and plan.finetune.epochs == 2
    more = plan.with_layers({"x": {"prune": 0.1}}).with_finetune(distill=True)
    assert more.settings_for("x").prune == 0.1 and more.finetune.distill and more.finetune.epochs == 2
    assert plan.layers == {}  # the original is unchanged


# Suggested plans -------------------------------------------------------------------------------------------

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _fake_sensitivity(drops: dict[str, list[float]], baseline: float = 0.99) -> dict:
    """A structured sweep in CONTRACT form, with the accuracy drop at each ratio given per group."""
    return {
        "kind": "structured",
        "baseline": {"accuracy": baseline, "loss": 0.05},
        "seconds": 0.0,
        "layers": {
            name: {
                "ratios": RATIOS,
                "accuracy": [baseline - d for d in curve],
                "loss": [0.05 + d for d in curve],
                "members": [name],
            }
            for name, curve in drops.items()
        },
    }


FREE = [0.0] * 9
FRAGILE = [0.2 + 0.05 * i for i in range(9)]


def test_budget_parsing_names_bad_input():
    from analysis.compression.suggest import Budget

    assert Budget.parse("macs=0.5") == Budget("macs", 0.5)
    assert Budget.parse("accuracy=0.01") == Budget("drop", 0.01)
    for bad in ["macs", "flops=0.5", "macs=abc", "macs=1.5", "latency=0", "drop=-0.1"]:
        with pytest.raises(WorkbenchError):
            Budget.parse(bad)


def test_suggest_prunes_the_robust_groups_and_meets_the_mac_budget_exactly(cnn, digits):
    from analysis.compression.suggest import suggest
    from analysis.cost import summarize
    from analysis.transforms.pruning import prune_structured

    sens = _fake_sensitivity(
        {
            "features.0": FRAGILE,
            "features.3": FRAGILE,
            "features.7": FREE,
            "features.10": FREE,
            "classifier.0": FRAGILE,
        }
    )
    result = suggest(sens, "macs=0.5", model=cnn, data=digits)
    assert set(result.ratios) <= {"features.7", "features.10"} and result.ratios
    assert result.predicted_drop == 0.0 and result.met
    pruned = __import__("copy").deepcopy(cnn)
    prune_structured(pruned, result.ratios, digits.input_shape)
    fraction = (
        summarize(pruned, digits.input_shape).total_macs / summarize(cnn, digits.input_shape).total_macs
    )
    assert fraction <= 0.5 and fraction == pytest.approx(result.mac_fraction)
    plan = result.plan
    assert plan.settings_for("features.3").prune == 0.0
    assert all(plan.settings_for(name).prune == r for name, r in result.ratios.items())


def test_suggest_respects_an_accuracy_drop_budget(cnn, digits):
    from analysis.compression.suggest import suggest

    gentle = [0.001 * (i + 1) for i in range(9)]  # 0.1 point per step of 0.1
    sens = _fake_sensitivity({"features.3": gentle, "features.7": gentle, "features.10": FRAGILE})
    result = suggest(sens, "drop=0.005", model=cnn, input_shape=digits.input_shape)
    assert result.predicted_drop <= 0.005 + 1e-12
    assert "features.10" not in result.ratios
    assert sum(round(r * 10) for r in result.ratios.values()) == 5  # five 0.1 steps, each 0.1 point
    assert result.mac_fraction < 1.0


def test_uniform_plan_is_the_smallest_ratio_meeting_the_macs(cnn, digits):
    from analysis.compression.suggest import uniform_plan
    from analysis.cost import summarize
    from analysis.transforms.groups import find_groups
    from analysis.transforms.pruning import prune_structured

    plan, ratio = uniform_plan(cnn, digits.input_shape, 0.5)
    assert plan.default.prune == ratio and plan.default.structured
    base = summarize(cnn, digits.input_shape).total_macs
    groups = [g.name for g in find_groups(cnn, digits.input_shape)]

    def fraction(r: float) -> float:
        pruned = __import__("copy").deepcopy(cnn)
        prune_structured(pruned, dict.fromkeys(groups, r), digits.input_shape)
        return summarize(pruned, digits.input_shape).total_macs / base

    assert fraction(ratio) <= 0.5 < fraction(round(ratio - 0.01, 3))


def test_plan_suggest_cli_writes_a_plan_that_compress_loads(tmp_path):

    sens = tmp_path / "sens.json"
    sens.write_text(
        json.dumps(_fake_sensitivity({"features.7": FREE, "features.10": FREE, "features.3": FRAGILE}))
    )
    out = tmp_path / "plan.json"
    run = run_cli("plan", "suggest", "--budget", "macs=0.5", "--sensitivity", str(sens), "--epochs", "2",
                  "--distill", "--json", str(out), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    plan = load_plan(out)
    assert plan.finetune.epochs == 2 and plan.finetune.distill
    assert set(plan.layers) <= {"features.7", "features.10"} and plan.layers
    about = json.loads(out.read_text())["about"]
    assert about["budget"] == "macs=0.5" and about["mac_fraction"] <= 0.5
