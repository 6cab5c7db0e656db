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
  proposals still able to win are carried into its quadrants (an axis is halved while longer than
  ``TILE``), recursively, and blocks of at most ``TILE x TILE`` pixels are evaluated pixel by pixel with
  the float32 operations of the dense path. Small cells (at most ``DIRECT_PIXELS``) with few candidates
  are evaluated pixel by pixel at once. The four quadrants of a block are bounded together from the
  pair's resized logits at 4 x 4 pixels (pairs last, so min / max run over contiguous memory), first for
  the *strong* candidates (upper bound within ``_STRONG`` of the block's best), which gives each quadrant
  a lower bound of its winner's product; weak candidates are bounded only where their block-wide upper
  bound still reaches one (at a boundary between two confident masks, the cell-wide bounds leave every
  faint proposal a candidate).
  Decided blocks are recorded on a *tile grid* (the halving pieces of both axes), so the winner map,
  areas, boxes and the label maps (:meth:`MergeResult.paint`) come from repeating tiles plus the
  per-pixel blocks, not from writes and gathers of every pixel.
  ``p > 0.5`` is bounded the same way (``lo > 0`` or ``hi < 0`` with margin decides a block), only for
  proposals that pass the area test and only until their keep test is decided, so ``original_area`` of
  the fast path is a lower bound that yields the same ``kept``.

Every bound carries a margin (``_REL_LOGIT``, ``_REL_PROD``, ``_ABS_PROD``, ``_SIGN_MARGIN``) that
covers float32 rounding, so no decision is taken on a near tie: those pixels are always evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from maskconver.runtime.mask_resize import AxisPlan, SubRuns, halve, interpolate_x, resize_rows, sub_runs
from maskconver.runtime.peaks import sigmoid32

_ROW_CHUNK = 32  # rows per chunk in the dense merge (memory ~ 4 * chunk * W * K * 4 bytes)
TILE = 5  # blocks are halved down to tiles of at most TILE x TILE pixels, then evaluated pixel by pixel
# Cells of at most DIRECT_PIXELS are evaluated pixel by pixel at once (fewer steps for small outputs)
# when that is at most DIRECT_WORK pixel x candidate evaluations.
DIRECT_PIXELS = 64
DIRECT_WORK = 1 << 17
# Safety margins of the bounds (far above float32 rounding of the interpolation, exp and product).
_REL_LOGIT = np.float32(4e-6)  # x max |source logit| of the cell
_REL_PROD = np.float32(1e-5)
_ABS_PROD = np.float32(1e-37)
_SIGN_MARGIN = np.float32(1e-3)
_STRONG = np.float32(0.25)  # pairs within this factor of a block's best upper bound are bounded first


@dataclass(frozen=True)
class MergeResult:
    """``mask_area [K]`` int64;
    ``original_area [K]`` int64: ``count(p > 0.5)`` for proposals with ``mask_area > small_area`` (0 for
    the others); :func:`merge_fast` refines it only until the keep test is decided, so there it is a lower
    bound that gives the same ``kept``;
    ``kept [K]`` bool; ``bbox [K, 4]`` int64 ``(x0, y0, x1, y1)`` exclusive ends, zeros if nothing won;
    :attr:`winner` ``[H, W]`` (uint8, or int32 for K > 255) proposal rank per pixel: given (``winner_map``)
    or painted on first use by ``painter`` (decoding itself only paints label maps, never the winner map)."""

    mask_area: np.ndarray
    original_area: np.ndarray
    kept: np.ndarray
    bbox: np.ndarray
    painter: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    winner_map: np.ndarray | None = field(default=None, repr=False, compare=False)

    @cached_property
    def winner(self) -> np.ndarray:
        if self.winner_map is not None:
            return self.winner_map
        k = self.mask_area.shape[0]
        return self.paint(np.arange(k, dtype=winner_dtype(k)))

    def paint(self, lut: np.ndarray) -> np.ndarray:
        """``lut [winner]`` (``lut [K]``, any dtype) -> ``[H, W]``; :func:`merge_fast` paints its tiles and
        per-pixel blocks instead of gathering every pixel (no large index temporaries)."""
        if self.painter is not None:
            return self.painter(lut)
        return np.take(lut, self.winner_map)


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
    return MergeResult(
        z, z, np.zeros(0, bool), np.zeros((0, 4), np.int64), winner_map=np.zeros((hh, ww), np.uint8)
    )


def bbox_from_winner(winner: np.ndarray, k: int) -> np.ndarray:
    """Per-proposal ``(x0, y0, x1, y1)`` of ``winner [H, W]`` (values 0..k-1) -> int64 ``[k, 4]`` (zeros for
    a proposal that won no pixel)."""
    hh, ww = winner.shape
    rows = np.zeros((hh, k), dtype=bool)  # rows[y, q]: q wins a pixel of row y
    rows[np.arange(hh)[:, None], winner] = True
    cols = np.zeros((ww, k), dtype=bool)
    cols[np.arange(ww)[None, :], winner] = True
    bbox = np.empty((k, 4), dtype=np.int64)
    bbox[:, 0] = cols.argmax(axis=0)
    bbox[:, 1] = rows.argmax(axis=0)
    bbox[:, 2] = ww - cols[::-1].argmax(axis=0)
    bbox[:, 3] = hh - rows[::-1].argmax(axis=0)
    bbox[~rows.any(axis=0)] = 0
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
    return MergeResult(mask_area, original_area, kept, bbox_from_winner(winner, k), winner_map=winner)


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

    def grid(
        self, blk: _Blocks, pb: np.ndarray, pq: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resized logits of pairs ``(pb, pq)`` at pixel rows ``rows [R, nb]`` x cols ``cols [C, nb]`` of
        their block -> ``[R, C, n]`` float32 (pairs last: contiguous runs for the min / max over corners;
        float32 rounding aside, the bilinear values), and the margin ``_REL_LOGIT`` x the largest source
        magnitude ``[n]`` that covers that rounding."""
        a, b, c, d = self.corners(blk, pb, pq)
        lx = np.take(self.px.lerp[cols], pb, axis=1)  # [C, n]
        ly = np.take(self.py.lerp[rows], pb, axis=1)  # [R, n]
        top = a + (b - a) * lx
        dif = c + (d - c) * lx
        dif -= top
        v = dif[None, :, :] * ly[:, None, :]
        v += top[None, :, :]
        np.abs(a, out=a)
        np.maximum(a, np.abs(b), out=a)
        np.maximum(a, np.abs(c), out=a)
        np.maximum(a, np.abs(d), out=a)
        a *= _REL_LOGIT
        return v, a

    def bounds(self, blk: _Blocks, pb: np.ndarray, pq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds ``lo, hi [n]`` of pair ``(pb, pq)``'s resized logits over its block: min / max at the
        block's corner pixels, widened by the margin of :meth:`grid`."""
        v, m = self.grid(blk, pb, pq, np.stack([blk.y0, blk.y1 - 1]), np.stack([blk.x0, blk.x1 - 1]))
        lo = np.minimum(np.minimum(v[0, 0], v[0, 1]), np.minimum(v[1, 0], v[1, 1]))
        hi = np.maximum(np.maximum(v[0, 0], v[0, 1]), np.maximum(v[1, 0], v[1, 1]))
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
    """Winners on the tile grid (``SubRuns`` pieces of both axes; value k = decided pixel by pixel) plus
    the per-pixel winners of those tiles; areas, boxes and the winner map are assembled at the end."""

    def __init__(self, tiles: np.ndarray, sy: SubRuns, sx: SubRuns, k: int, hh: int, ww: int):
        self.tiles, self.sy, self.sx, self.k, self.hh, self.ww = tiles, sy, sx, k, hh, ww
        self.exact: list[tuple[np.ndarray, ...]] = []

    def fill(self, blk: _Blocks, q: np.ndarray | int) -> None:
        """Blocks (unions of tiles) won entirely by ``q [n]`` (or marked ``k``: decided pixel by pixel)."""
        if blk.n == 0:
            return
        ty0, ty1 = self.sy.piece_of[blk.y0], self.sy.piece_of[blk.y1 - 1] + 1
        tx0, tx1 = self.sx.piece_of[blk.x0], self.sx.piece_of[blk.x1 - 1] + 1
        ny, nx = ty1 - ty0, tx1 - tx0
        ty = ty0[:, None] + np.minimum(np.arange(int(ny.max())), ny[:, None] - 1)
        tx = tx0[:, None] + np.minimum(np.arange(int(nx.max())), nx[:, None] - 1)
        self.tiles[ty[:, :, None], tx[:, None, :]] = q if np.isscalar(q) else q[:, None, None]

    def pixels(self, blk: _Blocks, ys: np.ndarray, xs: np.ndarray, ok: np.ndarray, q: np.ndarray) -> None:
        """Per-pixel winners ``q [n, RY, RX]`` of blocks at padded pixels ``ys [n, RY]``, ``xs [n, RX]``
        (``ok`` marks the real ones)."""
        self.fill(blk, self.k)
        self.exact.append((ys, xs, ok, q))

    def paint(self, lut: np.ndarray) -> np.ndarray:
        """``lut [winner]`` for ``lut [k]`` -> ``[H, W]``: tiles repeated, then the per-pixel blocks."""
        sy, sx = self.sy, self.sx
        tile_lut = np.append(lut, np.zeros(1, dtype=lut.dtype))  # value k: overwritten below
        out = np.repeat(tile_lut[self.tiles].take(sx.piece_of, axis=1), sy.length, axis=0)  # rows: copies
        for ys, xs, _, q in self.exact:
            out[ys[:, :, None], xs[:, None, :]] = lut[q]
        return out

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``mask_area [k]`` int64, ``bbox [k, 4]`` int64 (zeros where nothing won)."""
        k, sy, sx, tiles = self.k, self.sy, self.sx, self.tiles
        area = np.outer(sy.length, sx.length).ravel()
        mask_area = np.bincount(tiles.ravel(), weights=area, minlength=k + 1)[:k]
        nty, ntx = tiles.shape
        rows = np.zeros((nty, k + 1), dtype=bool)
        rows[np.arange(nty)[:, None], tiles] = True
        cols = np.zeros((ntx, k + 1), dtype=bool)
        cols[np.arange(ntx)[None, :], tiles] = True
        rows, cols = rows[:, :k], cols[:, :k]
        has = rows.any(axis=0)
        box = np.empty((4, k), dtype=np.int64)
        box[0] = np.where(has, sx.start[cols.argmax(axis=0)], self.ww)
        box[1] = np.where(has, sy.start[rows.argmax(axis=0)], self.hh)
        last_x = ntx - 1 - cols[::-1].argmax(axis=0)
        last_y = nty - 1 - rows[::-1].argmax(axis=0)
        box[2] = np.where(has, sx.start[last_x] + sx.length[last_x], 0)
        box[3] = np.where(has, sy.start[last_y] + sy.length[last_y], 0)
        if self.exact:
            qs, yy, xx = [], [], []
            for ys, xs, ok, q in self.exact:
                qs.append(q[ok])
                yy.append(np.broadcast_to(ys[:, :, None], q.shape)[ok])
                xx.append(np.broadcast_to(xs[:, None, :], q.shape)[ok])
            q, y, x = np.concatenate(qs), np.concatenate(yy), np.concatenate(xx)
            mask_area += np.bincount(q, minlength=k)
            np.minimum.at(box[0], q, x)
            np.minimum.at(box[1], q, y)
            np.maximum.at(box[2], q, x + 1)
            np.maximum.at(box[3], q, y + 1)
        mask_area = mask_area.astype(np.int64)
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
    canvas.pixels(blk, ys, xs, ok, pq[first])


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


def _quadrants(blk: _Blocks) -> tuple[_Blocks, np.ndarray]:
    """The non-empty quadrants of every block (axes halved as in :func:`_refine`), parent-major, and the
    parent index of each."""
    my = halve(blk.y0, blk.y1, TILE)
    mx = halve(blk.x0, blk.x1, TILE)
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


def _products(lo, hi, s_lo, s_hi, inplace: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lower / upper bounds of ``sigmoid(v) * score`` from logit bounds ``lo <= v <= hi`` (overwritten
    unless ``inplace=False``).

    Computed as ``s / (1 + exp(-v))`` (a few float32 ulps from ``sigmoid32(v) * s``, far inside the
    ``_REL_PROD`` factor folded into ``s_lo`` / ``s_hi``)."""
    out = []
    with np.errstate(over="ignore", under="ignore"):
        for v, s, pad in ((lo, s_lo, -_ABS_PROD), (hi, s_hi, _ABS_PROD)):
            t = np.negative(v, out=v if inplace else None)
            np.exp(t, out=t)
            t += np.float32(1)
            np.divide(s, t, out=t)
            t += pad
            out.append(t)
    return out[0], out[1]


_SLOTS = np.arange(4)


def _refine(
    src: _Source,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
    blk: _Blocks,
    pb: np.ndarray,
    pq: np.ndarray,
    pu: np.ndarray,
    starts: np.ndarray,
) -> tuple[_Blocks, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split blocks into quadrants (an axis is halved only if longer than ``TILE``, see
    :func:`maskconver.runtime.mask_resize.halve`) and prune each quadrant's candidates.

    ``pb``/``pq``/``pu`` ``[n]``: block (sorted), proposal and upper product bound of the candidate pairs,
    ``starts`` the first pair of every block. The resized logits of a pair at 4 x 4 pixels (first and last
    row / column of each quadrant) bound all four quadrants at once. Pairs within ``_STRONG`` of their
    block's best upper bound are bounded first; the others only where they can still reach a quadrant's
    best lower bound (at a boundary between confident masks every faint proposal is a cell candidate).
    Returns the non-empty quadrants, their surviving pairs (sorted by quadrant, then proposal) with their
    upper bounds, and the quadrants' first pairs.
    """
    my = halve(blk.y0, blk.y1, TILE)
    mx = halve(blk.x0, blk.x1, TILE)
    # rows: first row of each half, then last row of each half (same for columns)
    rows = np.stack([blk.y0, np.minimum(my, blk.y1 - 1), np.maximum(my - 1, blk.y0), blk.y1 - 1])
    cols = np.stack([blk.x0, np.minimum(mx, blk.x1 - 1), np.maximum(mx - 1, blk.x0), blk.x1 - 1])

    def bound(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v, m = src.grid(blk, pb[sel], pq[sel], rows, cols)  # [4, 4, n_sel]
        a, b, c, d = v[:2, :2], v[:2, 2:], v[2:, :2], v[2:, 2:]  # the four corners of each quadrant
        lo = np.minimum(np.minimum(a, b), np.minimum(c, d)).reshape(4, -1)  # [slot, n_sel]
        hi = np.maximum(np.maximum(a, b), np.maximum(c, d)).reshape(4, -1)
        lo -= m
        hi += m
        return _products(lo, hi, s_lo[pq[sel]], s_hi[pq[sel]])

    # strong pairs first: they give every quadrant a lower bound of its best product; a weak pair is
    # bounded only if its block-wide upper bound reaches the smallest of those.
    strong = pu >= np.maximum.reduceat(pu, starts)[pb] * _STRONG
    si = np.flatnonzero(strong)  # every block has a strong pair
    low, upp_s = bound(si)
    best = np.maximum.reduceat(low, _starts(pb[si]), axis=1)  # [slot, nb] (empty quadrants: 0)
    weak = ~strong
    weak &= pu >= best.min(axis=0)[pb]
    wi = np.flatnonzero(weak)
    if wi.size:
        strong |= weak
        at = np.cumsum(strong) - 1
        upp = np.empty((4, at[-1] + 1), dtype=np.float32)
        upp[:, at[si]] = upp_s
        upp[:, at[wi]] = bound(wi)[1]
        sel = np.flatnonzero(strong)
        pb, pq = pb[sel], pq[sel]
        starts = _starts(pb)
    else:
        upp = upp_s
        pb, pq = pb[si], pq[si]
        starts = _starts(pb)
    cy0 = np.stack([blk.y0, blk.y0, my, my])  # [slot, nb]; slot = 2 * (lower half) + (right half)
    cy1 = np.stack([my, my, blk.y1, blk.y1])
    cx0 = np.stack([blk.x0, mx, blk.x0, mx])
    cx1 = np.stack([mx, blk.x1, mx, blk.x1])
    nonempty = ((cy1 > cy0) & (cx1 > cx0)).T  # [nb, slot]
    keep = upp >= np.take(best, pb, axis=1)
    keep &= nonempty[pb].T
    # survivors grouped by quadrant (block, then slot), in pair (= proposal) order within a quadrant
    csum = np.cumsum(keep, axis=1)  # [slot, n]
    before = np.zeros((4, blk.n), dtype=csum.dtype)
    before[:, 1:] = csum[:, starts[1:] - 1]
    ends = np.append(starts[1:], pb.size) - 1
    count = (csum[:, ends] - before).T.ravel()  # [nb * 4], (block, slot) order
    first = np.cumsum(count) - count
    child = pb * 4 + _SLOTS[:, None]  # [slot, n]
    dest = (first[child] + csum - before[:, pb] - 1)[keep]
    cq = np.empty(dest.size, dtype=pq.dtype)
    cq[dest] = np.broadcast_to(pq, keep.shape)[keep]
    ne = nonempty.ravel()
    cb = np.empty(dest.size, dtype=pb.dtype)
    cb[dest] = (np.cumsum(ne) - 1)[child[keep]]
    cu = np.empty(dest.size, dtype=upp.dtype)
    cu[dest] = upp[keep]
    children = _Blocks(
        np.repeat(blk.cy, 4)[ne],
        np.repeat(blk.cx, 4)[ne],
        cy0.T.ravel()[ne],
        cy1.T.ravel()[ne],
        cx0.T.ravel()[ne],
        cx1.T.ravel()[ne],
    )
    return children, cb, cq, cu, first[ne]


def _drop_blocks(
    blk: _Blocks, gone: np.ndarray, pb: np.ndarray, pq: np.ndarray, pu: np.ndarray
) -> tuple[_Blocks, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Remove blocks flagged ``gone [nb]`` and their pairs (renumbering the rest); new block starts."""
    rest = ~gone
    sel = rest[pb]
    pb = (np.cumsum(rest) - 1)[pb[sel]]
    return blk.take(rest), pb, pq[sel], pu[sel], _starts(pb)


def _cell_bounds(logits: np.ndarray, py: AxisPlan, px: AxisPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and proposal, ``lo, hi [ny, nx, K]``: min / max of the cell's four source logits (which
    bound every resized logit of the cell), widened by ``_REL_LOGIT`` x the largest magnitude of all logits."""
    r0 = np.take(logits, py.run_i0, axis=0)
    r1 = np.take(logits, py.run_i1, axis=0)
    rmin = np.minimum(r0, r1)
    rmax = np.maximum(r0, r1, out=r0)
    lo = np.take(rmin, px.run_i0, axis=1)
    np.minimum(lo, np.take(rmin, px.run_i1, axis=1), out=lo)
    hi = np.take(rmax, px.run_i0, axis=1)
    np.maximum(hi, np.take(rmax, px.run_i1, axis=1), out=hi)
    margin = _REL_LOGIT * max(float(logits.max()), -float(logits.min()), 0.0)
    lo -= np.float32(margin)
    hi += np.float32(margin)
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
    low, upp = _products(lo, hi, s_lo, s_hi, inplace=False)
    cand = upp >= low.max(axis=-1, keepdims=True)  # the winner is always among these
    decided = np.count_nonzero(cand, axis=-1) == 1
    cell_win = np.argmax(cand, axis=-1)
    tiles = np.repeat(np.repeat(cell_win.astype(winner_dtype(k + 1)), sy.count, 0), sx.count, 1)
    canvas = _Canvas(tiles, sy, sx, k, hh, ww)

    # Finer levels for the undecided cells: quadrants until decided or a single tile (pixel by pixel).
    ucy, ucx = np.nonzero(~decided)
    run_end_y, run_end_x = py.run_start + py.run_len, px.run_start + px.run_len
    blk = _Blocks(ucy, ucx, py.run_start[ucy], run_end_y[ucy], px.run_start[ucx], run_end_x[ucx])
    cand_u = cand[ucy, ucx]  # [nu, K]
    pb, pq = np.nonzero(cand_u)
    pu = upp[ucy, ucx][cand_u]  # same (row-major) order as nonzero
    starts = _starts(pb)
    cell_pixels = int(py.run_len.max()) * int(px.run_len.max())
    direct = cell_pixels <= DIRECT_PIXELS and pb.size * cell_pixels <= DIRECT_WORK
    while pb.size:
        small = np.full(blk.n, True) if direct else (blk.y1 - blk.y0 <= TILE) & (blk.x1 - blk.x0 <= TILE)
        if small.any():
            sel = small[pb]
            _exact_winners(src, scores, blk.take(small), (np.cumsum(small) - 1)[pb[sel]], pq[sel], canvas)
            blk, pb, pq, pu, starts = _drop_blocks(blk, small, pb, pq, pu)
            if not pb.size:
                break
        blk, pb, pq, pu, starts = _refine(src, s_lo, s_hi, blk, pb, pq, pu, starts)
        done = np.diff(np.append(starts, pb.size)) == 1
        canvas.fill(blk.take(done), pq[starts[done]])
        blk, pb, pq, pu, starts = _drop_blocks(blk, done, pb, pq, pu)
    mask_area, bbox = canvas.result()

    # original_area = count(p > 0.5) is needed only for proposals passing the area test, and only as
    # precisely as the keep test needs: bounds [area_lo, area_hi] from cells, then quadrants, then pixels.
    area_lo = np.zeros(k, dtype=np.int64)
    area_hi = np.zeros(k, dtype=np.int64)
    need = np.flatnonzero(mask_area > small_area)
    if need.size:
        if 2 * need.size > k:  # most proposals: whole arrays beat gathering columns
            need = np.arange(k)
            lo_n, hi_n = lo, hi
        else:
            lo_n, hi_n = np.take(lo, need, axis=2), np.take(hi, need, axis=2)
        pos = lo_n > _SIGN_MARGIN
        unsure = hi_n >= -_SIGN_MARGIN
        unsure &= ~pos
        exact = np.float32 if hh * ww < 1 << 24 else np.float64  # integer sums below 2^24 are exact in f32
        cell_npix = np.outer(py.run_len, px.run_len).reshape(1, -1).astype(exact)
        for arr, cells in ((area_lo, pos), (area_hi, unsure)):  # exact integer sums through BLAS
            arr[need] = np.rint(cell_npix @ cells.reshape(-1, need.size).astype(exact))[0]
        area_hi += area_lo
        open_j = np.flatnonzero(~_keep_decided(mask_area, area_lo, area_hi, small_area, overlap)[need])
        scy, scx, sj = np.nonzero(np.take(unsure, open_j, axis=2))
        blk, pq = (
            _Blocks(scy, scx, py.run_start[scy], run_end_y[scy], px.run_start[scx], run_end_x[scx]),
            need[open_j[sj]],
        )
        while pq.size:
            sel = ~_keep_decided(mask_area, area_lo, area_hi, small_area, overlap)[pq]
            blk, pq = blk.take(sel), pq[sel]
            small = np.full(blk.n, True) if direct else (blk.y1 - blk.y0 <= TILE) & (blk.x1 - blk.x0 <= TILE)
            if small.any():
                _exact_positive(src, blk.take(small), pq[small], area_lo, area_hi)
                blk, pq = blk.take(~small), pq[~small]
            if not pq.size:
                break
            blk, parent = _quadrants(blk)
            pq = pq[parent]
            blo, bhi = src.bounds(blk, np.arange(blk.n), pq)
            pos = blo > _SIGN_MARGIN
            neg = bhi < -_SIGN_MARGIN
            npix = blk.npix
            area_lo += np.bincount(pq[pos], weights=npix[pos], minlength=k).astype(np.int64)
            area_hi -= np.bincount(pq[neg], weights=npix[neg], minlength=k).astype(np.int64)
            unsure = ~(pos | neg)
            blk, pq = blk.take(unsure), pq[unsure]

    area_lo[mask_area <= small_area] = 0  # reported only where it matters (as merge_dense does)
    kept = _keep(mask_area, area_lo, small_area, overlap)  # decided: lo and hi give the same answer
    return MergeResult(mask_area, area_lo, kept, bbox, painter=canvas.paint)
