"""Runtime API: preprocessing (letterbox, pixel formats) and ``Segmenter.segment`` on real TFLite / ONNX
models (the designed "red square" model of ``tests/runtime_test_models.py``, whose answer is known)."""

from __future__ import annotations

import os
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


# ---------------------------------------------------------------------------------------------------------
# Segmenter on real models

SQUARE_BOX = (48, 32, 96, 80)  # x0, y0, x1, y1 in a 96x128 image: on the 8-pixel grid after the 0.5 letterbox


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tensorflow")
    return rtm.build_test_models(tmp_path_factory.getbasetemp() / "red_square_models")


@pytest.fixture(scope="session")
def segmenters(models):
    from maskconver.runtime.segmenter import Segmenter

    return {name: Segmenter(path, num_threads=1) for name, path in models.items()}


def _check_square_result(r, shape=(96, 128), box=SQUARE_BOX):
    assert r.category_mask.shape == shape and r.instance_mask.shape == shape
    assert r.category_mask.dtype == r.instance_mask.dtype == np.uint8  # mask_dtype="auto": 3 classes
    assert [s.name for s in r.segments] == ["background", "square"]
    bg, sq = r.segments
    assert (bg.category_id, bg.isthing, bg.instance_id, bg.id) == (2, False, 0, 1)
    assert (sq.category_id, sq.isthing, sq.id) == (1, True, 2) and sq.instance_id > 0
    assert sq.bbox == box and bg.bbox == (0, 0, shape[1], shape[0])
    x0, y0, x1, y1 = box
    # bilinear upsampling of the 8x8 logits rounds the corners: the square loses a little area there
    assert 0.9 * (x1 - x0) * (y1 - y0) < sq.area < (x1 - x0) * (y1 - y0)
    my, mx = (y1 - y0) // 4, (x1 - x0) // 4
    assert (r.category_mask[y0 + my : y1 - my, x0:x1] == 1).all()
    assert (r.category_mask[y0:y1, x0 + mx : x1 - mx] == 1).all()
    assert bg.area + sq.area == shape[0] * shape[1]
    ids = r.panoptic_ids()
    assert (ids == 2).sum() == sq.area and (ids == 1).sum() == bg.area
    assert np.array_equal(ids == 2, (r.category_mask == 1) & (r.instance_mask == sq.instance_id))
    assert 0.98 < sq.score < 1.0 and 0.98 < bg.score < 1.0  # sigmoid(5)
    assert set(r.speed) == {"preprocess", "inference", "postprocess"}
    assert all(v >= 0.0 for v in r.speed.values())


@pytest.mark.parametrize("name", ["fp32", "int8", "onnx", "float_input"])
def test_segment_finds_the_square_at_original_resolution(segmenters, name):
    seg = segmenters[name]
    r = seg.segment(rtm.square_image(96, 128, SQUARE_BOX))
    _check_square_result(r)
    assert r.mode == "original" and r.image_size == (96, 128)
    assert "square" in r.summary() and "ms inference" in r.summary()


def test_backends_agree_and_int8_outputs_stay_quantised(segmenters):
    img = rtm.square_image(96, 128, SQUARE_BOX)
    masks = {n: s.segment(img).category_mask for n, s in segmenters.items()}
    assert all(np.array_equal(masks["fp32"], m) for m in masks.values())
    assert segmenters["float_input"].config["input_dtype"] == "float32"
    outs = segmenters["int8"].infer(np.zeros((1, 64, 64, 3), np.uint8))
    assert {k: v[0].dtype for k, v in outs.items()} == dict.fromkeys(outs, np.int8)
    assert all(q is not None and q[0] > 0 for _, q in outs.values())
    assert all(q is None for _, q in segmenters["fp32"].infer(np.zeros((1, 64, 64, 3), np.uint8)).values())


@pytest.mark.parametrize("name", ["int8", "onnx"])
def test_grid_masks_give_the_square_exactly(segmenters, name):
    """The square sits on the 8-pixel feature grid: the grid merge reproduces it exactly (no bilinear
    rounding of the corners), with the same segments as the full merge."""
    img = rtm.square_image(96, 128, SQUARE_BOX)
    seg = segmenters[name]
    full = seg.segment(img)
    r = seg.segment(img, mask_resolution="grid")
    x0, y0, x1, y1 = SQUARE_BOX
    want = np.full((96, 128), 2, np.int32)
    want[y0:y1, x0:x1] = 1
    assert np.array_equal(r.category_mask, want)
    assert [(s.name, s.bbox, s.instance_id) for s in r.segments] == [
        (s.name, s.bbox, s.instance_id) for s in full.segments
    ]
    assert [s.area for s in r.segments] == [96 * 128 - (x1 - x0) * (y1 - y0), (x1 - x0) * (y1 - y0)]
    with pytest.raises(ValueError, match="mask_resolution must be one of"):
        seg.segment(img, mask_resolution="half")


@pytest.mark.parametrize("hw", [(2, 2), (3, 900), (900, 3), (17, 5)])
@pytest.mark.parametrize("masks", ["grid", "grid2x", "grid4x"])
def test_grid_masks_on_tiny_and_extreme_images(segmenters, hw, masks):
    """End to end on outputs smaller than the grid and extreme aspect ratios: masks of the image's size whose
    segments' areas and boxes match the label maps (the labels themselves are checked against an independent
    reference in tests/test_grid_merge.py)."""
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    r = segmenters["int8"].segment(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), mask_resolution=masks)
    assert r.shape == hw
    ids = r.panoptic_ids()
    for s in r.segments:
        ys, xs = np.nonzero(ids == s.id)
        assert s.area == len(ys) > 0
        assert s.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_canvas_mode_is_the_640_reference_canvas(segmenters):
    r = segmenters["int8"].segment(rtm.square_image(96, 128, SQUARE_BOX), output="canvas")
    # letterbox scale 0.5 puts the square at (24, 16, 48, 40) of the 64x64 input; the canvas is 10x that
    _check_square_result(r, shape=(640, 640), box=(240, 160, 480, 400))
    assert r.mode == "canvas" and r.plot().shape == (640, 640, 3)


def test_no_square_two_squares_and_bgr(segmenters):
    seg = segmenters["fp32"]
    r = seg.segment(rtm.square_image(96, 128, None))
    assert [(s.name, s.area) for s in r.segments] == [("background", 96 * 128)]
    img = rtm.square_image(128, 128, (0, 0, 32, 32))
    img[80:128, 64:112] = rtm.RED
    r = seg.segment(img)
    # every proposal of this model has the same mask embedding, so both squares form one instance
    assert sorted((s.name, s.bbox) for s in r.segments) == [
        ("background", (0, 0, 128, 128)),
        ("square", (0, 0, 112, 128)),
    ]
    assert (r.category_mask[4:28, 4:28] == 1).all() and (r.category_mask[84:124, 68:108] == 1).all()
    assert (r.category_mask[40:72, :] == 2).all()
    bgr = img[:, :, ::-1]
    assert np.array_equal(seg.segment(bgr, color="bgr").panoptic_ids(), r.panoptic_ids())
    assert [s.name for s in seg.segment(bgr).segments] == ["background"]  # red read as blue


def test_segment_accepts_gray_float_and_paths(segmenters, tmp_path):
    seg = segmenters["fp32"]
    img = rtm.square_image(96, 128, SQUARE_BOX)
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    _check_square_result(seg.segment(path))
    _check_square_result(seg.segment(str(path)))
    _check_square_result(seg.segment(img.astype(np.float32) / 255.0))
    gray = seg.segment(np.full((50, 70), 128, np.uint8))
    assert [s.name for s in gray.segments] == ["background"] and gray.shape == (50, 70)


def test_coco_png_and_segments_info(segmenters, tmp_path):
    r = segmenters["int8"].segment(rtm.square_image(96, 128, SQUARE_BOX))
    rgb = r.to_coco_png()
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    c = rgb.astype(np.int64)
    ids = c[:, :, 0] + 256 * c[:, :, 1] + 65536 * c[:, :, 2]
    assert np.array_equal(ids, r.panoptic_ids())
    out = r.to_coco_png(tmp_path / "pred.png")
    assert out == tmp_path / "pred.png" and os.listdir(tmp_path) == ["pred.png"]  # no temp file left
    assert np.array_equal(cv2.imread(str(out))[:, :, ::-1], rgb)
    info = r.coco_segments_info()
    assert [(d["id"], d["category_id"], d["iscrowd"], d["isthing"]) for d in info] == [
        (1, 2, 0, 0),
        (2, 1, 0, 1),
    ]
    assert info[1]["bbox"] == [48, 32, 48, 48]
    assert [d["area"] for d in info] == [int((ids == d["id"]).sum()) for d in info]
    d = r.to_dict()
    assert d["mask_size"] == [96, 128] and [s["name"] for s in d["segments"]] == ["background", "square"]
    stages = ("peaks", "mask_head", "mask_logits", "merge", "segments", "label_maps", "result")
    assert tuple(d["decode_stages_ms"]) == stages and tuple(r.decode_stages) == stages
    assert all(v >= 0 for v in r.decode_stages.values())
    assert sum(r.decode_stages.values()) <= r.speed["postprocess"]  # the stages lie inside the decode


def test_overlay_draws_colours_and_rejects_wrong_size(segmenters):
    img = rtm.square_image(96, 128, SQUARE_BOX)
    r = segmenters["fp32"].segment(img)
    over = r.plot()
    assert over.shape == img.shape and over.dtype == np.uint8
    assert np.array_equal(r.overlay(img), over)
    inner = over[40:44, 56:60].reshape(-1, 3)  # inside the square, away from the label text
    from maskconver.runtime.overlay import segment_colours

    colours = segment_colours(r)
    assert (colours[0] == 0).all() and tuple(colours[1]) == rtm.categories()[2].color
    assert tuple(colours[2]) != rtm.categories()[1].color  # thing instances are shifted off the class colour
    assert np.abs(inner.astype(int) - (0.5 * np.array(rtm.RED) + 0.5 * colours[2])).max() <= 1
    assert (over[10, 10] != img[10, 10]).any()  # background tinted too
    plain = r.overlay(img, labels=False, alpha=0.0)
    edge = (plain == 255).all(axis=2)  # white boundaries only where the segment changes
    assert edge[32:80, 47].any() and not edge[5:20, 5:20].any()
    with pytest.raises(ValueError, match="masks are 128x96"):
        r.overlay(np.zeros((10, 10, 3), np.uint8))


def test_segmenter_properties_and_delegates(models, segmenters):
    from maskconver.runtime.segmenter import DelegateError, Segmenter

    seg = segmenters["int8"]
    assert seg.labels == ["void", "square", "background"]
    assert seg.info.input_size == (64, 64) and seg.delegate == "xnnpack"
    cfg = seg.config
    assert cfg["backend"] == "litert" and cfg["num_threads"] == 1 and cfg["quantization"] == "int8"
    with pytest.raises(DelegateError, match=r"gpu.*MASKCONVER_GPU_DELEGATE.*'xnnpack'"):
        Segmenter(models["int8"], delegate="gpu")
    fallback = Segmenter(models["int8"], delegate=("gpu", "nnapi", "cpu"))
    assert fallback.delegate == "cpu" and len(fallback.delegate_notes) == 2
    assert "'gpu' unavailable" in fallback.delegate_notes[0]
    img = rtm.square_image(96, 128, SQUARE_BOX)
    assert np.array_equal(fallback.segment(img).panoptic_ids(), seg.segment(img).panoptic_ids())
    with pytest.raises(ValueError, match="LiteRT only"):
        Segmenter(models["onnx"], delegate="gpu")
    with pytest.raises(ValueError, match="unknown delegate"):
        Segmenter(models["int8"], delegate="tpu")


def test_segmenter_bad_arguments(models, tmp_path):
    from maskconver.runtime.model_info import ModelFileError
    from maskconver.runtime.segmenter import Segmenter

    with pytest.raises(ModelFileError, match="no such model file"):
        Segmenter(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="backend='litert'"):
        Segmenter(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="backend must be"):
        Segmenter(models["int8"], backend="tensorrt")
    with pytest.raises(ValueError, match="cannot run it"):
        Segmenter(models["int8"], backend="onnx")
    with pytest.raises(ValueError, match="num_threads"):
        Segmenter(models["int8"], num_threads=0)
    with pytest.raises(ValueError, match="output must be"):
        Segmenter(models["int8"], output="full")
    with pytest.raises(ValueError, match="mask_dtype must be one of"):
        Segmenter(models["int8"], mask_dtype="float32")
    plain = tmp_path / "plain.tflite"
    from maskconver.converter.tflite_export import convert_tflite

    plain.write_bytes(convert_tflite(rtm.red_square_fn, rtm.INPUT_SIZE, "fp32"))
    with pytest.raises(ModelFileError, match="metadata"):
        Segmenter(plain)


def test_closed_and_concurrent_use_are_explained(models):
    import threading

    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(models["fp32"], num_threads=1)
    img = rtm.square_image(96, 128, SQUARE_BOX)
    errors: list[Exception] = []
    started, done = threading.Event(), threading.Event()

    def hog():
        with seg._busy:  # what a segment() running on another thread holds during inference
            started.set()
            done.wait(5.0)

    t = threading.Thread(target=hog)
    t.start()
    started.wait(5.0)
    try:
        seg.segment(img)
    except RuntimeError as e:
        errors.append(e)
    done.set()
    t.join()
    assert len(errors) == 1 and "one Segmenter per thread" in str(errors[0])
    _check_square_result(seg.segment(img))  # usable again afterwards
    with seg:
        pass
    assert seg.delegate == "xnnpack"
    with pytest.raises(RuntimeError, match="closed"):
        seg.segment(img)


DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_demo_model_results_are_self_consistent(suffix):
    """The shipped demo model (a real MaskConver network): whatever it predicts, the result's masks,
    segments, ids and COCO encoding must agree with each other, in both output modes."""
    from maskconver.runtime.segmenter import Segmenter

    files = sorted(DEMO.glob(f"*{suffix}"))
    if not files:
        pytest.skip(f"no {suffix} demo model in {DEMO}")
    seg = Segmenter(files[0], num_threads=2)
    rng = np.random.default_rng(3)
    img = np.repeat(np.repeat(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8), 16, 0), 16, 1)  # 240x320
    modes = [("original", "full", (240, 320)), ("canvas", "full", tuple(seg.info.canvas_size))]
    modes += [("original", "grid", (240, 320)), ("canvas", "grid", tuple(seg.info.canvas_size))]
    for mode, masks, shape in modes:
        r = seg.segment(img, output=mode, mask_resolution=masks)
        assert r.shape == shape
        ids = r.panoptic_ids()
        assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s.id for s in r.segments if s.area > 0)
        for s in r.segments:
            ys, xs = np.nonzero(ids == s.id)
            assert s.area == len(ys)
            assert s.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert (
                s.name == seg.labels[s.category_id] and s.isthing == seg.info.is_thing_table()[s.category_id]
            )
            assert (s.instance_id > 0) == s.isthing
            assert (r.category_mask[ids == s.id] == s.category_id).all()
        assert ((ids == 0) == (r.category_mask == 0)).all()
        rgb = r.to_coco_png().astype(np.int64)
        assert np.array_equal(rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2], ids)
        assert r.plot().shape == (*shape, 3)


def test_segmenter_keeps_one_decode_plan_per_output_geometry(segmenters):
    """The checks of a decode run once per (mode, mask resolution, image size): a second frame of the same
    size reuses the plan, another size or mode gets its own, and the result is decode_panoptic's."""
    from maskconver.runtime.decode import decode_panoptic

    seg = segmenters["int8"]
    seg._plans.clear()
    img = rtm.square_image(96, 128, SQUARE_BOX)
    first = seg.segment(img, mask_resolution="grid")
    (plan,) = seg._plans.values()
    again = seg.segment(img, mask_resolution="grid")
    assert list(seg._plans.values()) == [plan]
    assert np.array_equal(first.category_mask, again.category_mask)
    seg.segment(rtm.square_image(80, 128, SQUARE_BOX), mask_resolution="grid")
    seg.segment(img, output="canvas", mask_resolution="grid")
    seg.segment(rtm.square_image(80, 128, SQUARE_BOX), output="canvas", mask_resolution="grid")
    assert len(seg._plans) == 3  # canvas mode: one plan whatever the image size
    started = seg._start(img)
    outs = [started.outputs[n] for n in ("heatmap", "center_embeddings", "mask_features")]
    want = decode_panoptic(
        *(a for a, _ in outs),
        seg.model_file.mask_head,
        heatmap_quant=outs[0][1],
        center_quant=outs[1][1],
        mask_quant=outs[2][1],
        output_size=(96, 128),
        valid_size=started.valid,
        **seg._decode_kwargs,
        mask_resolution="grid",
    )
    np.testing.assert_array_equal(first.category_mask, want.category_mask)
    np.testing.assert_array_equal(first.instance_mask, want.instance_mask)


@pytest.mark.parametrize("masks", ["full", "grid"])
def test_mask_dtypes_hold_the_same_labels(models, segmenters, masks):
    """mask_dtype changes only the label maps' dtype: int32 (Model Garden's), uint16 and the default uint8
    give the same labels and segments."""
    from maskconver.runtime.segmenter import Segmenter

    img = rtm.square_image(96, 128, SQUARE_BOX)
    base = segmenters["int8"].segment(img, mask_resolution=masks)
    assert segmenters["int8"].mask_dtype == np.uint8 and segmenters["int8"].config["mask_dtype"] == "uint8"
    with pytest.raises(AttributeError):
        segmenters["int8"].mask_dtype = np.dtype(np.int32)  # fixed at construction
    head = segmenters["int8"].model_file.mask_head
    with pytest.raises(ValueError, match="read-only"):
        head["mlp_dense0_kernel"][0, 0] = 1.0  # cached plans fold these arrays: writes must not go stale
    for dt in ("int32", "uint16", np.int32):
        seg = Segmenter(models["int8"], num_threads=1, mask_resolution=masks, mask_dtype=dt)
        r = seg.segment(img)
        assert r.category_mask.dtype == r.instance_mask.dtype == np.dtype(dt)
        assert np.array_equal(r.category_mask, base.category_mask)
        assert np.array_equal(r.instance_mask, base.instance_mask)
        assert r.segments == base.segments
        assert np.array_equal(r.panoptic_ids(), base.panoptic_ids())


def test_segment_from_values_equals_the_dataclass():
    from maskconver.runtime.result import Segment

    args = dict(
        id=3, category_id=7, name="cat", isthing=True, score=0.5, area=12, bbox=(1, 2, 3, 4), instance_id=2
    )
    fast = Segment._from_values(*args.values())
    slow = Segment(**args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.to_dict() == slow.to_dict()
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.area = 5  # type: ignore[misc]
