"""Fingerprints and environments of recorded runs: which exact weights a run used, and on what machine.

`public_environment` is what a shared server may show a visitor: the software versions, never the
operating system, CPU or GPU names that describe the server.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from collections.abc import Mapping
from typing import Any

# Environment keys that say nothing about the server itself (the software a result depends on).
PUBLIC_ENVIRONMENT_KEYS = ("python", "torch", "onnxruntime", "torch_pruning", "threads")


def weights_digest(model: Any) -> str:
    """sha256 (hex) over the model's state_dict in name order: each name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode() + b"\0")
        _hash_value(digest, value)
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            # Quantized tensors have no raw view: hash their scales (in the repr) and their integer values.
            digest.update(repr(t).encode())
            t = t.int_repr()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        # A flat contiguous uint8 view reads the exact bytes of any dtype (bfloat16 included), without a copy.
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, (tuple, list)):
        # Packed parameters (dynamic int8 Linear) sit in the state_dict as tuples of tensors.
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(repr(value).encode())


def model_fingerprint(spec: str, model: Any) -> str:
    """sha256 (hex) of the model spec and its weights (`weights_digest`): the same spec with other weights,
    or the same weights under another spec, is another fingerprint."""
    return hashlib.sha256(f"{spec}\0{weights_digest(model)}".encode()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_environment() -> dict[str, Any]:
    """The machine and software a run used: Python, OS, torch, runtimes, CPU, GPU and torch's threads."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": _version("onnxruntime"),
        "torch_pruning": _version("torch-pruning"),
    }
    # torch is already loaded wherever a run was computed; do not import it just to describe the machine.
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["threads"] = torch.get_num_threads()
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    else:
        env["torch"] = _version("torch")
    from analysis.latency import cpu_name

    env["cpu"] = cpu_name()
    return env


def public_environment(environment: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's environment a shared server shows: versions and thread count only."""
    return {k: environment[k] for k in PUBLIC_ENVIRONMENT_KEYS if k in environment}
