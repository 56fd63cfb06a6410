"""Shared mode refuses every source that runs code or reads server paths; uploads are private and safe."""

from __future__ import annotations

import os
import stat
import time

import pytest
import torch
from safetensors.torch import save_file

from analysis.app_support.policy import (
    ServeMode,
    allowed_model_sources,
    check_data_spec,
    check_model_spec,
    parse_mode,
    public_message,
    serve_mode,
)
from analysis.app_support.uploads import UploadStore, purge_older_than
from analysis.errors import WorkbenchError

SHARED, LOCAL = ServeMode.SHARED, ServeMode.LOCAL


def test_mode_comes_from_the_server_environment_only():
    assert serve_mode({}) is LOCAL
    assert serve_mode({"WORKBENCH_MODE": "shared"}) is SHARED
    assert serve_mode({"WORKBENCH_MODE": " Shared "}) is SHARED
    with pytest.raises(WorkbenchError, match="WORKBENCH_MODE"):
        parse_mode("shraed")  # a typo never silently serves local mode
    assert "python callable" not in allowed_model_sources(SHARED)
    assert "python callable" in allowed_model_sources(LOCAL)


@pytest.mark.parametrize(
    "spec, kwargs",
    [
        ("model.pt", {"trust_pickle": True}),  # a pickle
        ("zoo:digits-cnn", {"trust_pickle": True}),
        ("os:abort", {}),  # a callable
        ("analysis.zoo.train:main", {}),
        ("/root/evil.py:build", {}),  # a server path
        ("/etc/passwd", {}),
        ("torchvision:resnet18", {}),
        ("zoo:../../etc", {}),
        ("zoo:digits-cnn", {"weights": "/etc/passwd"}),  # server path as weights
    ],
)
def test_shared_mode_refuses_code_and_server_paths(spec, kwargs, tmp_path):
    with pytest.raises(WorkbenchError, match="shared|no zoo model"):
        check_model_spec(spec, SHARED, upload_dir=tmp_path, architectures=(), **kwargs)
    check_model_spec(spec, LOCAL, **kwargs)  # local mode: the operator's own machine, everything goes


def test_shared_mode_allows_zoo_and_uploaded_safetensors_for_listed_architectures(tmp_path):
    with UploadStore(tmp_path) as store:
        weights = store.save("w.safetensors", b"not checked here")
        pickle = store.save("w.pt", b"pickle bytes")
        check_model_spec("zoo:digits-cnn", SHARED, weights=weights, upload_dir=store.dir, architectures=())
        check_model_spec("pkg.models:tiny", SHARED, weights=weights, upload_dir=store.dir,
                         architectures=("pkg.models:tiny",))  # fmt: skip
        with pytest.raises(WorkbenchError, match="safetensors"):
            check_model_spec("zoo:digits-cnn", SHARED, weights=pickle, upload_dir=store.dir, architectures=())
        with pytest.raises(WorkbenchError, match="shared"):
            check_model_spec(
                "pkg.models:other", SHARED, upload_dir=store.dir, architectures=("pkg.models:tiny",)
            )


def test_shared_mode_data_only_digits_and_own_uploads(tmp_path):
    with UploadStore(tmp_path) as store, UploadStore(tmp_path) as other:
        mine = store.save("d.safetensors", b"x")
        theirs = other.save("d.safetensors", b"y")
        check_data_spec("digits", SHARED)
        check_data_spec(f"tensors:{mine}", SHARED, upload_dir=store.dir)
        for spec in (f"tensors:{theirs}", "imagefolder:/root", "tensors:/etc/passwd",
                     f"tensors:{store.dir}/../{other.dir.name}/{theirs.name}", f"tensors:{store.save('d.pt', b'z')}"):  # fmt: skip
            with pytest.raises(WorkbenchError, match="shared"):
                check_data_spec(spec, SHARED, upload_dir=store.dir)
        check_data_spec("imagefolder:/root", LOCAL)


def test_public_message_hides_paths_and_internals():
    err = WorkbenchError("data file not found: /root/secret/data.npz")
    assert public_message(err, SHARED) == "data file not found: data.npz"
    assert public_message(err, LOCAL) == str(err)
    internal = RuntimeError("boom in /usr/lib/python3/site-packages/torch/x.py line 3\nTraceback ...")
    text = public_message(internal, SHARED)
    assert "/usr" not in text and "Traceback" not in text and "\n" not in text
    assert text.startswith("the analysis failed")


def test_upload_store_is_private_hashed_and_verified(tmp_path):
    store = UploadStore(tmp_path, max_bytes=1000)
    content = b"0123456789" * 10
    path = store.save("weights.safetensors", content)
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import hashlib

    assert path.name == hashlib.sha256(content).hexdigest() + ".safetensors"
    # Tampered on disk: not trusted, replaced by the uploaded content on the next save.
    path.write_bytes(b"evil")
    assert not store.verify(path)
    again = store.save("weights.safetensors", content)
    assert again == path and again.read_bytes() == content
    with pytest.raises(WorkbenchError, match="limit"):
        store.save("big.bin", b"x" * 1001)
    assert sorted(p.name for p in store.dir.iterdir()) == [path.name]  # no temp file left
    store.close()
    assert not store.dir.exists()


@pytest.mark.parametrize(
    "name", ["..", ".", "", "a/b.pt", "..\\x", "a\0b", "x" * 300, "\n", None, "../../etc/passwd"]
)
def test_bad_upload_names_give_a_message(name, tmp_path):
    with UploadStore(tmp_path) as store, pytest.raises(WorkbenchError):
        store.save(name, b"data")


def test_odd_but_valid_names_are_stored(tmp_path):
    with UploadStore(tmp_path) as store:
        for name in ("weights", "a b ü.SAFETENSORS", "-rf", ".hidden"):
            assert store.verify(store.save(name, b"abc" + name.encode()))


def test_purge_removes_old_sessions_only(tmp_path):
    old, new = UploadStore(tmp_path), UploadStore(tmp_path)
    f = old.save("a.npz", b"a")
    past = time.time() - 3600
    os.utime(f, (past, past))
    os.utime(old.dir, (past, past))
    (tmp_path / "unrelated").mkdir()
    assert purge_older_than(600, tmp_path) == 1
    assert not old.dir.exists() and new.dir.exists() and (tmp_path / "unrelated").exists()


def test_uploaded_tensors_load_from_the_store(tmp_path):
    from analysis.data import load_data

    x = torch.rand(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    src = tmp_path / "src.safetensors"
    save_file({"x": x, "y": y}, str(src))
    with UploadStore(tmp_path / "up") as store:
        path = store.save("mine.safetensors", src.read_bytes())
        check_data_spec(f"tensors:{path}", SHARED, upload_dir=store.dir)
        data = load_data(f"tensors:{path}")
        assert torch.equal(data.x, x) and torch.equal(data.y, y)
