"""Image preprocessing shared by the runtime and the converter's calibration: pixel normalisation to RGB
uint8 and the reference letterbox.

Everything that feeds a maskconver model goes through :func:`letterbox`, so calibration images, host
inference and the Android demo see the same pixels. The rule is Model Garden's ``resize_and_crop_image``
(``shared/reference/modelgarden-maskconver.md`` section 3, serving input):

* ``scale = min(h / H, w / W)`` (float32, as TF computes it),
* scaled size ``round(H * scale), round(W * scale)`` (round half to even, like ``tf.round``), at least 1,
* bilinear resize (``cv2.INTER_LINEAR``: half-pixel centres, no antialias, as ``tf.image.resize``),
* the resized image at the top-left of an ``[h, w]`` canvas, bottom/right padded with the mean colour
  ``(124, 116, 104)`` -- zero after the in-graph ImageNet normalisation, as the reference pads zeros in
  normalised space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime.model_info import PAD_RGB, ModelInfo

COLOR_ORDERS = ("rgb", "bgr")


def as_rgb_uint8(image: Any, color: str = "rgb") -> np.ndarray:
    """Bring a user image to contiguous RGB uint8 ``[H, W, 3]``.

    Accepted inputs (anything ``np.asarray`` understands, e.g. a NumPy array or a PIL image):

    * shape ``[H, W, 3]``: RGB, or BGR when ``color="bgr"`` (OpenCV's ``imread``/``VideoCapture`` order);
      channels are reversed for BGR.
    * shape ``[H, W, 4]``: RGBA (BGRA with ``color="bgr"``); the alpha channel is dropped, not blended.
    * shape ``[H, W]`` or ``[H, W, 1]``: grayscale; the one channel is replicated to R, G and B
      (``color`` is irrelevant).
    * dtype ``uint8``: used as is. ``uint16`` (16-bit PNG/TIFF): shifted right by 8 bits (``x >> 8``).
      Other integer dtypes: used as is if every value lies in ``[0, 255]``.
      Floating dtypes: must lie in ``[0, 1]``; multiplied by 255 and rounded to nearest.
    * Non-contiguous views (crops, ``[..., ::-1]``) are fine; the result is always C-contiguous. A
      contiguous RGB uint8 input is returned as is (not copied).

    Raises:
        ValueError: empty or single-pixel-wide images, a batch or other wrong number of dimensions, an
            unsupported channel count or dtype, NaN/inf, or values outside the dtype's accepted range;
            the message names the problem and the fix.
    """
    arr = check_image_layout(image, color)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels == 1:
        return np.ascontiguousarray(np.broadcast_to(arr, (*arr.shape[:2], 3)))
    if channels == 3 and color == "rgb":
        return np.ascontiguousarray(arr)
    rgb = arr[:, :, 2::-1] if color == "bgr" else arr[:, :, :3]
    return np.ascontiguousarray(rgb)


# PIL image modes whose array is already pixels this module reads (others are converted to RGB first)
_PIL_ARRAY_MODES = frozenset({"RGB", "RGBA", "L", "I", "I;16", "I;16L", "I;16B", "F"})


def check_image_layout(image: Any, color: str = "rgb") -> np.ndarray:
    """The checks of :func:`as_rgb_uint8` that need no pass over the pixels (``color``, None, the number of
    dimensions, empty or tiny images, the channel count): ``image`` as an array (not copied), else ValueError.
    Value checks (range, NaN) and the conversion are left to :func:`as_rgb_uint8`."""
    if color not in COLOR_ORDERS:
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if image is None:
        raise ValueError("image is None (a failed cv2.imread returns None); check the file path")
    mode = getattr(image, "mode", None)
    if isinstance(mode, str) and mode not in _PIL_ARRAY_MODES and callable(getattr(image, "convert", None)):
        # a PIL palette / CMYK / YCbCr / LA / bilevel image: its colours, not codes
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        raise ValueError(
            f"image has shape {arr.shape}, a batch of one; pass the image itself, image[0] of shape [H, W, C]"
        )
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"image must be [H, W, 3] RGB, [H, W, 4] RGBA or [H, W] grayscale; got {arr.ndim} dimensions "
            f"(shape {arr.shape}); segment one image at a time"
        )
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape}); check that the image was read correctly")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(
            f"image is {arr.shape[0]}x{arr.shape[1]} pixels; at least 2x2 is needed (was the array "
            "transposed, e.g. [C, H, W]? pass [H, W, C])"
        )
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels not in (1, 3, 4):
        hint = " (channels-first? use image.transpose(1, 2, 0))" if arr.shape[0] in (1, 3, 4) else ""
        raise ValueError(
            f"image has {channels} channels (shape {arr.shape}); expected 1 (gray), 3 (RGB) or 4 (RGBA){hint}"
        )
    if arr.dtype == np.bool_:
        raise ValueError("image is boolean; pass a uint8 image (a mask? use mask.astype(np.uint8) * 255)")
    if arr.dtype.kind not in "uif":
        raise ValueError(f"image dtype {arr.dtype} is not supported; pass uint8 RGB [H, W, 3]")
    return arr


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any accepted dtype -> uint8 with the same shape (see :func:`as_rgb_uint8`)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.bool_:
        raise ValueError("image is boolean; pass a uint8 image (a mask? use mask.astype(np.uint8) * 255)")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"image has dtype {arr.dtype} with values in [{lo}, {hi}]; pass uint8 in [0, 255] "
                "(or uint16, which is scaled down by 256)"
            )
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image contains NaN or infinite values; pass finite pixel values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float image has values in [{lo:g}, {hi:g}]; float images must lie in [0, 1]. For 0..255 "
                "floats pass image.astype(np.uint8); for normalised images undo the normalisation first"
            )
        return np.rint(arr.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    raise ValueError(f"image dtype {arr.dtype} is not supported; pass uint8 RGB [H, W, 3]")


def letterbox_geometry(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """``(H, W)`` image into an ``(h, w)`` canvas -> ``(scale, (round(H*scale), round(W*scale)))``.

    ``scale = min(h/H, w/W)`` and the products are computed in float32 and rounded half to even, exactly
    as Model Garden's ``resize_and_crop_image``; each side is at least 1 pixel.
    """
    image_hw = np.asarray(image_size, dtype=np.float32)
    size_hw = np.asarray(size, dtype=np.float32)
    scale = np.float32(np.min(size_hw / image_hw))
    scaled = np.round(image_hw * scale)
    valid = (max(int(scaled[0]), 1), max(int(scaled[1]), 1))
    return float(scale), valid


def letterbox(
    image: np.ndarray, size: tuple[int, int], pad_value: tuple[int, int, int] = PAD_RGB
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Aspect-preserving resize to the top-left of a padded canvas (the reference rule, see module doc).

    Args:
        image: uint8 ``[H, W, 3]`` (use :func:`as_rgb_uint8` first for other formats).
        size: canvas ``(h, w)``, the model input size.
        pad_value: colour of the bottom/right padding, default the mean colour ``(124, 116, 104)``.
    Returns:
        ``(canvas uint8 [h, w, 3], scale, valid_size)`` with ``valid_size = (round(H*scale),
        round(W*scale))`` the region of the canvas holding the image (rows ``:valid_size[0]``, columns
        ``:valid_size[1]``).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"letterbox expects a uint8 [H, W, 3] image, got {desc}; convert with as_rgb_uint8()"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"letterbox got an empty image of shape {image.shape}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"letterbox size must be positive (h, w), got {tuple(size)}")
    scale, (sh, sw) = letterbox_geometry(image.shape[:2], (h, w))
    if (sh, sw) == image.shape[:2]:
        resized = image
    else:
        resized = cv2.resize(np.ascontiguousarray(image), (sw, sh), interpolation=cv2.INTER_LINEAR)
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:sh, :sw] = resized
    canvas[sh:, :] = pad_value
    canvas[:sh, sw:] = pad_value
    return canvas, scale, (sh, sw)


def model_input(canvas: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Letterboxed canvas uint8 ``[h, w, 3]`` -> the model's input tensor ``[1, h, w, 3]``.

    uint8 models (``info.input_dtype == "uint8"``) take the raw pixels (normalisation is in the graph);
    ``"float32"`` models take ``(x - info.mean) / info.std``.
    """
    if info.input_dtype == "uint8":
        return canvas[None]
    if info.input_dtype == "float32":
        mean = np.asarray(info.mean, dtype=np.float32)
        inv_std = np.float32(1.0) / np.asarray(info.std, dtype=np.float32)
        return ((canvas.astype(np.float32) - mean) * inv_std)[None]
    raise ValueError(f"model input dtype {info.input_dtype!r} is not supported; re-convert the model")


def preprocess(
    image: Any, info: ModelInfo, color: str = "rgb"
) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """User image -> ``(rgb uint8 [H, W, 3], model input [1, h, w, 3], scale, valid_size)``."""
    rgb = as_rgb_uint8(image, color)
    canvas, scale, valid = letterbox(rgb, tuple(info.input_size), tuple(info.pad_value))
    return rgb, model_input(canvas, info), scale, valid


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]`` (16-bit files are scaled to 8 bits, alpha dropped), turned
    upright by its EXIF orientation as phone photos need (the same pixels ``cv2.imread`` gives, but a truncated
    file is refused instead of half-decoded).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the path is a folder, or the file exists but OpenCV cannot decode it as an image.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not an image file; pass an image file")
    if not p.is_file():
        raise FileNotFoundError(f"image file {p} does not exist; check the path")
    data = np.fromfile(p, dtype=np.uint8)
    # any depth (16-bit stays 16-bit), any colour (gray stays gray; alpha, dropped anyway, is not read);
    # without IMREAD_UNCHANGED OpenCV applies the EXIF orientation
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    if img is None:
        raise ValueError(
            f"cannot decode {p} as an image (corrupt, empty or unsupported format); re-save it as PNG/JPEG"
        )
    return as_rgb_uint8(img, color="bgr")
