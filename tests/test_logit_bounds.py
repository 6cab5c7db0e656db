"""The plan-time proof that an integer model's mask logits are finite (``mask_embedding_bound``,
``logits_proven_finite``): the bound really bounds the embeddings, and a plan skips the per-frame overflow
checks only when it holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from maskconver.runtime.decode import (
    _folded_embeddings,
    decode_panoptic,
    fold_mask_head,
    logits_proven_finite,
    mask_embedding_bound,
    plan_decode,
)


def _head(rng: np.random.Generator, classes: int, d: int, hidden: int, scale: float) -> dict[str, np.ndarray]:
    def f(*shape: int) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "class_embeddings": f(classes, d),
        "mlp_dense0_kernel": f(d, hidden),
        "mlp_dense0_bias": f(hidden),
        "mlp_norm_gamma": f(hidden),
        "mlp_norm_beta": f(hidden),
        "mlp_dense1_kernel": f(hidden, d),
        "mlp_dense1_bias": f(d),
    }


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_the_bound_holds_for_extreme_codes(dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    worst = 0.0
    for _ in range(60):
        classes, d, hidden = (int(v) for v in rng.integers(1, 12, 3))
        scale = float(10.0 ** rng.uniform(-2, 1))
        zp = int(rng.integers(info.min, info.max + 1))
        head = fold_mask_head(
            _head(rng, classes, d, hidden, scale), (float(rng.uniform(0.01, 0.5)), zp), (0.05, 3)
        )
        bound = mask_embedding_bound(head, np.dtype(dtype))
        assert math.isfinite(bound)
        # codes at both ends of the range, random ones and the sign pattern of each class embedding
        n = 64
        codes = rng.integers(info.min, info.max + 1, (n, d)).astype(dtype)
        codes[0], codes[1] = info.min, info.max
        signs = np.sign(head.class_embeddings[rng.integers(0, classes, n // 2)])
        codes[n // 2 :] = np.where(signs >= 0, info.max, info.min)
        for c in range(classes):
            emb = _folded_embeddings(head, codes, np.full(n, c, np.intp))
            assert np.isfinite(emb).all()
            worst = max(worst, float(np.abs(emb).max()) / bound)
    assert 0.0 < worst <= 1.0  # bounded, and the bound is not vacuous: within ~100x of what codes reach
    assert worst > 0.01


def test_what_is_proven():
    rng = np.random.default_rng(1)
    head = fold_mask_head(_head(rng, 4, 8, 8, 1.0), (0.1, 0), (0.05, 0))
    assert logits_proven_finite(head, np.dtype(np.int8), 128.0)
    assert not logits_proven_finite(head, np.dtype(np.float32), 128.0)  # float centre embeddings
    assert not logits_proven_finite(head, np.dtype(np.int8), None)  # float mask features
    huge = _head(rng, 4, 8, 8, 1.0)
    huge["mlp_dense1_kernel"] = np.full((8, 8), 1e36, np.float32)
    assert not logits_proven_finite(fold_mask_head(huge, (0.1, 0), (0.05, 0)), np.dtype(np.int8), 128.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mask_resolution", ["full", "grid", "grid2x"])
def test_int8_outputs_whose_logits_overflow_are_still_refused(mask_resolution):
    """No proof for a head this large, so the per-frame check runs and refuses the overflow."""
    rng = np.random.default_rng(2)
    heat = np.full((4, 4, 2), -100, np.int8)
    heat[1, 1, 1] = 100
    center = rng.integers(-128, 128, (4, 4, 3)).astype(np.int8)
    feats = np.full((4, 4, 3), 127, np.int8)
    head = _head(rng, 2, 3, 3, 1.0)
    head["mlp_norm_beta"] = np.full(3, 1e19, np.float32)
    head["mlp_dense1_kernel"] = np.full((3, 3), 1e19, np.float32)
    _refused_unproven(heat, center, feats, head, 0.1, mask_resolution, output_size=(32, 32))


def _refused_unproven(heat, center, feats, head, mask_scale: float, mask_resolution: str, **kw) -> None:
    """The plan of these int8 outputs proves nothing, and the decode refuses their overflowing logits."""
    kw.update(heatmap_quant=(0.1, 0), center_quant=(0.1, 0), mask_quant=(mask_scale, 0))
    assert not plan_decode(heat, center, feats, head, mask_resolution=mask_resolution, **kw).finite_logits
    with pytest.raises(ValueError, match="overflowed (float32|the mask head)"):
        decode_panoptic(heat, center, feats, head, mask_resolution=mask_resolution, **kw)


def test_the_demo_model_skips_the_check(demo_model):
    """The trained int8 demo model is proven: its decodes skip the per-frame overflow check."""
    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(demo_model, mask_resolution="grid")
    seg.segment(np.zeros((64, 64, 3), np.uint8))
    assert [p.finite_logits for p in seg._plans.values()] == [True]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mask_resolution", ["full", "grid", "grid2x", "grid4x"])
def test_an_infinite_first_layer_input_is_not_proven(mask_resolution):
    """Folding subtracts each W0 row's mean, so with one hidden unit the folded W0 is zero: the bound of y
    is small although x = code * 3e36 is infinite in float32 (inf * 0 = NaN). The bound of x itself fails,
    and the decode refuses the overflow as before."""
    one = np.ones(1, np.float32)
    head = {
        "class_embeddings": np.full((2, 1), 3e36, np.float32),
        "mlp_dense0_kernel": np.ones((1, 1), np.float32),
        "mlp_dense0_bias": one,
        "mlp_norm_gamma": one,
        "mlp_norm_beta": one,
        "mlp_dense1_kernel": np.ones((1, 1), np.float32),
        "mlp_dense1_bias": one,
    }
    heat = np.full((4, 4, 2), -100, np.int8)
    heat[1, 1, 1] = 100
    center = np.full((4, 4, 1), -128, np.int8)
    feats = np.ones((4, 4, 1), np.int8)
    _refused_unproven(heat, center, feats, head, 0.05, mask_resolution)


@pytest.mark.parametrize("zero_point", [1e39, float("nan"), float("inf"), 2e6])
def test_absurd_zero_points_are_refused(zero_point):
    heat = np.zeros((2, 2, 2), np.int8)
    center = feats = np.zeros((2, 2, 1), np.int8)
    head = _head(np.random.default_rng(0), 2, 1, 1, 1.0)
    with pytest.raises(ValueError, match="center_quant: the zero point must be a finite number"):
        plan_decode(
            heat,
            center,
            feats,
            head,
            heatmap_quant=(0.1, 0),
            center_quant=(0.1, zero_point),
            mask_quant=(0.1, 0),
        )


def test_a_zero_point_beyond_float32_is_not_proven():
    """``fold_mask_head`` called directly (``plan_decode`` refuses such zero points): the bound uses the
    zero point as the float32 the decode subtracts, which is infinite here."""
    head = fold_mask_head(_head(np.random.default_rng(3), 2, 3, 3, 1.0), (0.1, 1e39), (0.1, 0))
    assert mask_embedding_bound(head, np.dtype(np.int8)) == math.inf
    assert not logits_proven_finite(head, np.dtype(np.int8), 128.0)
