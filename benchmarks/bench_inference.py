"""Host inference speed of the int8 MaskConver MobileNet-MH (7x7 depthwise convs lowered) at 256 and 640.

Run all benchmark suites with ``pytest benchmarks --benchmark-only`` or only this one with::

    /work/venv/bin/pytest benchmarks/bench_inference.py --benchmark-only

The models are converted from the Model Garden fixture checkpoint
(``shared/fixtures/modelgarden/export_ckpt``, config ``mobilenet_mh_256``; 640 via ``input_size``) with
:func:`maskconver.benchmarks.compare.convert_variants` in a child process (so TensorFlow never runs in this
one) and cached in ``$MASKCONVER_BENCH_CACHE`` (default ``~/.cache/maskconver/models``, the same cache as
``maskconver-bench compare --out ~/.cache/maskconver``). The first run converts (minutes); later runs reuse
the files. Without the fixture or when conversion fails, the benchmarks are skipped with the reason.

Benchmarks: ``inference`` (set input, invoke, read the three outputs) and ``frame`` (the whole
``Segmenter.segment()``: letterbox, inference, NumPy decoding) on a 480x640 synthetic scene. These are host
numbers, not a phone's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from maskconver.benchmarks.compare import VARIANTS, CompareError, convert_variants
from maskconver.models.synthetic import render_synthetic_image
from maskconver.runtime.preprocess import letterbox, model_input
from maskconver.runtime.segmenter import Segmenter

SHARED = Path(os.environ.get("MASKCONVER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CKPT = SHARED / "fixtures" / "modelgarden" / "export_ckpt"
CONFIG = "mobilenet_mh_256"


def _cache_dir() -> Path:
    env = os.environ.get("MASKCONVER_BENCH_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "maskconver" / "models"


@pytest.fixture(scope="module", params=[256, 640], ids=lambda s: f"{s}x{s}")
def segmenter(request):
    size = request.param
    if not (CKPT / "ckpt-1.index").exists():
        pytest.skip(f"Model Garden fixture checkpoint not found at {CKPT} (set MASKCONVER_SHARED)")
    try:
        paths = convert_variants(
            CKPT, CONFIG, (size, size), [VARIANTS["tflite_int8_lo"]], _cache_dir(), progress=None
        )
    except CompareError as e:
        pytest.skip(f"cannot build the int8 {size}x{size} model: {e}")
    seg = Segmenter(paths["tflite_int8_lo"])
    yield seg
    seg.close()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return render_synthetic_image(5, 0, (480, 640)).image


def test_inference_int8_lowered(benchmark, segmenter, frame):
    h, w = segmenter.info.input_size
    canvas, _scale, _valid = letterbox(frame, (h, w), tuple(segmenter.info.pad_value))
    x = model_input(canvas, segmenter.info)
    benchmark.extra_info.update(model=segmenter.model_path.name, threads=segmenter.num_threads)
    outs = benchmark(segmenter.infer, x)
    stride = segmenter.info.stride
    assert outs["heatmap"][0].shape[1:3] == (h // stride, w // stride)


def test_frame_int8_lowered(benchmark, segmenter, frame):
    benchmark.extra_info.update(model=segmenter.model_path.name, threads=segmenter.num_threads)
    result = benchmark(segmenter.segment, frame)
    assert result.category_mask.shape == frame.shape[:2]
