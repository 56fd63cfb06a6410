"""One wording per input error: the plan, the sweeps, pruning and the list reader the CLI and pages use
all say the same thing about the same bad value (after naming where it came from)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis import CompressionPlan, WorkbenchError, load_data, sensitivity_sweep
from analysis.transforms import prune_structured, prune_unstructured
from analysis.validate import bit_widths, bits, parse_values, ratio, ratios


def _message(call) -> str:
    with pytest.raises(WorkbenchError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    return text


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 10)).eval()


def test_a_bad_ratio_reads_the_same_everywhere():
    data = load_data("digits").subset(32)
    expected = "ratio 1.5 is outside [0, 1): a ratio is the fraction removed, e.g. 0.5"
    places = {
        "plan": lambda: CompressionPlan.from_dict({"layers": {"1": {"prune": 1.5}}}),
        "sweep": lambda: sensitivity_sweep(_model(), data, kind="unstructured", ratios=[1.5]),
        "structured": lambda: prune_structured(_model(), {"1": 1.5}, (1, 16, 16)),
        "unstructured": lambda: prune_unstructured(_model(), {"1": 1.5}),
        "validate": lambda: ratio(1.5),
    }
    messages = {name: _message(call) for name, call in places.items()}
    assert all(m.endswith(expected) for m in messages.values()), messages
    assert messages["plan"].startswith("layer '1'") and messages["structured"].startswith("group '1'")


def test_a_bad_bit_width_reads_the_same_in_the_plan_and_the_sweep():
    data = load_data("digits").subset(32)
    plan = _message(lambda: CompressionPlan.from_dict({"layers": {"1": {"bits": 1}}}))
    sweep = _message(lambda: sensitivity_sweep(_model(), data, kind="quant", bits=[1]))
    assert "bit width 1 is outside 2..16: choose a whole number from 2 to 16" in plan
    assert sweep == "bit width 1 is outside 2..16: choose a whole number from 2 to 16"
    assert plan.endswith("or 32 to leave the weights as they are")  # only a plan may leave a layer alone


def test_lists_read_from_commas_and_spaces():
    assert parse_values("0.1, 0.2 0.5") == [0.1, 0.2, 0.5]
    assert parse_values("8 4,2", int) == [8, 4, 2]
    assert parse_values("") == []
    assert "'x' is not a number" in _message(lambda: parse_values("4,x", int, "--bits"))
    assert _message(lambda: parse_values(" , ", float, "--ratios", allow_empty=False)).startswith(
        "--ratios is empty"
    )


def test_sets_of_values_are_sorted_unique_and_non_empty():
    assert ratios([0.5, 0.1, 0.5]) == (0.1, 0.5)
    assert bit_widths([4, 8, 4]) == (8, 4)
    assert bits(32, untouched=True) == 32
    for call in (
        lambda: ratios([]),
        lambda: bit_widths([]),
        lambda: bits(32),
        lambda: bits(4.5),
        lambda: ratio(True),
    ):
        _message(call)
