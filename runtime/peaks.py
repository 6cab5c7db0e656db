"""Center-heatmap peaks and top-K proposals (Model Garden ``MaskConverProposalGenerator``, vectorised).

Reference (``modelgarden-maskconver.md`` 3.1): ``s = sigmoid(L)``, keep ``s`` where it equals its 3x3 SAME
max-pool, top-K over the flat index ``(y*w + x)*C + c``. Here, exactly and without touching the whole
heatmap more than a few times:

* The test runs on the logits (or on the int8/uint8 codes of a quantised heatmap: dequantisation
  ``scale*(q - zero_point)`` with ``scale > 0`` is strictly increasing, so order and equality are the same).
* A location is a *peak* of class c if its value is ``>=`` every in-image neighbour in its 3x3 window
  (padding ignored, like SAME max-pool), and no earlier neighbour in raster order (up-left, up, up-right,
  left) holds the same value while being such a window maximum itself. So of a plateau of equal
  neighbouring maxima only the first in raster order survives (int8 makes such plateaus common; the
  float reference's ``|s - maxpool(s)| < 1e-6`` would keep all of them).
* Ranking: value descending, ties to the lower flat index (TF ``top_k``). Ranking on logits equals ranking
  on the sigmoid except where the float32 sigmoid saturates to exactly 1.0 (logits above ~16.6).
* Only proposals with ``sigmoid(logit) > object_mask_threshold`` can change the panoptic output, so only
  values above the logit threshold are candidates. Candidates are gathered above a cut: first the value
  of the last heatmap's (2K)-th peak (kept in the :class:`PeakSetup`; consecutive frames are alike), else
  an adaptive cut (estimated from a strided sample, lowered until at least K peaks are found or the cut
  reaches the threshold). Any cut with at least K peaks above it (or at the threshold) gives the same
  proposals. The result is the top-K list of the reference with the invalid (low-score) entries dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

_EARLIER = ((-1, -1), (-1, 0), (-1, 1), (0, -1))
_LATER = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclass(frozen=True)
class Proposals:
    """Valid proposals, best first. ``classes`` int32 ``[K]``, ``scores`` float32 ``[K]`` (sigmoid),
    ``logits`` float32 ``[K]`` (dequantised), ``yx`` int32 ``[K, 2]``, ``flat_index`` int64 ``[K]``,
    ``pixel`` intp ``[K]`` (``y * w + x``)."""

    classes: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    yx: np.ndarray
    flat_index: np.ndarray
    pixel: np.ndarray

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    @classmethod
    def _from_arrays(cls, *arrays: np.ndarray) -> Proposals:
        """Proposals from the arrays in field order (the per-frame path): the frozen dataclass's
        ``__init__`` sets each field through ``object.__setattr__``; this fills the instance dict at once.
        Equal to ``Proposals(*arrays)``."""
        props = object.__new__(cls)
        props.__dict__.update(zip(_PROPOSAL_FIELDS, arrays, strict=True))
        return props


_PROPOSAL_FIELDS = ("classes", "scores", "logits", "yx", "flat_index", "pixel")


def sigmoid32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``1 / (1 + exp(-x))`` (the formula every path of the decoder uses; ``out`` may be ``x``)."""
    x = np.asarray(x, dtype=np.float32)
    return sigmoid32_of_negated(np.negative(x, out=out))


def sigmoid32_of_negated(t: np.ndarray) -> np.ndarray:
    """:func:`sigmoid32` of ``-t`` for a float32 array ``t`` (any shape), computed in place in ``t``."""
    with np.errstate(over="ignore"):
        np.exp(t, out=t)
    t += np.float32(1.0)
    return np.divide(np.float32(1.0), t, out=t)


def dequantize(q: np.ndarray, quant: tuple[float, float]) -> np.ndarray:
    """TFLite dequantisation ``scale * (q - zero_point)`` in float32 (any shape)."""
    scale, zero_point = quant
    # (q as float32 - zp) * scale: the cast, the subtraction and the product of ``scale * (q - zp)`` with
    # one temporary (the product is commutative, so the floats are the same)
    x = np.subtract(q, np.float32(zero_point), dtype=np.float32, casting="unsafe")
    x *= np.float32(scale)
    return x


def logit_threshold(threshold: float) -> float:
    """A value a little below ``log(t / (1 - t))``: every logit whose float32 sigmoid exceeds ``t`` is
    above it (the exact ``> t`` test is redone on the float32 scores)."""
    if threshold <= 0.0:
        return -np.inf
    if threshold >= 1.0:
        return np.inf
    t = float(np.log(threshold / (1.0 - threshold)))
    return t - 1e-3 * max(1.0, abs(t))


def _native_cut(value: float, dtype: np.dtype, quant: tuple[float, float] | None):
    """A logit cut expressed in the heatmap's own domain (``x >= cut`` keeps every logit >= value)."""
    if quant is None:
        return value
    scale, zero_point = quant
    info = np.iinfo(dtype)
    if value == -np.inf:
        return int(info.min)
    if value == np.inf:
        return int(info.max) + 1
    return int(np.clip(np.ceil(zero_point + value / scale - 1e-6), info.min, info.max + 1))


@lru_cache(maxsize=64)
def _floor_cut(threshold: float, dtype: str, quant: tuple[float, float] | None):
    """:func:`_native_cut` of :func:`logit_threshold` (remembered: the same every frame)."""
    return _native_cut(logit_threshold(threshold), np.dtype(dtype), quant)


_OFFSETS = np.array(_EARLIER + _LATER, dtype=np.int64)  # [8, 2] (dy, dx); the first 4 are the earlier ones


@lru_cache(maxsize=32)
def _neighbour_table(h: int, w: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat offsets ``[8]`` int64 of the 3x3 neighbours (order of ``_OFFSETS``) in an ``[h, w, c]`` array,
    and per row ``[h, 8]`` / per column ``[w, 8]`` bool whether the neighbour's row / column is in the image."""
    row_ok = (np.arange(h)[:, None] + _OFFSETS[:, 0] >= 0) & (np.arange(h)[:, None] + _OFFSETS[:, 0] < h)
    col_ok = (np.arange(w)[:, None] + _OFFSETS[:, 1] >= 0) & (np.arange(w)[:, None] + _OFFSETS[:, 1] < w)
    offsets = (_OFFSETS[:, 0] * w + _OFFSETS[:, 1]) * c
    for a in (offsets, row_ok, col_ok):
        a.flags.writeable = False
    return offsets, row_ok, col_ok


_TABLE_PIXELS = 1 << 16  # heatmaps with at most this many pixels get per-pixel tables (<= 4 MiB each)


@lru_cache(maxsize=8)
def _pixel_neighbours(h: int, w: int, c: int) -> np.ndarray:
    """Flat offsets ``[h*w, 8]`` of the 3x3 neighbours (order of ``_OFFSETS``) of each pixel in an ``[h, w, c]``
    array; 0 (the location itself) where the neighbour lies outside the image. int16 when the offsets fit
    (a 32x32 grid's table is 16 KB instead of 64 KB: right after an inference it is not in the cache, and
    each candidate reads one row of it), else int32 or int64."""
    offsets, row_ok, col_ok = _neighbour_table(h, w, c)
    inside = row_ok[:, None, :] & col_ok[None, :, :]  # [h, w, 8]
    reach = int(np.abs(offsets).max())
    dtype = np.int16 if reach < 1 << 15 else np.int32 if reach < 1 << 31 else np.int64
    table = np.where(inside, offsets, 0).reshape(h * w, 8).astype(dtype)
    table.flags.writeable = False
    return table


@lru_cache(maxsize=8)
def _pixel_yx(h: int, w: int) -> np.ndarray:
    """``[h*w, 2]`` int32 ``(y, x)`` of each flat pixel index."""
    yx = np.stack(np.divmod(np.arange(h * w), w), axis=1).astype(np.int32)
    yx.flags.writeable = False
    return yx


class PeakSetup(NamedTuple):
    """The per-heatmap-layout constants of :func:`find_proposals` (see :func:`peak_setup`)."""

    shape: tuple[int, int, int]
    dtype: str  # the heatmap's dtype.str
    k: int
    threshold: float
    threshold32: np.float32  # the threshold as the float32 the scores are compared with
    quant: tuple[float, float] | None
    floor: Any  # the score threshold's cut in the heatmap's own domain
    stride: int  # of the sample the adaptive cut is estimated from
    neighbours: np.ndarray | None  # _pixel_neighbours, for heatmaps with few pixels
    yx: np.ndarray | None  # _pixel_yx, likewise
    # _code_tables of one-byte codes (only when the scores rise with the code, as they do: then the
    # scores of codes in descending order descend too)
    codes: tuple[np.ndarray, np.ndarray] | None
    # [cut] a starting candidate cut learnt from the last heatmap of this layout (see find_proposals), or
    # [None]: only a first guess, so it may be shared by threads and decoders (any cut gives the same result)
    cut_hint: list
    flat: _FlatLayout | None  # _dense_peaks' layout, for heatmaps with at most _DENSE_PEAKS values


@lru_cache(maxsize=32)
def peak_setup(
    shape: tuple[int, int, int],
    dtype: str,
    num_proposals: int,
    threshold: float,
    quant: tuple[float, float] | None,
) -> PeakSetup:
    """Everything :func:`find_proposals` derives from the heatmap's shape and dtype and the settings, once
    (a decode plan keeps it: per frame no table lookups by key)."""
    h, w, c = shape
    dt = np.dtype(dtype)
    small = h * w <= _TABLE_PIXELS
    one_byte = quant is not None and dt.kind in "iu" and dt.itemsize == 1 and quant[0] > 0
    return PeakSetup(
        shape=shape,
        dtype=dt.str,
        k=num_proposals,
        threshold=threshold,
        threshold32=np.float32(threshold),
        quant=quant,
        floor=_floor_cut(threshold, dt.str, quant),
        stride=max(1, h * w * c // 8192),
        neighbours=_pixel_neighbours(h, w, c) if small else None,
        yx=_pixel_yx(h, w) if small else None,
        codes=_monotone(_code_tables(dt.str, quant)) if one_byte else None,  # type: ignore[arg-type]
        cut_hint=[None],
        flat=_flat_layout(shape, dt.str) if h * w * c <= _DENSE_PEAKS and dt.kind in "iuf" else None,
    )


def _monotone(codes: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """``codes`` (:func:`_code_tables`) if the scores do not fall as the code rises, else None."""
    order = np.argsort(codes[0], kind="stable")  # by logit = by code (the scale is positive)
    return codes if bool(np.all(np.diff(codes[1][order]) >= 0)) else None


def _neighbours(idx: np.ndarray, h: int, w: int, c: int, table: np.ndarray | None = None) -> np.ndarray:
    """Flat indices ``[n, 8]`` of the 3x3 neighbours (same class) of flat indices ``idx [n]`` (order of
    ``_OFFSETS``); a neighbour outside the image is ``idx`` itself. ``table``: :func:`_pixel_neighbours`."""
    if table is not None or h * w <= _TABLE_PIXELS:
        if table is None:
            table = _pixel_neighbours(h, w, c)
        # take: cheaper than fancy indexing; the sum with the int64 indices is int64
        return table.take(idx // c, axis=0) + idx[:, None]
    offsets, row_ok, col_ok = _neighbour_table(h, w, c)
    y, x = np.divmod(idx // c, w)
    col = idx[:, None]
    return np.where(row_ok[y] & col_ok[x], col + offsets, col)


_ALL8 = np.uint64(0x0101010101010101)  # 8 True bytes read as one uint64


def _peaks(
    flat: np.ndarray, idx: np.ndarray, h: int, w: int, c: int, table: np.ndarray | None = None
) -> np.ndarray:
    """Peak test (with the raster-order plateau tie-break) for candidate indices ``idx`` int64 [n] -> bool [n].

    ``idx`` must be ascending and hold every index whose value is ``>=`` its smallest value (as
    ``flatnonzero(flat >= cut)``): a tied earlier neighbour is then a candidate itself, and its window-max
    test is looked up by ``searchsorted``.
    """
    nb = _neighbours(idx, h, w, c, table)  # [n, 8], the candidate itself outside the image
    vals = flat.take(nb)  # [n, 8]
    v = flat.take(idx)[:, None]
    # all 8 ``<=`` at once: the [n, 8] bool rows read as uint64 (outside neighbours are the candidate itself)
    keep = np.less_equal(vals, v).view(np.uint64).reshape(-1) == _ALL8
    # a window maximum tied with an earlier neighbour that is a window maximum itself is not a peak (the
    # ties of candidates that are no window maximum are looked up too: clearing their False keeps
    # costs less than two more calls to leave them out)
    rows, cols = np.equal(vals[:, :4], v).nonzero()
    if rows.size:
        pos = idx.searchsorted(nb[rows, cols])
        # outside neighbours hold the candidate's own index (pos == row): not a tie
        keep[rows[keep[pos] & (pos != rows)]] = False
    return keep


_DENSE_PEAKS = 1 << 16  # heatmaps with at most this many values get the whole-array peak test


class _FlatLayout:
    """Constants of :func:`_dense_peaks` for one heatmap layout ``[h, w, C]`` and dtype.

    The heatmap is copied into the interior of a flat buffer laid out as ``[h + 2, w + 2, C]`` whose border
    holds the dtype's lowest value (below or equal to every value, so it never changes a window max),
    with ``C`` more such values at each end. In that layout the 3x3 neighbours of a position ``p`` are
    ``p + dy * R + dx * C`` (``R = (w + 2) * C``), so every shift is a contiguous slice of one flat array.
    Positions are counted from the first one of the padded array."""

    def __init__(self, h: int, w: int, c: int, dtype: np.dtype):
        self.h, self.w, self.c = h, w, c
        self.row = (w + 2) * c  # R
        self.size = (h + 2) * self.row  # N positions
        self.dtype = dtype
        self.pad = np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf
        self.top = np.iinfo(dtype).max if dtype.kind in "iu" else np.inf
        origin = np.full(self.size, -1, np.int64)  # position -> flat heatmap index (-1: border)
        origin.reshape(h + 2, w + 2, c)[1 : h + 1, 1 : w + 1] = np.arange(h * w * c).reshape(h, w, c)
        n = self.size - 2 * self.row  # positions R .. N - R: the image rows, border columns included
        self.inside = origin[self.row : self.row + n] >= 0  # [n] bool: not a border column
        # peak candidate i (see _dense_peaks) is position R + C + i
        self.origin = origin[self.row + c : self.row + n].astype(np.intp)
        for a in (self.inside, self.origin):
            a.flags.writeable = False
        self._local = threading.local()

    def holds(self, cut) -> bool:
        """Whether the dtype holds ``cut`` exactly (a Python or NumPy integer in range for integer maps; a
        number that converts to the float dtype and back unchanged, NaN excluded, for float maps)."""
        if self.dtype.kind in "iu":
            return isinstance(cut, int | np.integer) and self.pad <= cut <= self.top
        try:
            return bool(self.dtype.type(cut) == cut)
        except (TypeError, ValueError, OverflowError):
            return False

    def buffer(self) -> np.ndarray:
        """This thread's padded buffer ``[N + 2C]`` (its border is never written)."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.full(self.size + 2 * self.c, self.pad, self.dtype)
        return buf


@lru_cache(maxsize=32)
def _flat_layout(shape: tuple[int, int, int], dtype: str) -> _FlatLayout:
    return _FlatLayout(*shape, np.dtype(dtype))


def _dense_peaks(heat: np.ndarray, cut, layout: _FlatLayout | None = None) -> np.ndarray:
    """Flat indices (ascending) of the peaks of ``heat [h, w, C]`` (integer or float) with value ``>= cut``:
    the same rule as :func:`_peaks`, with whole-array shifts on a padded flat copy (:class:`_FlatLayout`,
    which ``layout`` is for this shape and dtype; every shift a contiguous slice, ~14 calls).

    The window max is separable (3 along x, then 3 along y; the window holds the location itself, which
    changes nothing). Two in-image neighbours that are both window maxima hold equal values (each is
    ``>=`` the other), so the plateau tie-break needs no value test: a window maximum is dropped when an
    earlier neighbour (up-left, up, up-right, left) is a window maximum too. A cut that the dtype holds
    exactly joins the window max (a location is kept only if it is ``>= max(window max, cut)``): a tied
    earlier neighbour has the same value, so it passes the cut too and the tie-break is unchanged. Any other
    cut (a float cut for integer codes, a float64 cut a float16 map cannot hold) is compared as it is,
    after the tie-break, with NumPy's mixed-type comparison, as the plain shifted test does.
    """
    if heat.dtype.kind not in "iuf":
        return _dense_peaks_shifted(heat, cut)
    if layout is None:
        layout = _flat_layout(heat.shape, heat.dtype.str)
    if cut > layout.top:  # e.g. the cut of threshold 1 for codes: nothing can pass
        return np.zeros(0, np.intp)
    c, r, n = layout.c, layout.row, layout.size
    buf = layout.buffer()
    buf[c + r : c + n - r].reshape(layout.h, layout.w + 2, c)[:, 1 : layout.w + 1] = heat
    hm = np.maximum(buf[:n], buf[c : c + n])  # [N] max over x-1..x+1 of every position
    np.maximum(hm, buf[2 * c : 2 * c + n], out=hm)
    m = n - 2 * r  # positions R .. N - R
    vm = np.maximum(hm[:m], hm[r : r + m])  # [m] 3x3 window max
    np.maximum(vm, hm[2 * r :], out=vm)
    values = buf[c + r : c + n - r]
    joined = layout.holds(cut)
    if joined:
        np.maximum(vm, layout.dtype.type(cut), out=vm)
    is_max = np.greater_equal(values, vm)  # a window maximum (>= cut when joined)
    if not (joined and cut > layout.pad):  # border positions may pass (their window holds only the lowest)
        is_max &= layout.inside
    peak = np.greater(is_max[c:], is_max[:-c])  # [m - C] position R + C + i, not after a window max
    if layout.h > 1:  # and not below a window max (up-left | up | up-right, shifted by R)
        up = np.logical_or(is_max[: m - 2 * c], is_max[c : m - c])
        np.logical_or(up, is_max[2 * c :], out=up)
        np.greater(peak[r:], up[: m - c - r], out=peak[r:])
    if not joined:
        peak &= np.greater_equal(values[c:], cut)
    return layout.origin.take(peak.nonzero()[0])


def _dense_peaks_shifted(heat: np.ndarray, cut) -> np.ndarray:
    """:func:`_dense_peaks` for any ordered dtype (e.g. bool), with shifts of the ``[h, w, C]`` array."""
    hm = heat.copy()  # [h, w, C] max over x-1..x+1
    np.maximum(hm[:, 1:], heat[:, :-1], out=hm[:, 1:])
    np.maximum(hm[:, :-1], heat[:, 1:], out=hm[:, :-1])
    vm = hm.copy()  # [h, w, C] max over the 3x3 window
    np.maximum(vm[1:], hm[:-1], out=vm[1:])
    np.maximum(vm[:-1], hm[1:], out=vm[:-1])
    is_max = np.greater_equal(heat, vm)
    row = is_max.copy()  # [h, w, C] a window maximum at x-1..x+1
    np.logical_or(row[:, 1:], is_max[:, :-1], out=row[:, 1:])
    np.logical_or(row[:, :-1], is_max[:, 1:], out=row[:, :-1])
    peak = np.greater_equal(heat, cut)
    peak &= is_max
    np.greater(peak[1:], row[:-1], out=peak[1:])  # peak and not (up-left, up or up-right)
    np.greater(peak[:, 1:], is_max[:, :-1], out=peak[:, 1:])  # peak and not left
    return np.flatnonzero(peak)


def find_proposals(
    heatmap: np.ndarray,
    num_proposals: int = 50,
    object_mask_threshold: float = 0.01,
    quant: tuple[float, float] | None = None,
    setup: PeakSetup | None = None,
) -> Proposals:
    """Top-``num_proposals`` heatmap peaks whose sigmoid score exceeds ``object_mask_threshold``.

    ``heatmap``: ``[h, w, C]`` float logits, or int8/uint8 codes with ``quant=(scale, zero_point)``.
    ``setup``: :func:`peak_setup` of this heatmap layout and these settings (then the other arguments but
    ``heatmap`` are ignored).
    """
    if heatmap.ndim != 3:
        raise ValueError(f"heatmap must be [h, w, C], got shape {heatmap.shape}")
    if setup is None:
        k = int(num_proposals)
        if k < 1:
            raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
        key = None if quant is None else (float(quant[0]), float(quant[1]))
        setup = peak_setup(heatmap.shape, heatmap.dtype.str, k, float(object_mask_threshold), key)
    elif heatmap.shape != setup.shape or heatmap.dtype.str != setup.dtype:
        raise ValueError(
            f"heatmap is {heatmap.dtype} {heatmap.shape}, the peak setup was made for "
            f"{np.dtype(setup.dtype)} {setup.shape}; make one with peak_setup for this heatmap"
        )
    return _find_proposals(heatmap, setup)


def _find_proposals(heatmap: np.ndarray, setup: PeakSetup) -> Proposals:
    """:func:`find_proposals` of a heatmap ``[h, w, C]`` of ``setup``'s shape and dtype (not checked: a decode
    plan checked them)."""
    h, w, c = heatmap.shape
    # (ndarray methods below rather than the np.* wrappers: their Python frames cost several us each
    # right after an inference)
    flat = heatmap.reshape(-1)  # a view when contiguous, else a contiguous copy
    k, t_floor = setup.k, setup.floor
    if flat.size <= _DENSE_PEAKS:
        idx = _dense_peaks(heatmap, t_floor, setup.flat)
        return _ranked(idx, flat.take(idx), setup)
    # The candidate cut: first the hint from the last heatmap of this layout (the value of its (2K)-th
    # peak: consecutive frames are alike, so usually ~2K peaks from a few hundred candidates, without
    # the sample below). Too few peaks for K, or more candidates than the sampled cut aims for (a stale
    # hint): the adaptive cut below, as for the first heatmap.
    hint = setup.cut_hint
    cut = hint[0]
    if cut is not None and cut > t_floor:
        cand = (flat >= cut).nonzero()[0]
        if k <= cand.shape[0] <= 16 * k:
            idx = cand.compress(_peaks(flat, cand, h, w, c, setup.neighbours))
            if idx.shape[0] >= k:
                return _ranked(idx, flat.take(idx), setup, hint)
    # Adaptive candidate cut: aim for ~8K candidates from a strided sample (~8192 values: the 8K-th largest
    # is still ~16 sample values deep for K = 50); widen until K peaks are found.
    stride = setup.stride
    sample = flat[::stride]
    want = 8 * k
    while True:
        rank = -(-want // stride)
        if rank >= sample.size:
            cut = t_floor
        else:
            part = sample.copy()
            part.partition(sample.size - rank)
            part = part[sample.size - rank]
            cut = max(part, t_floor) if setup.quant is None else max(int(part), t_floor)
        cand = (flat >= cut).nonzero()[0]
        idx = cand.compress(_peaks(flat, cand, h, w, c, setup.neighbours))
        if cut == t_floor or idx.shape[0] >= k:
            break
        want *= 4
    hint[0] = cut  # kept unless the ranking finds 2K peaks
    return _ranked(idx, flat.take(idx), setup, hint)


@lru_cache(maxsize=16)
def _code_tables(dtype: str, quant: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and scores ``[256]`` float32 of every code of a one-byte integer dtype, indexed by the code
    (negative int8 codes wrap around): :func:`dequantize` and :func:`sigmoid32` of all codes at once, so
    a lookup gives the very floats those functions give."""
    codes = np.arange(256, dtype=np.uint8).view(np.dtype(dtype))
    logits = dequantize(codes, quant)
    scores = sigmoid32(logits)
    logits.flags.writeable = False
    scores.flags.writeable = False
    return logits, scores


def _ranked(idx: np.ndarray, vals: np.ndarray, setup: PeakSetup, hint: list | None = None) -> Proposals:
    """Top ``setup.k`` of the peaks ``idx [n]`` (ascending flat indices into a heatmap of ``setup.shape``)
    with values ``vals [n]``, valid only. ``hint``: :attr:`PeakSetup.cut_hint`, set to the value of the
    (2K)-th peak when there are that many (the next heatmap's first candidate cut)."""
    # idx ascending, stable sort on a strictly decreasing key (``~q`` for codes: no overflow) -> value
    # descending, ties to the lower flat index (TF top_k).
    key = np.invert(vals) if vals.dtype.kind in "iub" else np.negative(vals)
    order = key.argsort(kind="stable")
    if hint is not None and order.shape[0] >= 2 * setup.k:
        hint[0] = vals[order[2 * setup.k - 1]].item()
    order = order[: setup.k]
    idx = idx.take(order)
    top = vals.take(order)
    threshold = setup.threshold32
    if setup.codes is not None:
        logits, scores = setup.codes[0].take(top), setup.codes[1].take(top)
        least = scores[-1] if scores.shape[0] else None  # descending (see PeakSetup.codes)
    else:
        logits = top.astype(np.float32) if setup.quant is None else dequantize(top, setup.quant)
        scores = sigmoid32(logits)
        least = np.minimum.reduce(scores) if scores.shape[0] else None
    # all valid (the common case): no mask
    if least is not None and not least > threshold:
        valid = scores > threshold
        idx, logits, scores = idx.compress(valid), logits.compress(valid), scores.compress(valid)
    h, w, c = setup.shape
    pix, classes = np.divmod(idx, c)
    if setup.yx is not None:
        yx = setup.yx.take(pix, axis=0)
    else:
        yx = np.empty((pix.shape[0], 2), dtype=np.int32)
        np.divmod(pix, w, out=(yx[:, 0], yx[:, 1]), casting="unsafe")
    return Proposals._from_arrays(
        classes.astype(np.int32),
        scores,
        logits,
        yx,
        idx.astype(np.int64, copy=False),
        pix.astype(np.intp, copy=False),
    )
