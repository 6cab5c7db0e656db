"""Shared pieces of the reliability tests (bad input, threads, interruptions, soak).

* :func:`demo_checkpoint` / :func:`demo_int8_model`: the demo MaskConver network and its int8 model file,
  converted once per pytest session with the real ``maskconver-convert`` (about 20 s) into the session's
  base temp folder, so every module that asks gets the same file.
* :func:`tmpfs`: a size-limited or read-only tmpfs mounted for the duration of a ``with`` block (root
  only; the caller skips when :class:`MountUnavailable` is raised) -- a real full disk / read-only disk.
* :func:`run_cli`: a console script as a subprocess, falling back to ``python -m``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINTS = (REPO / "models" / "demo" / "maskconver_nano_demo.npz", Path("/tmp/demo_run/model.npz"))
CLI_MODULES = {
    "maskconver-convert": "maskconver.converter.cli",
    "maskconver-segment": "maskconver.runtime.cli",
    "maskconver-train": "maskconver.models.train_cli",
}


class MountUnavailable(RuntimeError):
    """tmpfs cannot be mounted here (not root, no mount binary, or a restricted container)."""


def demo_checkpoint() -> Path | None:
    """The demo checkpoint (the shipped one, else the training run's), or None."""
    for p in DEMO_CHECKPOINTS:
        if p.is_file():
            return p
    return None


def cli_command(name: str) -> list[str]:
    """argv prefix running console script ``name`` with this interpreter's environment."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", CLI_MODULES[name]]


def run_cli(name: str, *args: str | os.PathLike, timeout: float = 300.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [*cli_command(name), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def demo_int8_model(base: Path) -> Path:
    """``base/demo_int8/maskconver_nano_128x128_int8.tflite``, converted on first use (50 calibration images).

    Raises FileNotFoundError when no demo checkpoint exists (callers skip), RuntimeError if the conversion fails.
    """
    ckpt = demo_checkpoint()
    if ckpt is None:
        raise FileNotFoundError(f"no demo checkpoint at {', '.join(map(str, DEMO_CHECKPOINTS))}")
    out = base / "demo_int8"
    model = out / "maskconver_nano_128x128_int8.tflite"
    if not model.exists():  # the converter moves finished files in atomically: existing == complete
        proc = run_cli("maskconver-convert", ckpt, "--int8", "--num-calibration", "50", "-o", out, "-q")
        if proc.returncode != 0 or not model.exists():
            raise RuntimeError(f"maskconver-convert failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return model


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """Mount a fresh tmpfs of ``size`` at ``path`` (created) for the ``with`` block; unmount afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise MountUnavailable(f"cannot run mount: {e}") from e
    if proc.returncode != 0:
        raise MountUnavailable(f"mount -t tmpfs failed: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one) in MiB, from /proc (Linux)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/<pid>/status")
