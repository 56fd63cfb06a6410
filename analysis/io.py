"""File writes: a reader never sees a half-written file, a failure leaves no debris, and a target that is
not a regular file (standard output, a character device, a FIFO) is written directly, never replaced.

- `write_atomic` writes a temp file next to the target and renames it over the target, keeping the old
  file's permission bits; a read-only target is refused with a message instead of being overwritten.
- `write_all_atomic` writes several outputs all-or-none: every temp file first, then every rename.
- `check_outputs` checks every output path before a command starts its work (writable, not a folder or a
  link, folder exists; no output that is another output or one of the inputs).
- `to_json` never writes NaN or Infinity (invalid JSON for strict parsers): they become null plus a note,
  or raise where the caller passes `strict=True`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError

Writer = Callable[[Path], None]
STDOUT_NAMES = {
    "-",
    "/dev/stdout",
    "/dev/stderr",
    "/proc/self/fd/1",
    "/proc/self/fd/2",
    "/dev/fd/1",
    "/dev/fd/2",
}


def is_stream_target(path: str | Path) -> bool:
    """Whether `path` is standard output/error, or an existing non-regular file (character device, FIFO,
    socket, `/dev/fd/N` of a process substitution): those are written directly, never replaced."""
    text = str(path)
    if text in STDOUT_NAMES or text.startswith(("/dev/fd/", "/proc/self/fd/")):
        return True
    try:
        st = os.stat(text)  # follows links: /dev/stdout -> the pipe or terminal behind it
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def _write_stream(path: str | Path, write: Writer) -> None:
    """Produce the content in a private temp file, then copy it to the stream in one go."""
    with tempfile.TemporaryDirectory(prefix="workbench-") as tmpdir:
        tmp = Path(tmpdir) / "out"
        write(tmp)
        with open(tmp, "rb") as src:
            if str(path) == "-":
                sys.stdout.flush()
                shutil.copyfileobj(src, sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return
            try:
                with open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as exc:
                raise WorkbenchError(f"cannot write to {path}: {exc.strerror or exc}") from exc


def _prepare_target(path: Path) -> int | None:
    """The permission bits to give the new file: the existing file's, or None for a new file. Refuses
    directories, symbolic links (a rename would replace the link, not write where it points) and
    read-only files (checked from the mode bits: root may write anything, but a file someone made
    read-only should not be overwritten silently)."""
    if path.is_symlink():
        raise WorkbenchError(
            f"{path} is a symbolic link: name the file it points to (links are followed only to a FIFO or "
            "device)"
        )
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WorkbenchError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise WorkbenchError(f"{path} is a folder: give a file name")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o222 or not os.access(path, os.W_OK):
        raise WorkbenchError(f"{path} is read-only: choose another file or make it writable first")
    return mode


def _temp_for(path: Path, make_parents: bool = False) -> tuple[Path, int | None]:
    mode = _prepare_target(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise WorkbenchError(f"the folder {path.parent} does not exist: create it first, or fix the path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WorkbenchError(f"cannot write in {path.parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    return Path(tmp), mode


def _finish_temp(tmp: Path, mode: int | None) -> None:
    # mkstemp creates the file private (0600): keep the old file's mode, or what a plain open() would give.
    os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())


def write_atomic(path: str | Path, write: Callable[[Path], None], make_parents: bool = False) -> Path:
    """Call `write(tmp_path)`, then rename the temp file over `path` (same folder, so the rename is atomic).

    `-`, `/dev/stdout`, character devices and FIFOs are written directly instead. An existing file keeps
    its permission bits; a read-only one, a folder or a symbolic link is refused (WorkbenchError), and so
    is a missing folder unless `make_parents` (a typo never creates folders).
    """
    if is_stream_target(path):
        _write_stream(path, write)
        return Path(path)
    path = Path(path)
    tmp_path, mode = _temp_for(path, make_parents)
    try:
        write(tmp_path)
        _finish_temp(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_all_atomic(outputs: Mapping[str | Path, Writer]) -> list[Path]:
    """Write several files all-or-none: every temp file is written first, then all are renamed.

    If any write fails, every temp file is removed and every old file is left untouched. (The renames
    themselves are not one transaction, but a rename in the same folder does not fail for want of space.)
    Stream targets (standard output, FIFOs) are written last, after every file is in place.
    """
    files = {Path(p): w for p, w in outputs.items() if not is_stream_target(p)}
    streams = {p: w for p, w in outputs.items() if is_stream_target(p)}
    if len(set(files)) != len(files):
        raise WorkbenchError("two outputs name the same file: give each output its own name")
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in files.items():
            tmp, mode = _temp_for(path)
            temps.append((tmp, path))
            write(tmp)
            _finish_temp(tmp, mode)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for path, write in streams.items():
        _write_stream(path, write)
    return [*files, *(Path(p) for p in streams)]


def check_outputs(
    outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None] | None = None
) -> None:
    """Before any work starts: every output (option -> path) can be written where it is, no two outputs name
    one file, and no output names an input (option -> path) of the same run. One line per problem.

    Writable means: standard output, a FIFO or a device (also through a link); or a file that is not a
    folder, a symbolic link or read-only, in a folder that exists and may be written."""
    seen: dict[Any, str] = {}
    for flag, path in outputs.items():
        if path is None or str(path) == "":
            continue
        _check_output(flag, str(path))
        key = _identity(str(path))
        if key is None:
            continue  # a character device (/dev/null, a terminal) takes any number of writers
        if key in seen:
            raise WorkbenchError(f"{seen[key]} and {flag} both name {path}: give each output its own file")
        seen[key] = flag
    for flag, path in (inputs or {}).items():
        key = _identity(str(path)) if path else None
        if key is not None and key in seen:
            raise WorkbenchError(
                f"{seen[key]} {path} is also this run's {flag}: writing it would destroy the input; "
                "choose another output file"
            )


def _check_output(flag: str, path: str) -> None:
    if path in STDOUT_NAMES or path.startswith(("/dev/fd/", "/proc/self/fd/")):
        return
    target = Path(path)
    if target.is_symlink():
        if is_stream_target(path):
            return  # a link to a FIFO or device is written through
        raise WorkbenchError(
            f"{flag} {path} is a symbolic link: name the file it points to (links are followed only to a "
            "FIFO or device)"
        )
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise WorkbenchError(f"{flag} {path}: {exc.strerror or exc}") from exc
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise WorkbenchError(f"{flag} {path} is a folder: give a file name")
        if not stat.S_ISREG(st.st_mode):
            return  # FIFO, device, socket: written directly
        if not stat.S_IMODE(st.st_mode) & 0o222 or not os.access(path, os.W_OK):
            raise WorkbenchError(f"{flag} {path} is read-only: choose another file or make it writable first")
    folder = target.parent
    if not folder.is_dir():
        raise WorkbenchError(
            f"{flag} {path}: the folder {folder} does not exist; create it first, or fix the path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{flag} {path}: cannot write in the folder {folder}")


def _identity(path: str) -> Any:
    """What makes two paths one file: the device and inode of an existing file (hard links and symbolic
    links included), the resolved path of a new one, `stdout` for standard output; None for a character
    device."""
    if path in ("-", "/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"):
        return ("stdout",)
    try:
        st = os.stat(path)
    except OSError:
        return ("new", os.path.realpath(os.path.abspath(path)))
    if stat.S_ISCHR(st.st_mode):
        return None
    return ("file", st.st_dev, st.st_ino)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes, make_parents: bool = False) -> Path:
    return write_atomic(path, lambda p: p.write_bytes(data), make_parents)


def finite_json(payload: Any, strict: bool = False) -> tuple[Any, list[str]]:
    """`payload` as plain JSON values with every NaN/Infinity replaced by None, and the dotted paths replaced.

    `strict=True` raises WorkbenchError instead of replacing.
    """
    plain = json.loads(json.dumps(payload, default=_default))
    replaced: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            replaced.append(where or "(value)")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(plain, "")
    if replaced and strict:
        shown = ", ".join(replaced[:3]) + (f" and {len(replaced) - 3} more" if len(replaced) > 3 else "")
        raise WorkbenchError(
            f"the result holds NaN or infinite values ({shown}): check the data and the model"
        )
    return cleaned, replaced


def to_json(payload: Any, strict: bool = False) -> str:
    """Indented JSON that a strict parser accepts: NaN/Infinity become null, and a dict payload gets a
    `notes` entry naming them (or WorkbenchError with `strict=True`)."""
    cleaned, replaced = finite_json(payload, strict=strict)
    if replaced and isinstance(cleaned, dict):
        shown = ", ".join(replaced[:5]) + (f" and {len(replaced) - 5} more" if len(replaced) > 5 else "")
        notes = cleaned.get("notes")
        note = f"{len(replaced)} values were NaN or infinite and are written as null: {shown}"
        cleaned["notes"] = [*notes, note] if isinstance(notes, list) else [note]
    return json.dumps(cleaned, indent=2, allow_nan=False) + "\n"


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _umask() -> int:
    # Read it from /proc where possible: os.umask can only be read by setting it, and a file another thread
    # creates in between would get mode 0666.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask
