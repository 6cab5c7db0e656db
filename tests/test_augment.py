"""Scale jitter / crop / pad / flip and the letterbox rule, on image and masks together."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskconver.models.augment import letterbox, random_augment, resize_nearest, scale_crop_pad
from maskconver.runtime.model_info import PAD_RGB

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def _scene(h=90, w=120):
    """Category mask with blocks, instance mask, and an image painted from the categories."""
    cat = np.zeros((h, w), np.int32)
    inst = np.zeros((h, w), np.int32)
    cat[: h // 2] = 3
    cat[h // 2 :] = 4
    cat[10:40, 10:50], inst[10:40, 10:50] = 1, 1
    cat[50:80, 70:110], inst[50:80, 70:110] = 2, 2
    return PALETTE[cat], cat, inst


@pytest.mark.parametrize(
    ("hw", "size", "scaled"),
    [((100, 200), 128, (64, 128)), ((480, 640), 256, (192, 256)), ((333, 500), 256, (170, 256))],
)
def test_letterbox_rule(hw, size, scaled):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    canvas, scale, got = letterbox(image, size)
    assert scale == pytest.approx(min(size / hw[0], size / hw[1]))
    assert got == scaled
    assert canvas.shape == (size, size, 3) and canvas.dtype == np.uint8
    expected = cv2.resize(image, (scaled[1], scaled[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(canvas[: scaled[0], : scaled[1]], expected)
    assert (canvas[scaled[0] :] == PAD_RGB).all() and (canvas[:, scaled[1] :] == PAD_RGB).all()


def test_letterbox_non_square_target_and_upscale():
    image = np.full((30, 40, 3), 7, np.uint8)
    canvas, scale, scaled = letterbox(image, (128, 96))
    assert canvas.shape == (128, 96, 3) and scale == pytest.approx(2.4) and scaled == (72, 96)
    assert (canvas[:72] == 7).all() and (canvas[72:] == PAD_RGB).all()


def test_resize_nearest_half_pixel_centres():
    row = np.arange(4)[None, :]
    assert resize_nearest(row, (1, 8)).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert resize_nearest(np.arange(8)[None, :], (1, 4)).tolist() == [[1, 3, 5, 7]]
    assert resize_nearest(np.arange(3)[None, :], (1, 2)).tolist() == [[0, 2]]


def test_masks_stay_aligned_with_image_under_random_augment():
    image, cat, inst = _scene()
    for seed in range(8):
        a = random_augment(image, cat, inst, 64, np.random.default_rng(seed), 0.3, 1.9)
        valid = a.padding_mask == 0
        assert (a.category_mask[~valid] == -1).all() and (a.instance_mask[~valid] == 0).all()
        assert (a.image[~valid] == PAD_RGB).all()
        assert (a.category_mask[valid] >= 1).all()
        # away from label edges the bilinear image equals the colour of the nearest-neighbour label
        c = a.category_mask
        interior = valid.copy()
        for dy, dx in [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]:
            interior &= np.roll(c, (dy, dx), axis=(0, 1)) == c
        interior[[0, -1]] = False
        interior[:, [0, -1]] = False
        assert interior.sum() > 100
        np.testing.assert_array_equal(a.image[interior], PALETTE[c[interior]])
        # instances keep their category
        assert set(np.unique(c[a.instance_mask == 1])) <= {1}
        assert set(np.unique(c[a.instance_mask == 2])) <= {2}


def test_flip_crop_and_pad_exact():
    image, cat, inst = _scene()
    flipped = scale_crop_pad(image, cat, inst, (90, 120), 1.0, (0, 0), flip=True)
    np.testing.assert_array_equal(flipped.image, image[:, ::-1])
    np.testing.assert_array_equal(flipped.category_mask, cat[:, ::-1])
    np.testing.assert_array_equal(flipped.instance_mask, inst[:, ::-1])
    # jitter 2 on a 45x60 canvas: scaled to 90x120 (identity), crop window at (0.5, 0.25) of the 45x60 excess
    crop = scale_crop_pad(image, cat, inst, (45, 60), 2.0, (0.5, 0.25))
    assert crop.scaled_size == (90, 120) and not crop.padding_mask.any()
    np.testing.assert_array_equal(crop.image, image[22:67, 15:75])
    np.testing.assert_array_equal(crop.category_mask, cat[22:67, 15:75])
    # jitter 0.5 on a 90x120 canvas: scaled to 45x60 at the top-left, the rest padding
    small = scale_crop_pad(image, cat, inst, (90, 120), 0.5)
    assert small.scaled_size == (45, 60) and small.scale == pytest.approx(0.5)
    assert small.padding_mask[:45, :60].sum() == 0 and small.padding_mask.sum() == 90 * 120 - 45 * 60
    np.testing.assert_array_equal(small.category_mask[:45, :60], cat[1::2, 1::2])
    assert (small.category_mask[45:] == -1).all() and (small.instance_mask[:, 60:] == 0).all()


def test_random_augment_is_reproducible_and_unit_scale_is_letterbox():
    image, cat, inst = _scene()
    a = random_augment(image, cat, inst, 64, np.random.default_rng(3))
    b = random_augment(image, cat, inst, 64, np.random.default_rng(3))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.category_mask, b.category_mask)
    plain = random_augment(image, cat, inst, 64, np.random.default_rng(3), 1.0, 1.0, hflip=False)
    np.testing.assert_array_equal(plain.image, letterbox(image, 64)[0])
    with pytest.raises(ValueError, match="scale_min"):
        random_augment(image, cat, inst, 64, np.random.default_rng(0), 2.0, 1.0)


def test_bad_inputs():
    image, cat, inst = _scene()
    with pytest.raises(ValueError, match="uint8"):
        scale_crop_pad(image.astype(np.float32), cat, inst, 64)
    with pytest.raises(ValueError, match="do not match"):
        scale_crop_pad(image, cat[:10], inst, 64)
