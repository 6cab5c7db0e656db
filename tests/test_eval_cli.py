"""``maskconver-eval`` end to end: exit codes, printed table, ``--json`` content, both command forms."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from maskconver.benchmarks.pq_synthetic import write_synthetic_dataset
from maskconver.runtime import eval_cli
from maskconver.runtime.coco_panoptic_io import (
    encode_panoptic_png,
    id_to_rgb,
    panoptic_from_masks,
    panoptic_record,
    read_panoptic_png,
    write_json,
    write_panoptic_png,
)
from maskconver.runtime.eval_cli import main, prediction_from_result
from maskconver.runtime.panoptic_quality import pq_compute

ref = pytest.importorskip(
    "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
    reason="cityscapesscripts (the reference panopticapi port) is not installed: pip install cityscapesscripts",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("evalcli"), 40, seed=21, size=(24, 32))


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def saved_args(p):
    return [
        "--gt-json",
        p["gt_json"],
        "--gt-dir",
        p["gt_dir"],
        "--pred-json",
        p["pred_json"],
        "--pred-dir",
        p["pred_dir"],
    ]


def reference_results(p) -> dict:
    gt = json.loads(Path(p["gt_json"]).read_text())
    pred = {a["image_id"]: a for a in json.loads(Path(p["pred_json"]).read_text())["annotations"]}
    cats = {c["id"]: c for c in gt["categories"]}
    pairs = [(g, pred[g["image_id"]]) for g in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(p["gt_dir"]), str(p["pred_dir"]), cats)
    return ref.average_pq(stat, cats)


def test_saved_predictions_table_and_json(dataset, tmp_path):
    out_json = tmp_path / "res" / "pq.json"
    code, out, err = run(saved_args(dataset) + ["--json", out_json, "--per-class"])
    assert code == 0, err
    expected = reference_results(dataset)
    d = json.loads(out_json.read_text())
    for name in ("All", "Things", "Stuff"):
        assert d[name]["n"] == expected[name]["n"]
        for k in ("pq", "sq", "rq"):
            assert d[name][k] == pytest.approx(expected[name][k], abs=1e-9)
    for cid, v in expected["per_class"].items():
        assert d["per_class"][str(cid)]["pq"] == pytest.approx(v["pq"], abs=1e-9)
    assert d["num_images"] == 40 and d["inputs"]["gt_json"] == str(dataset["gt_json"])
    all_line = next(line for line in out.splitlines() if line.startswith("All "))
    assert f"{100 * expected['All']['pq']:5.1f}" in all_line and all_line.rstrip().endswith(" 7")
    assert "thing1 (1)" in out  # --per-class
    assert "40/40" in err  # progress on stderr
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["pq.json"]  # atomic: no temp file left


def test_png_folders_default_to_the_json_stem(dataset):
    code, out, err = run(["--gt-json", dataset["gt_json"], "--pred-json", dataset["pred_json"], "--quiet"])
    assert code == 0 and err == ""
    assert out.splitlines()[-3].startswith("All")


def test_bad_input_exits_1_with_a_clear_message(dataset, tmp_path):
    pred = json.loads(Path(dataset["pred_json"]).read_text())
    pred["annotations"] = pred["annotations"][1:]
    bad = tmp_path / "pred.json"
    write_json(bad, pred)
    args = saved_args(dataset)
    args[5] = bad
    code, out, err = run(args + ["--quiet"])
    assert code == 1 and out == ""
    assert "maskconver-eval: error: no prediction for the image with id: 0" in err and "000000.png" in err

    pred = json.loads(Path(dataset["pred_json"]).read_text())
    pred["annotations"][3]["segments_info"][0]["category_id"] = 999
    write_json(bad, pred)
    code, _, err = run(args + ["--quiet"])
    assert code == 1 and "has unknown category_id 999" in err and "000003.png" in err

    args = saved_args(dataset)
    args[7] = tmp_path / "nowhere"
    code, _, err = run(args)
    assert code == 1 and "prediction PNG folder" in err and "does not exist" in err


def test_command_line_mistakes_exit_2(dataset):
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
        main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
        main([str(a) for a in saved_args(dataset)] + ["--limit", "3"])
    assert e.value.code == 2


def test_console_script_subprocess(dataset, tmp_path):
    script = Path(sys.executable).parent / "maskconver-eval"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "maskconver.runtime.eval_cli"]
    out_json = tmp_path / "r.json"
    proc = subprocess.run(
        cmd + [str(a) for a in saved_args(dataset)] + ["--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out_json.read_text())["All"]["n"] == 7
    proc = subprocess.run(cmd + ["--gt-json", "missing.json", "--pred-json", "x.json", "--gt-dir", ".", "--pred-dir", "."],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "ground-truth JSON missing.json does not exist" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# MODEL --data DIR
# ---------------------------------------------------------------------------------------------------------


def _model_dataset(tmp_path: Path, n: int = 12) -> Path:
    """Synthetic layout (panoptic.json, panoptic/, images/); image i is a flat colour encoding i."""
    src = write_synthetic_dataset(tmp_path / "src", n, seed=5, size=(20, 28))
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    Path(src["gt_dir"]).rename(root / "panoptic")
    gt = json.loads(Path(src["gt_json"]).read_text())
    for ann in gt["annotations"]:
        h, w = read_panoptic_png(root / "panoptic" / ann["file_name"]).shape
        img = np.full((h, w, 3), ann["image_id"], dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{ann['image_id']:06d}.png"), img)
    for im in gt["images"]:
        im["file_name"] = f"{im['id']:06d}.png"
    write_json(root / "panoptic.json", gt)
    return root


class OracleSegmenter:
    """Returns the ground truth of the image (identified by its flat colour) as category/instance masks."""

    def __init__(self, root: Path):
        self.gt = json.loads((root / "panoptic.json").read_text())
        self.root = root

    def segment(self, rgb: np.ndarray):
        ann = self.gt["annotations"][int(rgb[0, 0, 0])]
        ids = read_panoptic_png(self.root / "panoptic" / ann["file_name"])
        cat = np.zeros(ids.shape, np.int32)
        inst = np.zeros(ids.shape, np.int32)
        for k, s in enumerate(ann["segments_info"]):
            cat[ids == s["id"]] = s["category_id"]
            inst[ids == s["id"]] = k + 1
        return SimpleNamespace(category_mask=cat, instance_mask=inst)


def test_model_form_scores_and_saves_predictions(tmp_path, monkeypatch):
    root = _model_dataset(tmp_path)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not used by the oracle")
    monkeypatch.setattr(
        eval_cli, "_load_segmenter", lambda path, masks="full", work_dir=None: OracleSegmenter(root)
    )
    save = tmp_path / "saved"
    code, out, err = run(
        [model, "--data", root, "--save-pred", save, "--json", tmp_path / "m.json", "--limit", 10]
    )
    assert code == 0, err
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["num_images"] == 10 and d["inputs"]["model"] == str(model)
    assert d["inputs"]["images"] == str(root / "images")
    assert len(list((save / "pred").glob("*.png"))) == 10
    # The saved predictions re-scored by the first form (and by the reference) give the same numbers.
    gt = json.loads((root / "panoptic.json").read_text())
    gt["annotations"] = gt["annotations"][:10]
    write_json(tmp_path / "gt10.json", gt)
    paths = {"gt_json": tmp_path / "gt10.json", "gt_dir": root / "panoptic", "pred_json": save / "pred.json"}
    paths["pred_dir"] = save / "pred"
    again = pq_compute(**paths, workers=1, progress=False).to_dict()
    expected = reference_results(paths)
    for name in ("All", "Things", "Stuff"):
        assert d[name]["pq"] == pytest.approx(again[name]["pq"], abs=1e-12)
        assert d[name]["pq"] == pytest.approx(expected[name]["pq"], abs=1e-9)
    assert d["Things"]["sq"] == 1.0  # the oracle reproduces every listed segment exactly


def test_model_form_errors(tmp_path, monkeypatch):
    root = _model_dataset(tmp_path, n=2)
    code, _, err = run([tmp_path / "missing.tflite", "--data", root])
    assert code == 1 and "missing.tflite does not exist" in err
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "maskconver.runtime.segmenter", None)  # as if not written yet
    code, _, err = run([model, "--data", root, "--quiet"])
    assert (
        code == 1 and "cannot import maskconver.runtime.segmenter.Segmenter" in err and "--pred-json" in err
    )
    code, _, err = run([model, "--data", tmp_path])
    assert code == 1 and "pass --gt-json" in err


def test_prediction_from_result_forms():
    cat = np.array([[0, 1, 1], [7, 7, 0]])
    inst = np.array([[0, 4, 4], [0, 0, 0]])
    ids, segs = panoptic_from_masks(cat, inst)
    assert ids.tolist() == [[0, 1, 1], [2, 2, 0]]
    assert [(s["id"], s["category_id"], s["area"]) for s in segs] == [(1, 1, 2), (2, 7, 2)]
    r = SimpleNamespace(category_mask=cat, instance_mask=inst)
    got_ids, got_segs = prediction_from_result(r)
    assert (got_ids == ids).all() and got_segs == segs

    coco = ids * 1000
    infos = [{"id": 1000, "category_id": 1}, {"id": 2000, "category_id": 7}]
    r = SimpleNamespace(to_coco_png=lambda: id_to_rgb(coco), segments=infos)
    got_ids, got_segs = prediction_from_result(r)
    assert (got_ids == coco).all() and [s["id"] for s in got_segs] == [1000, 2000]
    r = SimpleNamespace(to_coco_png=lambda: (encode_panoptic_png(coco), infos))
    got_ids, got_segs = prediction_from_result(r)
    assert (got_ids == coco).all() and [s["category_id"] for s in got_segs] == [1, 7]
    r = SimpleNamespace(
        panoptic_ids=lambda: coco, coco_segments_info=lambda: infos + [{"id": 5, "category_id": 1}]
    )
    got_ids, got_segs = prediction_from_result(r)  # the segment without pixels is dropped
    assert (got_ids == coco).all() and [s["id"] for s in got_segs] == [1000, 2000]
    with pytest.raises(eval_cli.EvalError, match="category_mask"):
        prediction_from_result(SimpleNamespace())


def test_model_form_with_a_real_segmenter(tmp_path):
    """The real runtime Segmenter on the runtime tests' red-square model (skipped until both exist)."""
    pytest.importorskip("maskconver.runtime.segmenter", reason="runtime Segmenter not available")
    models = pytest.importorskip("runtime_test_models", reason="tests/runtime_test_models.py not available")
    pytest.importorskip("tensorflow", reason="building the test model needs tensorflow")
    model = models.build_tflite(tmp_path / "red_square.tflite", "fp32")
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    anns, images = [], []
    for i in range(4):
        x0, y0 = (8 * int(v) for v in rng.integers(0, 5, 2))
        box = (x0, y0, x0 + 24, y0 + 24)
        img = models.square_image(64, 64, box)
        ids = np.full((64, 64), 9, np.int64)
        ids[box[1] : box[3], box[0] : box[2]] = 4
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img[:, :, ::-1])
        write_panoptic_png(root / "panoptic" / f"{i}.png", ids)
        anns.append(
            panoptic_record(i, f"{i}.png", ids, [{"id": 4, "category_id": 1}, {"id": 9, "category_id": 2}])
        )
        images.append({"id": i, "file_name": f"{i}.png", "height": 64, "width": 64})
    cats = [{"id": 1, "name": "square", "isthing": 1}, {"id": 2, "name": "background", "isthing": 0}]
    write_json(root / "panoptic.json", {"images": images, "annotations": anns, "categories": cats})
    code, out, err = run(
        [model, "--data", root, "--save-pred", tmp_path / "pred", "--json", tmp_path / "r.json"]
    )
    assert code == 0, err
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["per_class"]["1"]["tp"] == 4 and d["per_class"]["2"]["tp"] == 4
    assert d["All"]["rq"] == 1.0 and d["All"]["pq"] > 0.8
    paths = {"gt_json": root / "panoptic.json", "gt_dir": root / "panoptic"}
    paths |= {"pred_json": tmp_path / "pred" / "pred.json", "pred_dir": tmp_path / "pred" / "pred"}
    assert reference_results(paths)["All"]["pq"] == pytest.approx(d["All"]["pq"], abs=1e-9)


def test_model_form_with_the_demo_checkpoint(tmp_path, capsys):
    """A checkpoint is converted to float TFLite and scored; the demo model beats PQ 50 on held-out data."""
    from maskconver.models.synthetic import generate_synthetic_dataset
    from maskconver.runtime.eval_cli import main

    ckpt = Path(__file__).resolve().parents[1] / "models" / "demo" / "maskconver_nano_demo.npz"
    data = tmp_path / "val"
    generate_synthetic_dataset(data, 12, seed=2024, image_size=(128, 128))
    out = tmp_path / "pq.json"
    assert main([str(ckpt), "--data", str(data), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    pq = result["All"]["pq"] if "All" in result else result["result"]["All"]["pq"]
    assert pq > 0.5, result
