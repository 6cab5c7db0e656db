"""Synthetic COCO panoptic ground truth and predictions for PQ tests and benchmarks.

Images hold stuff bands, thing rectangles, VOID patches and crowd regions; predictions are perturbed
copies (shifted, dropped, relabelled, split segments, extra blobs, some mostly in VOID or crowd) so that
every panopticapi rule is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from maskconver.runtime.coco_panoptic_io import panoptic_record, write_json, write_panoptic_png

THING_IDS = (1, 2, 3, 5)
STUFF_IDS = (10, 11, 12)


def synthetic_categories() -> list[dict[str, Any]]:
    cats = [{"id": i, "name": f"thing{i}", "isthing": 1, "supercategory": "thing"} for i in THING_IDS]
    cats += [{"id": i, "name": f"stuff{i}", "isthing": 0, "supercategory": "stuff"} for i in STUFF_IDS]
    return cats


def _new_id(rng: np.random.Generator, used: set[int]) -> int:
    while True:
        i = int(rng.integers(1, 256**3))
        if i not in used:
            used.add(i)
            return i


def _rect(rng: np.random.Generator, h: int, w: int, max_frac: float = 0.6) -> tuple[slice, slice]:
    rh = int(rng.integers(1, max(2, int(h * max_frac)) + 1))
    rw = int(rng.integers(1, max(2, int(w * max_frac)) + 1))
    y = int(rng.integers(0, h - rh + 1))
    x = int(rng.integers(0, w - rw + 1))
    return slice(y, y + rh), slice(x, x + rw)


def synthetic_gt(
    rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, list[dict[str, Any]], dict[int, int]]:
    """One gt image: ``[H, W]`` ids, its segments_info, and ``{id: category}`` of painted ids."""
    used: set[int] = set()
    ids = np.zeros((h, w), dtype=np.int64)
    cat_of: dict[int, int] = {}
    crowd: set[int] = set()
    if rng.random() < 0.05:  # an all-VOID image
        return ids, [], cat_of
    n_bands = int(rng.integers(1, 4))
    edges = np.sort(rng.integers(0, h + 1, size=n_bands - 1))
    for top, bottom in zip(np.r_[0, edges], np.r_[edges, h], strict=True):
        if bottom > top:
            sid = _new_id(rng, used)
            ids[top:bottom] = sid
            cat_of[sid] = int(rng.choice(STUFF_IDS))
    for _ in range(int(rng.integers(0, 7))):
        sid = _new_id(rng, used)
        ids[_rect(rng, h, w, 0.5)] = sid
        cat_of[sid] = int(rng.choice(THING_IDS))
        if rng.random() < 0.2:
            crowd.add(sid)
    for _ in range(int(rng.integers(0, 3))):  # VOID patches and speckle
        ids[_rect(rng, h, w, 0.4)] = 0
    ids[rng.random((h, w)) < 0.03] = 0
    present = set(np.unique(ids).tolist()) - {0}
    segments = []
    for sid in sorted(present, key=lambda _: rng.random()):
        segments.append({"id": sid, "category_id": cat_of[sid], "iscrowd": int(sid in crowd)})
    if rng.random() < 0.1:  # a gt JSON segment drawn nowhere: a false negative
        sid = _new_id(rng, used)
        cat_of[sid] = int(rng.choice(THING_IDS))
        segments.append({"id": sid, "category_id": cat_of[sid], "iscrowd": 0})
    if segments and rng.random() < 0.05:  # a gt PNG id missing from the JSON: neither VOID nor a segment
        segments.pop(int(rng.integers(len(segments))))
    return ids, segments, cat_of


def synthetic_prediction(
    rng: np.random.Generator, gt_ids: np.ndarray, gt_segments: list[dict[str, Any]], cat_of: dict[int, int]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A perturbed prediction of ``gt_ids``: ``[H, W]`` ids and its segments_info."""
    h, w = gt_ids.shape
    if rng.random() < 0.05:  # an empty prediction
        return np.zeros((h, w), dtype=np.int64), []
    pred = np.roll(gt_ids, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    src_cat = dict(cat_of)
    all_cats = list(THING_IDS) + list(STUFF_IDS)
    out = np.zeros_like(pred)
    used: set[int] = set()
    pred_cat: dict[int, int] = {}
    for sid in np.unique(pred).tolist():
        if sid == 0:
            continue
        m = pred == sid
        r = rng.random()
        if r < 0.1:
            continue  # dropped: stays 0
        cat = src_cat[sid] if rng.random() > 0.1 else int(rng.choice(all_cats))
        nid = _new_id(rng, used)
        out[m] = nid
        pred_cat[nid] = cat
        if r > 0.85:  # split off a random rectangle as a second segment
            part = np.zeros_like(m)
            part[_rect(rng, h, w, 0.7)] = True
            part &= m
            if part.any():
                nid2 = _new_id(rng, used)
                out[part] = nid2
                pred_cat[nid2] = cat
    for _ in range(int(rng.integers(0, 4))):  # extra blobs, often over VOID or crowd
        nid = _new_id(rng, used)
        region = np.zeros((h, w), dtype=bool)
        region[_rect(rng, h, w, 0.4)] = True
        if rng.random() < 0.5:
            region &= gt_ids == 0
        out[region] = nid
        pred_cat[nid] = int(rng.choice(all_cats))
    crowd = [s for s in gt_segments if s["iscrowd"]]
    if crowd and rng.random() < 0.5:  # a prediction sitting on a crowd region
        s = crowd[int(rng.integers(len(crowd)))]
        nid = _new_id(rng, used)
        out[gt_ids == s["id"]] = nid
        pred_cat[nid] = s["category_id"] if rng.random() < 0.7 else int(rng.choice(all_cats))
    present = sorted(set(np.unique(out).tolist()) - {0})
    return out, [{"id": i, "category_id": pred_cat[i]} for i in present]


def write_synthetic_dataset(
    root: str | Path, num_images: int, seed: int = 0, size: tuple[int, int] = (48, 64)
) -> dict:
    """Write ``gt.json``, ``gt/``, ``pred.json``, ``pred/`` under ``root``; returns their paths.

    Image sizes vary between half and full ``size`` (H, W).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns, images = [], [], []
    for i in range(num_images):
        h = int(rng.integers(max(2, size[0] // 2), size[0] + 1))
        w = int(rng.integers(max(2, size[1] // 2), size[1] + 1))
        gt_ids, gt_segs, cat_of = synthetic_gt(rng, h, w)
        pred_ids, pred_segs = synthetic_prediction(rng, gt_ids, gt_segs, cat_of)
        name = f"{i:06d}.png"
        write_panoptic_png(root / "gt" / name, gt_ids)
        write_panoptic_png(root / "pred" / name, pred_ids)
        rec = panoptic_record(i, name, gt_ids, gt_segs)
        gt_anns.append(rec)
        pred_anns.append(panoptic_record(i, name, pred_ids, pred_segs))
        images.append({"id": i, "file_name": f"{i:06d}.jpg", "height": h, "width": w})
    cats = synthetic_categories()
    write_json(root / "gt.json", {"images": images, "annotations": gt_anns, "categories": cats})
    write_json(root / "pred.json", {"annotations": pred_anns})
    return {
        "gt_json": root / "gt.json",
        "gt_dir": root / "gt",
        "pred_json": root / "pred.json",
        "pred_dir": root / "pred",
    }
