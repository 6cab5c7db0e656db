"""The maskconver-bench command: a host smoke run on a real converted model, and its one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from bench_models import nano_model
from maskconver.benchmarks.cli import main

ADB = shutil.which("adb")


def test_console_script_is_registered():
    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("maskconver-bench") == "maskconver.benchmarks.cli:main"


def test_host_smoke_writes_sane_reports(tmp_path):
    _ckpt, model = nano_model()
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "png")}
    argv = [model, "--device", "host", "--runs", "3", "--warmup", "1", "--threads", "1"]
    argv += ["--json", out["json"], "--markdown", out["md"], "--plot", out["png"]]
    proc = subprocess.run(
        [sys.executable, "-m", "maskconver.benchmarks.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("HOST ONLY: inference median")
    assert "[maskconver-bench] run 3/3" in proc.stderr  # progress goes to stderr
    r = json.loads(out["json"].read_text())
    assert r["kind"] == "host" and r["status"] == "ok"
    assert r["label"].startswith("HOST") and "not a phone" in r["label"]
    assert r["verdict"]["status"] == "HOST_ONLY" and r["verdict"]["stage"] == "inference"
    assert r["verdict"]["measured_ms"] == r["stages"]["inference"]["p50"]
    assert r["settings"] | {"runs": 3, "warmup": 1, "threads": 1} == r["settings"]
    assert r["settings"]["image_sizes"] == ["480x640"]  # default frames: synthetic camera-size scenes
    for st in r["stages"].values():
        values = [st[k] for k in ("min", "p5", "p50", "p90", "p95", "p99", "max")]
        assert st["n"] == 3 and values == sorted(values) and values[0] > 0
    assert r["stages"]["end_to_end"]["p50"] >= r["stages"]["inference"]["p50"]
    assert len(r["model"]["sha256"]) == 64 and r["model"]["name"] == model.name
    md = out["md"].read_text()
    assert "**Verdict:** HOST ONLY" in md and "| end_to_end | 3 |" in md
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _one_error_line(capsys) -> str:
    """The error as one line, the last on stderr (progress lines may come before it)."""
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    errors = [ln for ln in err if "error" in ln.lower()]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert errors[0].startswith("maskconver-bench: error: ")
    return errors[0]


def test_missing_model_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope.tflite"), "--device", "host"]) == 1
    assert "does not exist" in _one_error_line(capsys)


def test_unavailable_host_delegate_is_one_line(monkeypatch, capsys):
    _ckpt, model = nano_model()
    monkeypatch.delenv("MASKCONVER_GPU_DELEGATE", raising=False)
    assert main([str(model), "--device", "host", "--delegate", "gpu", "--runs", "1"]) == 1
    line = _one_error_line(capsys)
    assert "gpu delegate" in line and "MASKCONVER_GPU_DELEGATE" in line


@pytest.fixture
def private_adb_port(monkeypatch):
    """A private adb server port, so the test neither sees nor disturbs other adb servers or devices."""
    if ADB is None:
        pytest.skip("adb is not installed (apt-get install -y adb)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    yield port
    subprocess.run([ADB, "kill-server"], capture_output=True, timeout=30, check=False)


def _host_elf() -> str:
    return os.path.realpath(sys.executable)


def test_pixel_without_a_device_is_one_line(private_adb_port, capsys):
    _ckpt, model = nano_model()
    argv = [str(model), "--device", "pixel", "--benchmark-binary", _host_elf()]
    assert main(argv) == 1
    line = _one_error_line(capsys)
    assert "no Android device found" in line and "USB debugging" in line


def test_pixel_without_adb_is_one_line(tmp_path, capsys):
    _ckpt, model = nano_model()
    argv = [
        str(model),
        "--device",
        "pixel",
        "--benchmark-binary",
        _host_elf(),
        "--adb",
        str(tmp_path / "adb"),
    ]
    assert main(argv) == 1
    assert "apt-get install adb" in _one_error_line(capsys)


def test_pixel_without_benchmark_binary_is_one_line(monkeypatch, capsys):
    _ckpt, model = nano_model()
    monkeypatch.delenv("MASKCONVER_BENCHMARK_MODEL", raising=False)
    assert main([str(model), "--device", "pixel"]) == 1
    assert "benchmark_model" in _one_error_line(capsys)


def test_compare_with_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "none"), "--config", "nano", "--out", str(tmp_path)]) == 1
    assert "does not exist" in _one_error_line(capsys)
    assert not list(Path(tmp_path).iterdir())  # nothing converted, nothing written
