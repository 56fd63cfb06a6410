"""`tensors:` safetensors files through memory mapping: a file larger than RAM opens at once and only the
samples used are read (moved here from `analysis.data.stream`, which re-exports it)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from analysis.errors import WorkbenchError, first_line

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `.safetensors` file as a copy-on-write memory map: pages are read from disk when
    touched, so a file larger than RAM opens at once and only the samples used are read.

    Follows the format's spec: 8-byte little-endian header length, a JSON header with each tensor's dtype,
    shape and byte range, then the raw little-endian data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, ValueError) as exc:
        raise WorkbenchError(f"cannot read {path} as safetensors: {first_line(exc)}") from exc
    base = 8 + header_len
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise WorkbenchError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        raw = np.memmap(path, dtype=np.uint8, mode="c", offset=base + begin, shape=(end - begin,))
        out[name] = torch.from_numpy(raw).view(dtype).reshape(shape)
    return out
