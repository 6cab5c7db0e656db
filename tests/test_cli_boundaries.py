"""What a first-time user runs into at the edges of every command: arguments and output paths checked before any
long work, one clear line and a non-zero exit instead of a traceback, nothing left behind, and the small things
(EXIF orientation, output names, file permissions) done as a photo tool would.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from maskconver.runtime.output_paths import OutputPathError, check_output_dir, check_output_file
from maskconver.runtime.preprocess import read_image
from reliability_helpers import demo_checkpoint


def _blocky(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(np.repeat(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), 16, 0), 16, 1)


def _jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``rgb`` carrying an EXIF APP1 segment with one IFD0 entry: Orientation (0x0112)."""
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    # little-endian TIFF header, IFD0 at offset 8 holding 1 entry (tag, SHORT, count 1, value), no next IFD
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = buf.tobytes()
    return data[:2] + app1 + data[2:]  # right after SOI


# ---------------------------------------------------------------------------------------------------------
# images


def test_read_image_turns_phone_photos_upright_by_exif(tmp_path):
    rgb = _blocky(96, 128, seed=3)
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(rgb, 6))  # 6 = the camera was turned 90 degrees clockwise
    got = read_image(path)
    assert got.shape == (128, 96, 3)
    # the very pixels OpenCV's own reader gives (it applies the orientation), and upright: a 90-degree turn
    # clockwise of the stored image
    assert np.array_equal(got, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    stored = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert np.array_equal(got, np.rot90(stored, k=-1))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(_jpeg_with_orientation(rgb, 1))
    assert read_image(plain).shape == (96, 128, 3)


def test_read_image_keeps_16_bit_gray_and_alpha_handling(tmp_path):
    rgb16 = (np.arange(32 * 48 * 3, dtype=np.uint16).reshape(32, 48, 3) * 37) % 65535
    cv2.imwrite(str(tmp_path / "a16.png"), rgb16[:, :, ::-1])
    assert np.array_equal(read_image(tmp_path / "a16.png"), (rgb16 >> 8).astype(np.uint8))
    gray = _blocky(32, 48, 1)[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.dstack([_blocky(32, 48, 2), np.full((32, 48), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba[:, :, [2, 1, 0, 3]])
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])  # alpha dropped, not blended
    with pytest.raises(ValueError, match="is a folder, not an image file"):
        read_image(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# output paths


def test_output_path_checks_name_the_option_and_create_nothing(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(
        OutputPathError, match=r"^--json .* is a folder; pass a file name such as .*out\.json"
    ):
        check_output_file(tmp_path, "--json")
    with pytest.raises(
        OutputPathError, match=r"folder .*missing for --json .* does not exist; create it first"
    ):
        check_output_file(tmp_path / "missing" / "r.json", "--json")
    with pytest.raises(OutputPathError, match=r"cannot write --json r\.json into .*f\.txt is a file"):
        check_output_file(a_file / "r.json", "--json", make_parents=True)
    with pytest.raises(OutputPathError, match=r"^--save-pred .*f\.txt is a file; pass a folder"):
        check_output_dir(a_file, "--save-pred")
    assert check_output_file(tmp_path / "new" / "r.json", "--json", make_parents=True).name == "r.json"
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]  # nothing created, no probe left behind


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (a folder no file can be created in)")
def test_output_path_in_a_folder_that_takes_no_files():
    with pytest.raises(
        OutputPathError, match=r"cannot write --json x\.json into /proc: .*choose another path"
    ):
        check_output_file("/proc/x.json", "--json")


# ---------------------------------------------------------------------------------------------------------
# maskconver-segment


def test_segment_single_image_to_one_png_and_folder_outputs_named_after_their_sources(
    demo_model, tmp_path, capsys
):
    from maskconver.runtime.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("IMG_1.jpg", "IMG_1.png", "b.png")):
        cv2.imwrite(str(photos / name), _blocky(96, 128, seed=i)[:, :, ::-1])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    one = tmp_path / "one.png"
    assert main([str(demo_model), str(photos / "b.png"), "--save", str(one), "--quiet"]) == 0
    assert one.is_file() and cv2.imread(str(one)).shape == (96, 128, 3)
    # a folder: a corrupt photo is skipped with a warning (the rest is written), the exit status says so
    out, js = tmp_path / "out", tmp_path / "r.json"
    capsys.readouterr()
    assert main([str(demo_model), str(photos), "--save", str(out), "--json", str(js), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"warning: skipped {photos / 'broken.jpg'}: cannot decode" in err
    assert "1 unreadable image file(s) skipped" in err
    assert sorted(os.listdir(out)) == ["IMG_1.png", "IMG_1_png.png", "b.png"]
    data = json.loads(js.read_text())
    assert [f["source_file"] for f in data["frames"]] == [
        str(photos / n) for n in ("IMG_1.jpg", "IMG_1.png", "b.png")
    ]
    assert data["summary"]["skipped_files"][0]["path"] == str(photos / "broken.jpg")
    # one image file cannot go to a folder of frames
    assert main([str(demo_model), str(photos), "--save", str(tmp_path / "x.png")]) == 2
    assert "writes one image, but" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_segment_never_writes_over_its_input_images(demo_model, tmp_path, capsys):
    from maskconver.runtime.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), _blocky(96, 128, seed=0)[:, :, ::-1])
    before = (photos / "a.png").read_bytes()
    for source, save in ((photos, photos), (photos / "a.png", photos), (photos / "a.png", photos / "a.png")):
        assert main([str(demo_model), str(source), "--save", str(save), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "would overwrite them" in err or "is the input image itself" in err
    assert (photos / "a.png").read_bytes() == before and os.listdir(photos) == ["a.png"]


def test_segment_reports_only_the_skips_it_reached(demo_model, tmp_path, capsys):
    from maskconver.runtime.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), _blocky(96, 128, seed=0)[:, :, ::-1])
    (photos / "b.png").write_bytes(b"broken")
    cv2.imwrite(str(photos / "c.png"), _blocky(96, 128, seed=1)[:, :, ::-1])
    js = tmp_path / "r.json"
    assert main([str(demo_model), str(photos), "--max-frames", "1", "--json", str(js), "--quiet"]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert "skipped_files" not in json.loads(js.read_text())["summary"]


def test_segment_video_gets_the_usual_file_permissions(demo_model, tmp_path):
    from maskconver.runtime.cli import main

    src = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for i in range(3):
        writer.write(_blocky(96, 128, seed=i)[:, :, ::-1])
    writer.release()
    out = tmp_path / "out.avi"
    assert main([str(demo_model), str(src), "--save", str(out), "--quiet"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_live_segmenter_refuses_a_bad_frame_on_the_call_that_passes_it(demo_model):
    from maskconver.runtime.streams import LiveSegmenter

    got = []
    with LiveSegmenter(demo_model, lambda r, f, t: got.append(t)) as live:
        with pytest.raises(ValueError, match="image is empty"):
            live.segment_async(np.zeros((0, 0, 3), np.uint8), 1.0)
        with pytest.raises(ValueError, match="image is boolean"):
            live.segment_async(np.zeros((96, 128, 3), bool), 1.5)
        assert live.segment_async(_blocky(96, 128, 0), 2.0)  # the worker is unharmed
        assert live.wait(60)
    assert got == [2.0]


# ---------------------------------------------------------------------------------------------------------
# maskconver-eval


def test_eval_checks_outputs_and_options_first_and_leaves_no_temp_folder(
    demo_model, tmp_path, monkeypatch, capsys
):
    from maskconver.models.synthetic import generate_synthetic_dataset
    from maskconver.runtime.eval_cli import main

    generate_synthetic_dataset(tmp_path / "val", 2, seed=5, image_size=(128, 128))
    data = tmp_path / "val"
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert main([str(demo_model), "--data", str(data), "--json", str(tmp_path), "--quiet"]) == 1
    printed = capsys.readouterr()
    assert f"--json {tmp_path} is a folder" in printed.err and "PQ" not in printed.out  # checked, not scored
    assert main([str(demo_model), "--data", str(data), "--save-pred", str(a_file), "--quiet"]) == 1
    assert "--save-pred" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--gt-json", "a.json", "--pred-json", "b.json", "--workers", "0"])
    assert e.value.code == 2
    assert main([str(demo_model), "--data", str(data), "--workers", "2", "--limit", "1", "--quiet"]) == 0
    assert "note: --workers has no effect with a MODEL" in capsys.readouterr().err
    ckpt = demo_checkpoint()
    if ckpt is None:
        pytest.skip("no demo checkpoint")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert main([str(ckpt), "--data", str(data), "--limit", "1", "--quiet"]) == 0
    # the float model converted for the run is gone with it (TensorFlow leaves its autograph files)
    assert [n for n in os.listdir(tmp) if not n.startswith("__autograph")] == []


# ---------------------------------------------------------------------------------------------------------
# maskconver-bench


def test_bench_checks_report_paths_and_delegates_before_running(demo_model, tmp_path, capsys):
    from maskconver.benchmarks.cli import main

    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert main([str(demo_model), "--runs", "1", "--json", str(a_file / "r.json")]) == 1
    err = capsys.readouterr().err
    assert "cannot write --json r.json" in err and "f.txt is a file" in err
    assert "median inference" not in err  # nothing ran
    assert main([str(tmp_path), "--runs", "1"]) == 1
    assert "is a folder; pass the .tflite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(demo_model), "--delegate", "gpu,foo"])
    assert "invalid delegate 'foo'" in capsys.readouterr().err
    assert main([str(demo_model), "--device", "pixel", "--delegate", "gpu,xnnpack"]) == 1
    assert "a fallback chain works on --device host only" in capsys.readouterr().err


def test_bench_reads_a_folder_with_a_corrupt_image_as_an_error_not_a_traceback(demo_model, tmp_path, capsys):
    from maskconver.benchmarks.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), _blocky(96, 128, 0)[:, :, ::-1])
    (imgs / "b.jpg").write_bytes(b"broken")
    assert main([str(demo_model), "--runs", "1", "--images", str(imgs)]) == 1
    assert f"benchmark image {imgs / 'b.jpg'} is unusable" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# maskconver-convert, -demo, -train, -summary


def test_convert_checks_val_first_and_removes_the_output_folder_it_made(tmp_path, capsys):
    from maskconver.converter.cli import main

    out = tmp_path / "new" / "out"
    assert main(["whatever.npz", "--val", str(tmp_path / "nonexist"), "-o", str(out)]) == 1
    assert f"--val {tmp_path / 'nonexist'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    assert main([str(bad), "-o", str(out), "-q"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "new").exists()  # the folders it created are removed again, being empty
    keep = tmp_path / "keep"
    keep.mkdir()
    assert main([str(bad), "-o", str(keep), "-q"]) == 1
    assert keep.is_dir()  # a folder that was there stays


def test_convert_says_which_options_fp32_ignores(tmp_path, capsys):
    from maskconver.converter.cli import main

    assert (
        main(["missing.npz", "--fp32", "--per-tensor", "--calibration", "x", "-o", str(tmp_path / "o")]) == 1
    )
    err = capsys.readouterr().err
    assert "note: --per-tensor has no effect with --fp32" in err
    assert "note: --calibration (fp32 is neither calibrated" in err


def test_demo_checks_its_arguments_before_any_work(tmp_path, capsys):
    from maskconver.runtime.demo import main

    for flag in ("--num-val", "--num-calibration", "--runs"):
        with pytest.raises(SystemExit) as e:
            main([flag, "0", "--out", str(tmp_path / "d")])
        assert e.value.code == 2 and f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "maskconver-train writes one" in err
    assert not (tmp_path / "d").exists()


def test_train_checks_out_image_size_and_val_data_before_making_data(tmp_path, capsys):
    from maskconver.models.train_cli import main

    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    base = ["--config", "nano", "--data", "synthetic", "--steps", "1"]
    cases = [
        (["--out", str(a_file / "run")], "f.txt is a file"),
        (["--out", str(tmp_path / "r1"), "--image-size", "7"], "--image-size must be >= 16"),
        (["--out", str(tmp_path / "r2"), "--val-data", str(tmp_path / "nope")], "--val-data"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]  # no data generated, no run folder


def test_summary_refuses_bad_input_sizes(capsys):
    from maskconver.models.summary import main

    for size in ("0", "-16", "100"):
        with pytest.raises(SystemExit) as e:
            main(["nano", "--input-size", size])
        assert (
            e.value.code == 2 and "--input-size must be a positive multiple of 16" in capsys.readouterr().err
        )


def test_calibration_progress_in_a_log_is_lines_not_carriage_returns(tmp_path, capsys):
    from maskconver.converter.calibration import load_canvases

    files = []
    for i in range(12):
        files.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(files[-1]), _blocky(32, 48, i)[:, :, ::-1])
    canvases = list(load_canvases(files, (64, 64), "calibration images"))
    assert len(canvases) == 12 and canvases[0].shape == (64, 64, 3)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("calibration images")]
    assert 2 <= len(lines) <= 11 and "12/12" in lines[-1]
