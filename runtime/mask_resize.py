"""Bilinear resize of low-resolution mask logits, TF2 ``tf.image.resize`` style (half-pixel centres).

The resize is separable. Along one axis an :class:`AxisPlan` records, for every output index, the two source
indices and the interpolation weight, exactly as the TensorFlow ``ResizeBilinear`` CPU kernel computes them
(``half_pixel_centers=True``, ``align_corners=False``, edge clamped, no antialiasing):

    scale = float32(in_size) / float32(out_size)
    src   = (i + 0.5) * scale - 0.5                (float32)
    i0    = max(floor(src), 0);  i1 = min(ceil(src), in_size - 1);  lerp = src - floor(src)

and the value is ``top + (bottom - top) * ly`` with ``top = a + (b - a) * lx`` (the kernel's order of
operations). Consecutive output indices with the same ``(i0, i1)`` pair form a *run*; a run along y crossed
with a run along x is a *cell*: every output pixel of a cell is a convex combination of the same four
low-resolution values, which is what the coarse-to-fine merge in :mod:`maskconver.runtime.decode` exploits.

Every function here is elementwise float32 NumPy, so the same pixel computed by :func:`resize_rows` (dense)
and by :func:`interpolate_at` (only some pixels) is bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """Interpolation plan along one axis: output indices ``0..n-1`` of a resize from ``in_size``.

    ``i0``, ``i1`` int64 ``[n]``, ``lerp`` float32 ``[n]``; runs: ``run_start``, ``run_len``, ``run_i0``,
    ``run_i1`` int64 ``[R]`` (``run_of`` int64 ``[n]`` maps an output index to its run).
    """

    in_size: int
    out_size: int
    i0: np.ndarray
    i1: np.ndarray
    lerp: np.ndarray
    run_start: np.ndarray
    run_len: np.ndarray
    run_i0: np.ndarray
    run_i1: np.ndarray
    run_of: np.ndarray

    @property
    def n(self) -> int:
        return int(self.i0.shape[0])


def axis_plan(in_size: int, out_size: int, keep: int | None = None) -> AxisPlan:
    """Plan for resizing ``in_size`` -> ``out_size`` samples and keeping the first ``keep`` (default all).

    ``keep < out_size`` is the crop of Model Garden's ``_resize_and_pad_masks`` (resize to the padded
    canvas expressed in original pixels, then crop to the original image). Plans depend only on the sizes
    and are cached (their arrays are read-only).
    """
    in_size, out_size = int(in_size), int(out_size)
    keep = out_size if keep is None else int(keep)
    return _axis_plan(in_size, out_size, keep)


@lru_cache(maxsize=64)
def _axis_plan(in_size: int, out_size: int, keep: int) -> AxisPlan:
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got in_size={in_size}, out_size={out_size}")
    if not 1 <= keep <= out_size:
        raise ValueError(f"keep must be in 1..out_size={out_size}, got {keep}")
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(keep, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    fl = np.floor(src)
    i0 = np.maximum(fl.astype(np.int64), 0)
    i1 = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    lerp = (src - fl).astype(np.float32)
    change = np.ones(keep, dtype=bool)
    change[1:] = (i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])
    run_start = np.flatnonzero(change)
    run_len = np.diff(np.append(run_start, keep))
    run_of = np.cumsum(change) - 1
    plan = AxisPlan(
        in_size=in_size,
        out_size=out_size,
        i0=i0,
        i1=i1,
        lerp=lerp,
        run_start=run_start,
        run_len=run_len,
        run_i0=i0[run_start],
        run_i1=i1[run_start],
        run_of=run_of,
    )
    for arr in vars(plan).values():
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False
    return plan


@dataclass(frozen=True)
class SubRuns:
    """Runs of an :class:`AxisPlan` cut into pieces of at most ``max_len`` output indices (the tiles of the
    coarse-to-fine merge) by halving: a piece ``[a, b)`` longer than ``max_len`` becomes
    ``[a, a + (b - a) // 2)`` and ``[a + (b - a) // 2, b)``, recursively. ``start``, ``length`` int64 ``[S]``
    (ascending); ``first``, ``count`` int64 ``[R]`` (the pieces of run r are ``first[r] ..
    first[r] + count[r] - 1``); ``piece_of`` int64 ``[n]``: the piece of every output index."""

    start: np.ndarray
    length: np.ndarray
    first: np.ndarray
    count: np.ndarray
    piece_of: np.ndarray


def halve(a: np.ndarray, b: np.ndarray, max_len: int) -> np.ndarray:
    """Split point of ranges ``[a, b)``: ``a + (b - a) // 2`` where longer than ``max_len``, else ``b``."""
    return np.where(b - a > max_len, a + (b - a) // 2, b)


def sub_runs(plan: AxisPlan, max_len: int) -> SubRuns:
    """The pieces of every run (cached per sizes)."""
    return _sub_runs(plan.in_size, plan.out_size, plan.n, int(max_len))


@lru_cache(maxsize=64)
def _sub_runs(in_size: int, out_size: int, keep: int, max_len: int) -> SubRuns:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    plan = _axis_plan(in_size, out_size, keep)
    a, b = plan.run_start, plan.run_start + plan.run_len
    while (b - a > max_len).any():
        m = halve(a, b, max_len)
        a, b = np.concatenate([a, m]), np.concatenate([m, b])
        ok = b > a
        a, b = a[ok], b[ok]
        order = np.argsort(a)
        a, b = a[order], b[order]
    run = plan.run_of[a]
    count = np.bincount(run, minlength=plan.run_start.size)
    out = SubRuns(
        start=a,
        length=b - a,
        first=np.cumsum(count) - count,
        count=count,
        piece_of=np.repeat(np.arange(a.size), b - a),
    )
    for arr in vars(out).values():
        arr.flags.writeable = False
    return out


def interpolate_x(logits: np.ndarray, px: AxisPlan) -> np.ndarray:
    """Resize along x only: ``[h, w, K]`` float32 -> ``[h, px.n, K]`` float32."""
    a = logits[:, px.i0, :]
    b = logits[:, px.i1, :]
    return a + (b - a) * px.lerp[None, :, None]


def resize_rows(rows_x: np.ndarray, py: AxisPlan, start: int, stop: int) -> np.ndarray:
    """Output rows ``start:stop`` from x-interpolated rows ``[h, Wk, K]`` -> ``[stop-start, Wk, K]``."""
    top = rows_x[py.i0[start:stop]]
    out = rows_x[py.i1[start:stop]]
    out -= top  # in place: the same float32 operations as top + (bot - top) * ly, without temporaries
    out *= py.lerp[start:stop, None, None]
    out += top
    return out


def resize_bilinear(logits: np.ndarray, py: AxisPlan, px: AxisPlan) -> np.ndarray:
    """Full resize ``[h, w, K]`` float32 -> ``[py.n, px.n, K]`` float32 (memory: py.n*px.n*K*4 bytes)."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    return resize_rows(interpolate_x(logits, px), py, 0, py.n)


def interpolate_at(
    logits: np.ndarray,
    py: AxisPlan,
    px: AxisPlan,
    cy: np.ndarray,
    cx: np.ndarray,
    q: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
) -> np.ndarray:
    """Resized logits of proposal ``q[n]`` at pixels ``ys[n, RY] x xs[n, RX]`` lying in cell ``(cy, cx)[n]``.

    ``logits`` ``[h, w, K]`` float32 -> ``[n, RY, RX]`` float32, bit-identical to the same pixels of
    :func:`resize_bilinear` (same float32 operations in the same order). The pixels must lie in the runs
    ``cy`` / ``cx`` (their source indices are taken from the runs).
    """
    y0 = py.run_i0[cy]
    y1 = py.run_i1[cy]
    x0 = px.run_i0[cx]
    x1 = px.run_i1[cx]
    lx = px.lerp[xs]  # [n, RX]
    ly = py.lerp[ys]  # [n, RY]
    a = logits[y0, x0, q][:, None]
    b = logits[y0, x1, q][:, None]
    c = logits[y1, x0, q][:, None]
    d = logits[y1, x1, q][:, None]
    top = a + (b - a) * lx
    bot = c + (d - c) * lx
    return top[:, None, :] + (bot - top)[:, None, :] * ly[:, :, None]


def bilinear_from_corners(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, lx: np.ndarray, ly: np.ndarray
) -> np.ndarray:
    """The same interpolation from gathered source values, *pairs last*: ``a = L[y0, x0]``,
    ``b = L[y0, x1]``, ``c = L[y1, x0]``, ``d = L[y1, x1]`` float32 ``[n]``, weights ``lx [RX, n]``,
    ``ly [RY, n]`` -> ``[RY, RX, n]`` float32 (bit-identical to :func:`resize_bilinear` at those pixels)."""
    top = a + (b - a) * lx
    bot = c + (d - c) * lx
    return top[None, :, :] + (bot - top)[None, :, :] * ly[:, None, :]
