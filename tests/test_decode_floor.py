"""The decode-floor instrument (``benchmarks/decode_floor.py``) does the decoder's real work: on the int8 demo
model's frames it gives the grid decode's label maps and segments, so its time is a fair floor."""

from __future__ import annotations

import numpy as np
import pytest
from maskconver.benchmarks.decode_floor import minimal_grid_decode
from maskconver.models.synthetic import render_synthetic_image
from maskconver.runtime.decode import decode_planned
from maskconver.runtime.model_info import OUTPUT_NAMES
from maskconver.runtime.segmenter import Segmenter


def _plan_and_outputs(seg: Segmenter, image: np.ndarray):
    seg.segment(image)
    (plan,) = [p for p in seg._plans.values() if p.output_size == image.shape[:2]]
    outs = seg._start(image).outputs
    return plan, tuple(outs[name][0] for name in OUTPUT_NAMES)


@pytest.mark.parametrize("size", [(128, 128), (480, 640), (300, 200)])
def test_floor_equals_the_grid_decode_on_demo_frames(demo_model, size):
    seg = Segmenter(demo_model, mask_resolution="grid")
    compared = segments = 0
    for i in range(6):
        image = render_synthetic_image(11, i, size).image
        plan, arrays = _plan_and_outputs(seg, image)
        dec = decode_planned(plan, *arrays)
        category, instance, rows = minimal_grid_decode(plan)(*arrays)
        assert category.shape == instance.shape == size
        np.testing.assert_array_equal(category, dec.category_mask)
        np.testing.assert_array_equal(instance, dec.instance_mask)
        # the same segments, best first (the floor reports a stuff segment's first proposal only)
        assert [(r[0], r[4]) for r in rows] == [(r[1], r[5]) for r in dec.segment_rows]
        things = [(r[0], r[2], tuple(r[3])) for r in rows if r[4]]
        assert things == [(r[1], r[3], r[4]) for r in dec.segment_rows if r[5]]
        compared += 1
        segments += len(rows)
    assert compared == 6 and segments >= 6  # the trained model finds segments in these frames


def test_floor_refuses_other_plans(demo_model):
    seg = Segmenter(demo_model, mask_resolution="full")
    plan, _ = _plan_and_outputs(seg, render_synthetic_image(11, 0, (128, 128)).image)
    with pytest.raises(ValueError, match="grid plan"):
        minimal_grid_decode(plan)
