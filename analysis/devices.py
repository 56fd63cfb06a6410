"""Where a model runs: device and dtype resolution, private device copies, and GPU timing.

The app caches one CPU model and shares it between pages, so work on a GPU (or in half precision) always
happens on a private copy (`on_device`); the cached model is never moved or cast.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from analysis.errors import WorkbenchError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (first GPU if there is one, else CPU), `cpu`, `cuda` or `cuda:N` -> a `torch.device`.

    A GPU asked for where there is none, or an index past the last GPU, is a one-line WorkbenchError.
    """
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise WorkbenchError(
                f"cannot read device {device!r}: use auto, cpu, cuda or cuda:N (N a GPU index)"
            )
        if not torch.cuda.is_available():
            raise WorkbenchError(
                f"device {text} asked for, but this machine has no CUDA GPU visible to torch "
                f"(torch {torch.__version__}): use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        index = int(index_text)
        if index >= count:
            raise WorkbenchError(
                f"device {text} asked for, but there {'is' if count == 1 else 'are'} only {count} GPU"
                f"{'' if count == 1 else 's'} (cuda:0..cuda:{count - 1}): choose one of those"
            )
        return torch.device("cuda", index)
    raise WorkbenchError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`float32`, `float16` or `bfloat16` (also fp32/fp16/half/bf16) -> torch dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise WorkbenchError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    return DTYPES[key]


def on_device(
    model: nn.Module, device: str | torch.device | None, dtype: str | torch.dtype | None = None
) -> nn.Module:
    """A private deep copy of `model` on `device` (cast to floating `dtype` if given); `model` is untouched.

    The copy is made on the CPU first, then moved, so the caller's (cached) model never leaves its device.
    """
    target = resolve_device(device) if not isinstance(device, torch.device) else device
    work = copy.deepcopy(model)
    work = work.to(device=target)
    cast = parse_dtype(dtype)
    if cast is not None:
        work = work.to(dtype=cast)  # only floating parameters and buffers are cast
    return work


def cuda_times_ms(fn: Callable[[], object], runs: int, warmup: int, device: torch.device) -> list[float]:
    """GPU time (ms) of each of `runs` calls of `fn`, from CUDA events, after `warmup` untimed calls.

    Kernels run asynchronously: the events are recorded on the stream around each call and read after a
    synchronize, so a time is the GPU's own and not the time the CPU took to queue the kernels.
    """
    with torch.cuda.device(device):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for start, end in zip(starts, ends, strict=True):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
    return [float(s.elapsed_time(e)) for s, e in zip(starts, ends, strict=True)]
