"""MaskConver training targets (modelgarden-maskconver.md section 5.1) and batches."""

from __future__ import annotations

import numpy as np
import pytest
from maskconver.models.synthetic import SYNTHETIC_NUM_CLASSES, generate_synthetic_dataset
from maskconver.models.targets import (
    build_targets,
    gaussian_radius,
    gaussian_sigma,
    make_batch,
    normalize_image,
    scaled_min_stuff_area,
    stuff_center_region,
)

C = 11
ISTHING = np.array([False] + [True] * 6 + [False] * 4)  # synthetic taxonomy: 1..6 things, 7..10 stuff


@pytest.mark.parametrize(
    ("h", "w", "radius", "sigma"),
    [(10, 10, 2.733, 0.8333), (4, 4, 1.093, 0.5), (2, 3, 0.658, 0.16667), (40, 20, 7.36, 2.5)],
)
def test_radius_and_sigma_match_reference_table(h, w, radius, sigma):
    r = float(gaussian_radius(h, w, 0.7))
    assert r == pytest.approx(radius, abs=0.005)
    assert float(gaussian_sigma(r)) == pytest.approx(sigma, abs=1e-3)


def test_radius_uses_divide_by_two_quirk():
    # 10x10: r3 root of a = 4 iou = 2.8, b = -2 iou (h + w) = -28, c = (iou - 1) w h = -30, divided by 2;
    # the textbook (-b... ) / (2a) would give 0.976 instead.
    r3 = (-28 + np.sqrt(28**2 + 4 * 2.8 * 30)) / 2
    assert float(gaussian_radius(10, 10, 0.7)) == pytest.approx(r3)
    assert r3 / 2.8 == pytest.approx(0.976, abs=1e-3)


def test_negative_radius_floor_gives_sigma_one_sixth():
    assert float(gaussian_sigma(-0.3)) == pytest.approx(1 / 6)
    assert float(gaussian_sigma(0.0)) == pytest.approx(1 / 6)


def _empty(h=128, w=128):
    return np.zeros((h, w), np.int32), np.zeros((h, w), np.int32)


def test_single_thing_peak_placement_and_gaussian():
    cat, inst = _empty()
    cat[20:60, 40:80] = 3
    inst[20:60, 40:80] = 1
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=0)
    # bbox (20, 40, 59, 79): centre (39.5, 59.5) / 8 = (4.9375, 7.4375) -> peak (4, 7)
    assert t["heatmap"].shape == (16, 16, C)
    assert t["num_instances"] == 1
    assert t["box_indices"][0].tolist() == [4, 7]
    assert t["panoptic_classes"][:2].tolist() == [3, -1]
    assert t["heatmap"][4, 7, 3] == pytest.approx(1.0)
    sigma = float(gaussian_sigma(gaussian_radius(39 / 8, 39 / 8)))
    assert t["heatmap"][4, 8, 3] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-5)
    assert t["heatmap"][6, 9, 3] == pytest.approx(np.exp(-8 / (2 * sigma**2)), rel=1e-5)
    assert np.unravel_index(np.argmax(t["heatmap"]), t["heatmap"].shape) == (4, 7, 3)
    others = np.delete(t["heatmap"], 3, axis=-1)
    assert not others.any()
    np.testing.assert_array_equal(t["panoptic_masks"][..., 0], (inst == 1).astype(np.float32))
    assert (t["panoptic_masks"][..., 1:] == -1).all()
    assert t["mask_weights"].tolist() == [1.0] + [0.0] * 49
    assert not t["padding_mask"].any()


def test_heatmap_is_max_over_instances_of_one_class():
    cat, inst = _empty()
    cat[0:16, 0:16], inst[0:16, 0:16] = 1, 1
    cat[0:16, 24:40], inst[0:16, 24:40] = 1, 2
    t = build_targets(cat, inst, ISTHING, C)
    peaks = t["box_indices"][:2].tolist()
    assert peaks == [[0, 0], [0, 3]]
    sigma = float(gaussian_sigma(gaussian_radius(15 / 8, 15 / 8)))
    gy, gx = np.mgrid[0:16, 0:16]
    g1 = np.exp(-((gx - 0) ** 2 + gy**2) / (2 * sigma**2))
    g2 = np.exp(-((gx - 3) ** 2 + gy**2) / (2 * sigma**2))
    np.testing.assert_allclose(t["heatmap"][..., 1], np.maximum(g1, g2), rtol=1e-6, atol=1e-7)


def test_thing_class_is_majority_category_and_order_is_raster_first_appearance():
    cat, inst = _empty(64, 64)
    inst[40:50, 0:10] = 7  # appears first in raster order? no: row 40
    cat[40:50, 0:10] = 2
    inst[5:15, 30:40] = 9  # row 5: first
    cat[5:15, 30:40] = 4
    cat[5:6, 30:32] = 5  # minority pixels of another class
    t = build_targets(cat, inst, ISTHING, C)
    assert t["panoptic_classes"][:2].tolist() == [4, 2]


def test_stuff_centre_from_largest_component_mask_is_whole_class():
    cat, inst = _empty()
    cat[0:40, :] = 7  # large band: bbox (0, 0, 39, 127)
    cat[110:115, 0:5] = 7  # far away blob (> 61 px): a separate component
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=1024)
    assert t["num_instances"] == 1
    assert t["panoptic_classes"][0] == 7
    assert t["box_indices"][0].tolist() == [2, 7]  # (19.5/8, 63.5/8)
    np.testing.assert_array_equal(t["panoptic_masks"][..., 0], (cat == 7).astype(np.float32))


def test_stuff_dropped_under_area_threshold():
    cat, inst = _empty()
    cat[0:40, :] = 7  # 5120 px
    cat[100:106, 100:106] = 8  # 36 px
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=37)
    assert t["panoptic_classes"][:2].tolist() == [7, -1]
    assert not t["heatmap"][..., 8].any()
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=36)
    assert t["panoptic_classes"][:3].tolist() == [7, 8, -1]
    assert t["heatmap"][12, 12, 8] == 1.0  # bbox (100, 100, 105, 105): centre 102.5 / 8 -> 12


def test_stuff_area_is_class_pixels_not_dilated_area():
    cat, inst = _empty()
    cat[::4, ::4] = 9  # 1024 scattered pixels whose dilation covers everything
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=1024)
    assert t["num_instances"] == 1
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=1025)
    assert t["num_instances"] == 0
    assert not t["heatmap"].any()


def test_dilation_window_is_61_pixels():
    m = np.zeros((8, 200), bool)
    m[4, 40] = True
    m[4, 101] = True  # 61 apart: the dilated 61x61 squares touch -> one component
    assert stuff_center_region(m).sum() == 2
    m[4, 101] = False
    m[4, 102] = True  # 62 apart: a one-pixel gap -> two equal components, the tie goes to the first
    region = stuff_center_region(m)
    assert region.sum() == 1 and region[4, 40]
    m[4, 40] = False
    m[4, 5] = True  # a component clipped by the border is smaller: the other one wins
    region = stuff_center_region(m)
    assert region.sum() == 1 and region[4, 102]


def test_truncation_keeps_things_first():
    cat, inst = _empty()
    k = 0
    for y in range(0, 64, 8):
        for x in range(0, 128, 16):
            if k < 49:
                k += 1
                cat[y : y + 4, x : x + 4] = 1 + k % 6
                inst[y : y + 4, x : x + 4] = k
    cat[70:100, :] = 8  # stuff appearing first in raster order among stuff
    cat[100:128, :] = 10
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=100)
    assert t["num_instances"] == 50
    classes = t["panoptic_classes"]
    assert ISTHING[classes[:49]].all()
    assert classes[49] == 8  # the second stuff class (10) was truncated
    assert t["mask_weights"].sum() == 50
    t = build_targets(cat, inst, ISTHING, C, num_instances=40, min_stuff_area=100)
    assert t["num_instances"] == 40 and ISTHING[t["panoptic_classes"]].all()
    assert t["panoptic_masks"].shape == (128, 128, 40)


def test_padding_mask_and_masks_on_padding():
    cat, inst = _empty()
    cat[:, :] = 7
    cat[96:, :] = -1
    cat[:, 100:] = -1
    cat[10:30, 10:30], inst[10:30, 10:30] = 2, 1
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=0)
    np.testing.assert_array_equal(t["padding_mask"], (cat == -1).astype(np.float32))
    assert t["panoptic_classes"][:2].tolist() == [2, 7]
    stuff_mask = t["panoptic_masks"][..., 1]
    assert (stuff_mask[cat == -1] == 0).all()
    assert stuff_mask.sum() == (cat == 7).sum()
    explicit = np.zeros((128, 128), np.uint8)
    explicit[120:, :] = 1
    t2 = build_targets(cat, inst, ISTHING, C, min_stuff_area=0, padding_mask=explicit)
    np.testing.assert_array_equal(t2["padding_mask"], explicit.astype(np.float32))


def test_mask_slots_reconstruct_dense_masks_and_non_divisible_size():
    cat, inst = _empty(100, 60)
    cat[:50, :] = 7
    cat[50:, :] = 9
    cat[20:40, 10:30], inst[20:40, 10:30] = 5, 3
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=0, num_instances=5)
    assert t["heatmap"].shape == (13, 8, C)
    n = int(t["num_instances"])
    assert n == 3
    k = np.arange(5)
    rebuilt = np.where(k < n, t["mask_slots"][..., None] == k, -1).astype(np.float32)
    np.testing.assert_array_equal(rebuilt, t["panoptic_masks"])
    lean = build_targets(cat, inst, ISTHING, C, min_stuff_area=0, num_instances=5, dense_masks=False)
    assert "panoptic_masks" not in lean
    np.testing.assert_array_equal(lean["mask_slots"], t["mask_slots"])


def test_overlapping_masks_fall_back_to_per_slot():
    cat, inst = _empty(32, 32)
    cat[:, :] = 3  # thing category everywhere, but only part of it is an instance
    inst[0:8, 0:8] = 1
    cat[16:, :] = 8
    inst[16:20, 0:4] = 2  # an instance on stuff pixels (inconsistent input): overlaps the stuff mask
    t = build_targets(cat, inst, ISTHING, C, min_stuff_area=0)
    assert t["panoptic_classes"][:3].tolist() == [3, 8, 8]
    np.testing.assert_array_equal(t["panoptic_masks"][..., 1], (inst == 2).astype(np.float32))
    np.testing.assert_array_equal(t["panoptic_masks"][..., 2], (cat == 8).astype(np.float32))


def test_bad_inputs():
    cat, inst = _empty(16, 16)
    cat[0, 0] = 11
    with pytest.raises(ValueError, match="num_classes"):
        build_targets(cat, inst, ISTHING, C)
    with pytest.raises(ValueError, match="isthing_table"):
        build_targets(cat * 0, inst, ISTHING[:5], C)
    with pytest.raises(ValueError, match="same"):
        build_targets(cat, inst[:8], ISTHING, C)


def test_scaled_min_stuff_area():
    assert scaled_min_stuff_area(640) == pytest.approx(1024)
    assert scaled_min_stuff_area(128) == pytest.approx(40.96)
    assert scaled_min_stuff_area((256, 128)) == pytest.approx(81.92)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_targets")
    generate_synthetic_dataset(root, 6, seed=3, image_size=(96, 128), image_format="png")
    return root


def test_make_batch_shapes_and_determinism(synthetic_root):
    from maskconver.models.panoptic_dataset import PanopticDataset

    ds = PanopticDataset(synthetic_root)
    b1 = make_batch(ds, [0, 1, 2, 3], np.random.default_rng(5), 64, min_stuff_area=40)
    b2 = make_batch(ds, [0, 1, 2, 3], np.random.default_rng(5), 64, min_stuff_area=40)
    assert b1["image"].shape == (4, 64, 64, 3) and b1["image"].dtype == np.float32
    assert b1["heatmap"].shape == (4, 8, 8, SYNTHETIC_NUM_CLASSES)
    assert b1["panoptic_masks"].shape == (4, 64, 64, 50)
    assert b1["panoptic_classes"].shape == (4, 50) and b1["box_indices"].shape == (4, 50, 2)
    assert b1["num_instances"].shape == (4,) and b1["padding_mask"].shape == (4, 64, 64)
    for k in b1:
        np.testing.assert_array_equal(b1[k], b2[k])
    # padding pixels are the mean colour: ~0 after normalisation
    pad = b1["padding_mask"] > 0
    if pad.any():
        assert np.abs(b1["image"][pad]).max() < 0.02


def test_make_batch_without_augment_is_letterbox(synthetic_root):
    from maskconver.models.augment import letterbox
    from maskconver.models.panoptic_dataset import PanopticDataset

    ds = PanopticDataset(synthetic_root)
    b = make_batch(ds, [4], np.random.default_rng(0), 64, augment=False, mask_dtype=np.int8)
    canvas, scale, (sh, sw) = letterbox(ds[4].image, 64)
    assert (scale, sh, sw) == (0.5, 48, 64)
    np.testing.assert_allclose(b["image"][0], normalize_image(canvas), rtol=0, atol=1e-6)
    assert b["padding_mask"][0, 48:].all() and not b["padding_mask"][0, :48].any()
    assert b["panoptic_masks"].dtype == np.int8
    n = int(b["num_instances"][0])
    assert n >= 1 and (b["panoptic_masks"][0, ..., n:] == -1).all()
