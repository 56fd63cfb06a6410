"""Model specs (docs/contract.md section 1) -> nn.Module, and the input shape a model takes."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from analysis.data import load_data
from analysis.data.checks import check_labels, model_outputs
from analysis.errors import WorkbenchError, first_line
from analysis.limits import MAX_SAMPLE_ELEMENTS, check_sample_shape  # noqa: F401  (re-exported)
from analysis.model.inputs import (
    InputSpec,
    as_input_spec,
    parse_input_spec,
    positional_names,
    required_inputs,
)
from analysis.model.layers import call_model

DEFAULT_MODEL = "zoo:digits-cnn"
DEFAULT_DATA = "digits"
PICKLE_SUFFIXES = (".pt", ".pth")
WORKBENCH_DIR = Path(__file__).resolve().parents[1]  # the analysis package
_FILE_MODULES: dict[Path, object] = {}  # resolved path of a file.py spec -> its module, imported once
_FILE_MODULES_LOCK = threading.Lock()


def parse_input_shape(text: str, model: nn.Module | None = None) -> tuple[int, ...] | InputSpec:
    """`'1,3,224,224'` -> `(3, 224, 224)`: the batch dimension is dropped, the rest kept. Several inputs
    (`'1,128;1,64'`, in forward's order), named ones (`'input_ids=1,16:int64'`) or a dtype give an
    `InputSpec`, its unnamed inputs named after `model.forward`'s positional parameters."""
    spec = parse_input_spec(text, positional_names(model) if model is not None else ())
    if spec.form == "tensor" and spec.fields[0].dtype == torch.float32 and "=" not in text:
        return spec.fields[0].shape
    return spec


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors`, or `.pt`/`.pth` with `weights_only=True` (no code runs)."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"weights file not found: {path}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise WorkbenchError(
            f"cannot read weights from {path} as a state dict ({first}); "
            "give a .safetensors file or a .pt saved with torch.save(model.state_dict())"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WorkbenchError(f"{path} does not hold a state dict of tensors")
    return state


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly, turning a mismatch into one line that says what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    _check_dtypes(own, state, source)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WorkbenchError(
            f"weights in {source} do not fit the architecture: {'; '.join(parts)}; "
            "check that the weights belong to this model"
        )
    model.load_state_dict(state)


def _check_dtypes(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """Integer (quantized) weights into float parameters, or the reverse, would be cast without a word
    (load_state_dict copies across dtypes): one line instead."""
    for key, tensor in state.items():
        mine = own.get(key)
        if mine is None or mine.dtype == tensor.dtype:
            continue
        if mine.dtype.is_floating_point != tensor.dtype.is_floating_point:
            raise WorkbenchError(
                f"weights in {source}: {key} is {str(tensor.dtype).removeprefix('torch.')} but the model's is "
                f"{str(mine.dtype).removeprefix('torch.')}; dequantize (or convert) the weights first"
            )


def _import_callable(spec: str) -> nn.Module:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise WorkbenchError(
            f"cannot read model spec {spec!r}: use zoo:<name>, <module>:<callable>, "
            "torchvision:<name> or a .pt file"
        )
    with _exits_refused():
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            _refuse_module(module_name)
            module = _import_module(module_name)
        factory = getattr(module, attr, None)
        if factory is None or not callable(factory):
            raise WorkbenchError(f"{module_name} has no callable {attr!r}")
        try:
            model = factory()
        except (Exception, SystemExit) as exc:  # a callable that exits must not end the server or exit 0
            raise WorkbenchError(_failed(f"calling {spec}()", exc)) from exc
    if not isinstance(model, nn.Module):
        raise WorkbenchError(
            f"{spec} returned {type(model).__name__}, not a torch.nn.Module: "
            "the callable must build and return the model"
        )
    return model


def _refuse_module(module_name: str) -> None:
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        # No standard-library callable builds a model, and some end the process (sys:exit, os:abort).
        raise WorkbenchError(
            f"{module_name!r} is a Python standard-library module: a model spec names your own "
            "module:callable that returns an nn.Module"
        )
    if top == "analysis" and module_name != "analysis.zoo.models":
        # The workbench's own entry points (analysis.zoo.train:main rewrites the shipped weights) are not
        # model factories.
        raise WorkbenchError(
            f"{module_name!r} is part of the workbench itself: use zoo:<name> for its models"
        )


def _refuse_file(path: Path, resolved: Path) -> None:
    """The module-name refusals, by resolved path: a path into the standard library or the workbench is
    the same module under another name (`/usr/lib/python3.11/os.py:abort`, `analysis/zoo/train.py:main`)."""
    libraries = [Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")]
    stdlib = [Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")]
    in_site = any(resolved.is_relative_to(p) for p in libraries)
    if not in_site and any(resolved.is_relative_to(p) for p in stdlib):
        raise WorkbenchError(
            f"{path} is a file of the Python standard library: a model spec names your own "
            "file.py:callable that returns an nn.Module"
        )
    if resolved.is_relative_to(WORKBENCH_DIR):
        raise WorkbenchError(f"{path} is part of the workbench itself: use zoo:<name> for its models")


def _import_file(path: Path):
    """The module of a `.py` file, executed once per process and resolved path, so that every spec naming
    it builds the same classes (a saved pruned model then matches the architecture it is loaded into)."""
    if not path.is_file():
        raise WorkbenchError(f"model file not found: {path}")
    resolved = path.resolve()
    _refuse_file(path, resolved)
    with _FILE_MODULES_LOCK:
        module = _FILE_MODULES.get(resolved)
        if module is not None:
            return module
        mod_spec = importlib.util.spec_from_file_location(path.stem, resolved)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules.setdefault(path.stem, module)
        try:
            mod_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            if sys.modules.get(path.stem) is module:
                del sys.modules[path.stem]
            raise WorkbenchError(_failed(f"running {path}", exc)) from exc
        _FILE_MODULES[resolved] = module
        return module


def _import_module(module_name: str):
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise WorkbenchError(
            f"cannot import module {module_name!r} ({exc}); run from its folder or add it to PYTHONPATH"
        ) from exc
    except (Exception, SystemExit) as exc:
        raise WorkbenchError(_failed(f"importing {module_name}", exc)) from exc


class _ProcessExit(SystemExit):
    """What `os._exit` / `os.abort` raise while a model spec is imported and built."""


@contextlib.contextmanager
def _exits_refused() -> Iterator[None]:
    """While a user's module is imported and its callable runs, `os._exit()` and `os.abort()` raise instead
    of ending the process: a model factory that calls them would otherwise end the CLI with no output (rc 0)
    or take the whole app server down. Process-wide for that moment; nothing else calls them then."""

    def refuse(*args: object) -> None:
        raise _ProcessExit("the model code tried to end the process (os._exit or os.abort)")

    saved = os._exit, os.abort
    os._exit, os.abort = refuse, refuse
    try:
        yield
    finally:
        os._exit, os.abort = saved


def _failed(what: str, exc: BaseException) -> str:
    if isinstance(exc, _ProcessExit):
        return f"{what} failed: {exc}"
    first = first_line(exc) if str(exc).strip() else ""
    return f"{what} failed: {type(exc).__name__}" + (f": {first[:200]}" if first else "")


def _load_torchvision(name: str) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError as exc:
        raise WorkbenchError(
            f"torchvision:{name} needs the torchvision package, which is not installed"
        ) from exc
    try:
        return tvm.get_model(name, weights=None)
    except Exception as exc:
        raise WorkbenchError(
            f"torchvision has no model {name!r}: see torchvision.models.list_models()"
        ) from exc


def _load_pickled(path: Path, trust_pickle: bool) -> nn.Module:
    if not path.exists():
        raise WorkbenchError(f"model file not found: {path}")
    if not trust_pickle:
        raise WorkbenchError(
            f"{path} is a pickled model, and unpickling runs code: pass --trust-pickle "
            "(tick 'I trust this file' in the app) only if you trust where it came from"
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        first = first_line(exc)
        raise WorkbenchError(f"cannot unpickle {path}: {first}") from exc
    if not isinstance(model, nn.Module):
        raise WorkbenchError(
            f"{path} holds a {type(model).__name__}, not a whole nn.Module: for a state dict use "
            "--model <module>:<callable> --weights FILE"
        )
    return model


def load_model(
    spec: str = DEFAULT_MODEL, weights: str | Path | None = None, trust_pickle: bool = False
) -> nn.Module:
    """Build the model a spec names, in eval mode, with `weights` (a state dict file) loaded if given."""
    spec = spec.strip()
    from analysis.model.loading import artifact_kind, load_artifact

    if artifact_kind(spec) in ("onnx", "pt2", "pruned"):
        if weights is not None:
            raise WorkbenchError(f"{spec} holds its own weights: drop --weights")
        artifact = load_artifact(
            spec, build=load_model, apply_weights=apply_weights, trust_pickle=trust_pickle
        )
        return artifact.eval()
    if spec.startswith("zoo:"):
        from analysis import zoo

        model = zoo.build(spec.removeprefix("zoo:"))
    elif spec.startswith("hf:"):
        from analysis.model.hf import load_hf

        model = load_hf(spec.removeprefix("hf:"))
    elif spec.startswith("torchvision:"):
        model = _load_torchvision(spec.removeprefix("torchvision:"))
    elif spec.lower().endswith(PICKLE_SUFFIXES):
        model = _load_pickled(Path(spec), trust_pickle)
    else:
        model = _import_callable(spec)
    if weights is not None:
        from analysis.model.pruned import apply_pruned, is_pruned_file

        if is_pruned_file(weights):  # the operator named the architecture: the file gives shapes and weights
            apply_pruned(model, weights, apply_weights)
        else:
            apply_weights(model, load_state_dict_file(weights), str(weights))
    return model.eval()


def model_input_shape(
    model: nn.Module, input_shape: tuple[int, ...] | InputSpec | None = None, spec: str = ""
) -> tuple[int, ...] | InputSpec:
    """The per-sample input shape (an `InputSpec` for several or named inputs): given explicitly, declared
    by the model (`input_shape`, or `input_spec` for several inputs), built from a Hugging Face config,
    or known for torchvision."""
    if input_shape:
        return input_shape if isinstance(input_shape, InputSpec) else tuple(input_shape)
    declared = getattr(model, "input_spec", None)
    if isinstance(declared, InputSpec):
        return declared
    declared = getattr(model, "input_shape", None)
    if declared:
        return tuple(declared)
    from analysis.model.hf import hf_input_spec

    from_config = hf_input_spec(model)
    if from_config is not None:
        return from_config
    if spec.startswith("torchvision:"):
        return (3, 224, 224)
    required = required_inputs(model)
    several = " (one per input, ';' between them, e.g. 1,128;1,64)" if len(required) > 1 else ""
    raise WorkbenchError(
        f"cannot tell this model's input shape: give a data spec or --input-shape like 1,3,224,224{several}"
    )


def check_input_shape(model: nn.Module, input_shape: tuple[int, ...] | InputSpec) -> None:
    """Run one sample of `input_shape` through the model; a model that cannot take it is bad input (so is
    a shape over the size limit, e.g. one an ONNX file declares)."""
    spec = as_input_spec(input_shape)
    for field in spec.fields:
        check_sample_shape(field.shape, f"the input shape of {field.name!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            call_model(model, spec.zeros(1))
    except Exception as exc:
        first = first_line(exc)
        shape = spec.describe()
        required = required_inputs(model)
        hint = (
            f"this model's forward takes {', '.join(required)}: give one shape per input, ';' between them"
            if len(required) != len(spec.fields) and len(required) > 1
            else "give the shape it takes, e.g. --input-shape 1,3,224,224, or data of that shape"
        )
        raise WorkbenchError(f"the model cannot run on input of shape {shape} ({first}); {hint}") from exc
    finally:
        model.train(was_training)


def declared_inputs(model: nn.Module) -> tuple[int, ...] | InputSpec | None:
    """What the model says it takes: `input_spec` (several inputs), `input_shape`, or a Hugging Face
    config's inputs; None where it says nothing."""
    try:
        return model_input_shape(model)
    except WorkbenchError:
        return None


def load_fitted_data(model: nn.Module, data_spec: str, explicit: tuple[int, ...] | InputSpec | None = None):
    """`data_spec` loaded for `model` (the one path the CLI and the app share): resized to the explicit input
    shape, else to what the model declares; the model checked to run on its samples and its labels checked
    against its outputs (a message, not an IndexError). Returns (data, per-sample input shape)."""
    data = load_data(data_spec, explicit or declared_inputs(model), positional_names(model))
    shape = explicit or data.input_shape
    check_input_shape(model, shape)
    check_labels(data, model_outputs(model, shape))
    return data, shape
