"""Files a browser session uploads: private, content-addressed, size-limited, and removed afterwards.

Each session gets its own directory (mode 0700, random name) under a root (`WORKBENCH_UPLOAD_DIR`, or a
per-user folder in the system temp directory; an existing root keeps its mode); each file is stored as
`<sha256><suffix>` with mode 0600 and is re-hashed before an existing copy is trusted. The size limit counts
bytes received and, for a `.npz`, what it unpacks to. `close()` removes the session's directory;
`purge_older_than(seconds)` removes sessions left behind by a server that stopped without closing them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

from analysis.errors import WorkbenchError
from analysis.limits import check_archive

ROOT_ENV = "WORKBENCH_UPLOAD_DIR"
MAX_UPLOAD_BYTES_ENV = "WORKBENCH_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_NAME_CHARS = 200
_CHUNK = 1 << 20
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,16})$")
_SESSION_NAME = re.compile(r"^session-[0-9a-f]{32}$")
ARCHIVE_SUFFIXES = (".npz", ".zip")


def default_root() -> Path:
    """`WORKBENCH_UPLOAD_DIR`, or `<tmp>/compression-workbench-uploads-<uid>`."""
    env = os.environ.get(ROOT_ENV, "").strip()
    if env:
        return Path(env)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"compression-workbench-uploads-{uid}"


def default_max_bytes() -> int:
    """`WORKBENCH_MAX_UPLOAD_MB` megabytes, or 50 MB."""
    text = os.environ.get(MAX_UPLOAD_BYTES_ENV, "").strip()
    try:
        return int(float(text) * 1024 * 1024) if text else DEFAULT_MAX_UPLOAD_BYTES
    except ValueError:
        return DEFAULT_MAX_UPLOAD_BYTES


def safe_suffix(name: object) -> str:
    """The file-type suffix of an uploaded file's name (`.safetensors`), checked; WorkbenchError if the name
    is unusable (empty, `.`/`..`, a NUL, a slash, control characters, over 200 characters)."""
    if not isinstance(name, str) or not name.strip():
        raise WorkbenchError("the uploaded file has no name: give it a name like weights.safetensors")
    if len(name) > MAX_NAME_CHARS:
        raise WorkbenchError(
            f"the uploaded file's name is {len(name)} characters: use at most {MAX_NAME_CHARS}"
        )
    if any(c in name for c in "/\\\0") or any(ord(c) < 32 for c in name) or name.strip() in (".", ".."):
        raise WorkbenchError("the uploaded file's name has a slash, a NUL or a control character, or is '..'")
    found = _SUFFIX.search(name)
    return found.group(1).lower() if found else ""


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _make_root(path: Path) -> None:
    """The folder that holds the session folders: created private (0700) when missing; an existing one
    keeps its mode (it may be a shared temporary folder, e.g. 1777: narrowing it would lock others out).
    Each session's own folder is 0700 with a random name either way."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise WorkbenchError(f"{ROOT_ENV} must name a folder, and {path} is not one")
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def size_text(n_bytes: int) -> str:
    """A size limit in the unit `WORKBENCH_MAX_UPLOAD_MB` is given in (MiB, written MB), never rounded to 0."""
    return f"{n_bytes / 2**20:.3g} MB"


class UploadStore:
    """One session's uploads. Use as a context manager, or call `close()` when the session ends."""

    def __init__(self, root: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        _make_root(self.root)
        # A random name: another session cannot guess (or pre-create) this one's folder.
        self.dir = self.root / f"session-{secrets.token_hex(16)}"
        self.dir.mkdir(mode=0o700)
        os.chmod(self.dir, 0o700)

    def __enter__(self) -> UploadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self, name: str, content: bytes | BinaryIO) -> Path:
        """Store `content` (bytes or a binary file object) as `<sha256><suffix>`; returns its path.

        An existing file of that name is re-hashed and reused only if its content still matches.
        WorkbenchError for a bad name or content over the size limit.
        """
        suffix = safe_suffix(name)
        if not self.dir.is_dir():
            raise WorkbenchError("this session's upload folder is closed: reload the page")
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=self.dir)  # created 0600
        tmp = Path(tmp_name)
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(content):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise WorkbenchError(
                            f"the upload is over the {size_text(self.max_bytes)} limit: use a smaller file"
                        )
                    h.update(chunk)
                    out.write(chunk)
            if suffix in ARCHIVE_SUFFIXES and zipfile.is_zipfile(tmp):  # counts what it unpacks to
                check_archive(tmp, self.max_bytes, f"the upload ({size_text(self.max_bytes)} limit)")
            target = self.dir / f"{h.hexdigest()}{suffix}"
            if target.exists() and not target.is_symlink() and self.verify(target):
                tmp.unlink()
                return target
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
            return target
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def verify(self, path: str | Path) -> bool:
        """Whether `path` is a regular file in this session's folder whose content matches its hash name."""
        p = Path(path)
        if p.parent != self.dir or p.is_symlink() or not p.is_file():
            return False
        return _digest_file(p) == p.name[:64]

    def close(self) -> None:
        """Remove this session's folder and everything in it."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _chunks(content: bytes | BinaryIO):
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        for i in range(0, len(data), _CHUNK):
            yield data[i : i + _CHUNK]
        return
    if hasattr(content, "seek"):
        content.seek(0)
    yield from iter(lambda: content.read(_CHUNK), b"")


def purge_older_than(seconds: float, root: str | Path | None = None) -> int:
    """Remove session folders under `root` not modified for `seconds`; returns how many were removed."""
    base = Path(root) if root is not None else default_root()
    if not base.is_dir():
        return 0
    cutoff = time.time() - seconds
    removed = 0
    for entry in base.iterdir():
        if not _SESSION_NAME.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            newest = max([entry.stat().st_mtime, *(f.stat().st_mtime for f in entry.iterdir())])
        except OSError:
            continue
        if newest < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "UploadStore", "default_root", "purge_older_than", "safe_suffix"]
