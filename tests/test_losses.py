"""MaskConver losses on small hand-computed cases (values worked out with pencil and ln/exp)."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="tensorflow is needed for the training losses: pip install maskconver[tf]"
)

from maskconver.models import losses as L  # noqa: E402

LN2 = math.log(2.0)


def _t(x, dtype=np.float32):
    return tf.constant(np.asarray(x, dtype=dtype))


def test_focal_loss_positive_negative_penalty_and_padding():
    # 2x2 heatmap, 1 class, every logit 0 -> p = 0.5.
    target = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)[None, :, :, None]
    logits = np.zeros((1, 2, 2, 1), np.float32)
    pad = np.zeros((1, 16, 16), np.float32)
    pad[:, :, 8:] = 1  # right half of the 16x16 canvas -> heatmap column 1 is padding
    got = L.center_focal_loss(_t(logits), _t(target), _t(pad), _t([1], np.int32)).numpy()
    pos = 0.25 * LN2  # -(1-p)^2 log p
    neg_half = (0.5**4) * 0.25 * LN2  # -(1-t)^4 p^2 log(1-p) at t = 0.5
    assert got == pytest.approx((pos + neg_half) / 2.0, rel=1e-6)  # / (num_instances + 1)

    no_pad = L.center_focal_loss(_t(logits), _t(target), _t(np.zeros_like(pad)), _t([1], np.int32)).numpy()
    neg_zero = 0.25 * LN2
    assert no_pad == pytest.approx((pos + neg_half + 2 * neg_zero) / 2.0, rel=1e-6)


def test_focal_loss_clips_sigmoid_and_averages_over_batch():
    # A confident wrong negative: p clipped to 1 - 1e-4, loss = -(1-1e-4)^2 log(1e-4).
    logits = np.full((2, 1, 1, 1), 30.0, np.float32)
    target = np.zeros((2, 1, 1, 1), np.float32)
    pad = np.zeros((2, 8, 8), np.float32)
    got = L.center_focal_loss(_t(logits), _t(target), _t(pad), _t([0, 3], np.int32)).numpy()
    one = -((1 - 1e-4) ** 2) * math.log(1e-4)  # 9.20850...
    assert one == pytest.approx(9.2085, abs=1e-3)
    assert got == pytest.approx((one / 1 + one / 4) / 2, rel=1e-4)


def test_upsample_is_half_pixel_bilinear():
    x = np.array([0.0, 4.0], np.float32).reshape(1, 1, 2, 1)
    up = L.upsample_mask_logits(_t(x), (1, 4)).numpy().ravel()
    np.testing.assert_allclose(up, [0.0, 1.0, 3.0, 4.0], atol=1e-6)


def test_mask_bce_weights_pad_slots_and_padding():
    # canvas 1x4, K = 2 slots; slot 1 is unused (-1 everywhere, weight 0); pixel 3 is padding.
    gt = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.float32).reshape(1, 1, 4, 2)
    gt[..., 1] = -1
    logits = np.zeros((1, 1, 4, 2), np.float32)
    logits[0, 0, 0, 0] = 2.0  # bce(label 1, logit 2) = log(1 + e^-2)
    pad = np.array([[[0, 0, 0, 1]]], np.float32)
    got = L.mask_bce_loss(_t(logits), _t(gt), _t([[1, 0]]), _t(pad)).numpy()
    expected = (math.log(1 + math.exp(-2.0)) + 2 * LN2) / (3 + 1)
    assert got == pytest.approx(expected, rel=1e-6)


def test_adaptive_dice_is_one_global_dice():
    # Two valid slots on a 1x2 canvas; all logits 0 -> p = 0.5 everywhere.
    gt = np.array([[1, 0], [1, 0]], np.float32).reshape(1, 1, 2, 2)  # slot 0 = both pixels, slot 1 empty
    logits = np.zeros((1, 1, 2, 2), np.float32)
    pad = np.zeros((1, 1, 2), np.float32)
    got = L.adaptive_dice_loss(_t(logits), _t(gt), _t([[1, 1]]), _t(pad)).numpy()
    d = 2 * (0.5 + 0.5) / (2 + 4 * 0.5)  # one dice over all 4 elements = 0.5 (per-slot mean would differ)
    assert got == pytest.approx(1 - d * math.exp(1 - d), rel=1e-5)  # 0.17564
    assert got == pytest.approx(0.175639, abs=1e-5)


def test_adaptive_dice_perfect_and_empty():
    gt = np.array([1, 0, 1, 0], np.float32).reshape(1, 1, 4, 1)
    logits = np.where(gt > 0, 40.0, -40.0).astype(np.float32)
    pad = np.zeros((1, 1, 4), np.float32)
    assert L.adaptive_dice_loss(_t(logits), _t(gt), _t([[1]]), _t(pad)).numpy() == pytest.approx(
        0.0, abs=1e-6
    )
    # every slot unused -> nothing to score -> 0 (Model Garden drops all-zero samples)
    empty = L.adaptive_dice_loss(_t(logits), _t(-np.ones_like(gt)), _t([[0]]), _t(pad)).numpy()
    assert empty == 0.0


def test_dice_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    gt = (rng.random((1, 3, 3, 2)) > 0.5).astype(np.float32)
    x = tf.Variable(rng.normal(size=(1, 3, 3, 2)).astype(np.float32))
    w, pad = _t([[1, 1]]), _t(np.zeros((1, 3, 3)))
    with tf.GradientTape() as tape:
        loss = L.adaptive_dice_loss(x, _t(gt), w, pad)
    g = tape.gradient(loss, x).numpy()
    eps = 1e-2
    base = x.numpy()
    for idx in [(0, 0, 0, 0), (0, 1, 2, 1), (0, 2, 1, 0)]:
        hi, lo = base.copy(), base.copy()
        hi[idx] += eps
        lo[idx] -= eps
        num = (
            L.adaptive_dice_loss(_t(hi), _t(gt), w, pad).numpy()
            - L.adaptive_dice_loss(_t(lo), _t(gt), w, pad).numpy()
        ) / (2 * eps)
        assert g[idx] == pytest.approx(num, rel=2e-2, abs=1e-4)


def test_l2_only_on_kernels_and_embeddings():
    named = [
        ("a/kernel", tf.Variable([[1.0, 2.0]])),
        ("b/depthwise_kernel", tf.Variable([3.0])),
        ("class_embeddings/embeddings", tf.Variable([1.0])),
        ("a/bias", tf.Variable([100.0])),
        ("n/gamma", tf.Variable([100.0])),
    ]
    assert L.l2_regularization(named, 1e-2).numpy() == pytest.approx(0.5e-2 * (1 + 4 + 9 + 1), rel=1e-6)
    assert L.l2_regularization(named, 0.0).numpy() == 0.0


def test_total_combines_terms_with_mask_weight():
    target = np.zeros((1, 1, 1, 2), np.float32)
    target[0, 0, 0, 1] = 1.0
    labels = {
        "heatmap": _t(target),
        "panoptic_masks": _t(np.ones((1, 8, 8, 1))),
        "mask_weights": _t([[1.0]]),
        "num_instances": _t([1], np.int32),
        "padding_mask": _t(np.zeros((1, 8, 8))),
    }
    out = L.maskconver_losses(_t(np.zeros((1, 1, 1, 2))), _t(np.zeros((1, 1, 1, 1))), labels, 5.0, 0.25)
    center = (0.25 * LN2 + 0.25 * LN2) / 2
    bce = 64 * LN2 / 65
    d = 2 * 32 / (64 + 32)
    dice = 1 - d * math.exp(1 - d)
    assert out["center"].numpy() == pytest.approx(center, rel=1e-6)
    assert out["mask"].numpy() == pytest.approx(bce, rel=1e-6)
    assert out["dice"].numpy() == pytest.approx(dice, rel=1e-5)
    assert out["total"].numpy() == pytest.approx(center + 5 * (bce + dice) + 0.25, rel=1e-5)
