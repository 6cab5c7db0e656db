"""PQ / SQ / RQ against the official rules.

The independent reference is the ``cityscapesscripts`` port of COCO panopticapi
(``evalPanopticSemanticLabeling.pq_compute_single_core`` + ``average_pq``), run on the same PNG + JSON
folders; hand-computed cases pin known values.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maskconver.benchmarks.pq_synthetic import synthetic_categories, write_synthetic_dataset
from maskconver.runtime import panoptic_quality as pqm
from maskconver.runtime.coco_panoptic_io import (
    PanopticFormatError,
    id_to_rgb,
    panoptic_record,
    read_panoptic_png,
    rgb_to_id,
    write_json,
    write_panoptic_png,
)
from maskconver.runtime.panoptic_quality import PQAccumulator, pq_compute

ref = pytest.importorskip(
    "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
    reason="cityscapesscripts (the reference panopticapi port) is not installed: pip install cityscapesscripts",
)

CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 11, "name": "road", "isthing": 0},
]


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def write_dataset(root: Path, images: list[tuple], categories: list[dict] = CATS) -> dict:
    """images: (gt_ids, gt_segments, pred_ids, pred_segments); gt areas are filled from the PNG."""
    gt_anns, pred_anns = [], []
    for i, (g, gs, p, ps) in enumerate(images):
        name = f"img{i}.png"
        write_panoptic_png(root / "gt" / name, np.asarray(g))
        write_panoptic_png(root / "pred" / name, np.asarray(p))
        gt_anns.append(panoptic_record(i, name, np.asarray(g), gs))
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": [dict(s) for s in ps]})
    write_json(root / "gt.json", {"annotations": gt_anns, "categories": categories})
    write_json(root / "pred.json", {"annotations": pred_anns})
    (root / "gt").mkdir(exist_ok=True)
    (root / "pred").mkdir(exist_ok=True)
    return {
        "gt_json": root / "gt.json",
        "gt_dir": root / "gt",
        "pred_json": root / "pred.json",
        "pred_dir": root / "pred",
    }


def run_reference(paths: dict):
    """The cityscapesscripts panopticapi port on the same files: (PQStat, categories)."""
    gt = json.loads(Path(paths["gt_json"]).read_text())
    pred = json.loads(Path(paths["pred_json"]).read_text())
    cats = {c["id"]: c for c in gt["categories"]}
    by_id = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(g, by_id[g["image_id"]]) for g in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(paths["gt_dir"]), str(paths["pred_dir"]), cats)
    return stat, cats


def assert_matches_reference(result, stat, cats, tol: float = 1e-9) -> None:
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        mine = {"All": result.all, "Things": result.things, "Stuff": result.stuff}[name]
        try:
            expected, per_class = stat.pq_average(cats, isthing=isthing)
        except ZeroDivisionError:  # the reference divides by zero when no class of the group is counted
            assert mine.n == 0, name
            continue
        assert mine.n == expected["n"], name
        for key in ("pq", "sq", "rq"):
            assert getattr(mine, key) == pytest.approx(expected[key], abs=tol), (name, key)
        for cid, values in per_class.items():
            for key in ("pq", "sq", "rq"):
                assert getattr(result.per_class[cid], key) == pytest.approx(values[key], abs=tol), (cid, key)
    for cid in cats:
        ref_cat = stat.pq_per_cat[cid]
        mine = result.per_class[cid]
        assert (mine.tp, mine.fp, mine.fn) == (ref_cat.tp, ref_cat.fp, ref_cat.fn), cid
        assert mine.iou_sum == pytest.approx(ref_cat.iou, abs=tol), cid


def seg(i, c, crowd=0):
    return {"id": i, "category_id": c, "iscrowd": crowd}


def grid(rows: list[str], mapping: dict[str, int]) -> np.ndarray:
    """A small id map from strings, e.g. grid(["aab", "aab"], {"a": 5, "b": 0})."""
    return np.array([[mapping[ch] for ch in r] for r in rows], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# agreement with the reference on generated data
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,size", [(0, (48, 64)), (1, (20, 24)), (2, (64, 48)), (3, (9, 11))])
def test_agrees_with_reference_on_generated_datasets(tmp_path, seed, size):
    paths = write_synthetic_dataset(tmp_path, 120, seed=seed, size=size)
    result = pq_compute(**paths, workers=1, progress=False)
    stat, cats = run_reference(paths)
    assert_matches_reference(result, stat, cats)
    assert result.num_images == 120
    assert 0 < result.all.pq < 1 and result.things.n == 4 and result.stuff.n == 3


def test_worker_processes_give_the_same_result(tmp_path, monkeypatch):
    paths = write_synthetic_dataset(tmp_path, 80, seed=7, size=(24, 32))
    one = pq_compute(**paths, workers=1, progress=False, chunk_size=8)
    two = pq_compute(**paths, workers=2, progress=False, chunk_size=8, pool="processes")
    threads = pq_compute(**paths, workers=2, progress=False, chunk_size=8)
    # automatic choice, made to switch to the pool after the first chunk
    monkeypatch.setattr(pqm, "_PROBE_SECONDS", 0.0)
    monkeypatch.setattr(pqm, "_POOL_WORTH_SECONDS", 0.0)
    auto = pq_compute(**paths, progress=False, chunk_size=8)
    for other in (two, threads, auto):
        assert other.num_images == one.num_images == 80
        assert other.all.pq == pytest.approx(one.all.pq, abs=1e-12)
        for cid, c in one.per_class.items():
            assert (other.per_class[cid].tp, other.per_class[cid].fp, other.per_class[cid].fn) == (
                c.tp,
                c.fp,
                c.fn,
            )


def test_in_memory_accumulator_equals_files(tmp_path):
    paths = write_synthetic_dataset(tmp_path, 60, seed=11, size=(32, 40))
    gt = json.loads(paths["gt_json"].read_text())
    pred = {a["image_id"]: a for a in json.loads(paths["pred_json"].read_text())["annotations"]}
    acc = PQAccumulator(gt["categories"])
    for g in gt["annotations"]:
        p = pred[g["image_id"]]
        acc.add(
            read_panoptic_png(paths["gt_dir"] / g["file_name"]),
            g["segments_info"],
            read_panoptic_png(paths["pred_dir"] / p["file_name"]),
            p["segments_info"],
        )
    stat, cats = run_reference(paths)
    assert_matches_reference(acc.result(), stat, cats)


def test_unique_fallback_path_equals_lookup_table_path(tmp_path, monkeypatch):
    paths = write_synthetic_dataset(tmp_path, 40, seed=5, size=(30, 30))
    fast = pq_compute(**paths, workers=1, progress=False)
    monkeypatch.setattr(pqm, "_LUT_LIMIT", 0)  # force the np.unique over gt*256^3+pred branch
    slow = pq_compute(**paths, workers=1, progress=False)
    for cid, c in fast.per_class.items():
        s = slow.per_class[cid]
        assert (s.tp, s.fp, s.fn) == (c.tp, c.fp, c.fn)
        assert s.iou_sum == pytest.approx(c.iou_sum, abs=1e-12)


_ALPHABET_GT = [0, 7, 8, 9, 300]
_ALPHABET_PRED = [0, 65536 + 3, 4, 5, 256]


@st.composite
def tiny_image(draw):
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    g = np.array(draw(st.lists(st.sampled_from(_ALPHABET_GT), min_size=h * w, max_size=h * w))).reshape(h, w)
    p = np.array(draw(st.lists(st.sampled_from(_ALPHABET_PRED), min_size=h * w, max_size=h * w))).reshape(
        h, w
    )
    cat_choice = st.sampled_from([1, 2, 10])
    gsegs = []
    for i in sorted(set(g.ravel().tolist()) - {0}):
        if draw(st.integers(0, 9)) == 0:
            continue  # a gt PNG id missing from the JSON (ignored, not VOID)
        gsegs.append(seg(i, draw(cat_choice), int(draw(st.integers(0, 3)) == 0)))
    if draw(st.booleans()):
        gsegs.append(seg(12345, draw(cat_choice)))  # listed, never drawn: a false negative
    psegs = [{"id": i, "category_id": draw(cat_choice)} for i in sorted(set(p.ravel().tolist()) - {0})]
    return g, gsegs, p, psegs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(tiny_image(), min_size=1, max_size=3))
def test_agrees_with_reference_on_tiny_adversarial_grids(tmp_path_factory, images):
    # Tiny grids hit IoU exactly 0.5, predictions exactly half in VOID/crowd, several crowd regions of one
    # class (only the last listed one counts), unlisted gt ids and empty images.
    root = tmp_path_factory.mktemp("tiny")
    paths = write_dataset(root, images, categories=CATS[:3])
    result = pq_compute(**paths, workers=1, progress=False)
    stat, cats = run_reference(paths)
    assert_matches_reference(result, stat, cats)


# ---------------------------------------------------------------------------------------------------------
# hand-computed values
# ---------------------------------------------------------------------------------------------------------


def test_perfect_prediction_scores_one():
    g = grid(["aab", "aab", "ccc"], {"a": 3, "b": 4, "c": 5})
    acc = PQAccumulator(CATS)
    acc.add(g, [seg(3, 1), seg(4, 2), seg(5, 10)], g * 7, [seg(21, 1), seg(28, 2), seg(35, 10)])
    r = acc.result()
    assert (r.all.pq, r.all.sq, r.all.rq, r.all.n) == (1.0, 1.0, 1.0, 3)
    assert (r.things.n, r.stuff.n) == (2, 1)
    assert not r.per_class[11].counted  # road never appears: left out of the averages


def test_known_values_two_images():
    # Image 1 (4x4): gt person top half (8 px), sky bottom half (8 px). Prediction person = top half + 2 px of
    # the bottom (10 px): IoU 8/10; sky = the other 6 px: IoU 6/8.
    g1 = grid(["aaaa", "aaaa", "bbbb", "bbbb"], {"a": 1, "b": 2})
    p1 = grid(["xxxx", "xxxx", "xxyy", "yyyy"], {"x": 5, "y": 6})
    # Image 2: a 4-px gt person with no prediction (FN) and a 2-px predicted car on sky (FP for car); the
    # 10-px sky prediction inside the 12-px gt sky has IoU 10/12: TP.
    g2 = grid(["aabb", "aabb", "bbbb", "bbbb"], {"a": 1, "b": 2})
    p2 = grid(["00yy", "00yy", "yyyy", "yyzz"], {"0": 0, "y": 6, "z": 7})
    acc = PQAccumulator(CATS)
    acc.add(g1, [seg(1, 1), seg(2, 10)], p1, [seg(5, 1), seg(6, 10)])
    acc.add(g2, [seg(1, 1), seg(2, 10)], p2, [seg(6, 10), seg(7, 2)])
    r = acc.result()
    person, car, sky = r.per_class[1], r.per_class[2], r.per_class[10]
    assert (person.tp, person.fp, person.fn) == (1, 0, 1)
    assert person.pq == pytest.approx(0.8 / 1.5) and person.sq == pytest.approx(0.8)
    assert person.rq == pytest.approx(1 / 1.5)
    assert (car.tp, car.fp, car.fn, car.pq, car.sq) == (0, 1, 0, 0.0, 0.0)
    assert (sky.tp, sky.fp, sky.fn) == (2, 0, 0)
    sky_sq = (0.75 + 10 / 12) / 2
    assert sky.pq == pytest.approx(sky_sq) and sky.sq == pytest.approx(sky_sq) and sky.rq == 1.0
    assert r.all.n == 3 and r.things.n == 2 and r.stuff.n == 1
    assert r.all.pq == pytest.approx((0.8 / 1.5 + 0 + sky_sq) / 3)
    assert r.things.pq == pytest.approx(0.8 / 1.5 / 2)
    assert r.stuff.sq == pytest.approx(sky_sq)


def test_void_pixels_leave_the_union():
    # gt: 4 px person + 4 px VOID; the prediction covers all 8 px: union = 8 + 4 - 4 - 4 = 4, IoU 1.
    g = grid(["aa00", "aa00"], {"a": 9, "0": 0})
    p = np.full((2, 4), 3)
    acc = PQAccumulator(CATS)
    acc.add(g, [seg(9, 1)], p, [seg(3, 1)])
    c = acc.result().per_class[1]
    assert (c.tp, c.fp, c.fn, c.iou_sum) == (1, 0, 0, 1.0)


def test_iou_of_exactly_one_half_is_not_a_match():
    g = grid(["aaa0"], {"a": 9, "0": 0})  # 3 px
    p = grid(["0bbb"], {"b": 4, "0": 0})  # 3 px, 2 shared, 1 in VOID: union = 3 + 3 - 2 - 1 = 3 -> 2/3
    acc = PQAccumulator(CATS)
    acc.add(g, [seg(9, 1)], p, [seg(4, 1)])
    assert acc.result().per_class[1].tp == 1
    g = grid(["aaac"], {"a": 9, "c": 8})  # no VOID now: union = 3 + 3 - 2 = 4 -> IoU 0.5 exactly
    p = grid(["0bbb"], {"b": 4, "0": 0})
    acc = PQAccumulator(CATS)
    acc.add(g, [seg(9, 1), seg(8, 10)], p, [seg(4, 1)])
    c = acc.result().per_class[1]
    assert (c.tp, c.fp, c.fn) == (0, 1, 1) and c.pq == 0.0


def test_predictions_mostly_in_void_or_same_class_crowd_are_ignored():
    # gt: crowd of persons (id 5, 6 px), VOID (4 px), sky (6 px).
    g = grid(["cccvv", "cccvv", "sssss", "s0000"], {"c": 5, "v": 0, "s": 7, "0": 0})
    gsegs = [seg(5, 1, crowd=1), seg(7, 10)]
    sky_pred = grid(["00000", "00000", "sssss", "s0000"], {"s": 7, "0": 0})

    def score(pred_ids, psegs):
        acc = PQAccumulator(CATS)
        acc.add(g, gsegs, pred_ids, psegs)
        return acc.result()

    person_on_crowd = np.where(g == 5, 3, sky_pred)  # 6 px, all on the person crowd
    r = score(person_on_crowd, [seg(3, 1), seg(7, 10)])
    assert (r.per_class[1].tp, r.per_class[1].fp, r.per_class[1].fn) == (0, 0, 0)
    assert r.per_class[10].tp == 1 and r.all.n == 1
    r = score(person_on_crowd, [seg(3, 2), seg(7, 10)])  # a car on the person crowd: counted FP
    assert r.per_class[2].fp == 1
    in_void = sky_pred.copy()
    in_void[0:2, 3:5] = 4  # 4 px in VOID, 1 px on crowd
    in_void[0, 2] = 4
    r = score(in_void, [seg(4, 2), seg(7, 10)])  # 4/5 in VOID: ignored even though class differs
    assert r.per_class[2].fp == 0
    half = sky_pred.copy()
    half[0, 3:5] = 4
    half[2, 0:2] = 4  # 2 px VOID, 2 px sky: exactly 1/2 is not > 1/2 -> FP
    r = score(half, [seg(4, 2), seg(7, 10)])
    assert r.per_class[2].fp == 1


def test_gt_area_comes_from_the_json_like_panopticapi(tmp_path):
    g = grid(["aab", "aab"], {"a": 1, "b": 2})
    paths = write_dataset(tmp_path, [(g, [seg(1, 1), seg(2, 10)], g, [seg(1, 1), seg(2, 10)])])
    data = json.loads(paths["gt_json"].read_text())
    data["annotations"][0]["segments_info"][0]["area"] = 7  # PNG says 4: IoU 4 / (4 + 7 - 4) = 4/7
    paths["gt_json"].write_text(json.dumps(data))
    r = pq_compute(**paths, workers=1, progress=False)
    assert r.per_class[1].sq == pytest.approx(4 / 7)
    stat, cats = run_reference(paths)
    assert_matches_reference(r, stat, cats)


# ---------------------------------------------------------------------------------------------------------
# sanity errors
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def good_images():
    g = grid(["aab", "aab"], {"a": 1, "b": 2})
    return [(g, [seg(1, 1), seg(2, 10)], g * 3, [seg(3, 1), seg(6, 10)])]


def _expect_error(paths, fragment, exc=PanopticFormatError):
    with pytest.raises(exc) as info:
        pq_compute(**paths, workers=1, progress=False)
    msg = str(info.value)
    assert fragment in msg, msg
    return msg


def test_error_segment_in_png_not_in_json(tmp_path, good_images):
    g, gs, p, ps = good_images[0]
    paths = write_dataset(tmp_path, [(g, gs, p, ps[:1])])
    msg = _expect_error(paths, "segment with ID 6 is presented in PNG and not presented in JSON")
    assert "img0.png" in msg and "pred.json" in msg
    assert isinstance(PanopticFormatError("x"), KeyError)


def test_error_segment_in_json_not_in_png(tmp_path, good_images):
    g, gs, p, ps = good_images[0]
    paths = write_dataset(tmp_path, [(g, gs, p, ps + [seg(99, 2)])])
    msg = _expect_error(paths, "following segment IDs [99] are presented in JSON and not presented in PNG")
    assert "img0.png" in msg


def test_error_unknown_category(tmp_path, good_images):
    g, gs, p, ps = good_images[0]
    paths = write_dataset(tmp_path, [(g, gs, p, [seg(3, 1), seg(6, 55)])])
    assert "img0.png" in _expect_error(paths, "segment with ID 6 has unknown category_id 55")


def test_error_missing_prediction(tmp_path, good_images):
    paths = write_dataset(tmp_path, good_images * 2)
    data = json.loads(paths["pred_json"].read_text())
    data["annotations"] = data["annotations"][:1]
    paths["pred_json"].write_text(json.dumps(data))
    msg = _expect_error(paths, "no prediction for the image with id: 1")
    assert "img1.png" in msg


def test_error_duplicate_ids(tmp_path, good_images):
    g, gs, p, ps = good_images[0]
    paths = write_dataset(tmp_path / "a", [(g, gs, p, ps + [seg(3, 2)])])
    assert "img0.png" in _expect_error(paths, "segment IDs [3] appear more than once")
    paths = write_dataset(tmp_path / "b", good_images)
    data = json.loads(paths["pred_json"].read_text())
    data["annotations"] *= 2
    paths["pred_json"].write_text(json.dumps(data))
    _expect_error(paths, "image_id 0 appears more than once in")
    paths = write_dataset(tmp_path / "c", [(g, gs, p, ps + [seg(0, 2)])])
    _expect_error(paths, "segment ID 0, which is VOID")


def test_error_files(tmp_path, good_images):
    paths = write_dataset(tmp_path, good_images)
    os.unlink(paths["pred_dir"] / "img0.png")
    _expect_error(paths, "img0.png does not exist", FileNotFoundError)
    write_panoptic_png(paths["pred_dir"] / "img0.png", np.zeros((3, 3), dtype=np.int64))
    _expect_error(paths, "predictions must have the ground-truth size", ValueError)
    paths["pred_json"].write_text("{not json")
    _expect_error(paths, "is not valid JSON", ValueError)


def test_accumulator_input_errors():
    acc = PQAccumulator()
    g = np.ones((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="ground-truth resolution"):
        acc.add(g, [seg(1, 1)], np.ones((2, 3), dtype=np.int64), [seg(1, 1)])
    with pytest.raises(PanopticFormatError, match="presented in PNG and not presented in JSON"):
        acc.add(g, [seg(1, 1)], g * 2, [])
    acc.add(g, [seg(1, 1)], g, [seg(1, 77)])
    with pytest.raises(PanopticFormatError, match=r"category ids \[77\]"):
        acc.result(CATS)
    with pytest.raises(ValueError, match="needs the categories"):
        PQAccumulator().result()


# ---------------------------------------------------------------------------------------------------------
# result object and I/O
# ---------------------------------------------------------------------------------------------------------


def test_result_table_and_dict(tmp_path):
    paths = write_synthetic_dataset(tmp_path, 20, seed=3, size=(16, 16))
    r = pq_compute(**paths, workers=1, progress=False)
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {"All", "Things", "Stuff", "per_class", "num_images"}
    assert d["All"]["pq"] == r.all.pq and d["Things"]["n"] == r.things.n
    assert set(d["per_class"]) == {str(c["id"]) for c in synthetic_categories()}
    text = r.table(per_class=True)
    assert f"{100 * r.all.pq:5.1f}" in text.splitlines()[-3] and text.splitlines()[-3].startswith("All")
    assert "thing1 (1)" in text


def test_rgb_id_roundtrip_and_atomic_png(tmp_path):
    ids = np.random.default_rng(0).integers(0, 256**3, (7, 5))
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()
    assert tuple(id_to_rgb(np.array([[1 + 2 * 256 + 3 * 65536]]))[0, 0]) == (1, 2, 3)
    write_panoptic_png(tmp_path / "x.png", ids)
    assert (read_panoptic_png(tmp_path / "x.png") == ids).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="must lie in"):
        id_to_rgb(np.array([[256**3]]))


def test_progress_printer_reports_to_stream():
    out = io.StringIO()
    bar = pqm.ProgressPrinter(20, "PQ", stream=out)
    for _ in range(20):
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PQ") and "20/20" in lines[-1] and "100%" in lines[-1]
    assert len(lines) == 11  # non-terminal: one line per 10 %


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_errors_in_workers_reach_the_caller(tmp_path, pool):
    paths = write_synthetic_dataset(tmp_path, 12, seed=2, size=(8, 8))
    data = json.loads(paths["pred_json"].read_text())
    victim = next(a for a in data["annotations"][6:] if a["segments_info"])
    victim["segments_info"] = victim["segments_info"][1:]  # one drawn segment no longer listed
    paths["pred_json"].write_text(json.dumps(data))
    with pytest.raises(PanopticFormatError, match="is presented in PNG and not presented in JSON") as e:
        pq_compute(**paths, workers=2, chunk_size=2, progress=False, pool=pool)
    assert victim["file_name"] in str(e.value)


def test_accumulator_takes_model_info_categories():
    from maskconver.runtime.model_info import Category

    cats = [Category(0, "void", False, (0, 0, 0)), Category(1, "square", True, (1, 2, 3))]
    cats.append(Category(2, "background", False, (4, 5, 6)))
    g = grid(["aab", "aab"], {"a": 4, "b": 9})
    acc = PQAccumulator(cats)
    acc.add(g, [seg(4, 1), seg(9, 2)], g, [{"id": 4, "category_id": 1}, {"id": 9, "category_id": 2}])
    r = acc.result()
    assert (r.all.pq, r.all.n, r.things.n, r.stuff.n) == (1.0, 2, 1, 1)
    assert r.per_class[1].name == "square" and not r.per_class[0].counted
