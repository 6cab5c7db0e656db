"""Training augmentation (scale jitter, crop/pad, flip) and the letterbox resize, applied to image and masks.

Both follow Model Garden's ``resize_and_crop_image`` (``official/vision/ops/preprocess_ops.py``):

* ``scaled = round(jitter * size)`` per axis, ``scale = min(scaled_h / h, scaled_w / w)`` (aspect kept),
  the image is resized to ``round((h, w) * scale)`` bilinearly (half-pixel centres, no antialias), a random
  window of the training size is cropped when the result is larger, and the canvas is padded at the
  **bottom/right**. Horizontal flip (p = 0.5) comes first, as in the MaskConver parser.
* :func:`letterbox` is the same with no jitter (jitter 1, offset 0): the runtime rule
  ``scale = min(H/h, W/w)``, ``scaled = round((h, w) * scale)``, bilinear, top-left, pad bottom/right.

Images stay uint8 RGB and the padding is the mean colour ``PAD_RGB`` = (124, 116, 104), which is ~0 after
normalisation, as Model Garden's zero padding in normalised space. Masks are resized by nearest neighbour
(half-pixel centres); padded pixels get category -1 and instance 0 and are 1 in ``padding_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from maskconver.runtime.model_info import PAD_RGB

PAD_CATEGORY = -1


@dataclass
class Augmented:
    """An image and its masks on the training canvas ``[H, W]``."""

    image: np.ndarray  # [H, W, 3] uint8 RGB, padding = pad colour
    category_mask: np.ndarray  # [H, W] int32, -1 on padding, 0 void
    instance_mask: np.ndarray  # [H, W] int32, 0 on padding
    padding_mask: np.ndarray  # [H, W] uint8, 1 on padding
    scale: float  # output pixels per input pixel
    scaled_size: tuple[int, int]  # (h, w) of the resized image before crop/pad


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


def resize_bilinear(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``[h, w, 3]`` -> ``[H, W, 3]`` bilinear, half-pixel centres, no antialias (TF2 ``tf.image.resize``)."""
    h, w = out_hw
    if image.shape[:2] == (h, w):
        return image.copy()
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_nearest(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` -> ``[H, W]`` nearest neighbour with half-pixel centres: src = floor((dst + 0.5) * h / H)."""
    h, w = mask.shape[:2]
    oh, ow = out_hw
    rows = np.minimum(((np.arange(oh) + 0.5) * (h / oh)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(ow) + 0.5) * (w / ow)).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def scale_crop_pad(
    image: np.ndarray,
    category_mask: np.ndarray | None,
    instance_mask: np.ndarray | None,
    out_size: int | tuple[int, int],
    jitter: float = 1.0,
    offset_frac: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
    pad_value: tuple[int, int, int] = PAD_RGB,
) -> Augmented:
    """Deterministic core of the augmentation.

    Args:
        image: ``[h, w, 3]`` uint8 RGB; masks ``[h, w]`` int (or None: returned as void/zeros).
        out_size: training canvas (H, W) or an int.
        jitter: scale factor on the target size (1 = letterbox).
        offset_frac: where to crop, in [0, 1) of the excess (h, w) when the scaled image is larger.
        flip: mirror left-right first.
    Returns:
        :class:`Augmented` on an ``[H, W]`` canvas.
    """
    oh, ow = _size2(out_size)
    h, w = image.shape[:2]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [h, w, 3] uint8 RGB, got {image.dtype} {image.shape}")
    if category_mask is None:
        category_mask = np.zeros((h, w), np.int32)
    if instance_mask is None:
        instance_mask = np.zeros((h, w), np.int32)
    if category_mask.shape != (h, w) or instance_mask.shape != (h, w):
        raise ValueError(
            f"masks {category_mask.shape}/{instance_mask.shape} do not match the image size {(h, w)}"
        )
    if flip:
        image, category_mask, instance_mask = image[:, ::-1], category_mask[:, ::-1], instance_mask[:, ::-1]
    target_h, target_w = round(jitter * oh), round(jitter * ow)
    scale = min(target_h / h, target_w / w)
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    img = resize_bilinear(np.ascontiguousarray(image), (sh, sw))
    cat = resize_nearest(category_mask, (sh, sw)).astype(np.int32)
    inst = resize_nearest(instance_mask, (sh, sw)).astype(np.int32)
    y0 = int(max(sh - oh, 0) * offset_frac[0])
    x0 = int(max(sw - ow, 0) * offset_frac[1])
    img, cat, inst = (
        img[y0 : y0 + oh, x0 : x0 + ow],
        cat[y0 : y0 + oh, x0 : x0 + ow],
        inst[y0 : y0 + oh, x0 : x0 + ow],
    )
    ch, cw = img.shape[:2]
    out_img = np.empty((oh, ow, 3), np.uint8)
    out_img[...] = np.asarray(pad_value, np.uint8)
    out_img[:ch, :cw] = img
    out_cat = np.full((oh, ow), PAD_CATEGORY, np.int32)
    out_cat[:ch, :cw] = cat
    out_inst = np.zeros((oh, ow), np.int32)
    out_inst[:ch, :cw] = inst
    pad = np.ones((oh, ow), np.uint8)
    pad[:ch, :cw] = 0
    return Augmented(out_img, out_cat, out_inst, pad, float(scale), (sh, sw))


def random_augment(
    image: np.ndarray,
    category_mask: np.ndarray,
    instance_mask: np.ndarray,
    out_size: int | tuple[int, int],
    rng: np.random.Generator,
    scale_min: float = 0.1,
    scale_max: float = 1.9,
    hflip: bool = True,
    pad_value: tuple[int, int, int] = PAD_RGB,
) -> Augmented:
    """Random flip (p=0.5), scale jitter ``U(scale_min, scale_max)``, random crop, pad (Model Garden recipe).

    With ``scale_min == scale_max == 1`` the crop offset is 0, which is exactly :func:`letterbox`.
    The random draws happen in a fixed order (flip, jitter, offset y, offset x), so a seeded ``rng`` is
    reproducible.
    """
    if not 0 < scale_min <= scale_max:
        raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
    flip = bool(rng.random() < 0.5)
    jitter = float(rng.uniform(scale_min, scale_max))
    offset = (float(rng.random()), float(rng.random()))
    if scale_min == scale_max == 1.0:
        offset = (0.0, 0.0)
    return scale_crop_pad(
        image, category_mask, instance_mask, out_size, jitter, offset, flip and hflip, pad_value
    )


def letterbox(
    image: np.ndarray, size: int | tuple[int, int], pad_value: tuple[int, int, int] = PAD_RGB
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Aspect-preserving resize into ``size`` (H, W), top-left, padded bottom/right with ``pad_value``.

    ``scale = min(H/h, W/w)``, resized to ``round((h, w) * scale)`` bilinearly (the runtime rule).
    Returns ``(canvas [H, W, 3] uint8, scale, (scaled_h, scaled_w))``.
    """
    out = scale_crop_pad(image, None, None, size, 1.0, (0.0, 0.0), False, pad_value)
    return out.image, out.scale, out.scaled_size
