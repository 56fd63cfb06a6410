"""Limits that turn a typo or a hostile file into one line instead of a crash, a hang or an exhausted server.

- threads: at most the CPUs this process may use (`--threads 100000` used to segfault inside torch);
- input shapes: at most `MAX_SAMPLE_ELEMENTS` values per sample, and a batch of inputs within a quarter of
  the machine's memory (`--input-shape 1,1,30000,30000`, an ONNX input declared 1x60000x60000);
- compressed archives: a `.npz` (or zip-based `.pt`) is sized by what it unpacks to, read from its zip
  directory and array headers before anything is decompressed (a 1.9 MB zip bomb unpacks to gigabytes);
- DataLoader workers: capped at the CPU count.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from analysis.errors import WorkbenchError, first_line

MAX_SAMPLE_ELEMENTS = 2**26  # 67 million values (256 MiB of float32) in one sample: more is a typo
BYTES_PER_VALUE = 4  # float32, what the workbench feeds models


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def memory_bytes() -> int:
    """Physical memory of the machine (8 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def check_threads(threads: int | None, what: str = "--threads") -> int | None:
    """`threads` if it is a whole number from 1 to the CPU count (None stays None: the current setting)."""
    if threads is None:
        return None
    cpus = cpu_count()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WorkbenchError(f"{what} must be a whole number of at least 1, got {threads!r}")
    if threads > cpus:
        raise WorkbenchError(
            f"{what} {threads}: this machine gives the process {cpus} CPUs; use at most {cpus}"
        )
    return threads


def check_workers(workers: int) -> int:
    """DataLoader worker processes, capped at the CPU count (more only compete for the same cores)."""
    return min(max(0, int(workers)), cpu_count())


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_sample_shape(shape: Sequence[int], where: str = "the input shape") -> tuple[int, ...]:
    """A per-sample shape of positive sizes with at most `MAX_SAMPLE_ELEMENTS` values."""
    dims = tuple(int(d) for d in shape)
    if any(d <= 0 for d in dims):
        raise WorkbenchError(f"{where} {dims} has a size below 1: every dimension must be positive")
    values = math.prod(dims)
    if values > MAX_SAMPLE_ELEMENTS:
        raise WorkbenchError(
            f"{where} {dims} is {values:,} values per sample, over the {MAX_SAMPLE_ELEMENTS:,} limit: check "
            "the numbers"
        )
    return dims


def check_batch_memory(shape, batch_size: int, what: str = "a batch of inputs") -> None:
    """A batch of `batch_size` float32 samples of `shape` fits in a quarter of the machine's memory. `shape`
    is one input's per-sample shape, or an input description with `fields` (one shape per input, added)."""
    fields = getattr(shape, "fields", None)
    shapes = [tuple(f.shape) for f in fields] if fields is not None else [tuple(shape)]
    for one in shapes:
        check_sample_shape(one)
    need = sum(math.prod(one) for one in shapes) * int(batch_size) * BYTES_PER_VALUE
    budget = memory_bytes() // 4
    if need > budget:
        shown = " + ".join(str(one) for one in shapes)
        raise WorkbenchError(
            f"{what} of {batch_size} x {shown} takes {_gib(need)}, over a quarter of this machine's "
            f"memory ({_gib(budget)}): use a smaller batch size or input shape"
        )


def archive_bytes(path: str | Path) -> int:
    """What a zip-based file (`.npz`, a zip `.pt`) unpacks to, read without decompressing: the larger of each
    member's declared size and, for `.npy` members, the size its array header declares (numpy allocates
    that before reading). WorkbenchError if the directory or a header cannot be read."""
    import numpy as np
    from numpy.lib import format as npy

    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                size = info.file_size
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        version = npy.read_magic(member)
                        header = npy.read_array_header_2_0 if version >= (2, 0) else npy.read_array_header_1_0
                        shape, _, dtype = header(member, max_header_size=10_000)
                        size = max(size, math.prod(shape) * np.dtype(dtype).itemsize)
                total += size
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise WorkbenchError(f"cannot read {path} as an archive: {first_line(exc)}") from exc
    return total


def check_archive(path: str | Path, budget: int | None = None, what: str = "") -> int:
    """`archive_bytes(path)`, or WorkbenchError when it is over `budget` (default: half the machine's memory)."""
    limit = memory_bytes() // 2 if budget is None else int(budget)
    size = archive_bytes(path)
    if size > limit:
        raise WorkbenchError(
            f"{what or Path(path).name} unpacks to {size:,} bytes, over the {limit:,}-byte limit: a compressed "
            "file is judged by what it unpacks to; use a smaller file"
        )
    return size


__all__ = [
    "MAX_SAMPLE_ELEMENTS",
    "archive_bytes",
    "check_archive",
    "check_batch_memory",
    "check_sample_shape",
    "check_threads",
    "check_workers",
    "cpu_count",
    "memory_bytes",
]
