"""MaskConver training targets in NumPy (Model Garden ``dataloaders/panoptic_maskrcnn_input.py``), and batches.

:func:`build_targets` turns a category mask and an instance mask on the training canvas into the labels of
``modelgarden-maskconver.md`` section 5.1:

* things: one entry per instance id > 0 (first-appearance order in raster scan, as ``tf.unique``), class =
  majority category inside the instance, mask = the instance;
* stuff: one entry per stuff category present (first-appearance order): the class mask is dilated by three
  21x21 max-pools, the largest 4-connected component of the dilation is intersected with the class mask,
  and if that intersection has fewer than ``min_stuff_area`` pixels the class gets no target at all;
  otherwise its bbox gives the centre and the **whole class mask** is the mask target;
* things first, then stuff, truncated to ``num_instances`` (so stuff is dropped first);
* centre = bbox centre / stride (inclusive pixel bbox), peak at its floor; CenterNet gaussian of the
  ODAPI radius (with its divide-by-2 quirk) at ``gaussian_iou``; the heatmap is the max over instances.

Thresholds are in pixels of the training canvas. Model Garden uses 1024 px and 21x21 pools for 256- and
640-pixel inputs alike; :func:`scaled_min_stuff_area` gives the area-proportional value for other sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from maskconver.models.augment import random_augment, scale_crop_pad
from maskconver.runtime.model_info import MEAN_RGB, STD_RGB

TARGET_KEYS = (
    "heatmap",
    "panoptic_classes",
    "panoptic_masks",
    "box_indices",
    "mask_weights",
    "num_instances",
    "padding_mask",
)


def gaussian_radius(box_h: np.ndarray | float, box_w: np.ndarray | float, min_overlap: float = 0.7):
    """CenterNet radius (ODAPI ``max_distance_for_overlap``): the smallest of three quadratic roots.

    Each root is ``(b + sqrt(b^2 - 4ac)) / 2``, i.e. divided by 2 and not by 2a: that is the reference
    implementation's quirk, reproduced on purpose. Sizes are in heatmap (stride) units; works elementwise.
    """
    h = np.asarray(box_h, np.float64)
    w = np.asarray(box_w, np.float64)
    iou = float(min_overlap)
    b1 = h + w
    c1 = w * h * (1 - iou) / (1 + iou)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - iou) * w * h
    r2 = (b2 + np.sqrt(b2**2 - 4 * 4 * c2)) / 2
    a3 = 4 * iou
    b3 = -2 * iou * (h + w)
    c3 = (iou - 1) * w * h
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def gaussian_sigma(radius: np.ndarray | float) -> np.ndarray:
    """``sigma = (2 * max(floor(radius), 0) + 1) / 6`` (the diameter of the integer radius over 6)."""
    return (2 * np.maximum(np.floor(np.asarray(radius, np.float64)), 0) + 1) / 6


def scaled_min_stuff_area(
    input_size: int | tuple[int, int], reference_size: int = 640, reference_area: float = 1024.0
) -> float:
    """``reference_area`` px at ``reference_size``^2, scaled to the same fraction of ``input_size``.

    Model Garden's 1024 px suit its 640 input (0.25 % of the canvas); at 128x128 this gives ~41 px.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int | np.integer) else input_size
    return float(reference_area) * (int(h) * int(w)) / float(reference_size * reference_size)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive ``(ymin, xmin, ymax, xmax)`` of a non-empty ``[H, W]`` bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def _first_appearance_unique(values: np.ndarray) -> np.ndarray:
    """Unique values of a ``[N]`` array in order of first occurrence (``tf.unique`` order)."""
    uniq, first = np.unique(values, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


def stuff_center_region(
    class_mask: np.ndarray, dilation_size: int = 21, dilation_iterations: int = 3
) -> np.ndarray:
    """The part of ``class_mask`` [H, W] bool inside the largest 4-connected component of its dilation.

    The dilation is ``dilation_iterations`` successive ``dilation_size`` square max-pools with SAME padding
    that ignores the border (Model Garden: 3 x 21x21). Ties between equally large components go to the one
    with the lowest label (the first in raster order). Returns ``[H, W]`` bool.
    """
    m = class_mask.astype(np.uint8)
    kernel = np.ones((dilation_size, dilation_size), np.uint8)
    dilated = cv2.dilate(m, kernel, iterations=dilation_iterations) if dilation_size > 1 else m
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dilated, connectivity=4)
    if n <= 1:
        return np.zeros_like(class_mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    return (labels == best) & class_mask.astype(bool)


def build_targets(
    category_mask: np.ndarray,
    instance_mask: np.ndarray,
    isthing_table: Sequence[bool] | np.ndarray,
    num_classes: int,
    num_instances: int = 50,
    stride: int = 8,
    gaussian_iou: float = 0.7,
    min_stuff_area: float = 1024.0,
    padding_mask: np.ndarray | None = None,
    *,
    stuff_dilation_size: int = 21,
    mask_dtype: Any = np.float32,
    masks_out: np.ndarray | None = None,
    dense_masks: bool = True,
) -> dict[str, np.ndarray]:
    """MaskConver labels for one image on its ``[H, W]`` training canvas.

    Args:
        category_mask: ``[H, W]`` int, category id per pixel; 0 = void, -1 = padding (outside the image).
        instance_mask: ``[H, W]`` int, > 0 for thing instances, 0 for stuff/void/padding.
        isthing_table: ``[num_classes]`` bool, True for thing ids (void and stuff False).
        num_classes: heatmap channels C; every category id must be < C.
        min_stuff_area: pixels; a stuff class whose centre region is smaller gets no target.
        padding_mask: ``[H, W]``, 1 on padding; default ``category_mask == -1``.
        masks_out: optional preallocated ``[H, W, K]`` array to write ``panoptic_masks`` into (batching).
        dense_masks: False skips ``panoptic_masks`` (use ``mask_slots`` to build them on the device).
    Returns:
        ``heatmap`` [ceil(H/s), ceil(W/s), C] float32, ``panoptic_classes`` [K] int32 (-1 pad),
        ``panoptic_masks`` [H, W, K] (1/0, -1 pad; ``mask_dtype``), ``box_indices`` [K, 2] int32 (y, x),
        ``mask_weights`` [K] float32, ``num_instances`` int32 scalar, ``padding_mask`` [H, W] float32, and
        ``mask_slots`` [H, W] int32: the slot k whose mask holds the pixel, -1 for none. Masks never overlap
        for consistent inputs, so ``panoptic_masks[..., k] == where(k < num_instances, mask_slots == k, -1)``.
    """
    cat = np.asarray(category_mask)
    inst = np.asarray(instance_mask)
    if cat.ndim != 2 or cat.shape != inst.shape:
        raise ValueError(f"category_mask {cat.shape} and instance_mask {inst.shape} must be the same [H, W]")
    isthing = np.asarray(isthing_table, bool)
    if isthing.shape != (num_classes,):
        raise ValueError(f"isthing_table has shape {isthing.shape}; expected ({num_classes},) = num_classes")
    if cat.size and int(cat.max()) >= num_classes:
        raise ValueError(
            f"category id {int(cat.max())} >= num_classes {num_classes}; raise num_classes or remap the ids"
        )
    H, W = cat.shape
    K = int(num_instances)
    pad = (cat == -1) if padding_mask is None else np.asarray(padding_mask).astype(bool)

    classes: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    masks: list[np.ndarray] = []

    flat_inst = inst.reshape(-1)
    for iid in _first_appearance_unique(flat_inst).tolist():
        if iid <= 0:
            continue
        m = inst == iid
        counts = np.bincount(cat[m & (cat >= 0)], minlength=1)
        classes.append(int(np.argmax(counts)))
        boxes.append(_bbox(m))
        masks.append(m)
    for c in _first_appearance_unique(cat.reshape(-1)).tolist():
        if c <= 0 or isthing[c]:
            continue
        class_mask = cat == c
        region = stuff_center_region(class_mask, stuff_dilation_size)
        if region.sum() < min_stuff_area:
            continue
        classes.append(int(c))
        boxes.append(_bbox(region))
        masks.append(class_mask)
    classes, boxes, masks = classes[:K], boxes[:K], masks[:K]
    n = len(classes)

    hh, hw = -(-H // stride), -(-W // stride)
    heatmap = np.zeros((hh, hw, num_classes), np.float32)
    out_classes = np.full(K, -1, np.int32)
    out_boxes = np.zeros((K, 2), np.int32)
    if not dense_masks:
        out_masks = None
    elif masks_out is None:
        out_masks = np.empty((H, W, K), mask_dtype)
    elif masks_out.shape != (H, W, K):
        raise ValueError(f"masks_out has shape {masks_out.shape}; expected {(H, W, K)}")
    else:
        out_masks = masks_out
    # Slots are disjoint (a pixel has one instance or one stuff class), so one slot map fills every mask
    # in a single contiguous pass; overlapping masks (inconsistent inputs) fall back to one slot at a time.
    slot_map = np.full((H, W), -1, np.int32)
    disjoint = True
    for k, m in enumerate(masks):
        if disjoint and (slot_map[m] >= 0).any():
            disjoint = False
        slot_map[m] = k
    if out_masks is None:
        pass
    elif disjoint:
        table = np.full((n + 1, K), -1, out_masks.dtype)  # row 0: pixel in no slot, row k+1: in slot k
        table[:, :n] = np.eye(n + 1, n, k=-1, dtype=out_masks.dtype)
        np.take(table, slot_map + 1, axis=0, out=out_masks)
    else:
        out_masks[:, :, n:] = -1
        for k, m in enumerate(masks):
            out_masks[:, :, k] = m
    if n:
        b = np.asarray(boxes, np.float64) / stride  # [n, 4] ymin, xmin, ymax, xmax in heatmap units
        yc, xc = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        sigma = gaussian_sigma(gaussian_radius(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], gaussian_iou))
        py, px = np.floor(yc).astype(np.int32), np.floor(xc).astype(np.int32)
        gy = np.arange(hh, dtype=np.float64)[:, None]
        gx = np.arange(hw, dtype=np.float64)[None, :]
        for k in range(n):
            g = np.exp(-((gx - px[k]) ** 2 + (gy - py[k]) ** 2) / (2 * sigma[k] ** 2)).astype(np.float32)
            np.maximum(heatmap[:, :, classes[k]], g, out=heatmap[:, :, classes[k]])
        out_classes[:n] = classes
        out_boxes[:n, 0], out_boxes[:n, 1] = py, px
    out = {
        "heatmap": heatmap,
        "panoptic_classes": out_classes,
        "box_indices": out_boxes,
        "mask_weights": (out_classes >= 0).astype(np.float32),
        "num_instances": np.int32(n),
        "padding_mask": pad.astype(np.float32),
        "mask_slots": slot_map,
    }
    if out_masks is not None:
        out["panoptic_masks"] = out_masks
    return out


def normalize_image(image: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB -> float32 ``(x - MEAN_RGB) / STD_RGB`` (ImageNet statistics on 0..255)."""
    return (image.astype(np.float32) - np.asarray(MEAN_RGB, np.float32)) / np.asarray(STD_RGB, np.float32)


def make_batch(
    dataset: Any,
    indices: Sequence[int],
    rng: np.random.Generator,
    train_size: int | tuple[int, int],
    augment: bool = True,
    *,
    isthing_table: Sequence[bool] | np.ndarray | None = None,
    num_classes: int | None = None,
    num_instances: int = 50,
    stride: int = 8,
    gaussian_iou: float = 0.7,
    min_stuff_area: float = 1024.0,
    stuff_dilation_size: int = 21,
    scale_min: float = 0.1,
    scale_max: float = 1.9,
    hflip: bool = True,
    mask_dtype: Any = np.float32,
    dense_masks: bool = True,
) -> dict[str, np.ndarray]:
    """A stacked training (or eval) batch: augmentation + targets for ``dataset[i]`` for ``i`` in ``indices``.

    ``dataset`` is a :class:`~maskconver.models.panoptic_dataset.PanopticDataset` (or any sequence of
    samples with ``image``, ``category_mask``, ``instance_mask``). ``isthing_table``/``num_classes``
    default to ``dataset.isthing_table()``/``dataset.num_classes``. With ``augment=False`` each image is
    letterboxed (no flip, no jitter), which is also Model Garden's eval preprocessing. ``mask_dtype``
    ``np.int8`` quarters the size of ``panoptic_masks`` (values -1/0/1; cast to float in the trainer);
    ``dense_masks=False`` leaves ``panoptic_masks`` out altogether (build it on the device from
    ``mask_slots``, see :func:`build_targets`): at 256x256 the dense float32 masks are 13 MB per image.

    Returns ``image`` [B, H, W, 3] float32 normalised, every key of :func:`build_targets` with a leading B
    axis, and ``category_mask``/``instance_mask`` [B, H, W] int32 (the ground truth on the canvas).
    """
    if num_classes is None:
        num_classes = int(dataset.num_classes)
    if isthing_table is None:
        isthing_table = dataset.isthing_table(num_classes)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("make_batch needs at least one index")
    H, W = (train_size, train_size) if isinstance(train_size, int | np.integer) else tuple(train_size)
    all_masks = (
        np.empty((len(indices), int(H), int(W), int(num_instances)), mask_dtype) if dense_masks else None
    )
    rows: list[dict[str, np.ndarray]] = []
    for b, i in enumerate(indices):
        s = dataset[i]
        if augment:
            a = random_augment(
                s.image, s.category_mask, s.instance_mask, train_size, rng, scale_min, scale_max, hflip
            )
        else:
            a = scale_crop_pad(s.image, s.category_mask, s.instance_mask, train_size)
        t = build_targets(
            a.category_mask,
            a.instance_mask,
            isthing_table,
            num_classes,
            num_instances,
            stride,
            gaussian_iou,
            min_stuff_area,
            a.padding_mask,
            stuff_dilation_size=stuff_dilation_size,
            masks_out=None if all_masks is None else all_masks[b],
            dense_masks=dense_masks,
        )
        t.pop("panoptic_masks", None)
        t["image"] = normalize_image(a.image)
        t["category_mask"] = a.category_mask
        t["instance_mask"] = a.instance_mask
        rows.append(t)
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    if all_masks is not None:
        batch["panoptic_masks"] = all_masks
    return batch
