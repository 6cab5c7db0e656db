"""Checks of output paths that command-line tools make *before* any work: a run of minutes must not end in
a traceback because its ``--json`` file cannot be written.

Nothing is created: writability is probed with a temporary file in the target folder (or, when the folder
does not exist yet, its nearest existing parent, where it would be created), removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the option and the fix."""


def _probe(folder: Path, what: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {what} into {folder}: {existing} is a file; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".maskconver-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputPathError(
            f"cannot write {what} into {folder}: {e.strerror or e}; choose another path"
        ) from e


def check_output_file(path: str | os.PathLike, flag: str, *, make_parents: bool = False) -> Path:
    """``path`` for a file that ``flag`` will write: not a folder, its folder exists (or, with
    ``make_parents``, can be created) and takes files. Raises :class:`OutputPathError`."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(
            f"{flag} {p} is a folder; pass a file name such as {p / ('out' + _suffix(flag))}"
        )
    if not make_parents and not p.parent.is_dir():
        if p.parent.exists():
            raise OutputPathError(f"{flag} {p}: {p.parent} is a file, not a folder; choose another path")
        raise OutputPathError(f"folder {p.parent} for {flag} {p} does not exist; create it first")
    _probe(p.parent, f"{flag} {p.name}")
    return p


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` for a folder that ``flag`` will fill: not an existing file, and it (or the parent that
    would hold it) takes files. Raises :class:`OutputPathError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p} is a file; pass a folder (it is created if missing)")
    _probe(p, f"{flag} output")
    return p


def _suffix(flag: str) -> str:
    return {"--json": ".json", "--plot": ".png", "--markdown": ".md"}.get(flag, "")
