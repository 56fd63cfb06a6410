"""Property-based tests: arbitrary spec strings, shapes, value lists and plan JSON give a result or a
WorkbenchError with one line, never another exception."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.compression.plan import CompressionPlan, load_plan
from analysis.data import load_data
from analysis.errors import WorkbenchError
from analysis.model.specs import load_model, parse_input_shape
from analysis.validate import parse_values

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(exc: WorkbenchError) -> None:
    assert str(exc).strip() and "\n" not in str(exc)


def _floats_as_text(xs):
    return " ,".join(map(str, xs))


# Text that looks like specs: prefixes, separators, suffixes, path parts, odd characters.
spec_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(["zoo:", "torchvision:", "tensors:", "imagefolder:", "", "/", "../", "x:", "a.b:"]),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
        st.sampled_from(["", ".pt", ".pth", ".py", ".npz", ".safetensors", ":", "\0", ":x"]),
    ),
)


@FAST
@given(spec_text)
def test_model_specs_never_raise_anything_but_workbench_error(tmp_path_factory, text):
    os.chdir(tmp_path_factory.getbasetemp())  # no module of the repository can be imported by accident
    try:
        load_model(text)
    except WorkbenchError as exc:
        _one_line(exc)


@FAST
@given(spec_text)
def test_data_specs_never_raise_anything_but_workbench_error(tmp_path_factory, text):
    if text.strip() == "digits":
        return
    os.chdir(tmp_path_factory.getbasetemp())
    try:
        load_data(text)
    except WorkbenchError as exc:
        _one_line(exc)


@FAST
@given(
    st.one_of(
        st.text(max_size=30),
        st.lists(st.integers(-5, 10**12), max_size=6).map(lambda v: ",".join(map(str, v))),
    )
)
def test_input_shapes_parse_or_refuse(text):
    try:
        shape = parse_input_shape(text)
    except WorkbenchError as exc:
        _one_line(exc)
        return
    assert len(shape) >= 1 and all(isinstance(d, int) and d > 0 for d in shape)
    assert math.prod(shape) <= 2**31


@FAST
@given(
    st.one_of(
        st.text(max_size=30),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5).map(_floats_as_text),
    )
)
def test_value_lists_parse_or_refuse(text):
    for kind in (float, int):
        try:
            values = parse_values(text, kind)
        except WorkbenchError as exc:
            _one_line(exc)
            continue
        # int lists keep a non-whole number as a float so the range check can name it (e.g. bits 4.5)
        assert all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
plan_keys = st.sampled_from(["prune", "criterion", "structured", "bits", "epochs", "lr", "alpha", "x"])
plan_like = st.fixed_dictionaries(
    {},
    optional={
        "default": st.one_of(json_values, st.dictionaries(plan_keys, json_values, max_size=4)),
        "layers": st.one_of(
            json_values,
            st.dictionaries(
                st.text(max_size=5), st.dictionaries(plan_keys, json_values, max_size=3), max_size=2
            ),
        ),
        "finetune": st.one_of(
            json_values,
            st.dictionaries(
                st.sampled_from(["epochs", "batch_size", "seed", "lr", "alpha", "temperature", "distill"]),
                json_values,
                max_size=4,
            ),
        ),
    },
)


@FAST
@given(st.one_of(plan_like, json_values))
def test_plan_json_gives_a_plan_or_workbench_error(data):
    try:
        plan = CompressionPlan.from_dict(data)
    except WorkbenchError as exc:
        _one_line(exc)
        return
    # A plan that loads round-trips, and its numbers are finite and bounded.
    again = CompressionPlan.from_dict(json.loads(plan.to_json()))
    assert again == plan
    assert 0 <= plan.finetune.epochs <= 1000
    assert 0 <= plan.default.prune < 1


@pytest.mark.parametrize(
    "text",
    [
        '{"default": 0, "layers": 0, "finetune": 0}',
        '{"finetune": {"epochs": 1e12}}',
        '{"finetune": {"epochs": 1e400}}',
        '{"default": {"bits": NaN}}',
        '{"default": {"prune": Infinity}}',
        "[" * 100000,
        "[]",
        '"plan"',
    ],
)
def test_bad_plans_are_refused(tmp_path, text):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(WorkbenchError) as info:
        load_plan(path)
    _one_line(info.value)
