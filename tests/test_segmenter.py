"""Runtime API: preprocessing (letterbox, pixel formats) and ``Segmenter.segment`` on real TFLite / ONNX
models (the designed "red square" model of ``tests/runtime_test_models.py``, whose answer is known)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from maskconver.runtime.model_info import PAD_RGB
from maskconver.runtime.preprocess import as_rgb_uint8, letterbox, letterbox_geometry, read_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_test_models as rtm  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# letterbox


def _tf_resize_and_crop_geometry(hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Model Garden's resize_and_crop_image size rule, computed with TF ops."""
    import tensorflow as tf

    image_size = tf.cast(tf.constant(hw), tf.float32)
    desired = tf.cast(tf.constant(size), tf.float32)
    scale = tf.minimum(desired[0] / image_size[0], desired[1] / image_size[1])
    scaled = tf.round(image_size * scale)
    return int(scaled[0]), int(scaled[1])


@pytest.mark.parametrize(
    "hw,size",
    [
        ((480, 640), (256, 256)),
        ((640, 480), (256, 256)),
        ((333, 517), (640, 640)),
        ((1080, 1920), (256, 256)),
        ((100, 100), (256, 256)),
        ((7, 1001), (256, 256)),
        ((250, 250), (640, 640)),
        ((375, 500), (640, 640)),
        ((64, 48), (64, 96)),
    ],
)
def test_letterbox_geometry_matches_tensorflow_rule(hw, size):
    scale, valid = letterbox_geometry(hw, size)
    assert valid == _tf_resize_and_crop_geometry(hw, size)
    assert scale == pytest.approx(min(size[0] / hw[0], size[1] / hw[1]), rel=1e-6)
    assert valid[0] <= size[0] and valid[1] <= size[1]


def test_letterbox_clamps_tiny_side_to_one_pixel():
    _, valid = letterbox_geometry((2, 1000), (64, 64))
    assert valid == (1, 64)  # round(2 * 0.064) = 0 -> 1


def test_letterbox_pixels_match_tf_bilinear_and_pad_with_mean_colour():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    canvas, scale, (vh, vw) = letterbox(image, (64, 80))
    assert canvas.shape == (64, 80, 3) and canvas.dtype == np.uint8
    assert (vh, vw) == (45, 80) and scale == pytest.approx(0.5)
    ref = tf.image.resize(tf.constant(image, tf.float32), (vh, vw), method="bilinear").numpy()
    diff = np.abs(canvas[:vh, :vw].astype(np.float32) - ref)
    assert diff.max() <= 1.0  # cv2's fixed-point bilinear vs TF float bilinear
    assert (canvas[vh:] == np.array(PAD_RGB, np.uint8)).all()
    custom, _, _ = letterbox(image, (64, 80), pad_value=(1, 2, 3))
    assert (custom[vh:] == (1, 2, 3)).all() and np.array_equal(custom[:vh], canvas[:vh])


def test_letterbox_same_size_is_identity_and_right_padding():
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    canvas, scale, valid = letterbox(image, (8, 8))
    assert np.array_equal(canvas, image) and scale == 1.0 and valid == (8, 8)
    tall = np.zeros((16, 8, 3), np.uint8)
    canvas, _, valid = letterbox(tall, (8, 8))
    assert valid == (8, 4)
    assert (canvas[:, :4] == 0).all() and (canvas[:, 4:] == PAD_RGB).all()


def test_letterbox_rejects_non_uint8_rgb():
    with pytest.raises(ValueError, match="as_rgb_uint8"):
        letterbox(np.zeros((8, 8), np.uint8), (4, 4))
    with pytest.raises(ValueError, match="as_rgb_uint8"):
        letterbox(np.zeros((8, 8, 3), np.float32), (4, 4))


# ---------------------------------------------------------------------------------------------------------
# pixel formats


def test_as_rgb_uint8_conversions():
    rgb = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert as_rgb_uint8(rgb) is rgb  # contiguous RGB uint8: no copy
    assert np.array_equal(as_rgb_uint8(rgb[:, :, ::-1], color="bgr"), rgb)
    gray = rgb[:, :, 0]
    out = as_rgb_uint8(gray)
    assert out.shape == (5, 6, 3) and all(np.array_equal(out[:, :, c], gray) for c in range(3))
    assert np.array_equal(as_rgb_uint8(gray[:, :, None]), out)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(as_rgb_uint8(rgba), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.zeros((5, 6, 1), np.uint8)], axis=2)
    assert np.array_equal(as_rgb_uint8(bgra, color="bgr"), rgb)
    u16 = rgb.astype(np.uint16) * 256 + 255
    assert np.array_equal(as_rgb_uint8(u16), rgb)
    f = rgb.astype(np.float64) / 255.0
    assert np.array_equal(as_rgb_uint8(f), rgb)
    assert as_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0] == 128  # rint(127.5)
    assert np.array_equal(as_rgb_uint8(rgb.astype(np.int64)), rgb)
    big = np.zeros((10, 12, 3), np.uint8)
    big[::2, ::3] = rgb[:5, :4]
    view = big[::2, ::3]
    assert not view.flags.c_contiguous
    out = as_rgb_uint8(view)
    assert out.flags.c_contiguous and np.array_equal(out, rgb[:5, :4])


@pytest.mark.parametrize(
    "image,match",
    [
        (None, "None"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "at least 2x2"),
        (np.zeros((1, 8, 8, 3), np.uint8), r"image\[0\]"),
        (np.zeros((8,), np.uint8), "dimensions"),
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((8, 8, 5), np.uint8), "5 channels"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 3), 200.0, np.float32), r"\[0, 1\]"),
        (np.full((4, 4, 3), 300, np.int32), r"\[0, 255\]"),
        (np.zeros((4, 4, 3), bool), "boolean"),
        (np.zeros((4, 4, 3), np.complex64), "not supported"),
    ],
)
def test_as_rgb_uint8_rejects_bad_images_with_a_fix(image, match):
    with pytest.raises(ValueError, match=match):
        as_rgb_uint8(image)


def test_as_rgb_uint8_rejects_unknown_colour_order():
    with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
        as_rgb_uint8(np.zeros((4, 4, 3), np.uint8), color="hsv")


def test_read_image_returns_rgb(tmp_path):
    rgb = rtm.square_image(20, 30, (5, 5, 15, 12))
    path = tmp_path / "img.png"
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    assert np.array_equal(read_image(path), rgb)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode"):
        read_image(tmp_path / "bad.png")
