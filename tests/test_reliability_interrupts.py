"""Interruptions lose nothing: SIGKILL in the middle of a conversion or a training run.

* ``maskconver-convert`` killed after it started writing the new model: the output folder still holds the
  previous good files, byte for byte, and nothing under a final name is partial or new (the converter builds
  everything in a hidden temporary folder and renames at the end).
* ``maskconver-train`` killed mid-run: ``latest.json`` names a complete checkpoint that loads, every
  ``ckpt-*.npz`` under its final name is complete, and resuming continues from the newest checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import cli_command, demo_checkpoint, demo_int8_model

tf = pytest.importorskip("tensorflow", reason="conversion and training need tensorflow")


def _start(name: str, *args: str | Path) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [*cli_command(name), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    if proc.stderr:
        proc.stderr.close()


def _wait_for(proc: subprocess.Popen, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            _kill(proc)
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_killed_conversion_keeps_the_previous_good_model(tmp_path_factory, tmp_path):
    ckpt = demo_checkpoint()
    if ckpt is None:
        pytest.skip("no demo checkpoint")
    good_model = demo_int8_model(tmp_path_factory.getbasetemp())
    out = tmp_path / "models"
    out.mkdir()
    before = {}
    for f in good_model.parent.iterdir():  # the previous good conversion: model + reports
        (out / f.name).write_bytes(f.read_bytes())
        before[f.name] = f.read_bytes()

    proc = _start("maskconver-convert", ckpt, "--int8", "--num-calibration", "8", "-o", out, "-q")

    def writing() -> bool:  # the new model is being written into the converter's temp folder
        return any(p.suffix == ".tflite" for d in out.glob(".maskconver-*") for p in d.iterdir())

    try:
        _wait_for(proc, writing, 180, "the converter started writing its model")
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    visible = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert visible.keys() == before.keys()
    for name, data in before.items():
        assert visible[name] == data, f"{name} changed"
    from maskconver.runtime.model_file import read_model_file

    assert read_model_file(out / good_model.name).info.config_name == "nano"
    # What a kill leaves behind: only the hidden temporary folder (never a file under a final name).
    assert all(
        p.name.startswith(".maskconver-") and p.is_dir() for p in out.iterdir() if p.name.startswith(".")
    )
    # The next conversion into the folder removes work folders of dead conversions (the live ones are kept).
    from maskconver.converter.convert import remove_stale_work_dirs

    live = out / f".maskconver-{os.getpid()}-live"
    live.mkdir()
    remove_stale_work_dirs(out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [live.name]


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    from maskconver.models.checkpoint import load_checkpoint, read_checkpoint_arrays
    from maskconver.models.config import get_config
    from maskconver.models.train import find_resume_checkpoint, read_history, train

    cfg_path = tmp_path / "nano64.json"
    cfg = get_config("nano").with_input_size((64, 64))
    cfg_path.write_text(cfg.to_json())
    out = tmp_path / "run"
    args = ["--config", cfg_path, "--data", "synthetic", "--num-images", "4", "--image-size", "64"]
    args += ["--steps", "500", "--batch", "1", "--checkpoint-every", "1", "--out", out, "--quiet"]
    proc = _start("maskconver-train", *args)

    def step() -> int:
        try:
            return int(json.loads((out / "latest.json").read_text())["step"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    try:
        _wait_for(proc, lambda: step() >= 2, 240, "two checkpoints")
        # kill at an arbitrary moment of the following steps (possibly while a checkpoint is written)
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.5)))
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.npz").exists()  # it really was interrupted

    latest = json.loads((out / "latest.json").read_text())  # complete JSON (written atomically)
    ckpt = out / latest["checkpoint"]
    assert find_resume_checkpoint(out) == ckpt
    for p in out.glob("ckpt-*.npz"):  # every checkpoint under a final name is complete
        arrays, embedded, kind = read_checkpoint_arrays(p)
        assert kind == "maskconver" and embedded["name"] == cfg.name and arrays
    model = load_checkpoint(ckpt)
    assert model.config.input_size == (64, 64)
    last = int(latest["step"])
    assert last >= 2 and len(read_history(ckpt)["total"]) == last

    more = 1
    res = train(cfg, out / "data", last + more, out, batch_size=1, checkpoint_every=1, progress=False)
    assert res.resumed_from == last and res.step == last + more
    assert [int(h["step"]) for h in res.history] == list(range(last + 1, last + more + 1))
    assert len(read_history(out / f"ckpt-{last + more:07d}.npz")["total"]) == last + more
    assert (out / "model.npz").exists()
