"""Panoptic quality (PQ, SQ, RQ) with the exact rules of the official COCO ``panopticapi`` ``pq_compute``.

Rules (Kirillov et al. 2019, as implemented by ``cocodataset/panopticapi/evaluation.py``):

* ids come from the RGB PNGs (``R + 256 G + 256^2 B``); id 0 is VOID.
* a (gt, pred) pair can match only when both segments are listed in their JSON, the gt is not
  ``iscrowd`` and the category ids are equal; ``union = area_pred + area_gt - inter - |pred & VOID|``
  and the pair is a true positive when ``IoU > 0.5`` (which makes matches unique).
* the gt area is the JSON ``area`` (as panopticapi does), falling back to the pixel count when absent;
  the predicted area is always the pixel count.
* unmatched non-crowd gt segments are false negatives; crowd gt segments are never matched.
* an unmatched prediction is a false positive unless more than half of it lies in VOID plus the crowd
  segment of its own category (panopticapi keeps one crowd segment per category and image: the last
  one listed, which is what it is in COCO, where each image has at most one crowd region per class).
* per class ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
  classes with ``TP + FP + FN = 0`` are left out of the All / Things / Stuff averages.

Deliberate differences, all on malformed input: duplicate segment ids in one image, duplicate prediction
``image_id`` s and segment id 0 listed in a JSON raise :class:`PanopticFormatError` (panopticapi silently
keeps the last entry); an average over zero classes is 0 with ``n = 0`` (panopticapi divides by zero).

Per image everything is vectorised: one ``np.unique`` over ``gt * 256^3 + pred`` gives every pairwise
intersection, and the matching works on those few pairs. Per-class sums combine across images, so the
file-based :func:`pq_compute` can spread images over worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from maskconver.runtime.coco_panoptic_io import (
    OFFSET,
    VOID,
    PanopticFormatError,
    categories_by_id,
    load_gt_json,
    load_pred_json,
    read_panoptic_png,
)

__all__ = [
    "ClassScore",
    "PanopticFormatError",
    "PQAccumulator",
    "PQResult",
    "PQScore",
    "PQStats",
    "ProgressPrinter",
    "SegmentTable",
    "check_prediction",
    "image_pq_events",
    "pair_intersections",
    "pq_compute",
    "score_image",
]

_SHIFT = 24  # log2(OFFSET)
_MASK = OFFSET - 1


# ----------------------------------------------------------------------------------------------------
# Per-image pure functions
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentTable:
    """The ``segments_info`` of one image as arrays, in JSON order.

    ids: ``[n]`` int64; category_ids: ``[n]`` int64; iscrowd: ``[n]`` bool;
    area: ``[n]`` int64 JSON area, -1 where the JSON gives none.
    """

    ids: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray

    @staticmethod
    def from_segments(segments: Iterable[Any], where: str, image_id: Any = None) -> SegmentTable:
        """Parse ``segments_info`` (dicts, or objects with ``id`` / ``category_id`` attributes)."""
        ids, cats, crowd, area = [], [], [], []
        for s in segments:
            sid = _get(s, "id")
            cat = _get(s, "category_id")
            if sid is None or cat is None:
                raise PanopticFormatError(
                    f"In the image with ID {image_id} a segment lacks 'id' or 'category_id' ({where}): {s!r}"
                )
            ids.append(int(sid))
            cats.append(int(cat))
            crowd.append(int(_get(s, "iscrowd", 0) or 0) == 1)
            a = _get(s, "area")
            area.append(-1 if a is None else int(a))
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            dup = sorted({i for i in ids if i in seen or seen.add(i)})
            raise PanopticFormatError(
                f"In the image with ID {image_id} segment IDs {dup} appear more than once in segments_info "
                f"({where}); every segment needs its own id"
            )
        if ids and (min(ids) <= VOID or max(ids) > _MASK):
            if VOID in ids:
                raise PanopticFormatError(
                    f"In the image with ID {image_id} segments_info lists segment ID 0, which is VOID "
                    f"(unlabelled) in COCO panoptic ({where}); give the segment a non-zero id"
                )
            raise PanopticFormatError(
                f"In the image with ID {image_id} segment ids must lie in [1, {_MASK}] ({where})"
            )
        return SegmentTable(
            np.array(ids, dtype=np.int64),
            np.array(cats, dtype=np.int64),
            np.array(crowd, dtype=bool),
            np.array(area, dtype=np.int64),
        )


def _get(s: Any, key: str, default: Any = None) -> Any:
    if type(s) is dict or isinstance(s, Mapping):
        return s.get(key, default)
    return getattr(s, key, default)


# Pair codes: a gt index is 0..n_gt-1 into the gt table, GT_UNLISTED for ids the gt JSON does not list,
# VOID_CODE for id 0; a pred index likewise (PRED_UNLISTED only ever appears in malformed predictions).
UNLISTED = -1
VOID_CODE = -2

_lut_store = threading.local()
_LUT_LIMIT = 65534  # segments per image the uint16 look-up table can index


def _lut() -> np.ndarray:
    """This thread's id -> code table ``[256^3]`` uint16, all zero between uses. np.zeros maps pages
    lazily, so only the pages of ids actually seen become resident (at most 32 MB)."""
    lut = getattr(_lut_store, "lut", None)
    if lut is None:
        lut = _lut_store.lut = np.zeros(OFFSET, dtype=np.uint16)
    return lut


def _encode(ids: np.ndarray, table_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``[H, W]`` ids -> ``[H, W]`` uint16 codes: 1+index for listed ids, n+1 for 0, 0 for unlisted."""
    n = table_ids.size
    lut[table_ids] = np.arange(1, n + 1, dtype=np.uint16)
    lut[VOID] = n + 1
    try:
        return lut[ids]
    finally:
        lut[table_ids] = 0
        lut[VOID] = 0


def _decode_codes(code: np.ndarray, n: int) -> np.ndarray:
    """Codes from :func:`_encode` -> table index, UNLISTED or VOID_CODE (``[k]`` int64)."""
    code = code.astype(np.int64)
    out = code - 1
    out[code == 0] = UNLISTED
    out[code == n + 1] = VOID_CODE
    return out


def pair_intersections(
    gt_ids: np.ndarray, gt_table_ids: np.ndarray, pred_ids: np.ndarray, pred_table_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (gt segment, pred segment) pair that overlaps.

    Args:
        gt_ids, pred_ids: ``[H, W]`` ids in ``[0, 256^3)``.
        gt_table_ids, pred_table_ids: ``[n_gt]``, ``[n_pred]`` the ids listed in the JSON (unique, non-zero).
    Returns:
        ``(gi[k], pi[k], count[k])`` int64: table indices (or UNLISTED / VOID_CODE) and pixel counts.
    """
    n_gt, n_pred = gt_table_ids.size, pred_table_ids.size
    cells = (n_gt + 2) * (n_pred + 2)
    if max(n_gt, n_pred) <= _LUT_LIMIT and cells <= 1 << 24:
        # Map ids to small codes through a look-up table, then count code pairs with one bincount.
        lut = _lut()
        g = _encode(gt_ids, gt_table_ids, lut).astype(np.intp)
        g *= n_pred + 2
        g += _encode(pred_ids, pred_table_ids, lut)
        counts = np.bincount(g.ravel(), minlength=cells)
        (flat,) = np.nonzero(counts)
        return (
            _decode_codes(flat // (n_pred + 2), n_gt),
            _decode_codes(flat % (n_pred + 2), n_pred),
            counts[flat],
        )
    # Many segments: one np.unique over gt * 256^3 + pred.
    combined = gt_ids.astype(np.uint64)
    combined <<= np.uint64(_SHIFT)
    combined |= pred_ids.astype(np.uint64)
    labels, counts = np.unique(combined.ravel(), return_counts=True)
    pair_gt = (labels >> np.uint64(_SHIFT)).astype(np.int64)
    pair_pred = (labels & np.uint64(_MASK)).astype(np.int64)
    return _lookup(gt_table_ids, pair_gt), _lookup(pred_table_ids, pair_pred), counts.astype(np.int64)


def _lookup(table_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each ``query[k]`` in ``table_ids[n]`` (unique, non-zero); VOID_CODE for 0, else UNLISTED."""
    out = np.full(query.shape, UNLISTED, dtype=np.int64)
    if table_ids.size:
        order = np.argsort(table_ids, kind="stable")
        sorted_ids = table_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, query), sorted_ids.size - 1)
        out = np.where(sorted_ids[pos] == query, order[pos], UNLISTED)
    out[query == VOID] = VOID_CODE
    return out


def check_prediction(
    pred_ids: np.ndarray,
    pred: SegmentTable,
    known_categories: set[int] | None,
    image_id: Any,
    where: str,
) -> None:
    """Raise the panopticapi sanity errors for one predicted image (in panopticapi's order).

    Args:
        pred_ids: ``[H, W]`` the predicted id map.
        pred: the predicted ``segments_info``.
        known_categories: category ids of the dataset (None skips the unknown-category test).
    """
    listed = dict(zip(pred.ids.tolist(), pred.category_ids.tolist(), strict=True))
    png_labels = np.unique(pred_ids).tolist()
    # panopticapi walks the PNG ids in ascending order and raises at the first offender.
    for label in png_labels:
        if label not in listed:
            if label == VOID:
                continue
            raise PanopticFormatError(
                f"In the image with ID {image_id} segment with ID {label} is presented in PNG and "
                f"not presented in JSON ({where}); list every non-zero PNG id in segments_info"
            )
        if known_categories is not None and listed[label] not in known_categories:
            raise PanopticFormatError(
                f"In the image with ID {image_id} segment with ID {label} has unknown category_id "
                f"{listed[label]} ({where}); use a category id from the ground-truth 'categories'"
            )
    missing = sorted(set(listed) - set(png_labels))
    if missing:
        raise PanopticFormatError(
            f"In the image with ID {image_id} the following segment IDs {missing} are presented in "
            f"JSON and not presented in PNG ({where}); drop them from segments_info or draw them"
        )


@dataclass(frozen=True)
class ImageEvents:
    """Per-class counts of one image: ``category_ids[k]`` with ``tp[k]``, ``fp[k]``, ``fn[k]`` (int64)
    and ``iou[k]`` (float64, sum of matched IoUs)."""

    category_ids: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray


def image_pq_events(
    gi: np.ndarray,
    pi: np.ndarray,
    count: np.ndarray,
    gt: SegmentTable,
    pred: SegmentTable,
) -> ImageEvents:
    """Match one image's segments and count TP / FP / FN per class (panopticapi rules).

    Args:
        gi, pi, count: ``[k]`` from :func:`pair_intersections`.
        gt, pred: the image's ground-truth and predicted segment tables (predictions already checked).
    """
    n_gt, n_pred = gt.ids.size, pred.ids.size
    has_p = pi >= 0
    cnt_f = count.astype(np.float64)
    pred_area = np.bincount(pi[has_p], weights=cnt_f[has_p], minlength=n_pred)
    in_void = has_p & (gi == VOID_CODE)
    pred_void = np.bincount(pi[in_void], weights=cnt_f[in_void], minlength=n_pred)
    gt_area = gt.area.astype(np.float64)
    if (gt.area < 0).any():
        has_g = gi >= 0
        gt_pixels = np.bincount(gi[has_g], weights=cnt_f[has_g], minlength=n_gt)
        gt_area = np.where(gt.area < 0, gt_pixels, gt_area)

    both = (gi >= 0) & has_p
    g, p, inter = gi[both], pi[both], count[both]
    same_cat = gt.category_ids[g] == pred.category_ids[p]
    cand = same_cat & ~gt.iscrowd[g]
    gc, pc, ic = g[cand], p[cand], inter[cand]
    union = pred_area[pc] + gt_area[gc] - ic - pred_void[pc]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = ic / union
    match = iou > 0.5
    gt_matched = np.zeros(n_gt, dtype=bool)
    pred_matched = np.zeros(n_pred, dtype=bool)
    gt_matched[gc[match]] = True
    pred_matched[pc[match]] = True
    tp_cats = gt.category_ids[gc[match]]
    tp_iou = iou[match]

    fn_cats = gt.category_ids[~gt_matched & ~gt.iscrowd]

    # The crowd segment that counts for each category: the last one listed (panopticapi's dict overwrite).
    crowd_idx = np.flatnonzero(gt.iscrowd)
    if crowd_idx.size:
        crowd_ref = np.zeros(n_gt, dtype=bool)
        last = {int(gt.category_ids[i]): int(i) for i in crowd_idx}
        crowd_ref[list(last.values())] = True
        in_crowd = same_cat & crowd_ref[g]
        pred_void = pred_void + np.bincount(
            p[in_crowd], weights=inter[in_crowd].astype(np.float64), minlength=n_pred
        )
    ignored = pred_void / np.maximum(pred_area, 1.0) > 0.5
    fp_cats = pred.category_ids[~pred_matched & ~ignored]

    all_cats = np.concatenate([tp_cats, fp_cats, fn_cats])
    if all_cats.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return ImageEvents(z, z, z, z, np.zeros(0))
    cats, inv = np.unique(all_cats, return_inverse=True)
    n_tp, n_fp = tp_cats.size, fp_cats.size
    m = cats.size
    return ImageEvents(
        cats,
        np.bincount(inv[:n_tp], minlength=m),
        np.bincount(inv[n_tp : n_tp + n_fp], minlength=m),
        np.bincount(inv[n_tp + n_fp :], minlength=m),
        np.bincount(inv[:n_tp], weights=tp_iou, minlength=m),
    )


def score_image(
    gt_ids: np.ndarray,
    gt: SegmentTable,
    pred_ids: np.ndarray,
    pred: SegmentTable,
    known_categories: set[int] | None,
    image_id: Any = None,
    where: str = "",
) -> ImageEvents:
    """Check one predicted image and count its per-class TP / FP / FN (``[H, W]`` id maps)."""
    gi, pi, count = pair_intersections(gt_ids, gt.ids, pred_ids, pred.ids)
    if (
        (pi == UNLISTED).any()
        or np.unique(pi[pi >= 0]).size != pred.ids.size
        or (known_categories is not None and not known_categories.issuperset(pred.category_ids.tolist()))
    ):
        check_prediction(pred_ids, pred, known_categories, image_id, where)
    return image_pq_events(gi, pi, count, gt, pred)


# ----------------------------------------------------------------------------------------------------
# Accumulation and results
# ----------------------------------------------------------------------------------------------------


class PQStats:
    """Per-class ``[tp, fp, fn, iou_sum]`` summed over images; ``+=`` combines partial results."""

    def __init__(self) -> None:
        self.per_class: dict[int, list[float]] = {}
        self.num_images = 0

    def add(self, ev: ImageEvents) -> None:
        self.num_images += 1
        for c, tp, fp, fn, iou in zip(
            ev.category_ids.tolist(),
            ev.tp.tolist(),
            ev.fp.tolist(),
            ev.fn.tolist(),
            ev.iou.tolist(),
            strict=True,
        ):
            s = self.per_class.get(c)
            if s is None:
                self.per_class[c] = [tp, fp, fn, iou]
            else:
                s[0] += tp
                s[1] += fp
                s[2] += fn
                s[3] += iou

    def __iadd__(self, other: PQStats) -> PQStats:
        for c, (tp, fp, fn, iou) in other.per_class.items():
            s = self.per_class.setdefault(c, [0, 0, 0, 0.0])
            s[0] += tp
            s[1] += fp
            s[2] += fn
            s[3] += iou
        self.num_images += other.num_images
        return self


@dataclass(frozen=True)
class PQScore:
    """An average over ``n`` classes (fractions in [0, 1], not percent)."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class ClassScore:
    category_id: int
    name: str
    isthing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float

    @property
    def counted(self) -> bool:
        """True when the class enters the averages (it has at least one TP, FP or FN)."""
        return self.tp + self.fp + self.fn > 0


@dataclass(frozen=True)
class PQResult:
    all: PQScore
    things: PQScore
    stuff: PQScore
    per_class: dict[int, ClassScore]
    num_images: int

    def table(self, per_class: bool = False) -> str:
        """The panopticapi-style text table (values in percent)."""
        lines = []
        if per_class:
            lines.append(
                f"{'Category':24s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'TP':>6s} {'FP':>6s} {'FN':>6s}"
            )
            for cid in sorted(self.per_class):
                c = self.per_class[cid]
                if not c.counted:
                    continue
                name = f"{c.name[:18]} ({cid})"
                lines.append(
                    f"{name:24s}| {100 * c.pq:5.1f}  {100 * c.sq:5.1f}  {100 * c.rq:5.1f} "
                    f"{c.tp:6d} {c.fp:6d} {c.fn:6d}"
                )
            lines.append("-" * 62)
        lines.append(f"{'':24s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}")
        lines.append("-" * 49)
        for name, s in (("All", self.all), ("Things", self.things), ("Stuff", self.stuff)):
            lines.append(f"{name:24s}| {100 * s.pq:5.1f}  {100 * s.sq:5.1f}  {100 * s.rq:5.1f} {s.n:5d}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with panopticapi's keys (``All``, ``Things``, ``Stuff``, ``per_class``)."""
        out: dict[str, Any] = {}
        for name, s in (("All", self.all), ("Things", self.things), ("Stuff", self.stuff)):
            out[name] = {"pq": s.pq, "sq": s.sq, "rq": s.rq, "n": s.n}
        out["per_class"] = {
            str(cid): {
                "name": c.name,
                "isthing": c.isthing,
                "pq": c.pq,
                "sq": c.sq,
                "rq": c.rq,
                "tp": c.tp,
                "fp": c.fp,
                "fn": c.fn,
                "iou_sum": c.iou_sum,
            }
            for cid, c in sorted(self.per_class.items())
        }
        out["num_images"] = self.num_images
        return out


def _normalise_categories(categories: Any) -> dict[int, dict]:
    """``{id: {"id", "name", "isthing"}}`` from a COCO list, an ``{id: dict}`` map or ModelInfo Categories."""
    if isinstance(categories, Mapping):
        categories = list(categories.values())
    items = []
    for c in categories:
        if isinstance(c, Mapping):
            items.append(c)
        else:
            items.append({"id": _get(c, "id"), "name": _get(c, "name", ""), "isthing": _get(c, "isthing")})
    return categories_by_id(items)


def summarise(stats: PQStats, categories: Any) -> PQResult:
    """Per-class and All / Things / Stuff averages, over the dataset's categories only."""
    cats = _normalise_categories(categories)
    per_class: dict[int, ClassScore] = {}
    for cid, info in cats.items():
        tp, fp, fn, iou = stats.per_class.get(cid, [0, 0, 0, 0.0])
        denom = tp + 0.5 * fp + 0.5 * fn
        if tp + fp + fn == 0:
            pq = sq = rq = 0.0
        else:
            pq = iou / denom
            sq = iou / tp if tp != 0 else 0.0
            rq = tp / denom
        per_class[cid] = ClassScore(
            cid,
            str(info.get("name", cid)),
            int(info["isthing"]) == 1,
            pq,
            sq,
            rq,
            int(tp),
            int(fp),
            int(fn),
            iou,
        )

    def average(select: bool | None) -> PQScore:
        rows = [c for c in per_class.values() if c.counted and (select is None or c.isthing == select)]
        n = len(rows)
        if n == 0:
            return PQScore(0.0, 0.0, 0.0, 0)
        return PQScore(
            sum(c.pq for c in rows) / n, sum(c.sq for c in rows) / n, sum(c.rq for c in rows) / n, n
        )

    return PQResult(average(None), average(True), average(False), per_class, stats.num_images)


class PQAccumulator:
    """In-memory PQ: feed id maps and segment lists image by image, then ask for the result.

    ``categories``: a COCO ``categories`` list (``id``, ``name``, ``isthing``), an ``{id: category}`` map or
    ``ModelInfo.categories``; when given here, predictions with unknown categories are rejected in
    :meth:`add`, otherwise they are checked in :meth:`result`.
    """

    def __init__(self, categories: Any = None) -> None:
        self.categories = None if categories is None else _normalise_categories(categories)
        self.stats = PQStats()
        self._pred_categories: set[int] = set()

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Any],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Any],
        *,
        image_id: Any = None,
    ) -> None:
        """Score one image.

        Args:
            gt_ids: ``[H, W]`` ground-truth segment ids (0 = VOID), ``< 256^3``.
            gt_segments: the gt ``segments_info`` (``id``, ``category_id``, ``iscrowd``, optional ``area``).
            pred_ids: ``[H, W]`` predicted segment ids (0 = unlabelled).
            pred_segments: the predicted ``segments_info`` (``id``, ``category_id``).
            image_id: used in error messages (defaults to the running image index).
        """
        if image_id is None:
            image_id = self.stats.num_images
        where = f"in-memory image #{self.stats.num_images}"
        gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
        for name, a in (("gt_ids", gt_ids), ("pred_ids", pred_ids)):
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"{name} must be an [H, W] integer id map, got {a.dtype} {a.shape} ({where})"
                )
            if a.size and (int(a.min()) < 0 or int(a.max()) > _MASK):
                raise ValueError(f"{name} ids must lie in [0, {_MASK}] ({where})")
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(
                f"gt_ids is {gt_ids.shape} but pred_ids is {pred_ids.shape} ({where}); "
                "predict at the ground-truth resolution"
            )
        gt = SegmentTable.from_segments(gt_segments, where + " ground truth", image_id)
        pred = SegmentTable.from_segments(pred_segments, where + " prediction", image_id)
        known = None if self.categories is None else set(self.categories)
        self.stats.add(score_image(gt_ids, gt, pred_ids, pred, known, image_id, where))
        self._pred_categories.update(pred.category_ids.tolist())

    def result(self, categories: Any = None) -> PQResult:
        cats = self.categories if categories is None else _normalise_categories(categories)
        if cats is None:
            raise ValueError("PQAccumulator.result needs the categories (COCO list with id, name, isthing)")
        unknown = sorted(self._pred_categories - set(cats))
        if unknown:
            raise PanopticFormatError(
                f"predictions use category ids {unknown} that are not among the categories; "
                "use the ground-truth category ids"
            )
        return summarise(self.stats, cats)


# ----------------------------------------------------------------------------------------------------
# Files: COCO panoptic JSON + PNG folders
# ----------------------------------------------------------------------------------------------------


def _score_files(
    gt_ann: Mapping[str, Any],
    pred_ann: Mapping[str, Any],
    gt_dir: Path,
    pred_dir: Path,
    known: set[int],
    pred_json_name: str,
) -> ImageEvents:
    image_id = gt_ann.get("image_id")
    gt_png = os.path.join(gt_dir, str(gt_ann["file_name"]))
    if "file_name" not in pred_ann:
        raise PanopticFormatError(f"prediction for image {image_id} in {pred_json_name} has no 'file_name'")
    pred_png = os.path.join(pred_dir, str(pred_ann["file_name"]))
    where = f"prediction PNG {pred_png}, JSON {pred_json_name}"
    gt = SegmentTable.from_segments(gt_ann.get("segments_info", []), f"ground truth {gt_png}", image_id)
    pred = SegmentTable.from_segments(pred_ann.get("segments_info", []), where, image_id)
    gt_ids = read_panoptic_png(gt_png)
    pred_ids = read_panoptic_png(pred_png)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"In the image with ID {image_id} the ground truth {gt_png} is {gt_ids.shape[1]}x{gt_ids.shape[0]} "
            f"but the prediction {pred_png} is {pred_ids.shape[1]}x{pred_ids.shape[0]}; "
            "predictions must have the ground-truth size"
        )
    return score_image(gt_ids, gt, pred_ids, pred, known, image_id, where)


def _score_chunk(args: tuple) -> PQStats:
    pairs, gt_dir, pred_dir, known, pred_json_name = args
    stats = PQStats()
    for gt_ann, pred_ann in pairs:
        stats.add(_score_files(gt_ann, pred_ann, gt_dir, pred_dir, known, pred_json_name))
    return stats


def match_annotations(
    gt_annotations: Sequence[Mapping[str, Any]],
    pred_annotations: Sequence[Mapping[str, Any]],
    gt_json_name: str,
    pred_json_name: str,
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Pair each gt annotation with the prediction of the same ``image_id`` (all gt images need one)."""
    preds: dict[Any, Mapping[str, Any]] = {}
    for p in pred_annotations:
        if not isinstance(p, Mapping) or "image_id" not in p:
            raise PanopticFormatError(
                f"every prediction in {pred_json_name} needs an 'image_id' (got {p!r:.80})"
            )
        if p["image_id"] in preds:
            raise PanopticFormatError(
                f"image_id {p['image_id']!r} appears more than once in {pred_json_name}; keep one prediction per image"
            )
        preds[p["image_id"]] = p
    pairs = []
    seen: set[Any] = set()
    for g in gt_annotations:
        image_id = g.get("image_id")
        if image_id in seen:
            raise PanopticFormatError(f"image_id {image_id!r} appears more than once in {gt_json_name}")
        seen.add(image_id)
        if "file_name" not in g:
            raise PanopticFormatError(
                f"ground-truth annotation for image {image_id} in {gt_json_name} lacks 'file_name'"
            )
        if image_id not in preds:
            raise PanopticFormatError(
                f"no prediction for the image with id: {image_id} (ground truth {g['file_name']} in "
                f"{gt_json_name}; predictions {pred_json_name}); predict every ground-truth image"
            )
        pairs.append((g, preds[image_id]))
    return pairs


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Automatic worker choice: score in this thread for at least _PROBE_SECONDS, then hand the rest to 2
# workers only if it would still take longer than _POOL_WORTH_SECONDS here (starting spawned processes
# costs ~0.3 s; small images score at thousands per second on one core).
_PROBE_SECONDS = 0.3
_POOL_WORTH_SECONDS = 1.5
_MAX_AUTO_WORKERS = 2


def pq_compute(
    gt_json: str | os.PathLike,
    gt_dir: str | os.PathLike,
    pred_json: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 32,
    pool: str = "threads",
) -> PQResult:
    """Score COCO panoptic predictions (JSON + PNG folder) against ground truth, like panopticapi.

    Args:
        gt_json, gt_dir: ground-truth JSON (with ``categories``) and its PNG folder.
        pred_json, pred_dir: prediction JSON (``annotations`` with ``image_id``, ``file_name``,
            ``segments_info``) and its PNG folder.
        workers: 1 scores in this thread; N > 1 uses N workers; None (default) scores here for a moment
            and moves the rest to 2 workers only when that pays off (large images or many of them).
        progress: print a progress line to stderr.
        chunk_size: images per work item.
        pool: ``"threads"`` (default; PNG decoding and most NumPy work release the GIL) or
            ``"processes"`` (spawned; faster on large images, but like any ``multiprocessing`` use the
            calling script must guard its entry point with ``if __name__ == "__main__":``).
    Raises:
        PanopticFormatError (a KeyError) on the panopticapi sanity failures, FileNotFoundError /
        ValueError on missing or unreadable files.
    """
    if pool not in ("threads", "processes"):
        raise ValueError(f"pool must be 'threads' or 'processes', got {pool!r}")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for what, d in (("ground-truth PNG folder", gt_dir), ("prediction PNG folder", pred_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} {d} does not exist")
    gt_data = load_gt_json(gt_json)
    pred_anns = load_pred_json(pred_json)
    categories = categories_by_id(gt_data["categories"], f"ground-truth JSON {gt_json}")
    pairs = match_annotations(gt_data["annotations"], pred_anns, str(gt_json), str(pred_json))
    known = set(categories)
    chunks = [
        (pairs[i : i + chunk_size], gt_dir, pred_dir, known, str(pred_json))
        for i in range(0, len(pairs), chunk_size)
    ]
    stats = PQStats()
    bar = ProgressPrinter(len(pairs), "PQ", enabled=progress)
    try:
        n_workers = 1 if workers is None else max(1, int(workers))
        start, i = time.perf_counter(), 0
        if workers is None:  # probe the speed in this process, then decide
            while i < len(chunks) and (i == 0 or time.perf_counter() - start < _PROBE_SECONDS):
                stats += _score_chunk(chunks[i])
                bar.update(len(chunks[i][0]))
                i += 1
            if i < len(chunks):
                per_image = (time.perf_counter() - start) / stats.num_images
                if per_image * (len(pairs) - stats.num_images) > _POOL_WORTH_SECONDS:
                    n_workers = min(_MAX_AUTO_WORKERS, usable_cores())
        rest = chunks[i:]
        if n_workers == 1 or len(rest) <= 1:
            for chunk in rest:
                stats += _score_chunk(chunk)
                bar.update(len(chunk[0]))
        elif pool == "threads":
            with ThreadPoolExecutor(min(n_workers, len(rest))) as executor:
                for part in executor.map(_score_chunk, rest):
                    stats += part
                    bar.update(part.num_images)
        else:
            ctx = multiprocessing.get_context("spawn")  # fresh workers: no inherited threads or locks
            with ctx.Pool(min(n_workers, len(rest))) as procs:
                for part in procs.imap(_score_chunk, rest):
                    stats += part
                    bar.update(part.num_images)
    finally:
        bar.close()
    return summarise(stats, categories)


# ----------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------


class ProgressPrinter:
    """A small stderr progress line: ``PQ  1200/2000  60%  850 img/s  ETA 1s``.

    Redraws in place on a terminal (at most 10 times a second); elsewhere prints a line every 10%.
    """

    def __init__(
        self, total: int, desc: str = "", *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.desc} {self.done:>6d}/{self.total}  {pct:3.0f}%  {rate:7.1f} img/s  ETA {eta:5.0f}s"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self.stream.write("\r" + self._line())
                self.stream.flush()
                self._last_draw = now
        else:
            decile = int(10 * self.done / self.total) if self.total else 10
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()
