"""Fuzzing the artifact loaders (issue 20): random `.pruned.safetensors` metadata and randomly edited `.pt2`
archives either load or give one line, and never run the code they carry (a marker file stays absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from artifact_payloads import Small, edit_json, marker_module, payloads, rewrite, write_pruned
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import WorkbenchError, load_model
from analysis.model.pruned import PRUNED_FORMAT
from analysis.runtime.artifacts import save_artifact


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_artifact(Small().eval(), tmp_path_factory.mktemp("pt2") / "good.pt2")


@pytest.fixture(scope="module")
def mlp_state():
    return load_model("zoo:digits-mlp").state_dict()


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_MODULES = st.sampled_from(["", "net", "net.1", "net.3", "net.5", "net.1.weight", "x"]) | st.text(max_size=6)
_KEYS = st.sampled_from(["in_features", "out_features", "training", "weight", "__class__", "bias"]) | st.text(
    max_size=6
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.sampled_from(
        ["zoo:digits-mlp", "SNEAKY", "sneaky:build", "os:system", "x.pt2", "torchvision:../x", ""]
    )
    | st.text(max_size=12),
    attributes=st.dictionaries(_MODULES, st.dictionaries(_KEYS, _VALUES, max_size=3), max_size=3) | _VALUES,
    drop=st.booleans(),
)
def test_fuzzed_pruned_metadata_loads_or_says_one_line(
    tmp_path, mlp_state, monkeypatch, spec, attributes, drop
):
    marker = tmp_path / "ran"
    source = marker_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = f"{source}:build" if spec == "SNEAKY" else spec
    state = dict(mlp_state)
    if drop:
        state.pop(next(iter(state)))
    meta = {"format": PRUNED_FORMAT, "spec": spec, "attributes": json.dumps(attributes)}
    path = write_pruned(tmp_path / "f.pruned.safetensors", state, meta)
    try:
        model = load_model(str(path))
    except WorkbenchError as exc:
        assert "\n" not in str(exc)
    else:
        assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert not marker.exists()


_TARGETS = st.sampled_from(
    [
        "torch.os.system",
        "builtins.eval",
        "torch.ops.aten.relu.default",
        "_operator.getitem",
        "torch.load",
        "#x",
    ]
) | st.text(max_size=20)
_EXPRESSIONS = st.sampled_from(
    ["__import__('os')", "Symbol('s0')", "s0*2", "Pow(Integer(9), Integer(99999))", "9**9**9", "exec", "s0.x"]
) | st.text(alphabet="s0123()_'+*/.,=abcimport ", max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.none() | _TARGETS,
    expression=st.none() | _EXPRESSIONS,
    guards=st.lists(st.text(max_size=10), max_size=2),
    pickled=st.booleans(),
    member=st.none() | st.text(alphabet="abc/._", min_size=1, max_size=12),
)
def test_fuzzed_pt2_archives_load_or_say_one_line(
    good_pt2, tmp_path, target, expression, guards, pickled, member
):
    marker = tmp_path / "ran"

    def edit(files, root):
        def change(d):
            if target is not None:
                d["graph_module"]["graph"]["nodes"][0]["target"] = target
            if guards:
                d["guards_code"] = guards
            if expression is not None:
                d["range_constraints"] = {expression: {"min_val": 0, "max_val": None}}

        edit_json(files, f"{root}/models/model.json", change)
        if pickled:
            payloads(marker)["pickled weight"](files, root)
        if member is not None:
            files[f"{root}/{member}"] = b"x"

    path = rewrite(good_pt2, tmp_path / "z.pt2", edit)
    try:
        model = load_model(str(path))
    except WorkbenchError as exc:
        assert "\n" not in str(exc)
    else:
        model(torch.zeros(2, 4))
    assert not marker.exists()
