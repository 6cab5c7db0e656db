"""End-to-end speed of ``Segmenter.segment`` (preprocess / inference / postprocess) on the host.

Run under pytest-benchmark::

    MASKCONVER_BENCH_MODEL=path/to/model.tflite \\
        /work/venv/bin/pytest benchmarks/bench_segmenter.py --benchmark-only

Models: ``$MASKCONVER_BENCH_MODEL`` (a ``.tflite`` or ``.onnx``; comma-separate several), else the
``models/demo`` model files if present, else the tiny designed "red square" test model (which measures
the API's fixed overhead, not a network). The image is a 640x480 blocky random picture; each case records
the median per-stage split of its rounds in ``extra_info`` (``preprocess_ms``, ``inference_ms``,
``postprocess_ms``), so the JSON report shows where the time goes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _model_paths(tmp_root: Path) -> list[Path]:
    env = os.environ.get("MASKCONVER_BENCH_MODEL")
    if env:
        return [Path(p) for p in env.split(",") if p]
    demo = sorted((REPO / "models" / "demo").glob("*.tflite")) + sorted(
        (REPO / "models" / "demo").glob("*.onnx")
    )
    if demo:
        return demo
    sys.path.insert(0, str(REPO / "tests"))
    import runtime_test_models as rtm

    built = rtm.build_test_models(tmp_root / "red_square_models")
    return [built["int8"], built["onnx"]]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 16, 0), 16, 1))  # 480x640, blocky


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    paths = _model_paths(tmp_path_factory.getbasetemp())
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"model files not found: {missing}")
    return paths


@pytest.mark.parametrize("output", ["original", "canvas"])
@pytest.mark.parametrize("which", range(4))
def test_segment(benchmark, models, image, which, output):
    from maskconver.runtime.segmenter import Segmenter

    if which >= len(models):
        pytest.skip("fewer models than cases")
    seg = Segmenter(models[which], num_threads=int(os.environ.get("MASKCONVER_BENCH_THREADS", "2")))
    seg.segment(image, output=output)  # warm-up
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}

    def run():
        r = seg.segment(image, output=output)
        for k in stages:
            stages[k].append(r.speed[k])
        return r

    result = benchmark.pedantic(run, rounds=10, iterations=1)
    benchmark.extra_info.update(
        model=models[which].name,
        backend=seg.backend,
        threads=seg.num_threads,
        segments=len(result.segments),
        **{f"{k}_ms": round(float(np.median(v)), 3) for k, v in stages.items()},
    )


STREAM_FRAMES = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory, image) -> Path:
    """A real MJPG video of ``STREAM_FRAMES`` 480x640 frames (the blocky picture, shifted each frame)."""
    import cv2

    path = tmp_path_factory.mktemp("stream") / "frames.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(STREAM_FRAMES):
        writer.write(np.ascontiguousarray(np.roll(image, 8 * i, axis=1)[:, :, ::-1]))
    writer.release()
    return path


@pytest.mark.parametrize("mask_resolution", ["full", "grid"])
@pytest.mark.parametrize("pipeline", [False, True])
def test_stream(benchmark, models, video, pipeline, mask_resolution):
    """A whole video through ``Segmenter.stream``: sequential vs pipelined (model on frame N+1 while frame
    N is decoded). One round = every frame; compare the two ``pipeline`` rows of a group."""
    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(
        models[0],
        num_threads=int(os.environ.get("MASKCONVER_BENCH_THREADS", "2")),
        mask_resolution=mask_resolution,
    )
    seg.warmup(2)
    benchmark.group = f"stream {models[0].name} {mask_resolution}"

    def run() -> int:
        return sum(1 for _ in seg.stream(video, drop_stale=False, pipeline=pipeline))

    try:
        n = benchmark.pedantic(run, rounds=6, iterations=1)
    finally:
        seg.close()
    assert n == STREAM_FRAMES
    benchmark.extra_info.update(model=models[0].name, frames=n, pipeline=pipeline)


@pytest.mark.parametrize("mask_resolution", ["full", "grid"])
@pytest.mark.parametrize("cache", ["after_inference", "repeated"])
def test_decode_cache(benchmark, models, image, cache, mask_resolution):
    """The decoding half of ``segment`` alone, timed either right after an inference (as in every real
    frame: the interpreter has just evicted the caches) or repeated on one frame's outputs (warm caches).
    Compare the two ``cache`` rows of a group: their ratio is what the cache costs the NumPy decoder."""
    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(
        models[0],
        num_threads=int(os.environ.get("MASKCONVER_BENCH_THREADS", "2")),
        mask_resolution=mask_resolution,
    )
    seg.warmup(2)
    mode, masks = seg._modes(None, None)
    started = seg._start(image)
    benchmark.group = f"decode cache {models[0].name} {mask_resolution}"

    def setup():
        return ((seg._start(image) if cache == "after_inference" else started),), {}

    try:
        result = benchmark.pedantic(lambda s: seg._finish(s, mode, masks), setup=setup, rounds=40)
    finally:
        seg.close()
    assert result.category_mask.shape == image.shape[:2]
    benchmark.extra_info.update(model=models[0].name, cache=cache, segments=len(result.segments))


@pytest.mark.parametrize("work", ["inference", "decode", "floor"])
def test_decode_floor(benchmark, models, image, work):
    """Issue #5's decode budget against NumPy's floor, in one run: ``inference`` (the interpreter alone),
    ``decode`` (``decode_planned``, the grid path) and ``floor`` (:func:`minimal_grid_decode
    <maskconver.benchmarks.decode_floor.minimal_grid_decode>`: the same NumPy work with nothing else), the
    two decodes timed right after an inference. ``floor / inference`` is the least ``decode / inference``
    any NumPy decoder reaches on this machine. Needs a one-byte integer model (the int8 demo model)."""
    from maskconver.benchmarks.decode_floor import minimal_grid_decode
    from maskconver.runtime.decode import decode_planned
    from maskconver.runtime.model_info import OUTPUT_NAMES
    from maskconver.runtime.preprocess import letterbox, model_input
    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(
        models[0], num_threads=int(os.environ.get("MASKCONVER_BENCH_THREADS", "2")), mask_resolution="grid"
    )
    try:
        seg.warmup(2)
        seg.segment(image)
        (plan,) = [p for p in seg._plans.values() if p.output_size == image.shape[:2]]
        try:
            floor = minimal_grid_decode(plan)
        except ValueError as e:
            pytest.skip(str(e))
        benchmark.group = f"decode floor {models[0].name}"

        def outputs():  # the setup of a decode round: preprocess and inference, untimed
            outs = seg._start(image).outputs
            return tuple(outs[name][0] for name in OUTPUT_NAMES), {}

        if work == "inference":
            canvas, _, _ = letterbox(image, tuple(seg.info.input_size), tuple(seg.info.pad_value))
            benchmark.pedantic(seg._run, args=(model_input(canvas, seg.info),), rounds=200, warmup_rounds=5)
        else:
            fn = floor if work == "floor" else (lambda *a: decode_planned(plan, *a))
            benchmark.pedantic(fn, setup=outputs, rounds=200, warmup_rounds=5)
    finally:
        seg.close()
    benchmark.extra_info.update(model=models[0].name, work=work)
