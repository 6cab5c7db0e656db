"""Fitting int8 ranges for the lowering's tensors: the error formula, the fit, the in-place flatbuffer edit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from maskconver.converter.inference_graph import BandRanges, DepthwiseRewrite
from maskconver.converter.range_refine import (
    fitted_int8_range,
    int8_range_errors,
    int8_scale_zero_point,
    lowered_tensor_samples,
)

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "maskconver_nano_demo.npz"


def real_int8_error(v: np.ndarray, lo: float, hi: float) -> float:
    """Quantise and dequantise ``v`` with the int8 scale and zero point of ``lo..hi``; mean squared error."""
    s, z = int8_scale_zero_point(lo, hi)
    q = np.clip(np.round(v / s) + z, -128, 127)
    return float(np.mean(((q - z) * s - v) ** 2))


def test_the_error_formula_equals_a_direct_sum():
    rng = np.random.default_rng(0)
    v = rng.laplace(0.3, 1.0, 5000)
    lo = np.array([-8.0, -2.0, -0.5, -3.0, 0.0])
    hi = np.array([9.0, 2.0, 4.0, 0.5, 1.0])
    step2 = ((hi - lo) / 255) ** 2 / 12
    direct = [
        np.mean(np.where(v < a, (a - v) ** 2, np.where(v > b, (v - b) ** 2, s)))
        for a, b, s in zip(lo, hi, step2, strict=True)
    ]
    np.testing.assert_allclose(int8_range_errors(v, lo, hi), direct, rtol=1e-9)


def test_a_heavy_tailed_tensor_gets_a_narrower_range_with_less_real_int8_error():
    rng = np.random.default_rng(1)
    v = rng.laplace(0.0, 1.0, 200_000)
    lo, hi = float(v.min()), float(v.max())
    new_lo, new_hi, before, after = fitted_int8_range(v, lo, hi)
    assert lo < new_lo <= 0 <= new_hi < hi
    assert after < 0.85 * before  # measured: 0.76
    # the model's estimate matches real rounding, and the real error falls as much
    assert real_int8_error(v, lo, hi) == pytest.approx(before, rel=0.05)
    assert real_int8_error(v, new_lo, new_hi) == pytest.approx(after, rel=0.05)


def test_a_uniform_tensor_keeps_its_range():
    v = np.linspace(-1.0, 1.0, 100_001)
    assert fitted_int8_range(v, -1.0, 1.0)[:2] == (-1.0, 1.0)


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (-0.01, 5.0), (-3.0, 0.02), (0.0, 2.0), (-2.0, 0.0)])
def test_zero_is_exactly_representable(lo, hi):
    s, z = int8_scale_zero_point(lo, hi)
    assert -128 <= z <= 127 and s > 0
    assert (np.clip(np.round(0.0 / s) + z, -128, 127) - z) * s == 0.0
    assert (-128 - z) * s == pytest.approx(lo, abs=s) and (127 - z) * s == pytest.approx(hi, abs=s)


def test_samples_follow_the_rewritten_graph():
    """Band i = s * (y_i + bias share i); the partial sums add bands in order; the last sum is not a sample."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=(3, 10, 4)).astype(np.float32)
    r = BandRanges.empty(3, np.array([1.0, -1.0, 0.5, 0.0]))
    r.samples.append(y)
    offsets = rng.normal(size=(3, 4)).astype(np.float32)
    offsets -= offsets.mean(0)
    scale = np.array([1.0, 2.0, 0.5, 4.0], np.float32)
    got = lowered_tensor_samples(r, DepthwiseRewrite(scale=scale, band_offsets=offsets))
    assert sorted(got) == [("band", 0), ("band", 1), ("band", 2), ("sum", 1)]
    bias = np.zeros((3, 4))
    bias[0] = r.bias
    bands = (y + bias[:, None] + offsets[:, None]) * scale
    np.testing.assert_allclose(got[("band", 1)], bands[1].ravel(), rtol=1e-6)
    np.testing.assert_allclose(got[("sum", 1)], (bands[0] + bands[1]).ravel(), rtol=1e-6)
    with pytest.raises(ValueError, match="samples_per_image"):
        lowered_tensor_samples(BandRanges.empty(3, np.zeros(4)), None)


def test_the_flatbuffer_edit_changes_one_tensor_and_refuses_per_channel():
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.converter.tflite_export import convert_tflite, run_tflite
    from maskconver.models.checkpoint import load_checkpoint
    from maskconver.runtime.tflite_flatbuffer import parse_tflite, patch_per_tensor_quantization

    model = load_checkpoint(DEMO)
    rng = np.random.default_rng(3)
    cal = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(4)]
    tfl = convert_tflite(build_inference_fn(model), (128, 128), "int8", cal)
    m = parse_tflite(tfl)
    sg = m.subgraphs[0]
    outputs = {o for op in sg.operators for o in op.outputs}
    band = next(t for t in sg.tensors if t.index in outputs and t.name.split(";")[0].endswith("dw1_band0"))
    data = bytearray(tfl)
    patch_per_tensor_quantization(data, m, band, 0.125, -3)
    m2 = parse_tflite(bytes(data))
    for a, b in zip(sg.tensors, m2.subgraphs[0].tensors, strict=True):
        if a.index == band.index:
            assert b.quantization.scale.tolist() == [0.125] and b.quantization.zero_point.tolist() == [-3]
        elif a.quantization is not None:
            assert np.array_equal(a.quantization.scale, b.quantization.scale)
            assert np.array_equal(a.quantization.zero_point, b.quantization.zero_point)
    assert len(data) == len(tfl)
    out = run_tflite(bytes(data), cal[0])  # still a valid model that LiteRT runs
    assert all(np.isfinite(v).all() for v in out.values())
    weights = next(t for t in sg.tensors if t.quantization is not None and t.quantization.per_channel)
    with pytest.raises(ValueError, match="per-tensor"):
        patch_per_tensor_quantization(data, m, weights, 0.1, 0)
    with pytest.raises(ValueError, match="finite"):
        patch_per_tensor_quantization(data, m, band, float("nan"), 0)
    with pytest.raises(ValueError, match="finite"):
        patch_per_tensor_quantization(data, m, band, 1e-46, 0)  # 0 as a float32
    with pytest.raises(ValueError, match="outside"):
        patch_per_tensor_quantization(data, m, band, 0.1, 300)


def test_bands_without_a_bias_are_found_by_their_conv_name():
    """With no rewrites only band 0 carries a bias; the converter drops the others' zero bias_add, and with it
    their band names. They are found by their conv's name and refined too."""
    from maskconver.converter.calibration import lowered_depthwise_ranges
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.converter.range_refine import refine_lowered_ranges
    from maskconver.converter.tflite_export import convert_tflite
    from maskconver.models.checkpoint import load_checkpoint

    model = load_checkpoint(DEMO)
    rng = np.random.default_rng(4)
    cal = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(6)]
    tfl = convert_tflite(build_inference_fn(model), (128, 128), "int8", cal)
    _, done, missing = refine_lowered_ranges(tfl, lowered_depthwise_ranges(model, cal), None)
    assert missing == [] and len(done) == 24
