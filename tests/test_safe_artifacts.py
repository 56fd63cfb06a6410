"""Artifacts that cannot run code (issue 20): a `.pt2` carrying a pickle, guard code or an `eval`-able shape
expression is refused without `--trust-pickle`; a `.pruned.safetensors` never builds code its metadata
names, and its attributes are checked; specs by path get the standard-library and workbench refusals.

Each malicious file is first shown to run its payload through `torch.export.load` itself (the marker file
appears), so a refusal here is a real one; then the workbench loads it and the marker stays absent."""

from __future__ import annotations

import contextlib
import json
import os
import sysconfig
from pathlib import Path

import pytest
import torch
from artifact_payloads import Small, edit_json, marker_module, payloads, rewrite, write_pruned
from safetensors.torch import save_file
from torch import nn

from analysis import WorkbenchError, load_model
from analysis.model.pruned import PRUNED_FORMAT
from analysis.runtime.artifacts import save_artifact
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    torch.manual_seed(0)
    return save_artifact(Small().eval(), path)


@pytest.mark.parametrize("payload", ["pickled weight", "sample inputs", "guard code", "expression"])
def test_pt2_payloads_run_in_torch_but_not_in_the_workbench(good_pt2, tmp_path, payload):
    marker = tmp_path / "ran"
    evil = rewrite(good_pt2, tmp_path / "evil.pt2", payloads(marker)[payload])
    with pytest.raises(WorkbenchError) as info:
        load_model(str(evil))
    assert not marker.exists()
    assert "--trust-pickle" in str(info.value) and "\n" not in str(info.value)
    result = run_cli("evaluate", "--model", str(evil), "--input-shape", "1,4", "--no-record")
    assert result.returncode == 2 and not marker.exists()
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    # The payload is live: torch itself runs it (this is what --trust-pickle means).
    with contextlib.suppress(Exception):  # some payloads break the load after they ran
        torch.export.load(str(evil)).module()(torch.zeros(2, 4))
    assert marker.exists()


def test_pt2_calling_a_python_function_is_refused(good_pt2, tmp_path):
    def edit(files, root):
        def change(d):
            node = d["graph_module"]["graph"]["nodes"][0]
            node["target"] = "torch.os.system"

        edit_json(files, f"{root}/models/model.json", change)

    evil = rewrite(good_pt2, tmp_path / "target.pt2", edit)
    with pytest.raises(WorkbenchError, match="torch.os.system"):
        load_model(str(evil))


@pytest.mark.parametrize("member", ["data/aotinductor/model/x.so", "version", "serialized_state_dict.pt"])
def test_pt2_with_code_or_legacy_members_is_refused(good_pt2, tmp_path, member):
    evil = rewrite(good_pt2, tmp_path / "m.pt2", lambda files, root: files.update({f"{root}/{member}": b"x"}))
    with pytest.raises(WorkbenchError, match="trust-pickle"):
        load_model(str(evil))


def test_pt2_in_the_older_flat_layout_is_refused(tmp_path):
    """torch.export.load reads a flat archive (a top-level `version`) through its pickle-based legacy path."""
    import zipfile

    path = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", "1")
        z.writestr("serialized_state_dict.pt", b"pickled")
    with pytest.raises(WorkbenchError, match="older or unknown archive layout.*trust-pickle"):
        load_model(str(path))


def test_plain_pt2_loads_with_and_without_trust(good_pt2):
    x = torch.randn(5, 4)
    torch.manual_seed(0)
    want = Small().eval()(x)
    for trust in (False, True):
        assert torch.allclose(load_model(str(good_pt2), trust_pickle=trust)(x), want, atol=1e-6)


# --- the pruned format ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_state():
    return load_model("zoo:digits-mlp").state_dict()


@pytest.mark.parametrize("kind", ["file", "module", "pt2", "stdlib"])
def test_pruned_metadata_never_chooses_code(tmp_path, mlp_state, monkeypatch, kind):
    marker = tmp_path / "ran"
    source = marker_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {
        "file": f"{source}:build",
        "module": "sneaky:build",
        "pt2": str(tmp_path / "x.pt2"),
        "stdlib": "os:getcwd",
    }[kind]
    path = write_pruned(
        tmp_path / "m.pruned.safetensors",
        mlp_state,
        {"format": PRUNED_FORMAT, "spec": spec, "attributes": "{}"},
    )
    with pytest.raises(WorkbenchError) as info:
        load_model(str(path))
    assert "--model" in str(info.value) and "--weights" in str(info.value)
    result = run_cli("evaluate", "--model", str(path), "--no-record", cwd=tmp_path)
    assert result.returncode == 2 and "--weights" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_pruned_file_of_a_py_spec_saves_and_reloads(tmp_path):
    """Issue 19 item 5: a file.py:build spec is imported once per process, so its pruned save matches the
    architecture; the operator names it again to load (`--model x.py:build --weights y`)."""
    source = tmp_path / "net.py"
    source.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n    input_shape = (6,)\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)\n"
        "    def forward(self, x):\n        return self.b(torch.relu(self.a(x)))\n"
        "def build():\n    torch.manual_seed(1)\n    return Net()\n"
    )
    spec = f"{source}:build"
    model = load_model(spec)
    assert type(load_model(spec)) is type(model)  # one import per process
    from analysis.transforms.pruning import prune_structured

    prune_structured(model, {"a": 0.5}, (6,))
    assert model.a.out_features == 4
    path = save_artifact(model, tmp_path / "net.pruned.safetensors", spec=spec)
    with pytest.raises(WorkbenchError, match="--weights"):
        load_model(str(path))
    loaded = load_model(spec, weights=str(path))
    x = torch.randn(7, 6)
    assert loaded.a.out_features == 4 and loaded.b.in_features == 4
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_operator_listed_architecture_loads_by_itself(tmp_path, monkeypatch):
    source = tmp_path / "listed.py"
    source.write_text(
        "import torch\ndef build():\n    torch.manual_seed(2)\n    return torch.nn.Linear(3, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("listed:build")
    path = save_artifact(model, tmp_path / "l.pruned.safetensors", spec="listed:build")
    with pytest.raises(WorkbenchError, match="WORKBENCH_ARCHITECTURES"):
        load_model(str(path))
    monkeypatch.setenv("WORKBENCH_ARCHITECTURES", "other:x, listed:build")
    x = torch.randn(4, 3)
    assert torch.equal(load_model(str(path))(x), model(x))


def _mlp_meta(attributes) -> dict:
    return {"format": PRUNED_FORMAT, "spec": "zoo:digits-mlp", "attributes": json.dumps(attributes)}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"net.1": {"out_features": -5}}, "at least 1"),
        ({"net.1": {"out_features": 10**12}}, "whole number"),
        ({"net.1": {"out_features": "128"}}, "whole number"),
        ({"net.1": {"out_features": True}}, "whole number"),
        ({"net.1": {"out_features": 64}}, "weights give 128"),
        ({"net.1": {"forward": 3}}, "not a plain attribute"),
        ({"nowhere": {"out_features": 3}}, "does not have"),
        ({"net.1": [1, 2]}, "attribute tables"),
    ],
)
def test_pruned_attributes_are_checked(tmp_path, mlp_state, attributes, message):
    model = load_model("zoo:digits-mlp")
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert "net.1" in names, names  # the attribute tables above name a real Linear
    path = write_pruned(tmp_path / "a.pruned.safetensors", mlp_state, _mlp_meta(attributes))
    with pytest.raises(WorkbenchError, match=message) as info:
        load_model(str(path))
    assert "\n" not in str(info.value)


def test_pruned_without_spec_or_format_is_one_line(tmp_path, mlp_state):
    path = write_pruned(tmp_path / "n.pruned.safetensors", mlp_state, {"format": PRUNED_FORMAT})
    with pytest.raises(WorkbenchError, match="names no architecture"):
        load_model(str(path))
    path = write_pruned(tmp_path / "p.pruned.safetensors", mlp_state, {"spec": "zoo:digits-mlp"})
    with pytest.raises(WorkbenchError, match="metadata"):
        load_model(str(path))


def test_int8_weights_are_not_cast_silently(tmp_path, mlp_state):
    state = dict(mlp_state)
    key = next(k for k in state if k.endswith("weight"))
    state[key] = state[key].round().to(torch.int8)
    plain = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(plain))
    with pytest.raises(WorkbenchError, match="int8.*dequantize"):
        load_model("zoo:digits-mlp", weights=str(plain))
    pruned = write_pruned(tmp_path / "q.pruned.safetensors", state, _mlp_meta({}))
    with pytest.raises(WorkbenchError, match="int8"):
        load_model(str(pruned))


# --- specs by path ---------------------------------------------------------------------------------------


def test_standard_library_and_workbench_files_are_refused_by_path():
    os_file = Path(os.__file__).resolve()
    assert os_file.is_relative_to(Path(sysconfig.get_paths()["stdlib"]).resolve())
    result = run_cli("evaluate", "--model", f"{os_file}:abort", "--no-record")
    assert result.returncode == 2 and "standard library" in result.stderr
    result = run_cli("evaluate", "--model", "analysis/zoo/train.py:main", "--no-record", cwd=ROOT)
    assert result.returncode == 2 and "workbench itself" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_callable_calling_os_exit_is_one_line(tmp_path):
    (tmp_path / "quits.py").write_text("import os\ndef build():\n    os._exit(0)\n")
    result = run_cli("summary", "--model", "quits.py:build", "--no-record", cwd=tmp_path)
    assert result.returncode == 2 and "tried to end the process" in result.stderr
    assert result.stdout == ""


def test_the_allow_list_of_architectures_a_file_may_name(monkeypatch):
    from analysis.model.pruned import allowed_architecture

    monkeypatch.setenv("WORKBENCH_ARCHITECTURES", "pkg.models:build")
    assert allowed_architecture("zoo:digits-cnn") and allowed_architecture("torchvision:resnet18")
    assert allowed_architecture("pkg.models:build")
    for spec in ("zoo:nope", "torchvision:../x", "torchvision:os.system", "pkg.models:other", "x.py:build"):
        assert not allowed_architecture(spec), spec


SAVE_PT2 = """
import sys, torch
from torch import nn
from analysis.runtime.artifacts import export_program, save_artifact
model = nn.Sequential(nn.Linear(4, 2)).eval()
model.input_shape = (4,)
if sys.argv[1] == "torch":
    torch.export.save(export_program(model, torch.zeros(2, 4)), sys.argv[2])
else:
    save_artifact(model, sys.argv[2])
"""


def test_saving_a_pt2_names_no_temp_file(tmp_path):
    """torch logs a warning naming any file that does not end in .pt2, such as a temp file renamed later."""
    import subprocess
    import sys

    def stderr(how: str, name: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", SAVE_PT2, how, str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    assert "ending in .pt2" in stderr("torch", "direct.tmp")  # the warning a temp name brings
    err = stderr("workbench", "saved.pt2")
    assert "ending in .pt2" not in err and ".tmp" not in err
    assert (tmp_path / "saved.pt2").stat().st_size > 0


def test_summary_of_an_onnx_model_counts_its_weights_and_says_macs_are_not_counted(tmp_path):
    model = load_model("zoo:digits-mlp")
    path = save_artifact(model, tmp_path / "mlp.onnx")
    result = run_cli("summary", "--model", str(path), "--no-record")
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["total"]["params"] == sum(p.numel() for p in model.parameters())  # torch's own count
    assert payload["total"]["macs"] is None and payload["crosscheck"]["agree_within_1pct"] is None
    assert any("ONNX" in note and "MACs" in note for note in payload["notes"])
