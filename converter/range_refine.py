"""MSE-fitted int8 ranges for the tensors the depthwise lowering adds: its bands and partial sums.

The TFLite converter gives every int8 activation the min..max range seen on the calibration images. For the
lowering's bands and partial sums that costs accuracy twice over: each is one more int8 rounding that the unlowered
graph does not have, and their rare extremes (a few pixels of a few images) stretch the step of all the others.
After conversion, each of these tensors gets the range that minimises its expected squared int8 error (rounding
inside the range plus clipping outside it) on samples of its float values over the calibration images. The
depthwise conv and the add that produce them compute their requantisation from the stored scale and zero point,
so only those two numbers change, in place in the flatbuffer. Every other tensor keeps the converter's range,
including the lowered conv's output after the ReLU (the one tensor the unlowered graph has too).

On the demo model this takes the lowering's SQNR loss against the unlowered int8 model from about
1.1 / 0.8 / 0.4 dB (heatmap / center embeddings / mask features) to about 0.4 / 0.4 / 0.2 dB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from maskconver.converter.inference_graph import BandRanges, DepthwiseRewrite, lowering_op_name

INT8_MIN, INT8_MAX = -128, 127
# Candidate ends of the range, as fractions of the converter's min..max (each end separately).
RANGE_FRACTIONS = np.linspace(0.2, 1.0, 33)  # ends at 1: the converter's own range is a candidate


@dataclass(frozen=True)
class RefinedRange:
    """One tensor's int8 range before and after, and the expected squared error of each (from the samples)."""

    tensor: str
    before: tuple[float, float]
    after: tuple[float, float]
    mse_before: float
    mse_after: float


def lowered_tensor_samples(
    r: BandRanges, rewrite: DepthwiseRewrite | None
) -> dict[tuple[str, int], np.ndarray]:
    """Samples of a lowered conv's band and partial-sum tensors as the rewritten graph computes them.

    ``r.samples``: bias-free bands ``[n_bands,P,C]`` per image, before any rewrite. Band ``i`` of the graph is
    ``s * (y_i + bias_i)`` with the bias split of ``rewrite`` (band 0 takes the whole bias by default) and its
    channel scale ``s``; partial sum ``i`` adds bands ``0..i``. -> ``{("band", i) | ("sum", i): values [N]}``, the
    sums for ``0 < i < n_bands - 1`` (the last sum is the conv's output, not a lowering tensor).
    """
    if not r.samples:
        raise ValueError(
            "the band ranges carry no samples; run lowered_depthwise_ranges with samples_per_image > 0"
        )
    y = np.concatenate(r.samples, axis=1).astype(np.float64)  # [n_bands, N, C]
    n, _, c = y.shape
    bias = np.zeros((n, c))
    bias[0] = r.bias
    scale = np.ones(c)
    if rewrite is not None and rewrite.band_offsets is not None:
        bias = bias + rewrite.band_offsets
    if rewrite is not None and rewrite.scale is not None:
        scale = np.asarray(rewrite.scale, np.float64)
    bands = (y + bias[:, None, :]) * scale
    out: dict[tuple[str, int], np.ndarray] = {("band", i): bands[i].ravel() for i in range(n)}
    acc = bands[0]
    for i in range(1, n - 1):
        acc = acc + bands[i]
        out[("sum", i)] = acc.ravel()
    return out


def int8_range_errors(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean squared int8 error of ``values`` ``[N]`` under each range ``lo[j]..hi[j]`` (same shape, lo <= 0 <= hi).

    Rounding inside the range (step ``(hi - lo) / 255``, error ``step**2 / 12``) plus the squared distance of every
    clipped value to the range's end; exact sums over the sorted values, no loop over candidates.
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    n = v.size
    c1 = np.concatenate([[0.0], np.cumsum(v)])
    c2 = np.concatenate([[0.0], np.cumsum(v * v)])
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    nl = np.searchsorted(v, lo, "left")  # values below lo
    nh = np.searchsorted(v, hi, "right")  # values up to hi
    below = nl * lo**2 - 2 * lo * c1[nl] + c2[nl]
    above = (n - nh) * hi**2 - 2 * hi * (c1[n] - c1[nh]) + (c2[n] - c2[nh])
    step = (hi - lo) / (INT8_MAX - INT8_MIN)
    inside = (nh - nl) * step**2 / 12
    return (below + above + inside) / max(n, 1)


def fitted_int8_range(values: np.ndarray, lo: float, hi: float) -> tuple[float, float, float, float]:
    """The range within ``lo..hi`` (fractions :data:`RANGE_FRACTIONS` of each end) with the least int8 error.

    -> ``(lo', hi', error at lo..hi, error at lo'..hi')``.
    """
    lo_c, hi_c = np.meshgrid(lo * RANGE_FRACTIONS, hi * RANGE_FRACTIONS, indexing="ij")
    err = int8_range_errors(values, lo_c.ravel(), hi_c.ravel())
    base = float(err[-1])  # the last candidate is lo..hi itself (fraction 1 at both ends)
    j = int(np.argmin(err))
    if not err[j] < base:
        return lo, hi, base, base
    return float(lo_c.ravel()[j]), float(hi_c.ravel()[j]), base, float(err[j])


def int8_scale_zero_point(lo: float, hi: float) -> tuple[float, int]:
    """Per-tensor int8 ``(scale, zero point)`` of a range with ``lo <= 0 <= hi`` (zero exactly representable)."""
    scale = (hi - lo) / (INT8_MAX - INT8_MIN)
    zp = int(np.clip(np.round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return float(scale), zp


def refine_lowered_ranges(
    tflite: bytes, ranges: dict[str, BandRanges], rewrites: dict[str, DepthwiseRewrite] | None
) -> tuple[bytes, list[RefinedRange], list[str]]:
    """Refit the int8 ranges of every lowered conv's bands and partial sums in a converted int8 model.

    ``ranges``: from :func:`~maskconver.converter.calibration.lowered_depthwise_ranges` (with samples), the same
    calibration images the model was converted with; ``rewrites``: those the graph was built with. -> (the model
    with the refined ranges, one :class:`RefinedRange` per tensor, the names of expected tensors not found).
    """
    from maskconver.runtime.tflite_flatbuffer import parse_tflite, patch_per_tensor_quantization

    data = bytearray(tflite)
    model = parse_tflite(bytes(data))
    sg = model.subgraphs[0]
    producer = {o: op.op_name for op in sg.operators for o in op.outputs}
    expected_op = {"band": "DEPTHWISE_CONV_2D", "sum": "ADD"}
    by_name, by_conv_name = {}, {}
    for t in sg.tensors:
        head = t.name.split(";")[0]
        if head.startswith("mclowered_") and t.index in producer:
            by_name.setdefault(head, t)
            # a band whose bias is all zero loses its bias_add: its conv's name is the band's plus "_conv" (and
            # a digit when the converter has given the plain name to the zero bias constant)
            conv = re.fullmatch(r"(mclowered_.+_band\d+)_conv\d*", head)
            if conv:
                by_conv_name.setdefault(conv.group(1), t)
    done: list[RefinedRange] = []
    missing: list[str] = []
    for layer, r in ranges.items():
        rw = (rewrites or {}).get(layer)
        for (kind, i), values in lowered_tensor_samples(r, rw).items():
            name = lowering_op_name(layer, kind, i)
            t = by_name.get(name, by_conv_name.get(name))
            q = None if t is None else t.quantization
            if (
                t is None
                or producer[t.index] != expected_op[kind]
                or t.type_name != "INT8"
                or q is None
                or q.per_channel
            ):
                missing.append(name)
                continue
            scale, zp = float(q.scale[0]), int(q.zero_point[0])
            lo, hi = (INT8_MIN - zp) * scale, (INT8_MAX - zp) * scale
            new_lo, new_hi, before, after = fitted_int8_range(values, lo, hi)
            if after < before:
                try:
                    patch_per_tensor_quantization(data, model, t, *int8_scale_zero_point(new_lo, new_hi))
                except ValueError:
                    # shared or unlocatable quantisation vectors: leave the tensor as converted
                    missing.append(name)
                    continue
            done.append(RefinedRange(name, (lo, hi), (new_lo, new_hi), before, after))
    return bytes(data), done, missing
