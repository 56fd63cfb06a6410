"""Shared by the artifact-safety tests: a small model, hostile `.pt2` payloads that leave a marker file when
their code runs, and writers of pruned-format files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class Small(nn.Module):
    input_shape = (4,)

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class _Touch:
    """Unpickling this creates a file: the visible trace of code run from a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of the zip `src` at `dst` after `edit(files, root)` changed its members (name -> bytes)."""
    with zipfile.ZipFile(src) as z:
        files = {i.filename: z.read(i.filename) for i in z.infolist()}
    root = next(iter(files)).split("/")[0]
    edit(files, root)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return dst


def pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(_Touch(marker), buffer)
    return buffer.getvalue()


def edit_json(files: dict, name: str, change) -> None:
    data = json.loads(files[name])
    change(data)
    files[name] = json.dumps(data).encode()


def payloads(marker: Path) -> dict:
    """Edits that each make a `.pt2` run code (creating `marker`) inside `torch.export.load` or the module."""
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def weight(files, root):
        config = f"{root}/data/weights/model_weights_config.json"
        edit_json(files, config, lambda d: d["config"]["fc1.bias"].update(use_pickle=True))
        path_name = json.loads(files[config])["config"]["fc1.bias"]["path_name"]
        files[f"{root}/data/weights/{path_name}"] = pickled(marker)

    def sample_inputs(files, root):
        files[f"{root}/data/sample_inputs/model.pt"] = pickled(marker)

    def guards(files, root):
        edit_json(files, f"{root}/models/model.json", lambda d: d.update(guards_code=[f"{touch} is None"]))

    def expression(files, root):
        name = f"{root}/models/model.json"
        text = files[name].decode()
        symbol = text.split('"expr_str": "')[1].split('"')[0]
        files[name] = text.replace(symbol, f"{symbol} + 0*len(str({touch}))".replace('"', "'")).encode()

    return {
        "pickled weight": weight,
        "sample inputs": sample_inputs,
        "guard code": guards,
        "expression": expression,
    }


def write_pruned(path: Path, state: dict, meta: dict) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def marker_module(folder: Path, marker: Path) -> Path:
    source = folder / "sneaky.py"
    source.write_text(
        f"open({str(marker)!r}, 'w').close()\nimport torch\ndef build():\n    return torch.nn.Linear(2, 2)\n"
    )
    return source
