"""MaskConver training losses in TensorFlow (Model Garden ``tasks/maskconver.py::build_losses``).

See ``shared/reference/modelgarden-maskconver.md`` section 5.2. With ``B`` images, heatmap ``[B, h, w, C]`` at
stride 8, ``K`` instance slots and the ``[H, W]`` training canvas:

* centre loss: CenterNet penalty-reduced logistic focal loss (alpha 2, beta 4, sigmoid clipped to
  ``[1e-4, 1 - 1e-4]``), weighted by ``1 - padding`` resized to ``h x w`` by nearest neighbour, summed per
  image, divided by ``num_instances + 1`` and averaged over the batch;
* mask BCE: sigmoid cross-entropy of the mask logits bilinearly upsampled to ``H x W``, weights
  ``(gt >= 0) * slot_valid * (1 - padding)``, ``sum(w * bce) / (sum(w) + 1)``;
* dice: Model Garden's "adaptive" dice, which is ONE global soft dice over every mask of the batch,
  ``d = 2 sum(l p) / (sum(l + p) + 1e-7)`` on ``p = sigmoid * w``, ``l = gt * w`` (``w = slot_valid *
  (1 - padding)``), loss ``1 - d exp(1 - d)``; 0 when every weighted label and prediction is zero;
* total: ``center + mask_weight * (bce + dice) + l2`` with ``l2 = (l2_weight_decay / 2) * sum ||kernel||^2``
  (Model Garden passes ``l2(weight_decay / 2)`` kernel regularisers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import tensorflow as tf

KEPSILON = 1e-7  # keras.backend.epsilon(), the dice denominator guard
# Canonical weight names (see architecture.py) that carry an L2 regulariser.
L2_SUFFIXES = ("/kernel", "/depthwise_kernel", "/embeddings")


def resize_padding_nearest(padding_mask: tf.Tensor, size: tuple[int, int] | tf.Tensor) -> tf.Tensor:
    """``[B, H, W]`` 0/1 padding -> ``[B, h, w]`` by TF2 nearest resize (half-pixel centres)."""
    pad = tf.cast(padding_mask, tf.float32)[..., None]
    return tf.image.resize(pad, size, method="nearest")[..., 0]


def center_focal_loss(
    logits: tf.Tensor,
    target: tf.Tensor,
    padding_mask: tf.Tensor,
    num_instances: tf.Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    clip: float = 1e-4,
) -> tf.Tensor:
    """Penalty-reduced focal loss on the centre heatmap, a scalar.

    Args:
        logits: ``[B, h, w, C]`` heatmap logits.
        target: ``[B, h, w, C]`` gaussian targets in [0, 1]; exactly 1 at the peaks.
        padding_mask: ``[B, H, W]`` 1 on padding (any H, W; resized nearest to ``h x w``).
        num_instances: ``[B]`` number of valid instances per image.
    """
    logits = tf.cast(logits, tf.float32)
    target = tf.cast(target, tf.float32)
    p = tf.clip_by_value(tf.sigmoid(logits), clip, 1.0 - clip)
    positive = tf.pow(1.0 - p, alpha) * tf.math.log(p)
    negative = tf.pow(1.0 - target, beta) * tf.pow(p, alpha) * tf.math.log(1.0 - p)
    loss = -tf.where(tf.equal(target, 1.0), positive, negative)
    valid = 1.0 - resize_padding_nearest(padding_mask, tf.shape(logits)[1:3])
    valid = tf.maximum(valid, 0.0)[..., None]
    per_image = tf.reduce_sum(loss * valid, axis=[1, 2, 3])
    per_image = per_image / (tf.cast(num_instances, tf.float32) + 1.0)
    return tf.reduce_mean(per_image)


def upsample_mask_logits(logits: tf.Tensor, size: tuple[int, int] | tf.Tensor) -> tf.Tensor:
    """``[B, h, w, K]`` -> ``[B, H, W, K]`` bilinear (TF2 resize: half-pixel centres, no antialias)."""
    return tf.image.resize(tf.cast(logits, tf.float32), size, method="bilinear")


def _mask_weights(gt_masks: tf.Tensor, slot_weights: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """``[B, H, W, K]`` weights ``slot_valid * (1 - padding)`` (without the ``gt >= 0`` factor)."""
    slot = tf.cast(slot_weights, tf.float32)[:, None, None, :]
    keep = 1.0 - tf.cast(padding_mask, tf.float32)[..., None]
    return slot * keep * tf.ones_like(tf.cast(gt_masks, tf.float32))


def mask_bce_loss(
    logits_up: tf.Tensor, gt_masks: tf.Tensor, slot_weights: tf.Tensor, padding_mask: tf.Tensor
) -> tf.Tensor:
    """Weighted sigmoid cross-entropy of the upsampled mask logits, a scalar.

    Args:
        logits_up: ``[B, H, W, K]`` mask logits at the canvas resolution.
        gt_masks: ``[B, H, W, K]`` 1/0 masks, -1 in unused slots.
        slot_weights: ``[B, K]`` 1 for valid slots.
        padding_mask: ``[B, H, W]`` 1 on padding.
    """
    gt = tf.cast(gt_masks, tf.float32)
    w = tf.cast(gt >= 0.0, tf.float32) * _mask_weights(gt, slot_weights, padding_mask)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(gt, 0.0), logits=logits_up)
    return tf.reduce_sum(bce * w) / (tf.reduce_sum(w) + 1.0)


def global_soft_dice(probs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """``d = 2 sum(l p) / (sum(l + p) + 1e-7)`` over every element (any shape), a scalar."""
    return 2.0 * tf.reduce_sum(labels * probs) / (tf.reduce_sum(labels + probs) + KEPSILON)


def adaptive_dice_loss(
    logits_up: tf.Tensor, gt_masks: tf.Tensor, slot_weights: tf.Tensor, padding_mask: tf.Tensor
) -> tf.Tensor:
    """Model Garden's adaptive dice: ``1 - d * exp(1 - d)`` of one global dice; 0 if nothing to score.

    Shapes as :func:`mask_bce_loss`. Labels are ``max(gt, 0)`` (Model Garden multiplies the raw -1 padding
    by a zero weight, which gives the same value).
    """
    w = _mask_weights(gt_masks, slot_weights, padding_mask)
    probs = tf.sigmoid(logits_up) * w
    labels = tf.maximum(tf.cast(gt_masks, tf.float32), 0.0) * w
    d = global_soft_dice(probs, labels)
    anything = tf.reduce_sum(labels) + tf.reduce_sum(probs) > 0.0
    return tf.where(anything, 1.0 - d * tf.exp(1.0 - d), tf.zeros_like(d))


def l2_regularization(named_variables: Iterable[tuple[str, tf.Variable]], weight_decay: float) -> tf.Tensor:
    """``(weight_decay / 2) * sum ||v||^2`` over kernels, depthwise kernels and embeddings, a scalar."""
    terms = [
        tf.reduce_sum(tf.square(tf.convert_to_tensor(v)))
        for name, v in named_variables
        if name.endswith(L2_SUFFIXES)
    ]
    if not terms or weight_decay == 0:
        return tf.constant(0.0)
    return (weight_decay / 2.0) * tf.add_n(terms)


def maskconver_losses(
    heatmap_logits: tf.Tensor,
    mask_logits: tf.Tensor,
    labels: Mapping[str, tf.Tensor],
    mask_weight: float = 5.0,
    l2: tf.Tensor | float = 0.0,
) -> dict[str, tf.Tensor]:
    """All loss terms: ``center``, ``mask`` (BCE), ``dice``, ``l2`` and ``total``.

    Args:
        heatmap_logits: ``[B, h, w, C]``.
        mask_logits: ``[B, h, w, K]`` teacher-forced mask logits at stride 8.
        labels: ``heatmap`` [B,h,w,C], ``panoptic_masks`` [B,H,W,K], ``mask_weights`` [B,K],
            ``num_instances`` [B], ``padding_mask`` [B,H,W].
    """
    gt = labels["panoptic_masks"]
    up = upsample_mask_logits(mask_logits, tf.shape(gt)[1:3])
    center = center_focal_loss(
        heatmap_logits, labels["heatmap"], labels["padding_mask"], labels["num_instances"]
    )
    bce = mask_bce_loss(up, gt, labels["mask_weights"], labels["padding_mask"])
    dice = adaptive_dice_loss(up, gt, labels["mask_weights"], labels["padding_mask"])
    l2 = tf.cast(l2, tf.float32)
    total = center + mask_weight * (bce + dice) + l2
    return {"total": total, "center": center, "mask": bce, "dice": dice, "l2": l2}


__all__ = [
    "adaptive_dice_loss",
    "center_focal_loss",
    "global_soft_dice",
    "l2_regularization",
    "mask_bce_loss",
    "maskconver_losses",
    "resize_padding_nearest",
    "upsample_mask_logits",
]
