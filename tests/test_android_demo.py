"""The Android demo's Kotlin decoder (android_demo/decoder) against the Python runtime's decode_panoptic.

The exporter (android_demo/tools/export_golden.py) writes golden cases from the Python runtime; the Kotlin
decoder is built with kotlinc and run on them by android_demo/decoder/run_tests.sh, which writes its results
back as .npz. Here both sides are compared in NumPy: the merge on Python's mask logits must be identical up to
float32 ties of the sigmoid (NumPy's float32 exp and Java's differ in the last bit for some inputs), and end
to end (Kotlin's own float32 mask head, whose summation order differs from NumPy's BLAS) the segment list must
be the same and any pixel whose winner differs must be a near-tie in Python's own logits.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from maskconver.runtime.decode import GRID_FACTORS, grid_axes, output_plans
from maskconver.runtime.peaks import sigmoid32

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
RUN_TESTS = DEMO / "decoder" / "run_tests.sh"
COMMITTED = DEMO / "decoder" / "src" / "test" / "resources" / "golden"
MG = REPO.parent / "shared" / "fixtures" / "modelgarden"
JSON_JAR = Path("/usr/share/java/com.android.json.jar")


def _exporter():
    spec = importlib.util.spec_from_file_location("export_golden", DEMO / "tools" / "export_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _have_preprocess() -> bool:
    return importlib.util.find_spec("maskconver.runtime.preprocess") is not None


def _have_model_writer() -> bool:
    return importlib.util.find_spec("maskconver.converter.tflite_metadata") is not None and (
        importlib.util.find_spec("tensorflow") is not None
    )


def _have_modelgarden() -> bool:
    return (MG / "golden_256.npz").exists() and (MG / "export_ckpt" / "ckpt-1.index").exists()


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """All golden cases exported afresh (the Model Garden ones only where shared/ fixtures exist)."""
    out = tmp_path_factory.mktemp("golden")
    groups = ("small", "fuzz", "int8", "modelgarden") if _have_modelgarden() else ("small", "fuzz")
    if _have_preprocess():
        groups += ("letterbox",)
    if _have_model_writer():
        groups += ("model", "demo")
    _exporter().export(out, groups, log=lambda msg: None)
    return out


@pytest.fixture(scope="module")
def kotlin_results(cases, tmp_path_factory) -> tuple[Path, str]:
    """Build and run the Kotlin decoder tests on every case; returns (results folder, runner output)."""
    if shutil.which("kotlinc") is None or shutil.which("kotlin") is None:
        pytest.skip(
            "kotlinc not installed (Debian: apt-get install -y kotlin); the Kotlin decoder was not run"
        )
    if not JSON_JAR.exists():
        pytest.skip(f"org.json jar not found at {JSON_JAR} (Debian: apt-get install -y libandroid-json-java)")
    out = tmp_path_factory.mktemp("kotlin")
    proc = subprocess.run(
        ["bash", str(RUN_TESTS), "--out", str(out), str(cases)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"run_tests.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return out, proc.stdout


def _case_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if (p / "case.json").is_file())


def _geometry(meta: dict, feature_size: tuple[int, int]):
    """``("grid", gy, gx)`` for a grid ``mask_resolution``, else ``("full", py, px)``, for a case's args."""
    args = meta["args"]
    h, w = feature_size
    canvas = tuple(args.get("canvas_size", (640, 640)))
    stride = int(args.get("stride", 8))
    valid = args.get("valid_size")
    output = tuple(args.get("output_size") or canvas)
    input_size = tuple(args.get("input_size") or (stride * h, stride * w))
    factor = GRID_FACTORS.get(args.get("mask_resolution", "full"), 0)
    if factor:
        gy, gx, _ = grid_axes((h * factor, w * factor), output, tuple(valid) if valid else None, input_size)
        return "grid", gy, gx
    py, px, _ = output_plans((h, w), output, tuple(valid) if valid else None, input_size)
    return "full", py, px


def test_exporter_writes_complete_cases(cases):
    import json

    names = _case_names(cases)
    assert {
        "rand_float_reference",
        "rand_float_valid",
        "rand_int8_plateaus",
        "rand_int8_flat",
        "rand_empty",
    } <= set(names)
    for name in names:
        exp = np.load(cases / name / "expected.npz")
        inp = np.load(cases / name / "inputs.npz")
        h, w = inp["heatmap"].shape[:2]
        k = exp["proposal_classes"].shape[0]
        kind, ay, ax = _geometry(json.loads((cases / name / "case.json").read_text()), (h, w))
        # grid modes: the logits of the (upsampled) grid cells the output covers
        assert exp["mask_logits"].shape == ((ay.n, ax.n, k) if kind == "grid" else (h, w, k))
        assert exp["winner"].shape == exp["category_mask"].shape
        # the winner map agrees with the masks: a kept thing proposal's pixels carry instance rank + 1
        kept_thing = exp["segment_instance_ids"][exp["segment_instance_ids"] > 0]
        for inst in kept_thing:
            assert np.array_equal(exp["instance_mask"] == inst, exp["winner"] == inst - 1)
    assert sum(n.startswith("fuzz_") and not n.startswith("fuzz_grid_") for n in names) == 24
    assert sum(n.startswith("fuzz_grid_") for n in names) == 8
    if _have_model_writer():  # the trained demo model: a few confident proposals and a long weak tail
        demo = np.load(cases / "demo_int8_grid" / "expected.npz")
        assert demo["proposal_scores"].size == 50 and demo["segment_category_ids"].size >= 2
        assert 2 * demo["proposal_scores"][16] < demo["proposal_scores"][0]  # the pruned merge prunes
    modes = {json.loads((cases / n / "case.json").read_text())["args"].get("mask_resolution") for n in names}
    assert {"grid", "grid2x", "grid4x"} <= modes
    empty = np.load(cases / "rand_empty" / "expected.npz")
    assert empty["proposal_classes"].size == 0 and not empty["category_mask"].any()
    # the small cases exercise segments of both kinds, crops, ties and int8 inputs
    ref = np.load(cases / "rand_float_reference" / "expected.npz")
    assert ref["segment_category_ids"].size >= 2
    flat = np.load(cases / "rand_int8_flat" / "expected.npz")
    assert flat["proposal_classes"].size > 0


def test_committed_resources_match_the_python_runtime(cases):
    """The goldens committed with the Kotlin sources are what the current Python runtime returns."""
    if not COMMITTED.exists():
        pytest.skip(f"no committed goldens at {COMMITTED}")
    names = [n for n in _case_names(COMMITTED) if (cases / n).exists()]
    assert names, "no committed case was re-exported"
    import json

    exporter = _exporter()
    for name in names:
        if name.startswith("demo_"):
            # inputs from TensorFlow's float inference (codes may move by one on another CPU): decode the
            # committed inputs again and compare what the Python runtime returns for them
            inp = dict(np.load(COMMITTED / name / "inputs.npz"))
            meta = json.loads((COMMITTED / name / "case.json").read_text())
            quant = {k: tuple(v) for k, v in meta["quant"].items()}
            again = cases / f"{name}.again"
            exporter.write_case(
                again, inp, dict(np.load(COMMITTED / name / "mask_head.npz")), quant, meta["args"]
            )
            old, new = np.load(COMMITTED / name / "expected.npz"), np.load(again / "expected.npz")
            for key in new.files:
                np.testing.assert_array_equal(
                    old[key], new[key], err_msg=f"{name}/{key}: re-run export_golden.py"
                )
            continue
        old = np.load(COMMITTED / name / "expected.npz")
        new = np.load(cases / name / "expected.npz")
        for key in new.files:
            np.testing.assert_array_equal(
                old[key], new[key], err_msg=f"{name}/{key}: re-run export_golden.py"
            )
        for f in ("inputs.npz", "mask_head.npz"):
            a, b = np.load(COMMITTED / name / f), np.load(cases / name / f)
            for key in b.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}/{f}/{key}")


def _near_tie_gap(exp, case_json: dict, feature_size: tuple[int, int], y: int, x: int) -> float:
    """Best minus second-best ``sigmoid(logit) * score`` at output pixel (y, x) from Python's logits."""
    logits = exp["mask_logits"]
    kind, ay, ax = _geometry(case_json, feature_size)
    if kind == "grid":  # the cell the pixel falls into
        at = logits[np.repeat(np.arange(ay.n), ay.count)[y], np.repeat(np.arange(ax.n), ax.count)[x]]
    else:
        py, px = ay, ax
        a, b = logits[py.i0[y], px.i0[x]], logits[py.i0[y], px.i1[x]]
        c, d = logits[py.i1[y], px.i0[x]], logits[py.i1[y], px.i1[x]]
        top = a + (b - a) * px.lerp[x]
        bot = c + (d - c) * px.lerp[x]
        at = top + (bot - top) * py.lerp[y]
    prod = np.sort(sigmoid32(at) * exp["proposal_scores"])
    return float(prod[-1] - prod[-2])


def _assert_same_decoding(got, exp, meta: dict, feature_size: tuple[int, int], tol: float, what: str) -> None:
    """Same proposals and segment list; winners may differ only at near-ties (gap <= ``tol`` in Python's own
    ``sigmoid(logit) * score``), and areas / boxes only by those pixels."""
    for key in (
        "proposal_classes",
        "proposal_yx",
        "proposal_segment",
        "segment_category_ids",
        "segment_instance_ids",
    ):
        np.testing.assert_array_equal(got[key], exp[key], err_msg=f"{what}: {key}")
    np.testing.assert_allclose(got["proposal_scores"], exp["proposal_scores"], rtol=3e-7)
    np.testing.assert_allclose(got["segment_scores"], exp["segment_scores"], rtol=3e-7)
    diff = np.argwhere(got["winner"] != exp["winner"])
    assert len(diff) <= max(2, exp["winner"].size // 10_000), f"{what}: {len(diff)} pixels differ"
    for y, x in diff:
        gap = _near_tie_gap(exp, meta, feature_size, int(y), int(x))
        assert gap <= tol, f"{what}: pixel ({y}, {x}) differs, gap {gap} > {tol}"
    n = len(diff)
    masks_differ = (got["category_mask"] != exp["category_mask"]) | (
        got["instance_mask"] != exp["instance_mask"]
    )
    assert int(masks_differ.sum()) <= n, f"{what}: masks differ off the tie pixels"
    assert int(np.abs(got["proposal_areas"] - exp["proposal_areas"]).sum()) <= 2 * n, (
        f"{what}: proposal areas"
    )
    np.testing.assert_allclose(got["segment_areas"], exp["segment_areas"], atol=n, err_msg=f"{what}: areas")
    kind, ay, ax = _geometry(meta, feature_size)
    step = max(int(ay.count.max()), int(ax.count.max())) if kind == "grid" else 1  # one cell moves a box edge
    box_tol = step if n else 0
    np.testing.assert_allclose(got["segment_bboxes"], exp["segment_bboxes"], atol=box_tol, err_msg=what)


def test_kotlin_decoder_equals_python(cases, kotlin_results):
    out, log = kotlin_results
    assert "0 failed" in log.splitlines()[-1], log[-3000:]
    import json

    for name in _case_names(cases):
        exp = np.load(cases / name / "expected.npz")
        meta = json.loads((cases / name / "case.json").read_text())
        fs = np.load(cases / name / "inputs.npz")["heatmap"].shape[:2]
        # 1. the merge on Python's own mask logits: equal up to float32 ties of the sigmoid (exp's last bit)
        _assert_same_decoding(np.load(out / f"{name}.merge.npz"), exp, meta, fs, 1e-6, f"{name} merge")
        # 2. end to end: Kotlin's own mask head (float32 loops vs NumPy's BLAS order)
        err = float(np.abs(exp["mask_logits"]).max(initial=1.0)) * 1e-5
        _assert_same_decoding(np.load(out / f"{name}.npz"), exp, meta, fs, err, f"{name} end to end")


def test_kotlin_runner_covers_model_garden_cases(cases, kotlin_results):
    if not _have_modelgarden():
        pytest.skip(f"Model Garden fixtures not found under {MG}")
    _, log = kotlin_results
    for name in ("mg256_reference", "mg256_valid", "mg256_grid_valid", "mg256_int8"):
        assert f"PASS {name}: merge on Python's mask logits" in log
        assert f"PASS {name}: end to end" in log


def test_kotlin_letterbox_equals_opencv(cases, kotlin_results):
    """The app's letterbox (Letterbox.kt) gives the Python runtime's canvas byte for byte (checked in Kotlin)."""
    if not _have_preprocess():
        pytest.skip("maskconver.runtime.preprocess is not available")
    _, log = kotlin_results
    names = sorted(p.stem for p in (cases / "letterbox").glob("*.npz"))
    assert len(names) == 6
    for name in names:
        assert f"PASS letterbox {name}" in log, log[-3000:]


def test_kotlin_reads_the_model_file_metadata(cases, kotlin_results):
    """ModelFile.kt reads a real .tflite written by the converter's metadata writer as the Python reader does."""
    if not _have_model_writer():
        pytest.skip("the converter's TFLite metadata writer (or TensorFlow) is not available")
    _, log = kotlin_results
    assert (cases / "model" / "tiny.tflite").is_file()
    for check in (
        "model file: metadata, labels, colours and mask head as the Python reader sees them",
        "model file: truncated, foreign and empty files give clear errors",
        "model file: a decoder built from it decodes outputs of the model's shapes",
    ):
        assert f"PASS {check}" in log, log[-3000:]
