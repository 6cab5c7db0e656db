"""Streaming API on a real video written with OpenCV (a red square moving over gray) and the real
red-square TFLite model: frame order, timestamps, stale-frame dropping, stride, VIDEO / LIVE_STREAM modes,
broken and unreadable sources."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_test_models as rtm  # noqa: E402
from maskconver.runtime.streams import LiveSegmenter, SourceError, VideoSegmenter, open_source  # noqa: E402

NUM_FRAMES = 36
SIZE = 128


def square_x(index: int) -> int:
    """Left edge of the square in frame ``index`` (multiples of 16 fall on the model's 8-pixel grid)."""
    return 16 * (index % 6)


def frame_rgb(index: int) -> np.ndarray:
    x = square_x(index)
    return rtm.square_image(SIZE, SIZE, (x, 32, x + 48, 80))


def write_video(path: Path, fps: float, n: int = NUM_FRAMES, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (SIZE, SIZE))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.ascontiguousarray(frame_rgb(i)[:, :, ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from maskconver.runtime.segmenter import Segmenter

    models = rtm.build_test_models(tmp_path_factory.getbasetemp() / "red_square_models")
    return Segmenter(models["int8"], num_threads=1)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "moving.mp4", fps=100.0)


def _square_left(result) -> int:
    things = [s for s in result.segments if s.isthing]
    assert len(things) == 1, result.summary()
    return things[0].bbox[0]


def test_video_file_every_frame_in_order(segmenter, video):
    got = list(segmenter.stream(video))  # files default to drop_stale=False
    assert [g[0] for g in got] == list(range(NUM_FRAMES))
    stamps = [g[1] for g in got]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    for index, _, frame, result in got:
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
        assert frame[50, square_x(index) + 20, 0] > 200  # RGB: red channel first
        assert abs(_square_left(result) - square_x(index)) <= 2  # result belongs to this frame
        assert result.shape == (SIZE, SIZE)


def test_pipelined_and_sequential_streams_agree(segmenter, video):
    """pipeline=True (model on frame N+1 while frame N is decoded) gives the sequential results, in order."""
    seq = [
        (i, r.category_mask, [(s.name, s.bbox) for s in r.segments])
        for i, _, _, r in segmenter.stream(video, pipeline=False)
    ]
    pipe_stream = segmenter.stream(video, pipeline=True, max_frames=NUM_FRAMES - 3)
    assert pipe_stream.pipeline
    pipe = [(i, r.category_mask, [(s.name, s.bbox) for s in r.segments]) for i, _, _, r in pipe_stream]
    assert [p[0] for p in pipe] == list(range(NUM_FRAMES - 3))
    for (i, m, segs), (j, m2, segs2) in zip(seq, pipe, strict=False):
        assert i == j and segs == segs2 and np.array_equal(m, m2)
    # the segmenter is free again: a closed stream leaves no model run behind
    assert segmenter.segment(frame_rgb(0)).segments


@pytest.mark.parametrize("threshold_ms,pipelined", [(0.0, True), (1e9, False)])
def test_pipeline_none_decides_after_the_probe_frames(segmenter, video, monkeypatch, threshold_ms, pipelined):
    from maskconver.runtime import streams

    monkeypatch.setattr(streams, "PIPELINE_MIN_INFERENCE_MS", threshold_ms)
    it = segmenter.stream(video)
    seen = []
    for i, (index, _, _, result) in enumerate(it):
        seen.append(it.pipeline)
        assert abs(_square_left(result) - square_x(index)) <= 2
        if i == streams.PIPELINE_PROBE_FRAMES + 2:
            break
    it.close()
    probe = streams.PIPELINE_PROBE_FRAMES
    assert seen[: probe - 1] == [False] * (probe - 1)
    assert seen[probe:] == [pipelined] * (len(seen) - probe)


def test_vid_stride_and_max_frames(segmenter, video):
    got = [(i, _square_left(r)) for i, _, _, r in segmenter.stream(video, vid_stride=5, max_frames=4)]
    assert [i for i, _ in got] == [0, 5, 10, 15]
    assert all(abs(x - square_x(i)) <= 2 for i, x in got)
    assert list(segmenter.stream(video, max_frames=0)) == []


def test_slow_consumer_without_drop_stale_still_gets_all_frames(segmenter, video):
    seen = []
    for index, _, _, _ in segmenter.stream(video, drop_stale=False, max_frames=8):
        time.sleep(0.02)
        seen.append(index)
    assert seen == list(range(8))


def test_drop_stale_keeps_latency_bounded_with_a_slow_consumer(segmenter, video):
    """Real-time playback at 100 fps; a consumer needing 60 ms per frame sees the newest frames only."""
    t_start = time.monotonic()
    seen = []
    frames = segmenter.stream(video, drop_stale=True)
    assert (frames.fps, frames.live, frames.drop_stale) == (100.0, False, True)
    for index, ts, _, result in frames:
        age_ms = (time.monotonic() - t_start) * 1000.0 - ts
        seen.append((index, age_ms))
        assert abs(_square_left(result) - square_x(index)) <= 2
        time.sleep(0.06)
    indices = [i for i, _ in seen]
    assert indices == sorted(set(indices))  # increasing, no repeats
    assert len(indices) < NUM_FRAMES // 2  # most frames were dropped, not queued
    assert indices[-1] >= NUM_FRAMES - 8  # ...and the stream reached the end of the video
    assert frames.dropped == indices[-1] + 1 - len(indices)
    # a delivered frame is never older than one consumer step plus slack (no backlog builds up)
    assert max(age for _, age in seen[1:]) < 200.0


def test_image_folder_in_name_order(segmenter, tmp_path):
    for i in (0, 1, 2, 3):
        cv2.imwrite(str(tmp_path / f"img_{i:02d}.png"), frame_rgb(i)[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    got = [(i, _square_left(r)) for i, _, _, r in segmenter.stream(tmp_path)]
    assert got == [(i, square_x(i)) for i in range(4)]
    single = list(segmenter.stream(tmp_path / "img_02.png"))
    assert len(single) == 1 and _square_left(single[0][3]) == square_x(2)
    with pytest.raises(ValueError, match="image folders are read in order"):
        segmenter.stream(tmp_path, drop_stale=True)


@pytest.mark.parametrize("pipeline", [None, False, True])
def test_broken_image_in_folder_raises_clearly_or_is_skipped_and_listed(segmenter, tmp_path, pipeline):
    cv2.imwrite(str(tmp_path / "a.png"), frame_rgb(0)[:, :, ::-1])
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(tmp_path / "c.png"), frame_rgb(1)[:, :, ::-1])
    it = segmenter.stream(tmp_path, pipeline=pipeline)
    assert next(it)[0] == 0  # the good frame first, then the error of the frame it belongs to
    with pytest.raises(SourceError, match=r"image folder .*b\.png"):
        next(it)
    assert segmenter.segment(frame_rgb(0)).segments  # the segmenter is free again
    # opt-in (the CLI's choice): one corrupt photo does not end the run; the others come, each with its file
    it = segmenter.stream(tmp_path, pipeline=pipeline, skip_unreadable=True)
    got = []
    for index, _, _, _ in it:
        got.append((index, it.frame_path, len(it.skipped)))
    assert got == [(0, str(tmp_path / "a.png"), 0), (1, str(tmp_path / "c.png"), 1)]
    ((path, reason),) = it.skipped
    assert path == str(tmp_path / "b.png") and "cannot decode" in reason


@pytest.mark.parametrize("pipeline", [False, True])
def test_skipped_files_count_only_up_to_the_frames_handed_out(segmenter, tmp_path, pipeline):
    """The capture thread reads ahead: a corrupt file it met beyond ``max_frames`` is not reported, one after
    the last image is (the source was read to its end)."""
    cv2.imwrite(str(tmp_path / "a.png"), frame_rgb(0)[:, :, ::-1])
    (tmp_path / "b.png").write_bytes(b"broken")
    cv2.imwrite(str(tmp_path / "c.png"), frame_rgb(1)[:, :, ::-1])
    (tmp_path / "d.png").write_bytes(b"broken")
    it = segmenter.stream(tmp_path, skip_unreadable=True, max_frames=1, pipeline=pipeline)
    assert [i for i, _, _, _ in it] == [0]
    time.sleep(0.2)  # the reader has read ahead by now
    assert it.skipped == []
    for _ in range(5):  # in folder order, pipelined or not (the worker may reach the end first)
        it = segmenter.stream(tmp_path, skip_unreadable=True, pipeline=pipeline)
        assert [i for i, _, _, _ in it] == [0, 1]
        assert [p for p, _ in it.skipped] == [str(tmp_path / "b.png"), str(tmp_path / "d.png")]


def test_broken_single_image_raises_clearly(segmenter, tmp_path):
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\x89PNG broken")
    it = segmenter.stream(bad)
    with pytest.raises(SourceError, match=r"^image .*b\.png: cannot decode"):
        next(it)


def test_pipelined_live_stream_yields_each_result_before_the_next_frame_arrives(segmenter, tmp_path):
    """drop_stale + pipeline: the worker, not the caller, waits for the next frame, so the result of frame N
    is handed out before frame N+1 is even captured (a 5 fps source: 200 ms between frames, the model and the
    decoding take a few ms)."""
    slow = write_video(tmp_path / "slow.avi", fps=5.0, n=6, fourcc="MJPG")
    it = segmenter.stream(slow, drop_stale=True, pipeline=True)
    t0 = it._reader._t0
    got = [(ts, 1000.0 * (time.monotonic() - t0)) for _, ts, _, _ in it]
    assert len(got) >= 4
    for (ts, yielded), (next_ts, _) in zip(got, got[1:], strict=False):
        assert ts < yielded < next_ts


def test_segment_inside_a_pipelined_stream_loop_and_an_early_break(segmenter, video):
    """The caller may use the segmenter inside the loop (the stream's worker and the caller wait for each
    other); breaking out with a frame in flight leaves the segmenter free and strict again."""
    it = segmenter.stream(video, pipeline=True)
    for n, (index, _, _, result) in enumerate(it):
        other = segmenter.segment(frame_rgb(index + 1))
        assert abs(_square_left(other) - square_x(index + 1)) <= 2
        assert abs(_square_left(result) - square_x(index)) <= 2
        if n == 4:
            break
    it.close()
    assert segmenter._shared_users == 0
    assert segmenter.segment(frame_rgb(0)).segments


def test_video_truncated_mid_stream_ends_cleanly(segmenter, tmp_path):
    full = write_video(tmp_path / "full.avi", fps=30.0, fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    got = [i for i, _, _, _ in segmenter.stream(cut)]
    assert 0 < len(got) < NUM_FRAMES and got == list(range(len(got)))


def test_unreadable_sources_raise_at_call_time(segmenter, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        segmenter.stream(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="bad.mp4"):
        segmenter.stream(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        segmenter.stream(empty)
    with pytest.raises(SourceError, match="camera 99"):
        open_source(99)
    with pytest.raises(ValueError, match="vid_stride"):
        segmenter.stream(tmp_path, vid_stride=0)
    with pytest.raises(SourceError, match="camera index"):
        open_source(None)


def test_video_mode_requires_increasing_timestamps(segmenter):
    vs = VideoSegmenter(segmenter)
    r0 = vs.segment_for_video(frame_rgb(0), 0)
    r1 = vs.segment_for_video(frame_rgb(1), 33.3)
    assert (_square_left(r0), _square_left(r1)) == (0, 16)
    with pytest.raises(ValueError, match="increase monotonically"):
        vs.segment_for_video(frame_rgb(2), 33.3)
    with pytest.raises(TypeError, match="milliseconds"):
        vs.segment_for_video(frame_rgb(2), "40")
    bgr = VideoSegmenter(segmenter, color="bgr")
    assert _square_left(bgr.segment_for_video(frame_rgb(3)[:, :, ::-1], 1)) == square_x(3)
    with pytest.raises(ValueError, match="not a Segmenter"):
        VideoSegmenter(segmenter, num_threads=2)


def test_live_stream_mode_drops_frames_while_busy(segmenter):
    results = []
    gate = threading.Event()

    def callback(result, frame, ts):
        gate.wait(5.0)  # hold the worker busy until released
        results.append((ts, _square_left(result), int(frame[50, :, 0].argmax())))

    with LiveSegmenter(segmenter, callback) as live:
        assert live.segment_async(frame_rgb(1), 10) is True
        buf = frame_rgb(2)
        assert live.segment_async(buf, 20) is False  # busy: dropped
        assert live.segment_async(frame_rgb(3), 30) is False
        gate.set()
        assert live.wait(5.0)
        buf[:] = 0  # the caller reuses its buffer; accepted frames were copied
        assert live.segment_async(frame_rgb(4), 40) is True
        assert live.wait(5.0)
        with pytest.raises(ValueError, match="increase monotonically"):
            live.segment_async(frame_rgb(5), 40)
    assert results == [(10.0, 16, 16), (40.0, 64, 64)]
    assert (live.processed, live.dropped) == (2, 2)
    with pytest.raises(RuntimeError, match="closed"):
        live.segment_async(frame_rgb(0), 50)


def test_live_stream_callback_errors_surface(segmenter):
    def callback(result, frame, ts):
        raise KeyError("boom")

    live = LiveSegmenter(segmenter, callback)
    assert live.segment_async(frame_rgb(0), 1)
    live.wait(5.0)
    with pytest.raises(RuntimeError, match="worker failed.*boom"):
        live.segment_async(frame_rgb(0), 2)
    live.close()
    with pytest.raises(TypeError, match="result_callback"):
        LiveSegmenter(segmenter, None)
