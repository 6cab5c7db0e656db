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
  Children are bounded first for the *strong* candidates (upper bound within ``_STRONG`` of the block's
  best), which gives each child a lower bound of its winner's product; weak candidates are bounded only
  where their parent's upper bound still reaches it (at a boundary between two confident masks, the
  cell-wide bounds leave every faint proposal a candidate).
  ``p > 0.5`` is bounded the same way (``lo > 0`` or ``hi < 0`` with margin decides a block), only for
  proposals that pass the area test and only until their keep test is decided, so ``original_area`` of
  the fast path is a lower bound that yields the same ``kept``.

Every bound carries a margin (``_REL_LOGIT``, ``_REL_PROD``, ``_ABS_PROD``, ``_SIGN_MARGIN``) that
covers float32 rounding, so no decision is taken on a near tie: those pixels are always evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from maskconver.runtime.mask_resize import AxisPlan, SubRuns, interpolate_x, resize_rows, sub_runs
from maskconver.runtime.peaks import sigmoid32

_ROW_CHUNK = 32  # rows per chunk in the dense merge (memory ~ 4 * chunk * W * K * 4 bytes)
EXACT_PIXELS = 16  # blocks this small are evaluated pixel by pixel
TILE = 4  # tiles of at most TILE x TILE pixels bound the p > 0.5 counts of undecided cells
# Safety margins of the bounds (far above float32 rounding of the interpolation, exp and product).
_REL_LOGIT = np.float32(4e-6)  # x max |source logit| of the cell
_REL_PROD = np.float32(1e-5)
_ABS_PROD = np.float32(1e-37)
_SIGN_MARGIN = np.float32(1e-3)
_STRONG = np.float32(0.25)  # pairs within this factor of a block's best upper bound are refined first


@dataclass(frozen=True)
class MergeResult:
    """``winner [H, W]`` (uint8, or int32 for K > 255) proposal rank per pixel; ``mask_area [K]`` int64;
    ``original_area [K]`` int64: ``count(p > 0.5)`` for proposals with ``mask_area > small_area`` (0 for
    the others); :func:`merge_fast` refines it only until the keep test is decided, so there it is a lower
    bound that gives the same ``kept``;
    ``kept [K]`` bool; ``bbox [K, 4]`` int64 ``(x0, y0, x1, y1)`` exclusive ends, zeros if nothing won."""

    winner: np.ndarray
    mask_area: np.ndarray
    original_area: np.ndarray
    kept: np.ndarray
    bbox: np.ndarray


def _keep(mask_area: np.ndarray, original_area: np.ndarray, small_area: float, overlap: float) -> np.ndarray:
    return (mask_area > small_area) & (original_area > 0) & (mask_area > overlap * original_area)


def _keep_decided(
    mask_area: np.ndarray, area_lo: np.ndarray, area_hi: np.ndarray, small_area: float, overlap: float
) -> np.ndarray:
    """Whether the keep test has one outcome for every original area in ``[area_lo, area_hi]`` (it holds
    exactly for original areas in ``(0, mask_area / overlap)`` once ``mask_area > small_area``)."""
    always_false = (mask_area <= small_area) | (area_hi == 0) | (mask_area <= overlap * area_lo)
    return always_false | ((area_lo > 0) & (mask_area > overlap * area_hi))


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
        p = resize_rows(rows_x, py, start, stop)
        sigmoid32(p, out=p)
        winner[start:stop] = np.argmax(p * scores, axis=-1)
        original_area += np.count_nonzero(p > np.float32(0.5), axis=(0, 1))
    mask_area = np.bincount(winner.ravel(), minlength=k).astype(np.int64)
    original_area[mask_area <= small_area] = 0  # reported only where it matters
    kept = _keep(mask_area, original_area, small_area, overlap)
    return MergeResult(winner, mask_area, original_area, kept, bbox_from_winner(winner, k))


# ---------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------
# coarse-to-fine


@dataclass
class _Blocks:
    """Pixel rectangles inside resize cells: cell (run indices) ``cy, cx``; rows ``y0:y1``, cols ``x0:x1``
    (int64 ``[n]`` each)."""

    cy: np.ndarray
    cx: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    x0: np.ndarray
    x1: np.ndarray

    def take(self, sel: np.ndarray) -> _Blocks:
        return _Blocks(self.cy[sel], self.cx[sel], self.y0[sel], self.y1[sel], self.x0[sel], self.x1[sel])

    @property
    def n(self) -> int:
        return int(self.cy.size)

    @property
    def npix(self) -> np.ndarray:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


class _Source:
    """The low-resolution logits and resize plans; gathers the four source logits of (block, proposal)."""

    def __init__(self, logits: np.ndarray, py: AxisPlan, px: AxisPlan):
        h, w, k = logits.shape
        self.flat = logits.reshape(-1)
        self.py, self.px, self.w, self.k = py, px, w, k

    def corners(self, blk: _Blocks, pb: np.ndarray, pq: np.ndarray) -> tuple[np.ndarray, ...]:
        """``a, b, c, d`` float32 ``[n]`` = L[y0, x0], L[y0, x1], L[y1, x0], L[y1, x1] of pair's cell."""
        k = self.k
        r0 = self.py.run_i0[blk.cy]
        c0 = self.px.run_i0[blk.cx]
        base = ((r0 * self.w + c0) * k)[pb] + pq  # flat index of L[y0, x0, q]
        dx = ((self.px.run_i1[blk.cx] - c0) * k)[pb]  # 0 or k
        dy = ((self.py.run_i1[blk.cy] - r0) * (self.w * k))[pb]
        f = self.flat
        i10 = base + dy
        return f[base], f[base + dx], f[i10], f[i10 + dx]

    def bounds(self, blk: _Blocks, pb: np.ndarray, pq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds ``lo, hi [n]`` of pair ``(pb, pq)``'s resized logits over its block: min / max at the
        block's corner pixels, widened by ``_REL_LOGIT`` x the largest source magnitude."""
        a, b, c, d = self.corners(blk, pb, pq)
        lx0 = self.px.lerp[blk.x0][pb]
        lx1 = self.px.lerp[blk.x1 - 1][pb]
        ly0 = self.py.lerp[blk.y0][pb]
        ly1 = self.py.lerp[blk.y1 - 1][pb]
        ba = b - a
        dc = d - c
        t0 = a + ba * lx0
        t1 = a + ba * lx1
        d0 = (c + dc * lx0) - t0
        d1 = (c + dc * lx1) - t1
        v00 = t0 + d0 * ly0
        v01 = t1 + d1 * ly0
        v10 = t0 + d0 * ly1
        v11 = t1 + d1 * ly1
        m = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.maximum(np.abs(c), np.abs(d)))
        m *= _REL_LOGIT
        lo = np.minimum(np.minimum(v00, v01), np.minimum(v10, v11))
        hi = np.maximum(np.maximum(v00, v01), np.maximum(v10, v11))
        lo -= m
        hi += m
        return lo, hi

    def pixels(
        self, blk: _Blocks, pb: np.ndarray, pq: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """Resized logits of pairs ``(pb, pq)`` at their block's padded pixels ``ys [nb, RY]``,
        ``xs [nb, RX]`` -> ``[n, RY, RX]`` float32, bit-identical to the dense resize (the same float32
        operations as :func:`maskconver.runtime.mask_resize.bilinear_from_corners`, pairs first)."""
        a, b, c, d = self.corners(blk, pb, pq)
        lx = self.px.lerp[xs][pb]  # [n, RX]
        ly = self.py.lerp[ys][pb]  # [n, RY]
        top = a[:, None] + (b - a)[:, None] * lx
        bot = c[:, None] + (d - c)[:, None] * lx
        bot -= top
        out = bot[:, None, :] * ly[:, :, None]
        out += top[:, None, :]
        return out


def _quadrants(blk: _Blocks) -> tuple[_Blocks, np.ndarray]:
    """The quadrants of every block (an axis is halved only if longer than 1), parent-major; and the
    parent index of each child."""
    my = blk.y0 + (blk.y1 - blk.y0) // 2
    mx = blk.x0 + (blk.x1 - blk.x0) // 2
    cy0 = np.stack([blk.y0, blk.y0, my, my], axis=1).ravel()
    cy1 = np.stack([my, my, blk.y1, blk.y1], axis=1).ravel()
    cx0 = np.stack([blk.x0, mx, blk.x0, mx], axis=1).ravel()
    cx1 = np.stack([mx, blk.x1, mx, blk.x1], axis=1).ravel()
    nonempty = np.flatnonzero((cy1 > cy0) & (cx1 > cx0))
    parent = nonempty // 4
    child = _Blocks(
        blk.cy[parent], blk.cx[parent], cy0[nonempty], cy1[nonempty], cx0[nonempty], cx1[nonempty]
    )
    return child, parent


def _inherit(nb: int, pb: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of the children: each child repeats its parent's pairs. ``pb [n]`` sorted parent index of
    the pairs, ``parent [nchild]`` (sorted) -> child index (sorted) and source pair index, ``[m]`` each."""
    counts = np.bincount(pb, minlength=nb)
    first = np.cumsum(counts) - counts
    cnt = counts[parent]
    offs = np.cumsum(cnt) - cnt
    total = int(offs[-1] + cnt[-1]) if cnt.size else 0
    src = np.arange(total) - np.repeat(offs - first[parent], cnt)
    return np.repeat(np.arange(parent.size), cnt), src


def _block_pixels(blk: _Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded pixel rows ``ys [n, RY]``, cols ``xs [n, RX]`` of the blocks (past a block's end: repeat
    its last row / col) and ``ok [n, RY, RX]`` marking real pixels."""
    ly = blk.y1 - blk.y0
    lx = blk.x1 - blk.x0
    oy = np.arange(int(ly.max()))
    ox = np.arange(int(lx.max()))
    ys = blk.y0[:, None] + np.minimum(oy, ly[:, None] - 1)
    xs = blk.x0[:, None] + np.minimum(ox, lx[:, None] - 1)
    ok = (oy < ly[:, None])[:, :, None] & (ox < lx[:, None])[:, None, :]
    return ys, xs, ok


def _starts(pb: np.ndarray) -> np.ndarray:
    """Start of each block's pairs in the sorted ``pb`` (every block has at least one pair)."""
    return np.flatnonzero(np.diff(pb, prepend=-1))


class _Canvas:
    """The winner map plus rectangles ``(q, y0, y1, x0, x1)`` of the pixels each proposal won, from which
    areas and boxes are summed at the end."""

    def __init__(self, winner: np.ndarray, k: int):
        self.winner = winner
        self.k = k
        self.rects: list[tuple[np.ndarray, ...]] = []

    def add(self, q: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> None:
        self.rects.append((q, y0, y1, x0, x1))

    def fill(self, blk: _Blocks, q: np.ndarray) -> None:
        """Blocks won entirely by ``q [n]``."""
        if q.size == 0:
            return
        ys, xs, _ = _block_pixels(blk)
        self.winner[ys[:, :, None], xs[:, None, :]] = q.astype(self.winner.dtype)[:, None, None]
        self.add(q, blk.y0, blk.y1, blk.x0, blk.x1)

    def pixels(self, ys: np.ndarray, xs: np.ndarray, ok: np.ndarray, q: np.ndarray) -> None:
        """Per-pixel winners ``q [n, RY, RX]`` at padded pixels ``ys [n, RY]``, ``xs [n, RX]``."""
        self.winner[ys[:, :, None], xs[:, None, :]] = q.astype(self.winner.dtype)
        yy = np.broadcast_to(ys[:, :, None], q.shape)
        xx = np.broadcast_to(xs[:, None, :], q.shape)
        if ok.all():
            qv, yy, xx = q.ravel(), yy.ravel(), xx.ravel()
        else:
            qv, yy, xx = q[ok], yy[ok], xx[ok]
        self.add(qv, yy, yy + 1, xx, xx + 1)

    def areas_and_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``mask_area [k]`` int64 and ``bbox [k, 4]`` int64 (zeros where nothing was won)."""
        k = self.k
        q, y0, y1, x0, x1 = (np.concatenate(parts) for parts in zip(*self.rects, strict=True))
        mask_area = np.bincount(q, weights=(y1 - y0) * (x1 - x0), minlength=k).astype(np.int64)
        hh, ww = self.winner.shape
        box = np.empty((4, k), dtype=np.int64)
        box[:2] = np.array([[ww], [hh]])
        box[2:] = 0
        np.minimum.at(box[0], q, x0)
        np.minimum.at(box[1], q, y0)
        np.maximum.at(box[2], q, x1)
        np.maximum.at(box[3], q, y1)
        box[:, mask_area == 0] = 0
        return mask_area, np.ascontiguousarray(box.T)


def _exact_winners(
    src: _Source, scores: np.ndarray, blk: _Blocks, pb: np.ndarray, pq: np.ndarray, canvas: _Canvas
) -> None:
    """Pixel-by-pixel winners of blocks ``blk`` among their candidate pairs ``(pb, pq)`` (sorted by block,
    then proposal): float32 ``sigmoid(v) * score`` as in the dense merge, first maximum on ties."""
    ys, xs, ok = _block_pixels(blk)
    prod = src.pixels(blk, pb, pq, ys, xs)  # [n, RY, RX]
    sigmoid32(prod, out=prod)
    prod *= scores[pq][:, None, None]
    starts = _starts(pb)
    best = np.maximum.reduceat(prod, starts, axis=0)  # [nb, RY, RX]
    n = pq.size
    first = np.where(prod == np.take(best, pb, axis=0), np.arange(n, dtype=np.int32)[:, None, None], n)
    first = np.minimum.reduceat(first, starts, axis=0)  # lowest pair (= lowest proposal) at the maximum
    canvas.pixels(ys, xs, ok, pq[first])


def _exact_positive(
    src: _Source, blk: _Blocks, pq: np.ndarray, area_lo: np.ndarray, area_hi: np.ndarray
) -> None:
    """Resolves block i for proposal ``pq[i]`` pixel by pixel: its ``p > 0.5`` pixels go to ``area_lo``,
    the others leave ``area_hi``."""
    ys, xs, ok = _block_pixels(blk)
    v = src.pixels(blk, np.arange(blk.n), pq, ys, xs)
    above = np.count_nonzero((sigmoid32(v, out=v) > np.float32(0.5)) & ok, axis=(1, 2))
    area_lo += np.bincount(pq, weights=above, minlength=area_lo.size).astype(np.int64)
    area_hi -= np.bincount(pq, weights=blk.npix - above, minlength=area_hi.size).astype(np.int64)


def _tiles(
    py: AxisPlan, px: AxisPlan, sy: SubRuns, sx: SubRuns, cy: np.ndarray, cx: np.ndarray
) -> tuple[_Blocks, np.ndarray]:
    """The tiles (sub-run x sub-run) of cells ``(cy, cx) [n]`` in cell order, and each tile's cell."""
    ny, nx = sy.count[cy], sx.count[cx]
    cnt = ny * nx
    parent = np.repeat(np.arange(cy.size), cnt)
    local = np.arange(parent.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    nxp = nx[parent]
    ty = sy.first[cy][parent] + local // nxp
    tx = sx.first[cx][parent] + local % nxp
    y0, x0 = sy.start[ty], sx.start[tx]
    return _Blocks(cy[parent], cx[parent], y0, y0 + sy.length[ty], x0, x0 + sx.length[tx]), parent


def _products(lo, hi, s_lo, s_hi) -> tuple[np.ndarray, np.ndarray]:
    """Lower / upper bounds of ``sigmoid(v) * score`` from logit bounds ``lo <= v <= hi``.

    Computed as ``s / (1 + exp(-v))`` in place (a few float32 ulps from ``sigmoid32(v) * s``, far inside
    the ``_REL_PROD`` factor folded into ``s_lo`` / ``s_hi``)."""
    out = []
    with np.errstate(over="ignore", under="ignore"):
        for v, s, pad in ((lo, s_lo, -_ABS_PROD), (hi, s_hi, _ABS_PROD)):
            t = np.negative(v)
            np.exp(t, out=t)
            t += np.float32(1)
            np.divide(s, t, out=t)
            t += pad
            out.append(t)
    return out[0], out[1]


def _interleave(x: np.ndarray, y: np.ndarray, at_x: np.ndarray, at_y: np.ndarray) -> np.ndarray:
    """``x`` and ``y`` placed at positions ``at_x`` / ``at_y`` of one array of ``x.size + y.size``."""
    out = np.empty(x.size + y.size, dtype=x.dtype)
    out[at_x] = x
    out[at_y] = y
    return out


def _refine(
    src: _Source,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
    blk: _Blocks,
    pb: np.ndarray,
    pq: np.ndarray,
    pu: np.ndarray,
) -> tuple[_Blocks, np.ndarray, np.ndarray, np.ndarray]:
    """Split undecided blocks into quadrants and prune each child's candidates.

    ``pb``/``pq``/``pu`` ``[n]``: block (sorted), proposal and upper product bound of the candidate pairs.
    Two phases: children bounds of the *strong* pairs (upper bound within ``_STRONG`` of the block's best)
    give each child a lower bound of its best product; a weak pair needs bounds only if its parent upper
    bound reaches that. Returns the children and their surviving pairs (sorted by child, then proposal).
    """
    child, parent = _quadrants(blk)
    k = src.k
    strong = pu >= np.maximum.reduceat(pu, _starts(pb))[pb] * _STRONG
    cb, i = _inherit(blk.n, pb[strong], parent)
    cq = pq[strong][i]
    low, upp = _products(*src.bounds(child, cb, cq), s_lo[cq], s_hi[cq])
    best = np.maximum.reduceat(low, _starts(cb))  # every child has its parent's strong pairs
    weak = ~strong
    if weak.any():
        # a weak pair can survive in some child only if it reaches the smallest child's best lower bound
        child_start = np.flatnonzero(np.diff(parent, prepend=-1))
        weak &= pu >= np.minimum.reduceat(best, child_start)[pb]
    if weak.any():
        wb, i = _inherit(blk.n, pb[weak], parent)
        alive = pu[weak][i] >= best[wb]
        wb, wq = wb[alive], pq[weak][i][alive]
        if wb.size:
            wlow, wupp = _products(*src.bounds(child, wb, wq), s_lo[wq], s_hi[wq])
            # merge the two (child, proposal)-sorted lists (disjoint keys) without sorting
            ks, kw = cb * k + cq, wb * k + wq
            at_s = np.arange(ks.size) + np.searchsorted(kw, ks)
            at_w = np.arange(kw.size) + np.searchsorted(ks, kw)
            cb, cq, low, upp = (
                _interleave(x, y, at_s, at_w) for x, y in ((cb, wb), (cq, wq), (low, wlow), (upp, wupp))
            )
            best = np.maximum.reduceat(low, _starts(cb))
    keep = upp >= best[cb]
    return child, cb[keep], cq[keep], upp[keep]


def _drop_blocks(blk: _Blocks, gone: np.ndarray, pb: np.ndarray, *pair_arrays: np.ndarray):
    """Remove blocks flagged ``gone [nb]`` and their pairs (renumbering the rest)."""
    rest = ~gone
    sel = rest[pb]
    return (blk.take(rest), (np.cumsum(rest) - 1)[pb[sel]], *(a[sel] for a in pair_arrays))


def _cell_bounds(logits: np.ndarray, py: AxisPlan, px: AxisPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and proposal, ``lo, hi [ny, nx, K]``: min / max of the cell's four source logits (which
    bound every resized logit of the cell), widened by ``_REL_LOGIT`` x the larger magnitude."""
    r0 = np.take(logits, py.run_i0, axis=0)
    r1 = np.take(logits, py.run_i1, axis=0)
    rmin = np.minimum(r0, r1)
    rmax = np.maximum(r0, r1, out=r0)
    lo = np.minimum(np.take(rmin, px.run_i0, axis=1), np.take(rmin, px.run_i1, axis=1))
    hi = np.maximum(np.take(rmax, px.run_i0, axis=1), np.take(rmax, px.run_i1, axis=1))
    margin = np.maximum(hi, -lo)
    margin *= _REL_LOGIT
    lo -= margin
    hi += margin
    return lo, hi


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
    src = _Source(logits, py, px)
    sy, sx = sub_runs(py, TILE), sub_runs(px, TILE)

    # Level 0: whole cells, bounded by their four source logits.
    lo, hi = _cell_bounds(logits, py, px)
    low, upp = _products(lo, hi, s_lo, s_hi)
    cand = upp >= low.max(axis=-1, keepdims=True)  # the winner is always among these
    decided = np.count_nonzero(cand, axis=-1) == 1
    cell_win = np.argmax(cand, axis=-1)
    canvas = _Canvas(np.repeat(np.repeat(cell_win.astype(winner_dtype(k)), py.run_len, 0), px.run_len, 1), k)
    dcy, dcx = np.nonzero(decided)
    y0, x0 = py.run_start[dcy], px.run_start[dcx]
    canvas.add(cell_win[dcy, dcx], y0, y0 + py.run_len[dcy], x0, x0 + px.run_len[dcx])

    # Finer levels for the undecided cells: quadrants until decided or small enough for pixels.
    ucy, ucx = np.nonzero(~decided)
    blk = _Blocks(
        ucy,
        ucx,
        py.run_start[ucy],
        (py.run_start + py.run_len)[ucy],
        px.run_start[ucx],
        (px.run_start + px.run_len)[ucx],
    )
    pb, pq = np.nonzero(cand[ucy, ucx])
    pu = upp.reshape(-1)[(ucy[pb] * px.run_start.size + ucx[pb]) * k + pq]
    while pb.size:
        small = blk.npix <= EXACT_PIXELS
        if small.any():
            sel = small[pb]
            _exact_winners(src, scores, blk.take(small), (np.cumsum(small) - 1)[pb[sel]], pq[sel], canvas)
            blk, pb, pq, pu = _drop_blocks(blk, small, pb, pq, pu)
            if not pb.size:
                break
        blk, pb, pq, pu = _refine(src, s_lo, s_hi, blk, pb, pq, pu)
        done = np.bincount(pb, minlength=blk.n) == 1
        canvas.fill(blk.take(done), pq[done[pb]])
        blk, pb, pq, pu = _drop_blocks(blk, done, pb, pq, pu)
    mask_area, bbox = canvas.areas_and_boxes()

    # original_area = count(p > 0.5) is needed only for proposals passing the area test, and only as
    # precisely as the keep test needs: bounds [area_lo, area_hi] from cells, then tiles, then pixels.
    area_lo = np.zeros(k, dtype=np.int64)
    area_hi = np.zeros(k, dtype=np.int64)
    need = np.flatnonzero(mask_area > small_area)
    if need.size:
        pos = np.take(lo, need, axis=2) > _SIGN_MARGIN
        unsure = np.take(hi, need, axis=2) >= -_SIGN_MARGIN
        unsure &= ~pos
        cell_npix = np.outer(py.run_len, px.run_len).reshape(1, -1).astype(np.float64)
        for arr, cells in ((area_lo, pos), (area_hi, unsure)):  # exact integer sums through BLAS
            arr[need] = np.rint(cell_npix @ cells.reshape(-1, need.size).astype(np.float64))[0]
        area_hi += area_lo
        open_q = ~_keep_decided(mask_area, area_lo, area_hi, small_area, overlap)
        if open_q.any():
            scy, scx, sj = np.nonzero(unsure & open_q[need])
            blk, parent = _tiles(py, px, sy, sx, scy, scx)
            pq = need[sj][parent]
            blo, bhi = src.bounds(blk, np.arange(blk.n), pq)
            pos = blo > _SIGN_MARGIN
            neg = bhi < -_SIGN_MARGIN
            npix = blk.npix
            area_lo += np.bincount(pq[pos], weights=npix[pos], minlength=k).astype(np.int64)
            area_hi -= np.bincount(pq[neg], weights=npix[neg], minlength=k).astype(np.int64)
            open_q = ~_keep_decided(mask_area, area_lo, area_hi, small_area, overlap)
            sel = ~(pos | neg) & open_q[pq]
            if sel.any():
                _exact_positive(src, blk.take(sel), pq[sel], area_lo, area_hi)

    kept = _keep(mask_area, area_lo, small_area, overlap)  # decided: lo and hi give the same answer
    return MergeResult(canvas.winner, mask_area, area_lo, kept, bbox)
