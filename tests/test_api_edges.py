"""The Python API at its edges, from a review as a demanding user: your own interpreter loop decodes exactly like
the Segmenter, results pickle and compare safely, refused inputs leave no state behind, PIL images of any mode, a
LiveSegmenter nobody closed does not leak its worker."""

from __future__ import annotations

import gc
import pickle
import time

import numpy as np
import pytest
from maskconver.runtime.streams import SourceError


def _blocky(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(np.repeat(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), 16, 0), 16, 1)


@pytest.fixture(scope="module")
def seg(demo_model):
    from maskconver.runtime import Segmenter

    with Segmenter(demo_model, num_threads=1) as s:
        yield s


def test_own_interpreter_loop_with_decode_settings_equals_the_segmenter(demo_model, seg):
    """The README's recipe, verbatim apart from the image."""
    from ai_edge_litert.interpreter import Interpreter
    from maskconver.runtime import decode_panoptic, read_model_file
    from maskconver.runtime.preprocess import letterbox

    path = str(demo_model)
    mf = read_model_file(path)
    runner = Interpreter(model_path=path).get_signature_runner()
    for seed, (h, w) in enumerate([(96, 128), (160, 96), (48, 208)]):
        rgb = _blocky(h, w, seed)
        canvas, _, valid = letterbox(rgb, mf.info.input_size, mf.info.pad_value)
        out = runner(image=canvas[None])
        dec = decode_panoptic(
            out["heatmap"],
            out["center_embeddings"],
            out["mask_features"],
            **mf.decode_settings(),
            output_size=rgb.shape[:2],
            valid_size=valid,
        )
        want = seg.segment(rgb)
        assert np.array_equal(dec.category_mask, want.category_mask)
        assert np.array_equal(dec.instance_mask, want.instance_mask)
        assert dec.category_mask.dtype == want.category_mask.dtype  # uint8 both ("auto")
        assert [r[:4] for r in dec.segment_rows] == [
            (s.id, s.category_id, s.score, s.area) for s in want.segments
        ]
    settings = mf.decode_settings()
    assert settings["heatmap_quant"] is not None and settings["mask_head"] is mf.mask_head
    assert settings["thing_ids"].dtype == bool and settings["thing_ids"].shape == (mf.info.num_classes,)


@pytest.mark.parametrize("output", ["original", "canvas"])
def test_results_pickle_and_compare_by_identity(seg, output):
    rgb = _blocky(96, 128, 3)
    r = seg.segment(rgb, output=output)
    back = pickle.loads(pickle.dumps(r))
    assert np.array_equal(back.category_mask, r.category_mask) and back.segments == r.segments
    assert np.array_equal(back.image, r.image) and back.speed == r.speed
    again = seg.segment(rgb, output=output)
    assert (r == again) is False and r == r  # no "truth value of an array is ambiguous"


def test_negative_camera_index_is_refused_before_opencv(seg):
    with pytest.raises(SourceError, match="camera index -1 is negative"):
        seg.stream(-1)
    with pytest.raises(SourceError, match="camera index -2 is negative"):
        seg.stream(np.int64(-2))  # NumPy integers are camera indices too


def test_video_segmenter_refused_frame_keeps_its_timestamp(demo_model):
    from maskconver.runtime import VideoSegmenter

    with VideoSegmenter(demo_model) as video:
        with pytest.raises(ValueError, match="image is empty"):
            video.segment_for_video(np.zeros((0, 4, 3), np.uint8), 10.0)
        assert video.segment_for_video(_blocky(96, 128, 0), 10.0).segments  # 10 ms is still free
        with pytest.raises(ValueError, match="must increase"):
            video.segment_for_video(_blocky(96, 128, 0), 10.0)


def test_pil_images_of_any_mode_are_read_as_their_colours(seg):
    image_mod = pytest.importorskip("PIL.Image")
    from maskconver.runtime.preprocess import as_rgb_uint8

    rgb = _blocky(32, 48, 5)
    pil = image_mod.fromarray(rgb)
    for mode in ("P", "CMYK", "YCbCr", "LA", "1", "L", "RGBA", "RGB"):
        img = pil.convert(mode)
        assert np.array_equal(as_rgb_uint8(img), np.asarray(img.convert("RGB"))), mode
    palette = pil.convert("P")
    assert np.array_equal(
        seg.segment(palette).category_mask, seg.segment(np.asarray(palette.convert("RGB"))).category_mask
    )


def test_a_live_segmenter_nobody_closed_ends_its_worker(demo_model):
    from maskconver.runtime import LiveSegmenter, streams

    got = []
    live = LiveSegmenter(demo_model, lambda r, f, t: got.append(t))
    assert live.segment_async(_blocky(96, 128, 0), 1.0) and live.wait(60)
    thread = live._thread
    del live
    gc.collect()
    thread.join(timeout=10 * streams._LIVE_POLL_S)
    assert not thread.is_alive() and got == [1.0]


def test_a_live_segmenter_dropped_right_after_accepting_a_frame_still_runs_its_callback(demo_model):
    from maskconver.runtime import LiveSegmenter

    got = []
    for i in range(5):
        assert LiveSegmenter(demo_model, lambda r, f, t: got.append(t)).segment_async(
            _blocky(96, 128, i), 1.0
        )
    deadline = time.monotonic() + 60
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got == [1.0] * 5  # every accepted frame is processed, no reference kept by the caller


def test_a_live_segmenter_reads_pil_frames_as_their_colours(demo_model, seg):
    image_mod = pytest.importorskip("PIL.Image")
    from maskconver.runtime import LiveSegmenter

    palette = image_mod.fromarray(_blocky(96, 128, 7)).convert("P")
    got = []
    with LiveSegmenter(demo_model, lambda r, f, t: got.append((r, f))) as live:
        assert live.segment_async(palette, 1.0) and live.wait(60)
        assert live.segment_async(palette.convert("LA"), 2.0) and live.wait(60)  # 2 channels: converted too
    (first, frame), _ = got
    assert np.array_equal(frame, np.asarray(palette.convert("RGB")))
    assert np.array_equal(first.category_mask, seg.segment(palette).category_mask)


def test_grid_decode_refuses_logits_that_overflow_once_the_zero_point_is_applied():
    from maskconver.runtime import decode_panoptic

    rng = np.random.default_rng(1)
    c, d, h, w = 3, 8, 6, 6
    head = {
        "class_embeddings": np.ones((c, d), np.float32),
        "mlp_dense0_kernel": rng.normal(size=(d, d)).astype(np.float32),
        "mlp_dense0_bias": np.zeros(d, np.float32),
        "mlp_norm_gamma": np.ones(d, np.float32),
        "mlp_norm_beta": np.ones(d, np.float32),
        "mlp_dense1_kernel": np.full((d, d), 1e36, np.float32),  # embeddings near float32's limit
        "mlp_dense1_bias": np.zeros(d, np.float32),
    }
    heat = np.full((h, w, c), -9.0, np.float32)
    heat[2, 3, 1] = 5.0
    center = rng.normal(size=(h, w, d)).astype(np.float32)
    feats = np.zeros((h, w, d), np.int8)  # all codes 0 with zero point 100: only the zero-point term is left
    # the grid path checks the embeddings (with their zero-point column) first: that column overflows here
    with (
        np.errstate(all="ignore"),
        pytest.raises(ValueError, match="mask (logits|embeddings) .* (infinite|NaN)"),
    ):
        decode_panoptic(
            heat, center, feats, head, output_size=(48, 48), mask_quant=(1.0, 100.0), num_proposals=3,
            mask_resolution="grid",
        )  # fmt: skip
