"""Deployable artifacts: save a (compressed) model in the format its suffix names, and load it back.

- `.onnx`: the ONNX model ONNX Runtime runs (int8 where quantized, when given the quantized bytes);
- `.pt2`: a `torch.export` program (`torch.export.save`), which loads without the model's source code;
  loading checks first that nothing in it is unpickled or evaluated (`analysis.runtime.pt2_check`);
- `.pruned.safetensors` (`PRUNED_SUFFIX`): the safe format for pruned models. The file is a plain
  safetensors file: the weights, plus JSON metadata with the model spec and every module attribute that
  pruning changed (`out_channels`, `in_features`, `num_features`, ...). Loading builds the architecture
  the operator names (`--model SPEC --weights FILE`), or the one the metadata names when it is a zoo,
  torchvision or operator-listed architecture, then checks and sets those attributes, gives each parameter
  and buffer its saved shape and loads the weights strictly: nothing is unpickled or imported because the
  file says so (`analysis.model.pruned`). (Torch-Pruning's `tp.state_dict` records the same shapes, but
  `tp.load_state_dict` expects the dict from `torch.save`, i.e. a pickle.) The double suffix keeps the
  file a valid `.safetensors` for any reader while telling it apart from a plain `--weights` file.
- `.pt`/`.pth`: the pickled module (`save_model`); loading needs `--trust-pickle`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.io import write_atomic
from analysis.model.inputs import ModelInputs, as_model_inputs
from analysis.model.loading import (  # noqa: F401  (re-exported: the artifact API lives here)
    ARTIFACT_SUFFIXES,
    PRUNED_FORMAT,
    PRUNED_SUFFIX,
    artifact_kind,
)
from analysis.model.loading import load_artifact as _load_artifact
from analysis.model.pruned import load_pruned as _load_pruned
from analysis.model.pruned import module_attributes


def _example(model: nn.Module, input_shape) -> ModelInputs:
    from analysis.model.layers import example_input as example_batch
    from analysis.model.specs import model_input_shape

    return example_batch(model_input_shape(model, input_shape), 2)


def export_program(model: nn.Module, example_input: ModelInputs) -> torch.export.ExportedProgram:
    """`torch.export.export` of a private eval-mode copy, batch dimension of every input dynamic (inputs
    by name passed as keyword arguments)."""
    from analysis.model.layers import copy_model
    from analysis.runtime.onnx import export_arguments

    work = copy_model(model).eval()
    args, kwargs, _, dynamic = export_arguments(work, as_model_inputs(example_input))
    try:
        return torch.export.export(work, tuple(args), kwargs=kwargs, dynamic_shapes=dynamic)
    except Exception as exc:
        from analysis.runtime.onnx import _first_line, failed_op

        op = failed_op(exc)
        raise WorkbenchError(
            f"torch.export failed{' at ' + op if op else ''}: {_first_line(exc)}; save as "
            f"{PRUNED_SUFFIX} or .pt instead"
        ) from exc


def save_pruned(model: nn.Module, spec: str, path: str | Path) -> Path:
    """Write `model` (its spec's architecture, possibly pruned) as weights + JSON metadata, no pickle."""
    from safetensors.torch import save_file

    from analysis.model.specs import load_model

    if not spec or artifact_kind(spec) is not None:
        raise WorkbenchError(
            f"the {PRUNED_SUFFIX} format rebuilds the model from its spec (zoo:..., module:callable, "
            f"torchvision:...), and {spec!r} is not one: save as .pt2 or .onnx instead"
        )
    original = load_model(spec)
    own = dict(original.named_modules())
    changed: dict[str, dict] = {}
    for name, module in model.named_modules():
        if name not in own or type(own[name]) is not type(module):
            raise WorkbenchError(
                f"module {name or '(root)'} does not match the architecture {spec} builds: the "
                f"{PRUNED_SUFFIX} format stores pruned shapes, not new layers; save as .pt2 instead"
            )
        before, after = module_attributes(own[name]), module_attributes(module)
        diff = {k: v for k, v in after.items() if before.get(k) != v}
        if diff:
            changed[name] = diff
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": PRUNED_FORMAT, "spec": spec, "attributes": json.dumps(changed)}
    return write_atomic(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))


def save_artifact(
    model: nn.Module,
    path: str | Path,
    *,
    spec: str | None = None,
    input_shape=None,
    onnx_bytes: bytes | None = None,
) -> Path:
    """Save `model` in the format `path`'s suffix names (module docstring). For `.onnx`, `onnx_bytes` (e.g.
    the int8 model) is written as is when given; otherwise the model is exported. `spec` is needed for
    the pruned format; `input_shape` (per sample) where the model does not declare it."""
    path = Path(path)
    kind = artifact_kind(path)
    if kind == "pruned":
        return save_pruned(model, spec or "", path)
    if kind == "pickle":
        return save_model(model, path)
    if kind == "onnx":
        if onnx_bytes is None:
            from analysis.runtime.onnx import export_onnx

            onnx_bytes = export_onnx(model, _example(model, input_shape), check=False).model_bytes
        return write_atomic(path, lambda tmp: Path(tmp).write_bytes(onnx_bytes))
    if kind == "pt2":
        program = export_program(model, _example(model, input_shape))
        return write_atomic(path, lambda tmp: Path(tmp).write_bytes(_program_bytes(program)))
    raise WorkbenchError(
        f"cannot tell the format of {path.name}: use .onnx, .pt2, {PRUNED_SUFFIX} or .pt (pickle)"
    )


def _program_bytes(program: torch.export.ExportedProgram) -> bytes:
    # Saved to memory, then written: torch warns about (and names) any file whose name does not end in
    # .pt2, such as the temp file write_atomic renames.
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _layers(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _compressed_onnx(
    result, float_model: nn.Module, input_shape, data, calibration: str
) -> tuple[bytes, str]:
    """The ONNX bytes of a compression result and one line saying what they are (see `save_compressed`)."""
    bits = dict(getattr(result, "quantized", None) or {})
    int8 = sorted(n for n, b in bits.items() if b == 8)
    if getattr(result, "onnx_bytes", None) is not None:
        what = "the ONNX model ONNX Runtime measured"
        return result.onnx_bytes, what + (f", int8 (static QDQ) for {_layers(int8)}" if int8 else "")
    from analysis.runtime.onnx import export_onnx

    exported = export_onnx(float_model, _example(float_model, input_shape), check=False).model_bytes
    if not int8:
        return exported, "fp32 ONNX"
    if data is None:
        return exported, f"fp32 ONNX: the 8-bit layers ({_layers(int8)}) hold their int8 grid in float"
    from analysis.runtime.int8 import quantize_int8

    names = [name for name, _ in float_model.named_modules()]
    quantized = quantize_int8(exported, int8, names, data, calibration)
    return quantized.model_bytes, (
        f"int8 ONNX: {_layers(sorted(quantized.int8_layers))} quantized in ONNX (static QDQ, {calibration} "
        f"calibration on {quantized.calibration_samples} training samples), the rest fp32"
    )


def save_compressed(
    result,
    path: str | Path,
    *,
    spec: str | None = None,
    input_shape=None,
    data=None,
    calibration: str = "minmax",
) -> tuple[Path, str]:
    """Save a `CompressionResult`'s model in the format `path`'s suffix names; returns the path and one line
    saying what the file holds. `input_shape`: per sample (no batch), where the model does not declare it.

    - `.pt`: the model as measured (its int8 kernels included), pickled;
    - `.onnx`: the ONNX model ONNX Runtime measured, if it ran; else the float model exported, and its 8-bit
      layers quantized to int8 in ONNX (static QDQ, calibrated on `data`'s training split) when `data` is
      given (without it, fp32 with the 8-bit layers on their int8 grid);
    - `.pt2` and `.pruned.safetensors`: the float model (8-bit layers on their int8 grid in float: neither
      format holds the eager int8 kernels)."""
    path = Path(path)
    kind = artifact_kind(path)
    float_model = result.float_model if getattr(result, "float_model", None) is not None else result.model
    if kind == "pickle":
        return save_model(result.model, path), "the model as measured, pickled: loading it runs code"
    if kind == "onnx":
        data_bytes, what = _compressed_onnx(result, float_model, input_shape, data, calibration)
        return save_artifact(float_model, path, onnx_bytes=data_bytes), what
    quantized = sorted(dict(getattr(result, "quantized", None) or {}))
    what = "the float model" + (
        f"; {_layers(quantized)} hold their quantized grid in float" if quantized else ""
    )
    return save_artifact(float_model, path, spec=spec, input_shape=input_shape), what


def load_pruned(path: str | Path) -> nn.Module:
    """The model a `save_pruned` file holds (`analysis.model.loading.load_pruned` with the spec parser)."""
    from analysis.model.specs import apply_weights, load_model

    return _load_pruned(path, load_model, apply_weights)


def load_artifact(path: str | Path, threads: int | None = None, trust_pickle: bool = False) -> nn.Module:
    """An `nn.Module` that `evaluate` and the latency functions run: `.onnx` on an ONNX Runtime session
    (`threads` intra-op threads), `.pt2` as the exported program (checked unless `trust_pickle`),
    `.pruned.safetensors` rebuilt."""
    from analysis.model.specs import apply_weights, load_model

    return _load_artifact(
        path, threads, build=load_model, apply_weights=apply_weights, trust_pickle=trust_pickle
    )


__all__ = [
    "ARTIFACT_SUFFIXES",
    "PRUNED_SUFFIX",
    "artifact_kind",
    "export_program",
    "load_artifact",
    "load_pruned",
    "save_artifact",
    "save_compressed",
    "save_pruned",
]


def save_model(model: nn.Module, path: str | Path) -> Path:
    """Write the whole module with `torch.save`, atomically, so `evaluate --model FILE --trust-pickle` loads
    it. The file is a pickle: loading it runs code, which is why loading needs `--trust-pickle`."""
    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth"):
        raise WorkbenchError(
            f"save the compressed model as .pt or .pth (a pickled module), not {path.suffix!r}"
        )
    return write_atomic(path, lambda tmp: torch.save(model, tmp))
