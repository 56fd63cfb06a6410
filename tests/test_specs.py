"""Every model and data spec kind of docs/contract.md sections 1-2, and every bad input, as one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from analysis import WorkbenchError, load_data, load_model
from analysis.model import parse_input_shape
from analysis.zoo import ZOO

MODULE_SOURCE = """
import torch
from torch import nn

def make():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))

def not_a_model():
    return {"weights": 1}
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(MODULE_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_load_in_eval_mode_with_shipped_weights(name):
    model = load_model(f"zoo:{name}")
    assert not model.training
    fresh = ZOO[name]()
    # The shipped weights are trained, not the constructor's random init.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True)
    )


def test_zoo_default_model_is_accurate(cnn, digits):
    from analysis import evaluate

    assert evaluate(cnn, digits).accuracy >= 0.95
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) >= 4 and len(norms) >= 4


def test_unknown_zoo_name_lists_choices():
    with pytest.raises(WorkbenchError) as exc:
        load_model("zoo:nope")
    assert "digits-cnn" in one_line(exc)


def test_module_callable_spec_and_weights_round_trip(user_module):
    model = load_model("usermodels:make")
    assert isinstance(model, nn.Sequential) and not model.training
    state = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    save_file(state, str(user_module / "w.safetensors"))
    torch.save(state, user_module / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        loaded = load_model("usermodels:make", weights=weights)
        assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_module_spec_given_as_a_file_path(user_module):
    model = load_model(f"{user_module / 'usermodels.py'}:make")
    assert isinstance(model, nn.Module)


def test_callable_returning_something_else_is_refused(user_module):
    with pytest.raises(WorkbenchError) as exc:
        load_model("usermodels:not_a_model")
    assert "not a torch.nn.Module" in one_line(exc)


def test_missing_module_and_missing_callable(user_module):
    with pytest.raises(WorkbenchError) as exc:
        load_model("no_such_module_xyz:make")
    assert "PYTHONPATH" in one_line(exc)
    with pytest.raises(WorkbenchError) as exc:
        load_model("usermodels:nothing_here")
    assert "nothing_here" in one_line(exc)


def test_weights_that_do_not_fit_say_what_differs(user_module):
    bad = {"1.weight": torch.zeros(5, 8), "1.bias": torch.zeros(4)}
    save_file(bad, str(user_module / "bad.safetensors"))
    with pytest.raises(WorkbenchError) as exc:
        load_model("usermodels:make", weights="bad.safetensors")
    msg = one_line(exc)
    assert "do not fit" in msg and "1.weight" in msg and "missing" in msg


def test_missing_and_unreadable_weight_files(user_module):
    with pytest.raises(WorkbenchError) as exc:
        load_model("usermodels:make", weights="absent.safetensors")
    assert "not found" in one_line(exc)
    (user_module / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(WorkbenchError) as exc:
        load_model("usermodels:make", weights="junk.pt")
    assert "cannot read weights" in one_line(exc)


def test_weights_file_that_would_run_code_is_not_unpickled(user_module):
    # A whole pickled module is not a state dict: weights_only=True refuses it instead of running it.
    torch.save(nn.Linear(2, 2), user_module / "module.pt")
    with pytest.raises(WorkbenchError):
        load_model("usermodels:make", weights="module.pt")


def test_pickled_module_needs_trust(user_module):
    torch.save(nn.Sequential(nn.Linear(3, 2)), user_module / "whole.pt")
    with pytest.raises(WorkbenchError) as exc:
        load_model("whole.pt")
    assert "trust-pickle" in one_line(exc)
    model = load_model("whole.pt", trust_pickle=True)
    assert isinstance(model, nn.Sequential)
    torch.save({"a": torch.zeros(1)}, user_module / "dict.pt")
    with pytest.raises(WorkbenchError) as exc:
        load_model("dict.pt", trust_pickle=True)
    assert "not a whole nn.Module" in one_line(exc)


def test_torchvision_spec_without_torchvision_names_the_package():
    pytest.importorskip("torch")  # always present; torchvision is the question
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(WorkbenchError) as exc:
            load_model("torchvision:resnet18")
        assert "torchvision" in one_line(exc) and "not installed" in one_line(exc)
    else:
        assert sum(p.numel() for p in load_model("torchvision:resnet18").parameters()) == 11_689_512


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_data("digits"), load_data("digits")
    assert torch.equal(a.x, b.x) and torch.equal(a.y_train, b.y_train)
    assert a.input_shape == (1, 16, 16) and a.num_classes == 10
    assert len(a.x) + len(a.x_train) == 1797
    assert a.x.min() >= 0.0 and a.x.max() <= 1.0
    test_rows = {tuple(r.flatten().tolist()) for r in a.x[:50]}
    # the split is by sample, so an evaluation image is not a training image (digits has a few duplicates)
    overlap = sum(tuple(r.flatten().tolist()) in test_rows for r in a.x_train)
    assert overlap <= 2


def test_digits_resized_to_model_input():
    d = load_data("digits", input_shape=(3, 32, 32))
    assert d.input_shape == (3, 32, 32)
    flat = load_data("digits", input_shape=(64,))
    assert flat.input_shape == (64,)
    with pytest.raises(WorkbenchError):
        load_data("digits", input_shape=(10,))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_tensor_files_with_and_without_train_split(tmp_path, suffix):
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.normal(size=(20, 6)).astype(np.float32),
        "y": rng.integers(0, 3, 20).astype(np.int64),
        "x_train": rng.normal(size=(30, 6)).astype(np.float32),
        "y_train": rng.integers(0, 3, 30).astype(np.int64),
    }
    path = tmp_path / f"tab{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".pt":
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    else:
        save_file({k: torch.from_numpy(v) for k, v in arrays.items()}, str(path))
    d = load_data(f"tensors:{path}")
    assert d.input_shape == (6,) and len(d.x) == 20 and len(d.x_train) == 30 and d.has_train_split
    np.testing.assert_array_equal(d.x.numpy(), arrays["x"])
    np.savez(tmp_path / "eval_only.npz", x=arrays["x"], y=arrays["y"])
    only = load_data(f"tensors:{tmp_path / 'eval_only.npz'}")
    assert not only.has_train_split and torch.equal(only.x_train, only.x)


def test_tensor_file_errors(tmp_path):
    with pytest.raises(WorkbenchError) as exc:
        load_data(f"tensors:{tmp_path / 'absent.npz'}")
    assert "not found" in one_line(exc)
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 2), np.float32))
    unlabelled = load_data(f"tensors:{tmp_path / 'noy.npz'}")  # inputs only: unlabelled, not an error
    assert unlabelled.y is None and unlabelled.y_train is None and not unlabelled.has_labels
    np.savez(tmp_path / "onlyy.npz", y=np.zeros(3, np.int64))
    with pytest.raises(WorkbenchError) as exc:
        load_data(f"tensors:{tmp_path / 'onlyy.npz'}")
    assert "no inputs" in one_line(exc)
    np.savez(tmp_path / "floaty.npz", x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.float32))
    with pytest.raises(WorkbenchError):
        load_data(f"tensors:{tmp_path / 'floaty.npz'}")


def test_imagefolder(tmp_path):
    from PIL import Image

    for label, value in (("cats", 30), ("dogs", 220)):
        folder = tmp_path / label
        folder.mkdir()
        for i in range(5):
            Image.fromarray(np.full((10, 12, 3), value + i, np.uint8)).save(folder / f"{i}.png")
    d = load_data(f"imagefolder:{tmp_path}", input_shape=(3, 8, 8))
    assert d.input_shape == (3, 8, 8) and d.num_classes == 2
    assert len(d.x) + len(d.x_train) == 10
    # dark images are class 0, bright ones class 1, whatever the split
    for x, y in ((d.x, d.y), (d.x_train, d.y_train)):
        assert torch.equal((x.mean(dim=(1, 2, 3)) > 0.5).long(), y)
    with pytest.raises(WorkbenchError):
        load_data(f"imagefolder:{tmp_path / 'none'}")


def test_unknown_data_spec():
    with pytest.raises(WorkbenchError) as exc:
        load_data("mnist")
    assert "digits" in one_line(exc)


@pytest.mark.parametrize("text,shape", [("1,3,224,224", (3, 224, 224)), ("8,64", (64,))])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "3", "1,a,2", "1,-3,4", "1,0,2", "1x3x4"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(WorkbenchError):
        parse_input_shape(text)
