"""Local and shared serving modes: what a browser user may ask the server to load.

`local` (the default) is one person on their own machine: every spec works, as on the command line.
`shared` is an app other people can reach: only sources that cannot run code or read server files are
offered: zoo models, uploaded `.safetensors` state dicts for a zoo or operator-listed architecture, the
bundled digits and uploaded tensors files. No pickles, no `module:callable` (other than those the operator
lists), no server paths, no tracebacks or server paths in messages.

The mode is set by the operator on the server, never by the browser: the environment variable
`WORKBENCH_MODE=shared` (the app may also read `st.secrets["mode"]` and pass it to `parse_mode`).
`WORKBENCH_ARCHITECTURES=pkg.models:resnet_small,pkg.models:tiny_vit` lists the callables a shared
server may build (to load uploaded weights into).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from pathlib import Path

from analysis.errors import WorkbenchError, first_line
from analysis.model.pruned import ARCHITECTURES_ENV, operator_architectures  # noqa: F401  (part of the policy)

MODE_ENV = "WORKBENCH_MODE"
SHARED_DATA_SUFFIXES = (".safetensors", ".npz")  # parsers that cannot run code (no pickle)
SHARED_WEIGHT_SUFFIXES = (".safetensors",)


class ServeMode(enum.StrEnum):
    LOCAL = "local"
    SHARED = "shared"


def parse_mode(value: str | None) -> ServeMode:
    """`local` (also unset or empty) or `shared`; anything else is an operator typo and refused, so a
    misspelt setting never silently serves local mode to the network."""
    text = (value or "").strip().lower()
    if text in ("", "local"):
        return ServeMode.LOCAL
    if text == "shared":
        return ServeMode.SHARED
    raise WorkbenchError(f"{MODE_ENV} must be 'local' or 'shared', got {value!r}")


def serve_mode(environ: Mapping[str, str] | None = None) -> ServeMode:
    """The mode the operator set in the server's environment (`WORKBENCH_MODE`)."""
    env = os.environ if environ is None else environ
    return parse_mode(env.get(MODE_ENV))


def allowed_model_sources(mode: ServeMode) -> tuple[str, ...]:
    """The model sources the app may offer in `mode` (labels the pages use for their pickers)."""
    if mode is ServeMode.SHARED:
        return ("zoo", "uploaded state dict")
    return ("zoo", "uploaded state dict", "python callable", "torchvision", "pickled model", "server path")


def allowed_data_sources(mode: ServeMode) -> tuple[str, ...]:
    if mode is ServeMode.SHARED:
        return ("digits", "uploaded tensors")
    return ("digits", "uploaded tensors", "server path")


def _inside(path: str | Path, folder: str | Path | None) -> bool:
    """Whether `path` is a regular, non-link file inside `folder` (after resolving `..` and links)."""
    if folder is None:
        return False
    p = Path(path)
    try:
        if p.is_symlink() or not p.is_file():
            return False
        return p.resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


def check_model_spec(
    spec: str,
    mode: ServeMode,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    upload_dir: str | Path | None = None,
    architectures: tuple[str, ...] | None = None,
) -> None:
    """Raise WorkbenchError if `mode` does not allow loading `spec` (with `weights`). Local mode allows all.

    Shared: `zoo:<name>` or an operator-listed `module:callable`; weights only as a `.safetensors` file
    inside this session's `upload_dir`; never `trust_pickle`.
    """
    if mode is ServeMode.LOCAL:
        return
    spec = (spec or "").strip()
    if trust_pickle:
        raise WorkbenchError("this server is shared: pickled models cannot be loaded (unpickling runs code)")
    allowed = operator_architectures() if architectures is None else architectures
    if spec.startswith("zoo:"):
        from analysis.zoo import ZOO

        if spec.removeprefix("zoo:") not in ZOO:
            raise WorkbenchError(f"no zoo model {spec.removeprefix('zoo:')!r}: choose one from the list")
    elif spec not in allowed:
        raise WorkbenchError(
            "this server is shared: only zoo models and the architectures the operator lists can be built "
            "(no pickles, Python callables or server paths); upload a .safetensors state dict for one"
        )
    has_weights = weights is not None and str(weights).strip()
    if has_weights and (
        not str(weights).lower().endswith(SHARED_WEIGHT_SUFFIXES) or not _inside(weights, upload_dir)
    ):
        raise WorkbenchError("this server is shared: weights must be an uploaded .safetensors state dict")


def check_data_spec(spec: str, mode: ServeMode, upload_dir: str | Path | None = None) -> None:
    """Raise WorkbenchError if `mode` does not allow `spec`. Shared: `digits`, or `tensors:<file>` for a
    `.safetensors`/`.npz` file inside this session's `upload_dir`."""
    if mode is ServeMode.LOCAL:
        return
    spec = (spec or "").strip()
    if spec == "digits":
        return
    if spec.startswith("tensors:"):
        path = spec.removeprefix("tensors:")
        if path.lower().endswith(SHARED_DATA_SUFFIXES) and _inside(path, upload_dir):
            return
    raise WorkbenchError(
        "this server is shared: use the digits data or upload a .safetensors or .npz tensors file "
        "(server paths cannot be read)"
    )


_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:,]))(?:[A-Za-z]:\\|~?/)[^\s'\"()\[\],;]*")


def strip_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last part (`/root/x/model.pt` -> `model.pt`)."""

    def last_part(match: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group(0)) if p]
        return parts[-1] if parts else "<path>"

    return _ABSOLUTE_PATH.sub(last_part, text)


def public_message(exc: BaseException, mode: ServeMode) -> str:
    """One line to show a user for `exc`: a WorkbenchError's message, else the type and first line.

    Shared mode never shows a traceback or a server path: absolute paths are cut to their last part, and
    errors that are not the user's input get a generic line.
    """
    first = first_line(exc) if str(exc).strip() else ""
    if isinstance(exc, WorkbenchError):
        text = first or "invalid input"
    else:
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if mode is ServeMode.SHARED:
            text = f"the analysis failed ({text[:200]})"
    return strip_paths(text) if mode is ServeMode.SHARED else text


__all__ = [
    "ARCHITECTURES_ENV",
    "MODE_ENV",
    "ServeMode",
    "allowed_data_sources",
    "allowed_model_sources",
    "check_data_spec",
    "check_model_spec",
    "operator_architectures",
    "parse_mode",
    "public_message",
    "serve_mode",
    "strip_paths",
]
