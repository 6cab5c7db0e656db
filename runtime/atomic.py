"""Atomic file writes: a temporary file in the target's folder, then one rename.

A reader never sees a half-written file under the final name, and an interrupted write leaves the previous file
untouched (at most a hidden ``.NAME.*.tmp`` beside it, removed when the write fails inside Python).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(
    path: str | os.PathLike, data: bytes, *, make_parents: bool = False, fsync: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically; ``fsync`` also forces it to disk before the rename."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        give_usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def give_usual_permissions(path: str | os.PathLike) -> None:
    """``0666`` minus the umask, as ``open()`` would make the file (``mkstemp`` makes ``0600``)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str, **kw) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"), **kw)
