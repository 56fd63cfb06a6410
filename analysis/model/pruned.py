"""The safe pruned format (`.pruned.safetensors`): weights plus JSON metadata, loaded as data.

The file holds the weights, the architecture's spec and every module attribute pruning changed
(`out_channels`, `in_features`, `num_features`, ...). Loading never lets the file choose code to run:

- `load_pruned(path)` builds the spec named in the metadata only when it is on the allow-list: a zoo model,
  a torchvision architecture name, or one the operator lists in `WORKBENCH_ARCHITECTURES`. Any other spec
  (a module, a `.py` file, another artifact) is refused with a line that says to name it yourself:
  `--model SPEC --weights x.pruned.safetensors`, i.e. `load_model(spec, weights=path)`, which builds what
  the operator named and then calls `apply_pruned`.
- `apply_pruned(model, path)` checks the metadata before touching the model: every module it names exists,
  every attribute is one the module already has (a plain public size, stride, flag, ...), with a value of
  the same type; sizes are positive whole numbers; every tensor belongs to an existing parameter or buffer
  and keeps the model's dtype. After reshaping, the sizes of the standard layers must match their weights.
  Each problem is one line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.errors import WorkbenchError, first_line

PRUNED_SUFFIX = ".pruned.safetensors"
PRUNED_FORMAT = "analysis.pruned/1"
MAX_SIZE = 2**31 - 1
MAX_TEXT = 200
# Attributes that count channels, features or heads: whole numbers of at least 1.
SIZE_ATTRIBUTES = frozenset(
    {
        "in_features", "out_features", "in_channels", "out_channels", "num_features", "num_channels",
        "num_groups", "groups", "normalized_shape", "num_embeddings", "embedding_dim", "embed_dim",
        "num_heads", "head_dim", "kdim", "vdim", "hidden_size", "input_size", "kernel_size",
    }
)  # fmt: skip
_TORCHVISION_NAME = re.compile(r"^torchvision:[a-z][a-z0-9_]{0,63}$")


def module_attributes(module: nn.Module) -> dict[str, Any]:
    """The plain public attributes of a module (sizes, strides, groups, ...), the way Torch-Pruning's
    `tp.state_dict` records them, minus anything that is not JSON."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(module).items()
        if not k.startswith("_") and k != "training" and _simple(v)
    }


def _simple(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value)


def is_pruned_file(path: str | Path) -> bool:
    """Whether `path` is a pruned-format file: by its suffix, or a `.safetensors` whose metadata says so
    (an upload keeps only its last suffix)."""
    name = str(path).lower()
    if name.endswith(PRUNED_SUFFIX):
        return True
    if not name.endswith(".safetensors") or not Path(path).is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == PRUNED_FORMAT
    except Exception:
        return False  # not readable as safetensors: the plain weights loader says why


def read_pruned(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and the tensors of a pruned-format file; one line if it is not one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except Exception as exc:
        raise WorkbenchError(f"cannot read {path} as safetensors: {first_line(exc)}") from exc
    if meta.get("format") != PRUNED_FORMAT:
        raise WorkbenchError(
            f"{path} has no {PRUNED_FORMAT} metadata: a plain weights file goes in --weights next to --model"
        )
    return meta, state


ARCHITECTURES_ENV = "WORKBENCH_ARCHITECTURES"


def operator_architectures(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The `module:callable` specs the operator allows in shared mode (`WORKBENCH_ARCHITECTURES`)."""
    env = os.environ if environ is None else environ
    items = re.split(r"[,\s]+", env.get(ARCHITECTURES_ENV, "").strip())
    return tuple(i for i in items if i)


def allowed_architecture(spec: str) -> bool:
    """Whether a spec named inside a file may be built without the operator naming it: a zoo model, a
    torchvision architecture name, or one listed in `WORKBENCH_ARCHITECTURES`."""
    from analysis.zoo import ZOO

    if spec.startswith("zoo:"):
        return spec.removeprefix("zoo:") in ZOO
    return bool(_TORCHVISION_NAME.match(spec)) or spec in operator_architectures()


def load_pruned(path: str | Path, build: Callable[[str], nn.Module], apply_weights: Callable) -> nn.Module:
    """The model a pruned-format file holds, when the architecture it names is on the allow-list (module
    docstring): built by `build` (`analysis.model.specs.load_model`), then `apply_pruned`."""
    meta, state = read_pruned(path)
    spec = meta.get("spec")
    if not isinstance(spec, str) or not spec.strip():
        raise WorkbenchError(
            f"{path} names no architecture (no 'spec' in its metadata): load it with --model SPEC "
            f"--weights {path}"
        )
    spec = spec.strip()
    if not allowed_architecture(spec):
        raise WorkbenchError(
            f"{path} names the architecture {spec[:120]!r}; a saved file never chooses code to run: load it "
            f"with --model {spec[:120]} --weights {path} if you trust that spec (zoo, torchvision and "
            "WORKBENCH_ARCHITECTURES specs load by themselves)"
        )
    return apply_pruned(build(spec), path, apply_weights, loaded=(meta, state))


def apply_pruned(
    model: nn.Module,
    path: str | Path,
    apply_weights: Callable,
    loaded: tuple[dict[str, str], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Give `model` (the architecture the file was saved from, freshly built) the file's pruned shapes and
    weights, after checking them (module docstring). Changes `model` in place and returns it, in eval mode."""
    meta, state = loaded if loaded is not None else read_pruned(path)
    modules = dict(model.named_modules())
    changes = [(modules[name], key, value) for name, key, value in _checked_attributes(path, meta, modules)]
    resized = _checked_tensors(path, state, modules)
    for module, key, value in changes:
        setattr(module, key, value)
    for owner, attr, shape in resized:
        current = getattr(owner, attr)
        fresh = torch.empty(shape, dtype=current.dtype)  # the model's dtype: a file's int8 is refused below
        if isinstance(current, nn.Parameter):
            setattr(owner, attr, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            owner.register_buffer(attr, fresh)
    for name, module in modules.items():
        _check_sizes(path, name, module)
    apply_weights(model, state, str(path))
    return model.eval()


def _checked_attributes(path, meta: dict[str, str], modules: dict[str, nn.Module]) -> list[tuple]:
    try:
        table = json.loads(meta.get("attributes", "{}"))
    except ValueError as exc:
        raise WorkbenchError(f"{path}: its 'attributes' metadata is not JSON ({first_line(exc)})") from exc
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise WorkbenchError(f"{path}: its 'attributes' metadata must map module names to attribute tables")
    out = []
    for name, attrs in table.items():
        if name not in modules:
            raise WorkbenchError(
                f"{path} changes module {str(name)[:80]!r}, which the architecture does not have: the file "
                "belongs to another model"
            )
        known = module_attributes(modules[name])
        for key, value in attrs.items():
            if key not in known:
                raise WorkbenchError(
                    f"{path} sets {name or '(root)'}.{str(key)[:40]}, which is not a plain attribute of "
                    f"{type(modules[name]).__name__}: the file belongs to another model or was edited"
                )
            out.append((name, key, _same_kind(path, f"{name}.{key}", key, known[key], value)))
    return out


def _same_kind(path, where: str, key: str, current: Any, value: Any) -> Any:
    """`value` if it has `current`'s type (lists for tuples, element by element) and, for a size, is a whole
    number in 1..MAX_SIZE; else one line."""

    def bad(why: str) -> WorkbenchError:
        return WorkbenchError(f"{path}: {where} is {str(value)[:40]!r}, {why}")

    if isinstance(current, list):
        if not isinstance(value, list) or len(value) != len(current):
            raise bad(f"but the architecture has {len(current)} values there")
        return tuple(_same_kind(path, where, key, c, v) for c, v in zip(current, value, strict=True))
    if isinstance(current, bool) or current is None or isinstance(current, str):
        if type(value) is not type(current) or (isinstance(value, str) and len(value) > MAX_TEXT):
            raise bad(f"but the architecture has {type(current).__name__} there")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_SIZE:
            raise bad(f"not a whole number up to {MAX_SIZE:,}")
        if key in SIZE_ATTRIBUTES and value < 1:
            raise bad("but a size must be at least 1")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad("not a finite number")
    return float(value)


def _checked_tensors(path, state: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> list[tuple]:
    """(owner, name, shape) for every tensor whose saved shape differs from the freshly built model's."""
    out = []
    for key, tensor in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None or (attr not in owner._parameters and attr not in owner._buffers):
            raise WorkbenchError(
                f"{path} holds tensor {key[:80]!r}, which is no parameter or buffer of the architecture: the "
                "file belongs to another model"
            )
        current = getattr(owner, attr)
        if current is None or tuple(current.shape) == tuple(tensor.shape):
            continue
        if tensor.ndim != current.ndim or any(d < 1 for d in tensor.shape):
            raise WorkbenchError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, the architecture's is {tuple(current.shape)}"
            )
        out.append((owner, attr, tuple(tensor.shape)))
    return out


def _expected_sizes(module: nn.Module) -> dict[str, Any]:
    """The size attributes of a standard layer, as its weights say they are."""
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear):
        return {"out_features": weight.shape[0], "in_features": weight.shape[1]}
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        kernel = {"kernel_size": tuple(weight.shape[2:])}
        if module.transposed:
            return kernel | {"in_channels": weight.shape[0], "out_channels": weight.shape[1] * groups}
        return kernel | {"out_channels": weight.shape[0], "in_channels": weight.shape[1] * groups}
    if isinstance(module, nn.modules.batchnorm._NormBase):
        reference = module.running_mean if module.running_mean is not None else weight
        return {} if reference is None else {"num_features": reference.shape[0]}
    if isinstance(module, nn.GroupNorm) and weight is not None:
        return {"num_channels": weight.shape[0]}
    if isinstance(module, nn.LayerNorm) and weight is not None:
        return {"normalized_shape": tuple(weight.shape)}
    if isinstance(module, nn.Embedding):
        return {"num_embeddings": weight.shape[0], "embedding_dim": weight.shape[1]}
    return {}


def _check_sizes(path, name: str, module: nn.Module) -> None:
    for key, want in _expected_sizes(module).items():
        have = getattr(module, key)
        if (tuple(have) if isinstance(have, (tuple, list)) else have) != want:
            raise WorkbenchError(
                f"{path}: {name}.{key} is {have} but its weights give {want}: the file is inconsistent"
            )
    if isinstance(module, nn.modules.conv._ConvNd) and (
        module.in_channels % module.groups or module.out_channels % module.groups
    ):
        raise WorkbenchError(
            f"{path}: {name} has {module.in_channels} -> {module.out_channels} channels in {module.groups} "
            "groups, which do not divide them: the file is inconsistent"
        )


__all__ = [
    "PRUNED_FORMAT",
    "PRUNED_SUFFIX",
    "allowed_architecture",
    "apply_pruned",
    "is_pruned_file",
    "load_pruned",
    "module_attributes",
    "read_pruned",
]
