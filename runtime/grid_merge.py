"""Panoptic merge on the model's feature grid: the real-time path (``mask_resolution="grid"``).

Model Garden's ``MaskConverPanopticGenerator`` has a second, "hardware-optimised" path
(``use_hardware_optimization=True``, ``shared/reference/modelgarden-maskconver.md`` section 3.3): the mask
logits are *not* resized; the merge runs on the stride-8 feature grid and the application upsamples the
panoptic map. This module is that path, fitted to the SDK's output at the original image resolution:

* every output pixel takes the feature cell that its centre falls into (nearest neighbour through the
  letterbox: output pixel centre -> input-canvas coordinate -> cell ``floor(u / cell)``), so the label maps
  are the grid's labels repeated over blocks of pixels;
* the merge itself is the reference merge (``sigmoid``, winner ``argmax_q p_q * score_q`` first on ties,
  ``original_area = count(p > 0.5)``, the same keep test) with every cell counted with the number of output
  pixels it covers. Areas, boxes and the keep test are therefore exact for the upsampled label maps.

Model Garden uses a hard sigmoid on this path; the true sigmoid is kept here so that the grid merge differs
from the full-resolution merge only by where the logits are sampled. The cost is ``O(h * w * K)`` with no
per-pixel work, independent of how sharp the masks are; boundaries are blocky (one cell = ``stride``
input pixels).

:func:`merge_grid` takes the logits; :func:`merge_grid_pruned` (what ``decode_panoptic`` uses for ``"grid"``)
takes the mask features and computes the logits only of the proposals that can win a cell: after the first
16 proposals, a later one whose score is at most the weakest cell's best ``p * score`` cannot win anywhere,
and a trained model's long tail of low-score proposals is never multiplied out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from maskconver.runtime.merge import MergeResult, _empty
from maskconver.runtime.peaks import sigmoid32, sigmoid32_of_negated


@dataclass(frozen=True, eq=False)
class GridAxis:
    """Nearest-cell map of one output axis. ``cells [n]`` int64 the grid cells that output pixels fall
    into (ascending), ``count [n]`` int64 output pixels per such cell, ``start [n]`` int64 the first output
    pixel of each (``start + count`` is its exclusive end)."""

    cells: np.ndarray
    count: np.ndarray
    start: np.ndarray
    size: int  # output pixels of the axis: ``count.sum()``

    @property
    def n(self) -> int:
        return int(self.cells.shape[0])

    def take(self) -> slice | np.ndarray:
        """Index of the used cells along the grid axis: a slice when they are ``0..n-1``."""
        return slice(0, self.n) if int(self.cells[-1]) == self.n - 1 else self.cells


@lru_cache(maxsize=64)
def grid_axis(cells: int, canvas: int, keep: int) -> GridAxis:
    """The first ``keep`` output pixels of an axis whose ``canvas`` output pixels span ``cells`` grid cells
    (the canvas is the model input in output pixels, as in the full merge; ``1 <= keep <= canvas``).

    Output pixel ``i`` (centre ``i + 0.5``) lies in cell ``floor((i + 0.5) * cells / canvas)``, computed in
    integers as ``((2 i + 1) * cells) // (2 canvas)``.
    """
    cells, canvas, keep = int(cells), int(canvas), int(keep)
    if not (cells >= 1 and 1 <= keep <= canvas):
        raise ValueError(
            f"bad grid axis: {cells} cells, canvas {canvas}, keep {keep} (need 1 <= keep <= canvas)"
        )
    i = np.arange(keep, dtype=np.int64)
    cell = ((2 * i + 1) * cells) // (2 * canvas)
    used, start, count = np.unique(cell, return_index=True, return_counts=True)
    out = GridAxis(used.astype(np.int64), count.astype(np.int64), start.astype(np.int64), keep)
    for a in (out.cells, out.count, out.start):
        a.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def _cell_weights(gy: GridAxis, gx: GridAxis) -> tuple[np.ndarray, np.ndarray]:
    """Output pixels per used cell: int64 ``[gy.n * gx.n]`` and as a float row ``[1, gy.n * gx.n]`` (float32
    while every area sum stays below 2^24, so the counting matrix product is exact; else float64)."""
    weight = np.outer(gy.count, gx.count).reshape(-1)
    exact = np.float32 if gy.size * gx.size < 1 << 24 else np.float64
    row = weight.astype(exact).reshape(1, -1)
    for a in (weight, row):
        a.flags.writeable = False
    return weight, row


def merge_grid(
    logits: np.ndarray,
    scores: np.ndarray,
    gy: GridAxis,
    gx: GridAxis,
    small_area: float,
    overlap: float,
) -> MergeResult:
    """Merge on the grid. ``logits [gy.n, gx.n, K]`` float32 (the used cells only, best proposal first),
    ``scores [K]`` -> :class:`MergeResult` at ``[gy.size, gx.size]`` output pixels, with the winner map and
    label maps expanded by repeating each cell over its pixels."""
    k = logits.shape[-1]
    if k == 0:
        return _empty(gy.size, gx.size)
    weight, weight_row = _cell_weights(gy, gx)
    p = sigmoid32(logits).reshape(-1, k)  # [cells, K] (a new array: logits are left as they are)
    # count(p > 0.5) in output pixels as one matrix product (exact, see _cell_weights); the comparison
    # writes its 0/1 straight into the product's dtype
    positive = np.greater(p, np.float32(0.5), out=np.empty(p.shape, weight_row.dtype))
    p *= np.asarray(scores, dtype=np.float32)
    # the cell winners stay intp: bincount and the lookups below take intp indices without a conversion,
    # and painting gives the lut's dtype whatever the index dtype
    win = p.argmax(axis=-1)
    # every partial sum of the product is an integer below the exact range: no rounding to undo
    original_area = (weight_row @ positive)[0].astype(np.int64)
    return _grid_result(win, original_area, k, gy, gx, weight, small_area, overlap)


FIRST_PROPOSALS = 16  # proposals :func:`merge_grid_pruned` scores on every cell before it prunes the rest


def merge_grid_pruned(
    features: np.ndarray,
    emb: np.ndarray,
    offset: np.ndarray | None,
    scores: np.ndarray,
    gy: GridAxis,
    gx: GridAxis,
    small_area: float,
    overlap: float,
    check: Callable[[np.ndarray], None] | None = None,
    first: int = FIRST_PROPOSALS,
) -> MergeResult:
    """:func:`merge_grid` from the mask features, computing the logits only of proposals that can win a
    cell: the same merge, up to the float rounding of the logit products (BLAS picks its summation order
    by the matrices' shapes).

    ``features [gy.n * gx.n, D]`` float32 (the used cells, row-major), ``emb [K, D']`` float32 with
    ``D' >= D`` (columns past ``D`` unused) and ``offset [K]`` float32 or None: the logit of proposal ``q`` at
    cell ``c`` is ``features[c] . emb[q, :D] - offset[q]``; ``scores [K]`` float32, best proposal first.
    ``check``: called with every block of negated logits ``[cells, n]`` computed (e.g. to refuse NaN).

    Pruning: the first ``first`` proposals are scored on every cell, giving each cell its best product
    ``m_c = max_q p_q * score_q`` so far. A later proposal ``q`` takes a cell only where
    ``p_q * score_q > m_c`` (an earlier proposal wins a tie), and ``p_q * score_q <= score_q`` (``p <= 1``
    in float32 too, and rounding is monotonic), so a proposal with ``score_q <= min_c m_c`` wins no cell:
    its area is 0 and its logits are never computed. The others are scored on every cell in one more block
    and take the cells where they beat ``m_c``. A proposal that wins nothing has ``mask_area = 0`` and is
    dropped whatever its original area, as long as ``small_area >= 0`` (otherwise, or for NaN, all are
    scored). Pruning is tried only when ``scores[first]`` is at most half of ``scores[0]`` (the best when
    sorted, as proposals are: every ``m_c`` is at most the best score, so with the later scores near it few
    could be pruned); this choice never changes the result.

    Float rounding: BLAS sums a block's products in an order that depends on the block's shape (a block of
    one proposal is a matrix-vector product), so a proposal's logits may differ in the last bit from those
    of a product over all proposals (``mask_logits``), and two proposals with identical embeddings and
    scores in different blocks may split cells that an exact tie would give to the earlier one.
    """
    k = emb.shape[0]
    if k == 0:
        return _empty(gy.size, gx.size)
    weight, weight_row = _cell_weights(gy, gx)
    # score everything at once when pruning cannot pay: ``min_c m_c <= scores[0]``, so with the later scores
    # close to the best (untrained or undecided models) nearly every proposal would be scored twice over
    first = max(int(first), 1)
    n1 = k if k <= first or not small_area >= 0 or 2 * scores[first] > scores[0] else first
    head = None if offset is None else offset[:n1]
    win, best, positive = _scored_block(features, emb[:n1], head, scores[:n1], weight_row, check)
    if k == n1:
        return _grid_result(win, positive, k, gy, gx, weight, small_area, overlap)
    original_area = np.zeros(k, np.int64)
    original_area[:n1] = positive
    # the later proposals that can still take a cell (this holds whatever the order of the scores)
    later = (scores[n1:] > np.minimum.reduce(best)).nonzero()[0]
    if later.shape[0]:
        later += n1
        win2, best2, positive2 = _scored_block(
            features,
            emb.take(later, axis=0),
            None if offset is None else offset.take(later),
            scores.take(later),
            weight_row,
            check,
        )
        np.copyto(win, later.take(win2), where=best2 > best)  # strictly: an earlier proposal wins a tie
        original_area[later] = positive2
    return _grid_result(win, original_area, k, gy, gx, weight, small_area, overlap)


def _scored_block(
    features: np.ndarray,
    emb: np.ndarray,
    offset: np.ndarray | None,
    scores: np.ndarray,
    weight_row: np.ndarray,
    check: Callable[[np.ndarray], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proposals ``emb [n, D']`` (``offset [n]`` or None, ``scores [n]``) on the cells ``features [cells, D]``
    -> per cell the first best proposal ``[cells]`` intp and its product ``p * score`` ``[cells]`` float32,
    and per proposal ``count(p > 0.5)`` in output pixels ``[n]`` int64 (cells weighted by ``weight_row
    [1, cells]``, exact). The same float32 steps as :func:`merge_grid` on ``[cells, n]``."""
    neg = features @ emb[:, : features.shape[1]].T  # [cells, n] raw logits
    # negated: ``offset - raw`` gives the same floats as negating ``raw - offset``
    neg = np.negative(neg, out=neg) if offset is None else np.subtract(offset, neg, out=neg)
    if check is not None:
        check(neg)
    p = sigmoid32_of_negated(neg)
    positive = np.greater(p, np.float32(0.5), out=np.empty(p.shape, weight_row.dtype))
    p *= scores
    win = p.argmax(axis=-1)
    best = p.reshape(-1).take(win + _row_starts(p.shape[0], p.shape[1]))
    return win, best, (weight_row @ positive)[0].astype(np.int64)


@lru_cache(maxsize=64)
def _row_starts(rows: int, n: int) -> np.ndarray:
    """``[rows]`` intp: the flat index of each row's first element in a C-ordered ``[rows, n]`` array."""
    starts = np.arange(0, rows * n, n, dtype=np.intp)
    starts.flags.writeable = False
    return starts


def _grid_result(
    win: np.ndarray,
    original_area: np.ndarray,
    k: int,
    gy: GridAxis,
    gx: GridAxis,
    weight: np.ndarray,
    small_area: float,
    overlap: float,
) -> MergeResult:
    """The merge's outcome from the cell winners ``win [cells]`` intp and ``original_area [K]`` int64 (in
    output pixels; overwritten)."""
    win = win.reshape(gy.n, gx.n)
    mask_area = np.bincount(win.reshape(-1), weights=weight, minlength=k).astype(np.int64)
    original_area[mask_area <= small_area] = 0  # reported only where it matters (as the other merges)
    # _keep's test; ``mask_area > small_area`` is already in ``original_area > 0`` (zeroed above)
    kept = original_area > 0
    kept &= mask_area > overlap * original_area
    bbox = _grid_bbox(win, k, gy, gx)

    def paint(lut: np.ndarray) -> np.ndarray:
        # columns first (on the few grid rows), then whole rows: the full-size repeat copies rows
        # (ndarray methods: the np.* wrappers' Python frames cost several us each right after an inference)
        return lut.take(win).repeat(gx.count, axis=1).repeat(gy.count, axis=0)

    return MergeResult(mask_area, original_area, kept, bbox, painter=paint)


@lru_cache(maxsize=8)  # [4, ny, nx] intp each (3 MB for a 320x320 grid4x grid): a few layouts only
def _box_tables(gy: GridAxis, gx: GridAxis) -> tuple[np.ndarray, np.ndarray, int]:
    """Constants of :func:`_grid_bbox` for one layout: scatter offsets ``[4, gy.n, gx.n]`` intp, the lookup
    table ``[4 * span]`` int64 from presence-table positions to output pixels, and ``span``.

    A proposal's presence table is ``[4, span]`` bool: channel 0 holds its cell columns at positions
    ``1 + x``, channel 1 its cell rows at ``1 + y``, channels 2 / 3 the columns / rows reversed
    (``gx.n - x``, ``gy.n - y``), so the first True of every channel is the box edge (x0, y0, x1, y1) in that
    order. Position 0 is never set: a proposal that won nothing finds it, and the table maps it to 0.
    """
    ny, nx = gy.n, gx.n
    span = max(ny, nx) + 1
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    pos = np.stack([1 + xx, 1 + yy, nx - xx, ny - yy]) + (np.arange(4) * span)[:, None, None]
    offsets = pos.astype(np.intp)
    table = np.zeros((4, span), dtype=np.int64)
    table[0, 1 : nx + 1] = gx.start
    table[1, 1 : ny + 1] = gy.start
    table[2, 1 : nx + 1] = (gx.start + gx.count)[::-1]  # position nx - x: the exclusive end of column x
    table[3, 1 : ny + 1] = (gy.start + gy.count)[::-1]
    table = table.reshape(-1)
    for a in (offsets, table):
        a.flags.writeable = False
    return offsets, table, span


_CHANNELS = np.arange(4, dtype=np.intp)


def _grid_bbox(win: np.ndarray, k: int, gy: GridAxis, gx: GridAxis) -> np.ndarray:
    """``(x0, y0, x1, y1)`` int64 ``[k, 4]`` in output pixels (exclusive ends) of each proposal's cells in
    ``win [gy.n, gx.n]`` (integer winners ``0..k-1``; zeros where nothing won): :func:`bbox_from_winner` on
    the grid, cells mapped to their pixel spans, from one presence table ``[k, 4, span]`` (see
    :func:`_box_tables`) and one ``argmax``."""
    offsets, table, span = _box_tables(gy, gx)
    idx = np.multiply(win, 4 * span, dtype=np.intp)  # [ny, nx] start of the winner's presence table
    present = np.zeros(k * 4 * span, dtype=bool)
    present[offsets + idx] = True
    edge = present.reshape(k * 4, span).argmax(axis=1).reshape(k, 4)  # first True per channel (0: none)
    edge += _CHANNELS * span
    return table.take(edge)
