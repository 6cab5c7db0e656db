"""Speed of the runtime's preprocessing: pixel normalisation and the reference letterbox.

Run all benchmark suites with ``pytest benchmarks --benchmark-only`` or only this one with::

    /work/venv/bin/pytest benchmarks/bench_preprocess.py --benchmark-only

Frames are synthetic panoptic scenes (:func:`maskconver.models.synthetic.render_synthetic_image`), not
noise: a VGA camera frame (480x640) and a 1080p frame (rendered at 540x960 and upscaled), letterboxed to the
two MobileNet-MH input sizes.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskconver.models.synthetic import render_synthetic_image
from maskconver.runtime.preprocess import as_rgb_uint8, letterbox


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    vga = render_synthetic_image(3, 0, (480, 640)).image
    hd = cv2.resize(
        render_synthetic_image(3, 1, (540, 960)).image, (1920, 1080), interpolation=cv2.INTER_LINEAR
    )
    return {"480x640": vga, "1080x1920": hd}


@pytest.mark.parametrize(
    ("frame", "size"),
    [("480x640", 256), ("480x640", 640), ("1080x1920", 256), ("1080x1920", 640)],
)
def test_letterbox(benchmark, frames, frame, size):
    img = frames[frame]
    canvas, scale, valid = benchmark(letterbox, img, (size, size))
    assert canvas.shape == (size, size, 3) and canvas.dtype == np.uint8
    assert max(valid) == size and 0 < scale <= size / min(img.shape[:2])


@pytest.mark.parametrize("frame", ["480x640", "1080x1920"])
def test_bgr_to_rgb(benchmark, frames, frame):
    """An OpenCV (BGR) camera frame to contiguous RGB: a channel reversal and copy."""
    bgr = np.ascontiguousarray(frames[frame][..., ::-1])
    rgb = benchmark(as_rgb_uint8, bgr, "bgr")
    assert np.array_equal(rgb, frames[frame])


@pytest.mark.parametrize("frame", ["480x640", "1080x1920"])
def test_rgb_passthrough(benchmark, frames, frame):
    """A contiguous RGB uint8 frame is checked and returned as is (no copy)."""
    rgb = benchmark(as_rgb_uint8, frames[frame])
    assert rgb is frames[frame]
