"""MaskConver post-processing in NumPy: proposals, mask head, panoptic merge.

:func:`decode_panoptic` turns the three model outputs (center heatmap logits, center embeddings, mask
features; float or int8/uint8 with their quantisation) into a :class:`PanopticDecoding`, reproducing Model
Garden's ``MaskConverProposalGenerator`` + mask-embedding MLP + ``MaskConverPanopticGenerator``
(``shared/reference/modelgarden-maskconver.md`` sections 3.1-3.3).

Steps (K = number of valid proposals, at most ``num_proposals``):

1. Peaks and top-K (:mod:`maskconver.runtime.peaks`). Only proposals with score > object_mask_threshold
   are returned; the reference's invalid proposals get score 0 and can never win a pixel or be kept, so
   dropping them changes nothing in the output.
2. Mask embeddings ``[K, D]``: gathered center embedding * class-embedding row -> Dense -> LayerNorm
   (eps 1e-6) -> ReLU -> Dense. Mask logits ``[h, w, K]`` = embeddings . mask features.
3. Merge: bilinear half-pixel resize of the logits to the output, sigmoid ``p``, winner
   ``argmax_q p_q * score_q`` (first on ties), ``original_area = count(p > 0.5)``, ``mask_area`` = pixels
   won; a proposal is kept if ``mask_area > small_area_threshold (scaled)``, ``original_area > 0`` and
   ``mask_area > overlap_threshold * original_area``. Pixels of dropped winners are void (category 0);
   thing winners get instance id rank + 1, stuff/void 0.

``method="fast"`` (default) computes the merge coarse-to-fine with the *same result, bit for bit*, as
``method="dense"``: every output pixel of a resize cell is a convex combination of the same four
low-resolution logits, so per cell and proposal ``[min, max]`` of those four (widened by a float-rounding
margin) bounds the pixel logits; where one proposal's lower bound of ``p * score`` beats every other
proposal's upper bound the whole cell is decided (likewise ``p > 0.5`` when the bounds agree in sign). Only
the pixels of undecided cells, and only for the proposals that can still win there, are interpolated, with
the very float32 operations the dense path uses.

Output resolution:

* reference mode: ``valid_size=None`` -> logits are resized straight to ``output_size`` (default
  ``canvas_size`` = 640x640, the exported-model behaviour the goldens were made with).
* original-resolution mode: the model input (``input_size``, default ``stride * (h, w)``) held the
  original ``output_size = (H0, W0)`` image resized to ``valid_size`` at its top-left (letterbox). As in Model
  Garden's ``_resize_and_pad_masks``, logits are resized to the input canvas in original pixels,
  ``ceil(input_size * output_size / valid_size)`` (per axis, exact integer arithmetic), and cropped to
  ``(H0, W0)``. Areas are counted on the crop only (Model Garden also counts the padding of its 640 canvas,
  where p = 0.5, into the top proposal's area).

``small_area_threshold`` is in pixels of a ``canvas_size`` canvas; it is scaled by (area of the resized
canvas in output pixels) / (canvas area).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from maskconver.runtime.mask_resize import (
    AxisPlan,
    axis_plan,
    cell_pixels,
    interpolate_cells,
    interpolate_x,
    resize_rows,
)
from maskconver.runtime.peaks import Proposals, dequantize, find_proposals, sigmoid32

MASK_HEAD_KEYS = (
    "class_embeddings",
    "mlp_dense0_kernel",
    "mlp_dense0_bias",
    "mlp_norm_gamma",
    "mlp_norm_beta",
    "mlp_dense1_kernel",
    "mlp_dense1_bias",
)
LAYER_NORM_EPSILON = 1e-6
COCO_THING_IDS = tuple(range(1, 91))
_ROW_CHUNK = 32  # rows per chunk in the dense merge (bounds memory to ~ chunk * W * K * 4 bytes * 4)


@dataclass
class PanopticDecoding:
    """Result of :func:`decode_panoptic` (pure data: no names or colours).

    Masks: ``category_mask``, ``instance_mask`` int32 ``[H, W]`` (category 0 = void; instance = proposal
    rank + 1 for things, 0 for stuff/void).

    Segments (distinct ``(category, instance)`` pairs with category != 0, ordered by best proposal rank;
    stuff proposals of one category merge into one segment), arrays of length N:
    ``segment_ids`` int32 (1..N), ``segment_category_ids`` int32, ``segment_instance_ids`` int32,
    ``segment_scores`` float32 (best proposal score), ``segment_areas`` int64 (pixels),
    ``segment_bboxes`` int32 ``[N, 4]`` as ``(x0, y0, x1, y1)``, x0/y0 inclusive, x1/y1 exclusive.

    Valid proposals (score > object_mask_threshold), best first, arrays of length K:
    ``proposal_classes`` int32, ``proposal_scores`` float32, ``proposal_yx`` int32 ``[K, 2]`` (feature grid),
    ``proposal_areas`` int64 (pixels won in the argmax), ``proposal_segment`` int32 (segment id, 0 = dropped),
    and ``mask_logits`` float32 ``[h, w, K]`` (low-resolution mask logits).
    """

    category_mask: np.ndarray
    instance_mask: np.ndarray
    segment_ids: np.ndarray
    segment_category_ids: np.ndarray
    segment_instance_ids: np.ndarray
    segment_scores: np.ndarray
    segment_areas: np.ndarray
    segment_bboxes: np.ndarray
    proposal_classes: np.ndarray
    proposal_scores: np.ndarray
    proposal_yx: np.ndarray
    proposal_areas: np.ndarray
    proposal_segment: np.ndarray
    mask_logits: np.ndarray = field(repr=False)

    @property
    def num_segments(self) -> int:
        return int(self.segment_ids.shape[0])


@dataclass(frozen=True)
class MergeResult:
    """Per-pixel winner (proposal rank) ``winner [H, W]`` (uint8/int32), ``mask_area [K]`` int64,
    ``kept [K]`` bool, ``bbox [K, 4]`` int64 ``(x0, y0, x1, y1)`` of the pixels won (zeros if none)."""

    winner: np.ndarray
    mask_area: np.ndarray
    kept: np.ndarray
    bbox: np.ndarray


# ---------------------------------------------------------------------------------------------------------
# input handling


def _unbatch(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name} has batch size {x.shape[0]}; decode one image at a time ([1, h, w, C])")
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be [1, h, w, C] or [h, w, C], got shape {x.shape}")
    return x


def _check_quant(x: np.ndarray, quant, name: str) -> tuple[float, float] | None:
    if np.issubdtype(x.dtype, np.floating):
        if quant is not None:
            raise ValueError(
                f"{name} is {x.dtype} but {name.split()[0]}_quant was given; pass codes or floats"
            )
        return None
    if x.dtype not in (np.int8, np.uint8):
        raise ValueError(f"{name} has dtype {x.dtype}; expected float, int8 or uint8")
    if quant is None:
        raise ValueError(
            f"{name} is {x.dtype}: pass its (scale, zero_point) as the matching *_quant argument"
        )
    scale, zero_point = float(quant[0]), float(quant[1])
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name}: quantisation scale must be a positive number, got {quant[0]!r}")
    return scale, zero_point


def _check_mask_head(
    mask_head: Mapping[str, np.ndarray], num_classes: int, dim: int
) -> dict[str, np.ndarray]:
    missing = [k for k in MASK_HEAD_KEYS if k not in mask_head]
    if missing:
        raise ValueError(
            f"mask_head lacks {', '.join(missing)}; pass the arrays of the model's mask_head.npz"
        )
    mh = {k: np.asarray(mask_head[k], dtype=np.float32) for k in MASK_HEAD_KEYS}
    expect = {
        "class_embeddings": (num_classes, dim),
        "mlp_dense0_bias": (dim,),
        "mlp_norm_gamma": (dim,),
        "mlp_norm_beta": (dim,),
        "mlp_dense1_bias": (dim,),
    }
    for k, shape in expect.items():
        if mh[k].shape != shape:
            raise ValueError(
                f"mask_head[{k!r}] has shape {mh[k].shape}, expected {shape} (C={num_classes}, D={dim})"
            )
    hidden = mh["mlp_dense0_kernel"].shape
    if len(hidden) != 2 or hidden[0] != dim or mh["mlp_dense1_kernel"].shape != (hidden[1], dim):
        raise ValueError(
            f"mask_head MLP kernels have shapes {hidden} and {mh['mlp_dense1_kernel'].shape}; "
            f"expected [{dim}, H] and [H, {dim}]"
        )
    if mh["mlp_dense0_bias"].shape != (hidden[1],) or mh["mlp_norm_gamma"].shape != (hidden[1],):
        raise ValueError("mask_head dense0 bias / LayerNorm sizes do not match mlp_dense0_kernel")
    return mh


def thing_table(thing_ids: Iterable[int] | np.ndarray | None, num_classes: int) -> np.ndarray:
    """Bool ``[num_classes]``: True for thing categories (default COCO ids 1..90). Accepts ids or a table."""
    if thing_ids is None:
        thing_ids = COCO_THING_IDS
    arr = np.asarray(list(thing_ids) if not isinstance(thing_ids, np.ndarray) else thing_ids)
    if arr.dtype == bool:
        if arr.shape != (num_classes,):
            raise ValueError(f"thing table has shape {arr.shape}, expected ({num_classes},)")
        return arr.copy()
    table = np.zeros(num_classes, dtype=bool)
    ids = arr.astype(np.int64).reshape(-1)
    table[ids[(ids >= 0) & (ids < num_classes)]] = True
    return table


# ---------------------------------------------------------------------------------------------------------
# mask head


def mask_embeddings(
    center: np.ndarray, classes: np.ndarray, mask_head: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``center [K, D]`` gathered center embeddings, ``classes [K]`` -> mask embeddings ``[K, D]`` float32.

    ``mlp(center * class_embeddings[max(classes, 0)])`` with MLP = Dense -> LayerNorm -> ReLU -> Dense.
    """
    x = center.astype(np.float32) * mask_head["class_embeddings"][np.maximum(classes, 0)]
    x = x @ mask_head["mlp_dense0_kernel"] + mask_head["mlp_dense0_bias"]
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    x = (x - mean) / np.sqrt(var + np.float32(LAYER_NORM_EPSILON))
    x = x * mask_head["mlp_norm_gamma"] + mask_head["mlp_norm_beta"]
    x = np.maximum(x, np.float32(0.0))
    return (x @ mask_head["mlp_dense1_kernel"] + mask_head["mlp_dense1_bias"]).astype(np.float32)


def mask_logits(
    features: np.ndarray, embeddings: np.ndarray, quant: tuple[float, float] | None = None
) -> np.ndarray:
    """``features [h, w, D]`` (float, or codes with ``quant``), ``embeddings [K, D]`` -> logits ``[h, w, K]``.

    For codes: ``scale * (q @ E^T - zero_point * sum_d E)``, so the feature map is never dequantised.
    """
    h, w, d = features.shape
    emb_t = np.ascontiguousarray(embeddings.T, dtype=np.float32)
    flat = features.reshape(h * w, d)
    if quant is None:
        out = flat.astype(np.float32, copy=False) @ emb_t
    else:
        scale, zero_point = quant
        out = flat.astype(np.float32) @ emb_t
        out -= np.float32(zero_point) * emb_t.sum(axis=0)
        out *= np.float32(scale)
    return out.reshape(h, w, -1)


# ---------------------------------------------------------------------------------------------------------
# merge


def _keep(mask_area: np.ndarray, original_area: np.ndarray, small_area: float, overlap: float) -> np.ndarray:
    return (mask_area > small_area) & (original_area > 0) & (mask_area > overlap * original_area)


def _winner_dtype(k: int):
    return np.uint8 if k <= 255 else np.int32


def _bbox_from_winner(winner: np.ndarray, k: int) -> np.ndarray:
    """Per-proposal ``(x0, y0, x1, y1)`` of ``winner [H, W]`` (values 0..k-1) -> int64 ``[k, 4]``."""
    hh, ww = winner.shape
    w64 = winner.astype(np.int64)
    rows = np.bincount((np.arange(hh)[:, None] * k + w64).ravel(), minlength=hh * k).reshape(hh, k) > 0
    cols = np.bincount((np.arange(ww)[None, :] * k + w64).ravel(), minlength=ww * k).reshape(ww, k) > 0
    bbox = np.zeros((k, 4), dtype=np.int64)
    has = rows.any(axis=0)
    bbox[has, 1] = rows[:, has].argmax(axis=0)
    bbox[has, 3] = hh - rows[::-1, has].argmax(axis=0)
    bbox[has, 0] = cols[:, has].argmax(axis=0)
    bbox[has, 2] = ww - cols[::-1, has].argmax(axis=0)
    return bbox


def merge_dense(
    logits: np.ndarray,
    scores: np.ndarray,
    py: AxisPlan,
    px: AxisPlan,
    small_area: float,
    overlap: float,
) -> MergeResult:
    """Straightforward full-resolution merge (row chunks). ``logits [h, w, K]`` float32, ``scores [K]``."""
    k = logits.shape[-1]
    hh, ww = py.n, px.n
    winner = np.zeros((hh, ww), dtype=_winner_dtype(k))
    original_area = np.zeros(k, dtype=np.int64)
    if k == 0:
        return MergeResult(winner, np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, 4), np.int64))
    scores = scores.astype(np.float32)
    rows_x = interpolate_x(np.ascontiguousarray(logits, dtype=np.float32), px)
    for start in range(0, hh, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, hh)
        p = sigmoid32(resize_rows(rows_x, py, start, stop))
        winner[start:stop] = np.argmax(p * scores, axis=-1)
        original_area += np.count_nonzero(p > np.float32(0.5), axis=(0, 1))
    mask_area = np.bincount(winner.ravel(), minlength=k).astype(np.int64)
    kept = _keep(mask_area, original_area, small_area, overlap)
    return MergeResult(winner, mask_area, kept, _bbox_from_winner(winner, k))


# Safety margins of the coarse bounds (far above float32 rounding of the interpolation, exp and product).
_REL_LOGIT = np.float32(4e-6)
_REL_PROD = np.float32(1e-5)
_ABS_PROD = np.float32(1e-37)
_SIGN_MARGIN = np.float32(1e-3)


def _cell_bounds(logits: np.ndarray, py: AxisPlan, px: AxisPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and proposal, bounds of the resized logits: ``lo, hi`` float32 ``[ny, nx, K]``."""
    r0 = logits[py.run_i0]
    r1 = logits[py.run_i1]
    rmin = np.minimum(r0, r1)
    rmax = np.maximum(r0, r1)
    lo = np.minimum(rmin[:, px.run_i0], rmin[:, px.run_i1])
    hi = np.maximum(rmax[:, px.run_i0], rmax[:, px.run_i1])
    margin = np.maximum(hi, -lo)
    margin *= _REL_LOGIT
    lo -= margin
    hi += margin
    return lo, hi


def merge_fast(
    logits: np.ndarray,
    scores: np.ndarray,
    py: AxisPlan,
    px: AxisPlan,
    small_area: float,
    overlap: float,
) -> MergeResult:
    """Coarse-to-fine merge, bit-identical to :func:`merge_dense`. Same arguments and result."""
    k = logits.shape[-1]
    hh, ww = py.n, px.n
    if k == 0:
        winner = np.zeros((hh, ww), dtype=_winner_dtype(0))
        return MergeResult(winner, np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, 4), np.int64))
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    scores = scores.astype(np.float32)
    ny, nx = py.run_start.size, px.run_start.size
    cell_npix = py.run_len[:, None] * px.run_len[None, :]  # [ny, nx]

    # 1. cell bounds of p * score; a cell is decided when a single proposal's upper bound reaches the
    #    best lower bound.
    lo, hi = _cell_bounds(logits, py, px)
    with np.errstate(under="ignore"):
        low = sigmoid32(lo) * (scores * (np.float32(1) - _REL_PROD)) - _ABS_PROD
        upp = sigmoid32(hi) * (scores * (np.float32(1) + _REL_PROD)) + _ABS_PROD
    best_low = low.max(axis=-1)
    cand = upp >= best_low[..., None]  # [ny, nx, K]; the winner is always among these
    ncand = np.count_nonzero(cand, axis=-1)
    decided = ncand == 1
    cell_win = np.argmax(cand, axis=-1)  # the lone candidate where decided

    wdt = _winner_dtype(k)
    mask_area = np.bincount(cell_win[decided], weights=cell_npix[decided], minlength=k).astype(np.int64)

    # 2. undecided cells: interpolate only their candidates, pixel by pixel.
    ucy, ucx = np.nonzero(~decided)
    winner = np.repeat(np.repeat(cell_win.astype(wdt), py.run_len, axis=0), px.run_len, axis=1)
    bbox_lo_y = np.full(k, hh, dtype=np.int64)
    bbox_lo_x = np.full(k, ww, dtype=np.int64)
    bbox_hi_y = np.zeros(k, dtype=np.int64)
    bbox_hi_x = np.zeros(k, dtype=np.int64)
    dcy, dcx = np.nonzero(decided)
    dq = cell_win[dcy, dcx]
    np.minimum.at(bbox_lo_y, dq, py.run_start[dcy])
    np.minimum.at(bbox_lo_x, dq, px.run_start[dcx])
    np.maximum.at(bbox_hi_y, dq, py.run_start[dcy] + py.run_len[dcy])
    np.maximum.at(bbox_hi_x, dq, px.run_start[dcx] + px.run_len[dcx])
    if ucy.size:
        ucand = cand[ucy, ucx]  # [nU, K]
        m = int(ncand[ucy, ucx].max())
        cq = np.argsort(~ucand, axis=1, kind="stable")[:, :m]  # candidates in ascending rank, then padding
        cok = np.take_along_axis(ucand, cq, axis=1)  # [nU, m]
        nu = ucy.size
        v = interpolate_cells(logits, py, px, np.repeat(ucy, m), np.repeat(ucx, m), cq.ravel())
        ry, rx = v.shape[1:]
        prod = sigmoid32(v) * scores[cq.ravel()][:, None, None]
        prod = prod.reshape(nu, m, ry, rx)
        prod[~cok] = np.float32(-1.0)
        jwin = np.argmax(prod, axis=1)  # [nU, RY, RX]
        qwin = np.take_along_axis(cq, jwin.reshape(nu, -1), axis=1).reshape(nu, ry, rx)
        ys, xs, ok_y, ok_x = cell_pixels(py, px, ucy, ucx)
        winner[ys[:, :, None], xs[:, None, :]] = qwin.astype(wdt)
        ok = ok_y[:, :, None] & ok_x[:, None, :]
        qv = qwin[ok]
        mask_area += np.bincount(qv, minlength=k)
        yy = np.broadcast_to(ys[:, :, None], qwin.shape)[ok]
        xx = np.broadcast_to(xs[:, None, :], qwin.shape)[ok]
        np.minimum.at(bbox_lo_y, qv, yy)
        np.minimum.at(bbox_lo_x, qv, xx)
        np.maximum.at(bbox_hi_y, qv, yy + 1)
        np.maximum.at(bbox_hi_x, qv, xx + 1)

    # 3. original_area = count(p > 0.5), only for proposals that pass the area test.
    original_area = np.zeros(k, dtype=np.int64)
    need = np.flatnonzero(mask_area > small_area)
    if need.size:
        lo_n = lo[:, :, need]
        hi_n = hi[:, :, need]
        pos = lo_n > _SIGN_MARGIN
        original_area[need] = np.einsum("yx,yxq->q", cell_npix, pos.astype(np.int64))
        unsure = ~pos & (hi_n >= -_SIGN_MARGIN)
        scy, scx, sj = np.nonzero(unsure)
        if scy.size:
            sq = need[sj]
            v = interpolate_cells(logits, py, px, scy, scx, sq)
            _, _, ok_y, ok_x = cell_pixels(py, px, scy, scx)
            above = (sigmoid32(v) > np.float32(0.5)) & ok_y[:, :, None] & ok_x[:, None, :]
            original_area += np.bincount(sq, weights=above.sum(axis=(1, 2)), minlength=k).astype(np.int64)

    kept = _keep(mask_area, original_area, small_area, overlap)
    has = mask_area > 0
    bbox = np.zeros((k, 4), dtype=np.int64)
    bbox[has] = np.stack([bbox_lo_x, bbox_lo_y, bbox_hi_x, bbox_hi_y], axis=1)[has]
    return MergeResult(winner, mask_area, kept, bbox)


# ---------------------------------------------------------------------------------------------------------
# top level


def _segments(
    classes: np.ndarray, scores: np.ndarray, merge: MergeResult, is_thing: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Group kept proposals into segments; returns segment arrays and category / instance lookup tables."""
    k = classes.shape[0]
    cat_lut = np.where(merge.kept, classes, 0).astype(np.int32)
    thing = is_thing[cat_lut] & merge.kept
    inst_lut = np.where(thing, np.arange(1, k + 1), 0).astype(np.int32)
    proposal_segment = np.zeros(k, dtype=np.int32)
    keys: dict[tuple[int, int], int] = {}
    for q in np.flatnonzero(merge.kept):
        key = (int(cat_lut[q]), int(inst_lut[q]))
        proposal_segment[q] = keys.setdefault(key, len(keys) + 1)
    n = len(keys)
    seg = {
        "segment_ids": np.arange(1, n + 1, dtype=np.int32),
        "segment_category_ids": np.array([c for c, _ in keys], dtype=np.int32),
        "segment_instance_ids": np.array([i for _, i in keys], dtype=np.int32),
        "segment_scores": np.zeros(n, dtype=np.float32),
        "segment_areas": np.zeros(n, dtype=np.int64),
        "segment_bboxes": np.zeros((n, 4), dtype=np.int32),
    }
    for s in range(n):
        members = np.flatnonzero(proposal_segment == s + 1)
        seg["segment_scores"][s] = scores[members].max()
        seg["segment_areas"][s] = merge.mask_area[members].sum()
        b = merge.bbox[members]
        seg["segment_bboxes"][s] = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    seg["proposal_segment"] = proposal_segment
    return seg, cat_lut, inst_lut


def output_plans(
    feature_size: tuple[int, int],
    output_size: tuple[int, int],
    valid_size: tuple[int, int] | None,
    input_size: tuple[int, int],
) -> tuple[AxisPlan, AxisPlan, int]:
    """Resize plans (y, x) and the area of the resized canvas in output pixels."""
    h, w = feature_size
    if valid_size is None:
        return axis_plan(h, output_size[0]), axis_plan(w, output_size[1]), output_size[0] * output_size[1]
    canvas = []
    for ax in range(2):
        vs, out, inp = int(valid_size[ax]), int(output_size[ax]), int(input_size[ax])
        if not 1 <= vs <= inp:
            raise ValueError(
                f"valid_size {tuple(valid_size)} must lie within the model input {tuple(input_size)}"
            )
        canvas.append(-(-inp * out // vs))  # ceil(input * original / valid)
    return (
        axis_plan(h, canvas[0], output_size[0]),
        axis_plan(w, canvas[1], output_size[1]),
        canvas[0] * canvas[1],
    )


def decode_panoptic(
    heatmap: np.ndarray,
    center_embeddings: np.ndarray,
    mask_features: np.ndarray,
    mask_head: Mapping[str, np.ndarray],
    *,
    output_size: tuple[int, int] | None = None,
    valid_size: tuple[int, int] | None = None,
    input_size: tuple[int, int] | None = None,
    stride: int = 8,
    thing_ids: Iterable[int] | np.ndarray | None = None,
    num_proposals: int = 50,
    object_mask_threshold: float = 0.01,
    overlap_threshold: float = 0.7,
    small_area_threshold: float = 256.0,
    canvas_size: tuple[int, int] = (640, 640),
    heatmap_quant: tuple[float, float] | None = None,
    center_quant: tuple[float, float] | None = None,
    mask_quant: tuple[float, float] | None = None,
    method: str = "fast",
) -> PanopticDecoding:
    """Panoptic decoding of one image's model outputs.

    Args:
        heatmap: ``[1, h, w, C]`` (or ``[h, w, C]``) center-heatmap logits; float, or int8/uint8 codes
            with ``heatmap_quant=(scale, zero_point)``.
        center_embeddings: ``[1, h, w, D]``, float or codes with ``center_quant``.
        mask_features: ``[1, h, w, D]``, float or codes with ``mask_quant``.
        mask_head: the arrays of ``mask_head.npz`` (see ``MASK_HEAD_KEYS``).
        output_size: ``(H, W)`` of the masks; default ``canvas_size``. With ``valid_size`` it is the
            original image size ``(H0, W0)``.
        valid_size: ``(round(H0*s), round(W0*s))``, the letterboxed image inside the model input, or None.
        input_size: model input ``(H_in, W_in)``; default ``stride * (h, w)``.
        thing_ids: thing category ids (or a bool table ``[C]``); default COCO 1..90.
        method: ``"fast"`` (coarse-to-fine) or ``"dense"`` (full resolution); identical results.
    """
    if method not in ("fast", "dense"):
        raise ValueError(f"method must be 'fast' or 'dense', got {method!r}")
    heat = _unbatch(heatmap, "heatmap")
    center = _unbatch(center_embeddings, "center_embeddings")
    feats = _unbatch(mask_features, "mask_features")
    hq = _check_quant(heat, heatmap_quant, "heatmap")
    cq = _check_quant(center, center_quant, "center_embeddings")
    mq = _check_quant(feats, mask_quant, "mask_features")
    h, w, c = heat.shape
    if center.shape[:2] != (h, w) or feats.shape[:2] != (h, w) or center.shape[2] != feats.shape[2]:
        raise ValueError(
            f"output shapes disagree: heatmap {heat.shape}, center_embeddings {center.shape}, "
            f"mask_features {feats.shape}; expected [h, w, C], [h, w, D], [h, w, D]"
        )
    d = center.shape[2]
    mh = _check_mask_head(mask_head, c, d)
    if output_size is None:
        if valid_size is not None:
            raise ValueError("valid_size needs output_size = the original image size (H0, W0)")
        output_size = tuple(canvas_size)
    output_size = (int(output_size[0]), int(output_size[1]))
    input_size = (stride * h, stride * w) if input_size is None else (int(input_size[0]), int(input_size[1]))
    py, px, canvas_area = output_plans((h, w), output_size, valid_size, input_size)
    small_area = float(small_area_threshold) * canvas_area / float(canvas_size[0] * canvas_size[1])
    is_thing = thing_table(thing_ids, c)

    props: Proposals = find_proposals(heat, num_proposals, object_mask_threshold, hq)
    rows = center[props.yx[:, 0], props.yx[:, 1]]
    rows = rows.astype(np.float32) if cq is None else dequantize(rows, cq)
    emb = mask_embeddings(rows, props.classes, mh)
    logits = mask_logits(feats, emb, mq)

    merge = (merge_fast if method == "fast" else merge_dense)(
        logits, props.scores, py, px, small_area, float(overlap_threshold)
    )
    seg, cat_lut, inst_lut = _segments(props.classes, props.scores, merge, is_thing)
    if len(props):
        category_mask = np.take(cat_lut, merge.winner)
        instance_mask = np.take(inst_lut, merge.winner)
    else:
        category_mask = np.zeros(output_size, dtype=np.int32)
        instance_mask = np.zeros(output_size, dtype=np.int32)
    return PanopticDecoding(
        category_mask=category_mask,
        instance_mask=instance_mask,
        proposal_classes=props.classes,
        proposal_scores=props.scores,
        proposal_yx=props.yx,
        proposal_areas=merge.mask_area,
        mask_logits=logits,
        **seg,
    )
