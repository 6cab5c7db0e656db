"""Panoptic merge of MaskConver mask logits (Model Garden ``MaskConverPanopticGenerator``), two ways.

Given low-resolution mask logits ``[h, w, K]`` of the valid proposals (best first) and their scores, the
merge resizes the logits bilinearly to the output (:mod:`maskconver.runtime.mask_resize`), takes
``p = sigmoid`` and per pixel the winner ``argmax_q p_q * score_q`` (first on ties), counts
``mask_area[q]`` (pixels won) and ``original_area[q] = count(p_q > 0.5)``, and keeps ``q`` if
``mask_area > small_area``, ``original_area > 0`` and ``mask_area > overlap * original_area``.

* :func:`merge_dense` does exactly that at full resolution (row chunks).
* :func:`merge_fast` gives the same result bit for bit, coarse to fine. Each output pixel of a resize
  *cell* (a y-run x an x-run, see ``mask_resize``) is a convex combination of the cell's four source logits,
  and on any rectangle of pixels inside a cell the bilinear function takes its extremes at the rectangle's
  corner pixels. So a block of pixels gets, per proposal, bounds ``[lo, hi]`` of its logits (widened by a
  margin far above the float32 rounding of the interpolation) and hence bounds of ``p * score``. A block
  is *decided* when exactly one proposal's upper bound reaches the best lower bound; otherwise only the
  proposals still able to win are carried into its four quadrants, recursively, and blocks of at most
  ``EXACT_PIXELS`` pixels are evaluated pixel by pixel with the float32 operations of the dense path.
  ``p > 0.5`` is counted the same way, only for proposals that pass the area test (``lo > 0`` or
  ``hi < 0`` with margin decides a block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from maskconver.runtime.mask_resize import AxisPlan, bilinear_from_corners, interpolate_x, resize_rows
from maskconver.runtime.peaks import sigmoid32

_ROW_CHUNK = 32  # rows per chunk in the dense merge (memory ~ 4 * chunk * W * K * 4 bytes)
EXACT_PIXELS = 16  # blocks this small are evaluated pixel by pixel
# Safety margins of the bounds (far above float32 rounding of the interpolation, exp and product).
_REL_LOGIT = np.float32(4e-6)  # x max |source logit| of the cell
_REL_PROD = np.float32(1e-5)
_ABS_PROD = np.float32(1e-37)
_SIGN_MARGIN = np.float32(1e-3)


@dataclass(frozen=True)
class MergeResult:
    """``winner [H, W]`` (uint8, or int32 for K > 255) proposal rank per pixel; ``mask_area [K]`` int64;
    ``original_area [K]`` int64 (only exact where ``mask_area > small_area``; 0 elsewhere);
    ``kept [K]`` bool; ``bbox [K, 4]`` int64 ``(x0, y0, x1, y1)`` exclusive ends, zeros if nothing won."""

    winner: np.ndarray
    mask_area: np.ndarray
    original_area: np.ndarray
    kept: np.ndarray
    bbox: np.ndarray


def _keep(mask_area: np.ndarray, original_area: np.ndarray, small_area: float, overlap: float) -> np.ndarray:
    return (mask_area > small_area) & (original_area > 0) & (mask_area > overlap * original_area)


def winner_dtype(k: int) -> type:
    return np.uint8 if k <= 255 else np.int32


def _empty(hh: int, ww: int) -> MergeResult:
    z = np.zeros(0, np.int64)
    return MergeResult(np.zeros((hh, ww), np.uint8), z, z, np.zeros(0, bool), np.zeros((0, 4), np.int64))


def bbox_from_winner(winner: np.ndarray, k: int) -> np.ndarray:
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
    logits: np.ndarray, scores: np.ndarray, py: AxisPlan, px: AxisPlan, small_area: float, overlap: float
) -> MergeResult:
    """Full-resolution merge. ``logits [h, w, K]`` float32, ``scores [K]`` float32 -> :class:`MergeResult`
    at ``[py.n, px.n]``."""
    k = logits.shape[-1]
    hh, ww = py.n, px.n
    if k == 0:
        return _empty(hh, ww)
    winner = np.zeros((hh, ww), dtype=winner_dtype(k))
    original_area = np.zeros(k, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    rows_x = interpolate_x(np.ascontiguousarray(logits, dtype=np.float32), px)
    for start in range(0, hh, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, hh)
        p = sigmoid32(resize_rows(rows_x, py, start, stop))
        winner[start:stop] = np.argmax(p * scores, axis=-1)
        original_area += np.count_nonzero(p > np.float32(0.5), axis=(0, 1))
    mask_area = np.bincount(winner.ravel(), minlength=k).astype(np.int64)
    original_area[mask_area <= small_area] = 0  # reported only where it matters (as merge_fast)
    kept = _keep(mask_area, original_area, small_area, overlap)
    return MergeResult(winner, mask_area, original_area, kept, bbox_from_winner(winner, k))


# ---------------------------------------------------------------------------------------------------------
# coarse-to-fine


@dataclass
class _Blocks:
    """Pixel rectangles inside resize cells: flat cell index ``cf`` (``cy * nx + cx``); rows ``y0:y1``,
    cols ``x0:x1`` (int64 ``[n]`` each)."""

    cf: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    x0: np.ndarray
    x1: np.ndarray

    def take(self, sel: np.ndarray) -> _Blocks:
        return _Blocks(self.cf[sel], self.y0[sel], self.y1[sel], self.x0[sel], self.x1[sel])

    @property
    def n(self) -> int:
        return int(self.cf.size)

    @property
    def npix(self) -> np.ndarray:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


@dataclass
class _Corners:
    """Per (cell, proposal) source logits, flat ``[ncells * K]``: ``a = L[y0, x0]``, ``b = L[y0, x1]``,
    ``c = L[y1, x0]``, ``d = L[y1, x1]``, and the bound margin (``_REL_LOGIT`` x their largest magnitude)."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    margin: np.ndarray
    k: int


def _split_bounds(
    cor: _Corners, py: AxisPlan, px: AxisPlan, blk: _Blocks, pb: np.ndarray, pq: np.ndarray
) -> tuple[_Blocks, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every block into quadrants (halving an axis only if it is longer than 1); each child inherits
    its parent's pairs, with bounds of its logits (min / max at its corner pixels, +- margin).

    ``pb`` (sorted block index) / ``pq`` (proposal) ``[n]`` -> ``children, pb', pq', lo', hi'``.
    """
    nb = blk.n
    my = blk.y0 + (blk.y1 - blk.y0) // 2
    mx = blk.x0 + (blk.x1 - blk.x0) // 2
    # corner rows / cols of the children: (y0, my-1 | my, y1-1), clamped for unsplit axes (empty child)
    rows = np.stack([blk.y0, np.maximum(my - 1, blk.y0), my, blk.y1 - 1])  # [4, nb]
    cols = np.stack([blk.x0, np.maximum(mx - 1, blk.x0), mx, blk.x1 - 1])
    fi = blk.cf[pb] * cor.k + pq
    v = bilinear_from_corners(
        cor.a[fi],
        cor.b[fi],
        cor.c[fi],
        cor.d[fi],
        np.take(px.lerp[cols], pb, axis=1),
        np.take(py.lerp[rows], pb, axis=1),
    )  # [4 rows, 4 cols, n]
    lo4 = np.minimum(np.minimum(v[0::2, 0::2], v[0::2, 1::2]), np.minimum(v[1::2, 0::2], v[1::2, 1::2]))
    hi4 = np.maximum(np.maximum(v[0::2, 0::2], v[0::2, 1::2]), np.maximum(v[1::2, 0::2], v[1::2, 1::2]))
    m = cor.margin[fi]
    lo4 -= m
    hi4 += m
    # children, parent-major: (top-left, top-right, bottom-left, bottom-right)
    cy0 = np.stack([blk.y0, blk.y0, my, my], axis=1).ravel()
    cy1 = np.stack([my, my, blk.y1, blk.y1], axis=1).ravel()
    cx0 = np.stack([blk.x0, mx, blk.x0, mx], axis=1).ravel()
    cx1 = np.stack([mx, blk.x1, mx, blk.x1], axis=1).ravel()
    nonempty = np.flatnonzero((cy1 > cy0) & (cx1 > cx0))
    parent = nonempty // 4
    child = _Blocks(blk.cf[parent], cy0[nonempty], cy1[nonempty], cx0[nonempty], cx1[nonempty])
    counts = np.bincount(pb, minlength=nb)
    first = np.cumsum(counts) - counts
    cnt = counts[parent]
    offs = np.cumsum(cnt) - cnt
    src = np.arange(int(offs[-1] + cnt[-1])) - np.repeat(offs - first[parent], cnt)  # parent pair index
    at = np.repeat(nonempty % 4, cnt) * pq.size + src  # (child quadrant, parent pair) in lo4 [2, 2, n]
    return child, np.repeat(np.arange(parent.size), cnt), pq[src], lo4.reshape(-1)[at], hi4.reshape(-1)[at]


def _block_pixels(blk: _Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded pixel rows ``ys [RY, n]``, cols ``xs [RX, n]`` of the blocks (past a block's end: repeat
    its last row / col) and ``ok [RY, RX, n]`` marking real pixels."""
    ly = blk.y1 - blk.y0
    lx = blk.x1 - blk.x0
    oy = np.arange(int(ly.max()))[:, None]
    ox = np.arange(int(lx.max()))[:, None]
    ys = blk.y0 + np.minimum(oy, ly - 1)
    xs = blk.x0 + np.minimum(ox, lx - 1)
    ok = (oy < ly)[:, None, :] & (ox < lx)[None, :, :]
    return ys, xs, ok


def _pixel_logits(
    cor: _Corners, py: AxisPlan, px: AxisPlan, blk: _Blocks, pb: np.ndarray, pq: np.ndarray, ys, xs
) -> np.ndarray:
    """Resized logits of pairs ``(pb, pq)`` at their block's padded pixels -> ``[RY, RX, n]`` float32."""
    fi = blk.cf[pb] * cor.k + pq
    return bilinear_from_corners(
        cor.a[fi], cor.b[fi], cor.c[fi], cor.d[fi], px.lerp[xs[:, pb]], py.lerp[ys[:, pb]]
    )


def _starts(pb: np.ndarray) -> np.ndarray:
    """Start of each block's pairs in the sorted ``pb`` (every block has at least one pair)."""
    return np.flatnonzero(np.diff(pb, prepend=-1))


class _Canvas:
    """Accumulates the winner map, areas and boxes of decided blocks / pixels."""

    def __init__(self, winner: np.ndarray, k: int):
        self.winner = winner
        self.mask_area = np.zeros(k, dtype=np.int64)
        hh, ww = winner.shape
        self.box = np.array([[ww, hh, 0, 0]] * k, dtype=np.int64).T.copy()  # [4, k]: x0, y0, x1, y1

    def add_boxes(
        self, q: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
    ) -> None:
        np.minimum.at(self.box[0], q, x0)
        np.minimum.at(self.box[1], q, y0)
        np.maximum.at(self.box[2], q, x1)
        np.maximum.at(self.box[3], q, y1)

    def fill(self, blk: _Blocks, q: np.ndarray) -> None:
        """Blocks won entirely by ``q [n]``."""
        if q.size == 0:
            return
        ys, xs, _ = _block_pixels(blk)
        self.winner[ys[:, None, :], xs[None, :, :]] = q.astype(self.winner.dtype)
        self.mask_area += np.bincount(q, weights=blk.npix, minlength=self.mask_area.size).astype(np.int64)
        self.add_boxes(q, blk.x0, blk.y0, blk.x1, blk.y1)

    def pixels(self, ys: np.ndarray, xs: np.ndarray, ok: np.ndarray, q: np.ndarray) -> None:
        """Per-pixel winners ``q [RY, RX, n]`` at padded pixels ``ys [RY, n]``, ``xs [RX, n]``."""
        self.winner[ys[:, None, :], xs[None, :, :]] = q.astype(self.winner.dtype)
        qv = q[ok]
        self.mask_area += np.bincount(qv, minlength=self.mask_area.size)
        yy = np.broadcast_to(ys[:, None, :], q.shape)[ok]
        xx = np.broadcast_to(xs[None, :, :], q.shape)[ok]
        self.add_boxes(qv, xx, yy, xx + 1, yy + 1)


def _exact_winners(
    cor: _Corners,
    scores: np.ndarray,
    py: AxisPlan,
    px: AxisPlan,
    blk: _Blocks,
    pb: np.ndarray,
    pq: np.ndarray,
    canvas: _Canvas,
) -> None:
    """Pixel-by-pixel argmax over each block's candidate pairs (ascending proposal within a block)."""
    ys, xs, ok = _block_pixels(blk)
    prod = sigmoid32(_pixel_logits(cor, py, px, blk, pb, pq, ys, xs))
    prod *= scores[pq]
    starts = _starts(pb)
    counts = np.diff(np.append(starts, pq.size))
    first = np.empty(prod.shape[:2] + (blk.n,), dtype=np.int64)
    for m in np.unique(counts):  # blocks with m candidates: running argmax, strict '>' keeps the first
        sel = np.flatnonzero(counts == m)
        at = starts[sel]
        best = prod[:, :, at]
        win = np.broadcast_to(at, best.shape).copy()
        for j in range(1, int(m)):
            pj = prod[:, :, at + j]
            np.copyto(win, at + j, where=pj > best)
            np.maximum(best, pj, out=best)
        first[:, :, sel] = win
    canvas.pixels(ys, xs, ok, pq[first])


def _exact_positive(
    cor: _Corners, py: AxisPlan, px: AxisPlan, blk: _Blocks, pq: np.ndarray, count: np.ndarray
) -> None:
    """Adds ``count(p > 0.5)`` over block i for proposal ``pq[i]``, pixel by pixel."""
    ys, xs, ok = _block_pixels(blk)
    v = _pixel_logits(cor, py, px, blk, np.arange(blk.n), pq, ys, xs)
    above = np.count_nonzero((sigmoid32(v) > np.float32(0.5)) & ok, axis=(0, 1))
    count += np.bincount(pq, weights=above, minlength=count.size).astype(np.int64)


def _cell_blocks(py: AxisPlan, px: AxisPlan, cy: np.ndarray, cx: np.ndarray) -> _Blocks:
    y0 = py.run_start[cy]
    x0 = px.run_start[cx]
    return _Blocks(cy * px.run_start.size + cx, y0, y0 + py.run_len[cy], x0, x0 + px.run_len[cx])


def _drop_blocks(blk: _Blocks, pb: np.ndarray, pq: np.ndarray, gone: np.ndarray):
    """Remove blocks flagged ``gone [nb]`` and their pairs (renumbering the rest)."""
    rest = ~gone
    sel = rest[pb]
    return blk.take(rest), (np.cumsum(rest) - 1)[pb[sel]], pq[sel]


def merge_fast(
    logits: np.ndarray, scores: np.ndarray, py: AxisPlan, px: AxisPlan, small_area: float, overlap: float
) -> MergeResult:
    """Coarse-to-fine merge, bit-identical to :func:`merge_dense` (same arguments and result)."""
    k = logits.shape[-1]
    hh, ww = py.n, px.n
    if k == 0:
        return _empty(hh, ww)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    s_lo = scores * (np.float32(1) - _REL_PROD)
    s_hi = scores * (np.float32(1) + _REL_PROD)

    # Level 0: whole cells, bounded by their four source logits.
    r0 = logits[py.run_i0]
    r1 = logits[py.run_i1]
    a, b = r0[:, px.run_i0], r0[:, px.run_i1]  # [ny, nx, K]
    c, d = r1[:, px.run_i0], r1[:, px.run_i1]
    lo = np.minimum(np.minimum(a, b), np.minimum(c, d))
    hi = np.maximum(np.maximum(a, b), np.maximum(c, d))
    margin = np.maximum(hi, -lo)
    margin *= _REL_LOGIT
    lo -= margin
    hi += margin
    cor = _Corners(a.ravel(), b.ravel(), c.ravel(), d.ravel(), margin.ravel(), k)
    with np.errstate(under="ignore"):
        low = sigmoid32(lo) * s_lo - _ABS_PROD
        upp = sigmoid32(hi) * s_hi + _ABS_PROD
    cand = upp >= low.max(axis=-1, keepdims=True)  # the winner is always among these
    ncand = np.count_nonzero(cand, axis=-1)
    decided = ncand == 1
    cell_win = np.argmax(cand, axis=-1)

    wdt = winner_dtype(k)
    canvas = _Canvas(np.repeat(np.repeat(cell_win.astype(wdt), py.run_len, axis=0), px.run_len, axis=1), k)
    dcy, dcx = np.nonzero(decided)
    dq = cell_win[dcy, dcx]
    ylen, xlen = py.run_len[dcy], px.run_len[dcx]
    canvas.mask_area += np.bincount(dq, weights=ylen * xlen, minlength=k).astype(np.int64)
    y0, x0 = py.run_start[dcy], px.run_start[dcx]
    canvas.add_boxes(dq, x0, y0, x0 + xlen, y0 + ylen)

    # Finer levels for the undecided cells.
    ucy, ucx = np.nonzero(~decided)
    blk = _cell_blocks(py, px, ucy, ucx)
    pb, pq = np.nonzero(cand[ucy, ucx])
    while pb.size:
        small = blk.npix <= EXACT_PIXELS
        if small.any():
            sel = small[pb]
            renum = np.cumsum(small) - 1
            _exact_winners(cor, scores, py, px, blk.take(small), renum[pb[sel]], pq[sel], canvas)
            blk, pb, pq = _drop_blocks(blk, pb, pq, small)
            if not pb.size:
                break
        blk, pb, pq, blo, bhi = _split_bounds(cor, py, px, blk, pb, pq)
        with np.errstate(under="ignore"):
            low = sigmoid32(blo) * s_lo[pq] - _ABS_PROD
            upp = sigmoid32(bhi) * s_hi[pq] + _ABS_PROD
        keep = upp >= np.maximum.reduceat(low, _starts(pb))[pb]
        pb, pq = pb[keep], pq[keep]
        done = np.bincount(pb, minlength=blk.n) == 1
        dsel = done[pb]
        canvas.fill(blk.take(done), pq[dsel])
        blk, pb, pq = _drop_blocks(blk, pb, pq, done)

    # original_area = count(p > 0.5), only for proposals passing the area test. One block per pair here.
    mask_area = canvas.mask_area
    original_area = np.zeros(k, dtype=np.int64)
    need = np.flatnonzero(mask_area > small_area)
    if need.size:
        pos = lo[:, :, need] > _SIGN_MARGIN
        cell_npix = py.run_len[:, None] * px.run_len[None, :]
        original_area[need] = np.einsum("yx,yxq->q", cell_npix, pos.astype(np.int64))
        scy, scx, sj = np.nonzero(~pos & (hi[:, :, need] >= -_SIGN_MARGIN))
        blk, pq = _cell_blocks(py, px, scy, scx), need[sj]
        while pq.size:
            small = blk.npix <= EXACT_PIXELS
            if small.any():
                _exact_positive(cor, py, px, blk.take(small), pq[small], original_area)
                blk, pq = blk.take(~small), pq[~small]
                if not pq.size:
                    break
            blk, pb, pq, blo, bhi = _split_bounds(cor, py, px, blk, np.arange(blk.n), pq)
            pos = blo > _SIGN_MARGIN
            original_area += np.bincount(pq[pos], weights=blk.npix[pos], minlength=k).astype(np.int64)
            unsure = ~pos & (bhi >= -_SIGN_MARGIN)
            blk, pq = blk.take(unsure), pq[unsure]

    kept = _keep(mask_area, original_area, small_area, overlap)
    bbox = np.zeros((k, 4), dtype=np.int64)
    has = mask_area > 0
    bbox[has] = canvas.box.T[has]
    return MergeResult(canvas.winner, mask_area, original_area, kept, bbox)
