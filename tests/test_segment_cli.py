"""``maskconver-segment`` on real inputs (PNG, folder, OpenCV-written video) and the real red-square model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_test_models as rtm  # noqa: E402
from maskconver.runtime.cli import main  # noqa: E402

SQUARE_BOX = (48, 32, 96, 80)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    return rtm.build_test_models(tmp_path_factory.getbasetemp() / "red_square_models")["int8"]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_video") / "moving.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (128, 128))
    for i in range(12):
        x = 16 * (i % 6)
        writer.write(rtm.square_image(128, 128, (x, 32, x + 48, 80))[:, :, ::-1].copy())
    writer.release()
    return path


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), rtm.square_image(96, 128, SQUARE_BOX)[:, :, ::-1])
    return path


def test_image_to_png_overlay_and_json(model, tmp_path, capsys):
    img = _image(tmp_path)
    out_dir, js = tmp_path / "out", tmp_path / "res.json"
    assert main([str(model), str(img), "--save", str(out_dir), "--json", str(js), "--threads", "1"]) == 0
    printed = capsys.readouterr()
    assert "frame 0: 128x96: 1 background, 1 square" in printed.out
    assert "1 frames" in printed.err and "mean ms: pre" in printed.err
    assert os.listdir(out_dir) == ["square.png"]  # named after its source image
    over = cv2.imread(str(out_dir / "square.png"))
    assert over.shape == (96, 128, 3)
    assert not np.array_equal(over[:, :, ::-1], rtm.square_image(96, 128, SQUARE_BOX))
    data = json.loads(js.read_text())
    assert data["summary"]["frames"] == 1 and data["summary"]["model"]["num_threads"] == 1
    (frame,) = data["frames"]
    assert frame["frame_index"] == 0 and frame["image_size"] == [96, 128]
    assert frame["source_file"] == str(img)
    square = [s for s in frame["segments"] if s["name"] == "square"][0]
    assert square["bbox"] == list(SQUARE_BOX) and square["isthing"] is True
    assert set(frame["speed_ms"]) == {"preprocess", "inference", "postprocess"}
    assert sorted(os.listdir(tmp_path)) == ["out", "res.json", "square.png"]  # no temp files left


def test_video_to_mp4_with_all_frames_in_order(model, video, tmp_path, capsys):
    out, js = tmp_path / "overlay.mp4", tmp_path / "v.json"
    assert main([str(model), str(video), "--save", str(out), "--json", str(js), "--quiet"]) == 0
    assert "frame 0" not in capsys.readouterr().out  # --quiet
    cap = cv2.VideoCapture(str(out))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (128, 128, 3)
        n += 1
    cap.release()
    assert n == 12
    frames = json.loads(js.read_text())["frames"]
    assert [f["frame_index"] for f in frames] == list(range(12))
    lefts = [[s["bbox"][0] for s in f["segments"] if s["isthing"]] for f in frames]
    assert all(len(x) == 1 and abs(x[0] - 16 * (i % 6)) <= 2 for i, x in enumerate(lefts))
    assert sorted(os.listdir(tmp_path)) == ["overlay.mp4", "v.json"]


def test_max_frames_stride_and_canvas(model, video, tmp_path):
    js = tmp_path / "v.json"
    assert (
        main(
            [str(model), str(video), "--max-frames", "3", "--vid-stride", "2", "--canvas", "--json", str(js)]
        )
        == 0
    )
    frames = json.loads(js.read_text())["frames"]
    assert [f["frame_index"] for f in frames] == [0, 2, 4]
    assert all(f["mask_size"] == [640, 640] and f["mode"] == "canvas" for f in frames)


def test_grid_mask_resolution_gives_the_same_segments(model, video, tmp_path):
    """--mask-resolution grid: the square of the test video lies on the 8-pixel grid, so the grid merge finds
    the same segments as the full merge (areas differ only by the full merge's rounded corners)."""
    out = {}
    for mode in ("full", "grid"):
        js = tmp_path / f"{mode}.json"
        assert (
            main([str(model), str(video), "--max-frames", "4", "--mask-resolution", mode, "--json", str(js)])
            == 0
        )
        out[mode] = json.loads(js.read_text())["frames"]
    for full, grid in zip(out["full"], out["grid"], strict=True):
        assert full["frame_index"] == grid["frame_index"]
        assert [(s["name"], s["bbox"]) for s in full["segments"]] == [
            (s["name"], s["bbox"]) for s in grid["segments"]
        ]
        sq_full, sq_grid = (next(s for s in f["segments"] if s["isthing"]) for f in (full, grid))
        assert sq_full["area"] < sq_grid["area"] == 48 * 48


def test_unknown_mask_resolution_is_refused(model, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(model), str(_image(tmp_path)), "--mask-resolution", "half"])
    assert e.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--vid-stride", "0"], "--vid-stride"),
        (["--alpha", "2"], "--alpha"),
        (["--save", "/nonexistent_dir_xyz/out.mp4"], "does not exist; create it first"),
        (["--json", "/nonexistent_dir_xyz/out.json"], "does not exist; create it first"),
        (["--delegate", "gpu"], "cannot load the gpu delegate"),
        (["--delegate", "tpu"], "unknown delegate"),
    ],
)
def test_bad_options_exit_2_with_a_message(model, tmp_path, capsys, extra, match):
    assert main([str(model), str(_image(tmp_path)), *extra]) == 2
    err = capsys.readouterr().err
    assert "maskconver-segment: error:" in err and match in err


def test_bad_model_and_source_exit_2(model, tmp_path, capsys):
    img = _image(tmp_path)
    assert main([str(tmp_path / "missing.tflite"), str(img)]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    assert main([str(junk), str(img)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err
    assert main([str(model), str(tmp_path / "nothing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 50)
    assert main([str(model), str(broken)]) == 2
    assert "broken.mp4" in capsys.readouterr().err


def test_show_without_display_explains(model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection by environment is Linux-only")
    assert main([str(model), str(_image(tmp_path)), "--show"]) == 2
    assert "--show needs a display" in capsys.readouterr().err


def test_console_script_runs(model, tmp_path):
    exe = Path(sys.executable).parent / "maskconver-segment"
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    js = tmp_path / "r.json"
    proc = subprocess.run(
        [str(exe), str(model), str(_image(tmp_path)), "--json", str(js)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 background, 1 square" in proc.stdout
    assert json.loads(js.read_text())["summary"]["frames"] == 1
    bad = subprocess.run([str(exe), str(model)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "source" in bad.stderr
