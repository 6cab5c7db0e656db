"""Tests of the NumPy MaskConver decoding (runtime/decode.py, peaks.py, mask_resize.py, merge.py).

Goldens: ``shared/fixtures/modelgarden`` (Model Garden outputs for random weights, see its README).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from maskconver.runtime.decode import (
    decode_panoptic,
    decode_planned,
    mask_embeddings,
    mask_logits,
    output_plans,
    plan_decode,
)
from maskconver.runtime.mask_resize import axis_plan, resize_bilinear, sub_runs
from maskconver.runtime.merge import merge_dense, merge_fast
from maskconver.runtime.peaks import (
    _dense_peaks,
    _dense_peaks_shifted,
    _native_cut,
    _peaks,
    find_proposals,
    logit_threshold,
    sigmoid32,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
MG = SHARED / "fixtures" / "modelgarden"

# (category, instance, pixels) per golden, from the fixture README.
GOLDEN_SEGMENTS = {
    256: {
        (3, 6, 21926),
        (57, 45, 14835),
        (69, 40, 852),
        (69, 42, 5840),
        (120, 0, 3846),
        (133, 0, 222532),
        (138, 0, 24056),
        (139, 0, 18605),
        (171, 0, 28568),
        (175, 0, 65915),
        (199, 0, 590),
    },
    640: {
        (40, 11, 77862),
        (40, 15, 91416),
        (40, 26, 2603),
        (40, 27, 475),
        (133, 0, 97697),
        (139, 0, 12048),
        (141, 0, 1656),
        (152, 0, 35645),
        (171, 0, 58117),
    },
}
GOLDEN_VOID = {256: 2035, 640: 32081}

needs_goldens = pytest.mark.skipif(
    not (MG / "golden_256.npz").exists(), reason=f"Model Garden fixtures not found under {MG}"
)


@pytest.fixture(scope="module")
def golden():
    if not (MG / "golden_256.npz").exists():
        pytest.skip(f"Model Garden fixtures not found under {MG}")
    return {s: dict(np.load(MG / f"golden_{s}.npz")) for s in (256, 640)}


@pytest.fixture(scope="module")
def mask_head():
    """The mask-head arrays (``mask_head.npz`` layout) read from the export-style checkpoint."""
    ckpt = MG / "export_ckpt" / "ckpt-1"
    if not (MG / "export_ckpt" / "ckpt-1.index").exists():
        pytest.skip(f"Model Garden checkpoint not found under {MG}")
    pytest.importorskip("tensorflow")
    from maskconver.models.checkpoint import read_mask_head

    return read_mask_head(ckpt)


def _segments(category: np.ndarray, instance: np.ndarray) -> set[tuple[int, int, int]]:
    pairs, counts = np.unique(np.stack([category.ravel(), instance.ravel()]), axis=1, return_counts=True)
    return {(int(c), int(i), int(n)) for (c, i), n in zip(pairs.T, counts, strict=True) if c != 0}


def _assert_same_proposals(classes, scores, yx, g) -> None:
    """Same 50 proposals in the same order; adjacent swaps allowed where confidences differ < 1e-5."""
    ref_c, ref_s, ref_yx = g["classes"][0], g["confidence"][0], g["embedding_indices"][0]
    assert classes.shape == ref_c.shape
    np.testing.assert_allclose(scores, ref_s, atol=1e-4)
    for i in np.flatnonzero((classes != ref_c) | (yx != ref_yx).any(axis=1)):
        j = i + 1 if i + 1 < len(ref_c) and classes[i] == ref_c[i + 1] else i - 1
        assert 0 <= j < len(ref_c) and abs(ref_s[i] - ref_s[j]) < 1e-5, f"proposal {i} differs"
        assert classes[i] == ref_c[j] and (yx[i] == ref_yx[j]).all()


def _assert_merge_equal(dense, fast) -> None:
    np.testing.assert_array_equal(dense.winner, fast.winner)
    np.testing.assert_array_equal(dense.mask_area, fast.mask_area)
    # merge_fast resolves original_area only as far as the keep test needs (a lower bound)
    assert (fast.original_area <= dense.original_area).all()
    np.testing.assert_array_equal(dense.kept, fast.kept)
    np.testing.assert_array_equal(dense.bbox, fast.bbox)
    # the fast path paints label maps from its tiles: same as gathering through the winner map
    lut = np.random.default_rng(0).integers(-5, 1000, dense.mask_area.size).astype(np.int32)
    np.testing.assert_array_equal(fast.paint(lut), np.take(lut, dense.winner))
    assert fast.paint(lut).dtype == np.int32


# --------------------------------------------------------------------------------------------------------
# resize


@pytest.mark.parametrize(
    ("h", "w", "hh", "ww"), [(32, 32, 640, 640), (7, 5, 23, 41), (10, 12, 6, 5), (3, 4, 3, 4)]
)
def test_resize_matches_tf_image_resize(h, w, hh, ww):
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(h * w).standard_normal((h, w, 3)).astype(np.float32)
    ref = tf.image.resize(x[None], (hh, ww)).numpy()[0]
    out = resize_bilinear(x, axis_plan(h, hh), axis_plan(w, ww))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


def test_axis_plan_runs_and_crop():
    p = axis_plan(4, 16)
    # half-pixel: output i samples (i + 0.5) / 4 - 0.5; the first 2 and last 2 pixels clamp to the edge
    np.testing.assert_array_equal(p.run_len, [2, 4, 4, 4, 2])
    np.testing.assert_array_equal(p.run_i0, [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(p.run_i1, [0, 1, 2, 3, 3])
    np.testing.assert_allclose(p.lerp[2:6], [0.125, 0.375, 0.625, 0.875])
    crop = axis_plan(4, 16, keep=7)
    np.testing.assert_array_equal(crop.lerp, p.lerp[:7])
    assert crop.run_len.sum() == 7
    with pytest.raises(ValueError, match="keep"):
        axis_plan(4, 16, keep=17)


# --------------------------------------------------------------------------------------------------------
# goldens


@pytest.mark.parametrize("size", [256, 640])
def test_proposals_match_golden(golden, size):
    g = golden[size]
    p = find_proposals(g["class_heatmaps"][0], 50, 0.01)
    assert len(p) == 50
    _assert_same_proposals(p.classes, p.scores, p.yx, g)


@pytest.mark.parametrize("size", [256, 640])
def test_mask_embeddings_and_logits_match_golden(golden, mask_head, size):
    g = golden[size]
    yx = g["embedding_indices"][0]
    center = g["center_embeddings"][0][yx[:, 0], yx[:, 1]]
    emb = mask_embeddings(center, g["classes"][0], mask_head)
    np.testing.assert_allclose(emb, g["mask_embeddings_after_mlp"][0], atol=1e-4)
    np.testing.assert_allclose(emb[:, 0], -5.0, atol=1e-5)  # the fixture's planted offset
    logits = mask_logits(g["mask_features"][0], emb)
    np.testing.assert_allclose(logits, g["mask_proposal_logits"][0], atol=1e-3)


@needs_goldens
@pytest.mark.parametrize("size", [256, 640])
@pytest.mark.parametrize("method", ["fast", "dense"])
def test_decode_matches_golden(golden, mask_head, size, method):
    g = golden[size]
    t0 = time.perf_counter()
    out = decode_panoptic(
        g["class_heatmaps"], g["center_embeddings"], g["mask_features"], mask_head, method=method
    )
    wall = 1000.0 * (time.perf_counter() - t0)
    # stage timings: every stage, in pipeline order, inside the call (not a speed assert)
    assert tuple(out.timings) == ("peaks", "mask_head", "mask_logits", "merge", "segments", "label_maps")
    assert all(v >= 0 for v in out.timings.values()) and sum(out.timings.values()) <= wall
    _assert_same_proposals(out.proposal_classes, out.proposal_scores, out.proposal_yx, g)
    assert out.category_mask.shape == (640, 640) and out.category_mask.dtype == np.int32
    assert out.instance_mask.dtype == np.int32
    assert (out.category_mask == g["panoptic_category_mask"][0]).mean() >= 0.9999
    assert (out.instance_mask == g["panoptic_instance_mask"][0]).mean() >= 0.9999
    segs = _segments(out.category_mask, out.instance_mask)
    assert {(c, i) for c, i, _ in segs} == {(c, i) for c, i, _ in GOLDEN_SEGMENTS[size]}
    got = {(c, i): n for c, i, n in segs}
    for c, i, n in GOLDEN_SEGMENTS[size]:
        assert abs(got[(c, i)] - n) <= 20
    assert abs(int((out.category_mask == 0).sum()) - GOLDEN_VOID[size]) <= 20
    # the segment table agrees with the masks
    for sid, c, i, area, box in zip(
        out.segment_ids,
        out.segment_category_ids,
        out.segment_instance_ids,
        out.segment_areas,
        out.segment_bboxes,
        strict=True,
    ):
        ys, xs = np.nonzero((out.category_mask == c) & (out.instance_mask == i))
        assert area == ys.size == got[(int(c), int(i))]
        assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), f"segment {sid}"
    np.testing.assert_array_equal(out.segment_ids, np.arange(1, out.num_segments + 1))
    assert set(out.proposal_segment[out.proposal_segment > 0]) == set(out.segment_ids)


@pytest.mark.parametrize("size", [256, 640])
def test_merge_of_golden_logits(golden, size):
    """Golden mask_proposal_logits + confidence straight into the merge: golden masks, fast == dense."""
    g = golden[size]
    logits, scores, classes = g["mask_proposal_logits"][0], g["confidence"][0], g["classes"][0]
    h, w, _ = logits.shape
    py, px = axis_plan(h, 640), axis_plan(w, 640)
    dense = merge_dense(logits, scores, py, px, 256.0, 0.7)
    fast = merge_fast(logits, scores, py, px, 256.0, 0.7)
    _assert_merge_equal(dense, fast)
    cat_lut = np.where(dense.kept, classes, 0)
    inst_lut = np.where(dense.kept & (cat_lut >= 1) & (cat_lut <= 90), np.arange(1, 51), 0)
    assert (cat_lut[dense.winner] == g["panoptic_category_mask"][0]).mean() >= 0.9999
    assert (inst_lut[dense.winner] == g["panoptic_instance_mask"][0]).mean() >= 0.9999


# --------------------------------------------------------------------------------------------------------
# fast == dense


def _random_logits(rng, h, w, k, sharp: bool) -> np.ndarray:
    if not sharp:
        return (rng.standard_normal((h, w, k)) - 4).astype(np.float32)
    # blob masks: a few proposals own regions with large positive logits, the rest are very negative
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((h, w, k), np.float32)
    for q in range(k):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w) / 2)
        d = np.hypot(yy - cy, xx - cx)
        out[:, :, q] = 8 * (r - d) / r + rng.normal(0, 0.5, (h, w))
    return out


@pytest.mark.parametrize(
    ("h", "w", "hh", "ww", "keep"),
    [
        (8, 8, 160, 160, None),  # 20-pixel cells: three quadrant levels
        (6, 9, 37, 101, None),
        (10, 7, 33, 29, (30, 20)),
        (12, 12, 5, 7, None),
        (16, 16, 128, 128, None),  # the demo model's 8-pixel cells: pixels of whole cells at once
        (5, 4, 173, 150, (160, 121)),  # 35-pixel cells, cropped (original-resolution mode)
    ],
)
@pytest.mark.parametrize("sharp", [False, True])
def test_fast_merge_equals_dense_random(h, w, hh, ww, keep, sharp):
    rng = np.random.default_rng(hh * ww + sharp)
    k = 12
    logits = _random_logits(rng, h, w, k, sharp)
    scores = np.sort(rng.uniform(0.05, 0.95, k).astype(np.float32))[::-1].copy()
    scores[3] = scores[4]  # an exact score tie
    logits[:, :, 4] = logits[:, :, 3]  # ... with identical masks: the lower rank must win every pixel
    ky, kx = keep if keep else (hh, ww)
    py, px = axis_plan(h, hh, ky), axis_plan(w, ww, kx)
    small = 0.002 * hh * ww
    dense = merge_dense(logits, scores, py, px, small, 0.7)
    fast = merge_fast(logits, scores, py, px, small, 0.7)
    _assert_merge_equal(dense, fast)
    assert dense.winner.shape == (ky, kx)
    assert not (dense.winner == 4).any()
    assert dense.mask_area.sum() == ky * kx


def test_fast_merge_equals_dense_many_proposals():
    """K > 255 (int32 winner map) and many faint candidates per cell."""
    rng = np.random.default_rng(21)
    k = 300
    logits = _random_logits(rng, 6, 5, k, sharp=True)
    scores = np.sort(rng.uniform(0.02, 0.9, k).astype(np.float32))[::-1].copy()
    py, px = axis_plan(6, 70), axis_plan(5, 64)
    dense = merge_dense(logits, scores, py, px, 5.0, 0.7)
    fast = merge_fast(logits, scores, py, px, 5.0, 0.7)
    _assert_merge_equal(dense, fast)
    assert dense.winner.dtype == np.int32 and (dense.mask_area > 0).sum() > 10


def test_sub_runs_are_halvings_of_the_runs():
    for n_in, n_out, keep in [(32, 640, None), (80, 640, None), (16, 128, None), (5, 173, 160), (7, 3, None)]:
        plan = axis_plan(n_in, n_out, keep)
        for max_len in (1, 4, 5):
            pieces = sub_runs(plan, max_len)
            ends = pieces.start + pieces.length
            assert pieces.start[0] == 0 and ends[-1] == plan.n and (pieces.start[1:] == ends[:-1]).all()
            assert (pieces.length >= 1).all() and (pieces.length <= max(max_len, 1)).all()
            # every piece lies in one run, and the pieces of run r are first[r] .. first[r] + count[r] - 1
            run = plan.run_of[pieces.start]
            assert (plan.run_of[ends - 1] == run).all()
            np.testing.assert_array_equal(np.bincount(run, minlength=plan.run_start.size), pieces.count)
            np.testing.assert_array_equal(pieces.start[pieces.first], plan.run_start)
            np.testing.assert_array_equal(
                pieces.piece_of, np.repeat(np.arange(pieces.start.size), pieces.length)
            )
    # halving: a run of 20 -> 10 -> 5 (max_len 5), or -> 5 -> 2 + 3 (max_len 4)
    np.testing.assert_array_equal(sub_runs(axis_plan(32, 640), 5).length[4:8], [5, 5, 5, 5])
    np.testing.assert_array_equal(sub_runs(axis_plan(32, 640), 4).length[4:8], [2, 3, 2, 3])


def test_keep_test_bounds_are_only_trusted_when_decided():
    """The fast merge stops refining original_area once the keep test is the same for every value in
    [lo, hi]; check that rule against all values (the test is not monotonic in the area)."""
    from maskconver.runtime.merge import _keep, _keep_decided

    rng = np.random.default_rng(5)
    lo = rng.integers(0, 60, 3000)
    hi = lo + rng.integers(0, 60, 3000)
    mask_area = rng.integers(0, 80, 3000)
    decided = _keep_decided(mask_area, lo, hi, 10.0, 0.7)
    for i in np.flatnonzero(decided):
        outcomes = _keep(np.full(hi[i] - lo[i] + 1, mask_area[i]), np.arange(lo[i], hi[i] + 1), 10.0, 0.7)
        assert outcomes.all() or not outcomes.any()
    assert decided[lo == hi].all() and 0.2 < decided.mean() < 0.95


def test_fast_merge_equals_dense_saturated_and_flat():
    """Saturated logits (p == 1 or 0 exactly) and constant maps: ties everywhere, first index wins."""
    py, px = axis_plan(4, 40), axis_plan(5, 50)
    logits = np.full((4, 5, 6), -200.0, np.float32)
    logits[:2, :, 1] = 50.0
    logits[:, 3:, 2] = 0.0
    scores = np.array([0.9, 0.9, 0.5, 0.4, 0.3, 0.2], np.float32)
    dense = merge_dense(logits, scores, py, px, 10.0, 0.7)
    fast = merge_fast(logits, scores, py, px, 10.0, 0.7)
    _assert_merge_equal(dense, fast)
    assert set(np.unique(dense.winner)) <= {0, 1, 2}


# --------------------------------------------------------------------------------------------------------
# peaks


def _brute_force_proposals(heat: np.ndarray, k: int, thr: float, quant) -> list[tuple[int, int, int]]:
    """Independent loop implementation of the documented peak rule and ranking."""
    h, w, c = heat.shape
    v = heat.astype(np.int64) if quant else heat.astype(np.float64)

    def window_max(y, x, ch):
        return all(
            v[y, x, ch] >= v[y + dy, x + dx, ch]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if 0 <= y + dy < h and 0 <= x + dx < w
        )

    peaks = []
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                if not window_max(y, x, ch):
                    continue
                earlier = [(y - 1, x - 1), (y - 1, x), (y - 1, x + 1), (y, x - 1)]
                if any(
                    0 <= yy < h and 0 <= xx < w and v[yy, xx, ch] == v[y, x, ch] and window_max(yy, xx, ch)
                    for yy, xx in earlier
                ):
                    continue
                peaks.append((-v[y, x, ch], (y * w + x) * c + ch, y, x, ch))
    peaks.sort()
    out = []
    for negv, _, y, x, ch in peaks[:k]:
        logit = quant[0] * (-negv - quant[1]) if quant else -negv
        if 1.0 / (1.0 + np.exp(-logit)) > thr:
            out.append((y, x, ch))
    return out


def test_plateau_tie_break_hand_made():
    heat = np.full((5, 6, 1), -10, np.int8)
    heat[1:3, 1:3, 0] = 5  # 2x2 plateau: only (1, 1) survives
    heat[4, 3:6, 0] = 5  # a row of three at the border: only (4, 3)
    heat[0, 5, 0] = 7  # a lone peak in a corner
    p = find_proposals(heat, 10, 0.01, quant=(0.5, 0))
    assert [tuple(t) for t in p.yx] == [(0, 5), (1, 1), (4, 3)]
    np.testing.assert_allclose(p.scores, sigmoid32(np.array([3.5, 2.5, 2.5], np.float32)))


@pytest.mark.parametrize("seed", range(6))
def test_peaks_match_brute_force_int8(seed):
    rng = np.random.default_rng(seed)
    heat = rng.integers(-6, 4, size=(7, 9, 3)).astype(np.int8)  # coarse codes: many equal neighbours
    quant = (0.7, -2)
    p = find_proposals(heat, 15, 0.01, quant=quant)
    assert [tuple(map(int, t)) for t in zip(p.yx[:, 0], p.yx[:, 1], p.classes, strict=True)] == (
        _brute_force_proposals(heat, 15, 0.01, quant)
    )


@pytest.mark.parametrize("seed", range(3))
def test_peaks_match_brute_force_float(seed):
    rng = np.random.default_rng(100 + seed)
    heat = rng.standard_normal((20, 20, 4)).astype(np.float32) - 3
    p = find_proposals(heat, 25, 0.02)
    ref = _brute_force_proposals(heat, 25, 0.02, None)
    assert [tuple(map(int, t)) for t in zip(p.yx[:, 0], p.yx[:, 1], p.classes, strict=True)] == ref
    assert np.all(np.diff(p.scores) <= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.uint8])
def test_whole_array_peaks_equal_candidate_peaks(dtype):
    """Small heatmaps take the whole-array peak test, large ones the candidate test: same peaks."""
    rng = np.random.default_rng(3)
    for trial in range(20):
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 5)))
        if dtype == np.float32:
            heat = np.round(rng.normal(-3, 2, shape), 1).astype(np.float32)  # rounding: plateaus
            quant = None
        else:
            info = np.iinfo(dtype)
            heat = rng.integers(info.min, info.min + 12, shape).astype(dtype)  # coarse codes
            heat.flat[rng.integers(0, heat.size, 3)] = info.max  # include the extreme codes
            quant = (0.5, float(info.min) + 6)
        flat = heat.reshape(-1)
        cut = _native_cut(logit_threshold(0.01 if trial % 2 else 0.0), flat.dtype, quant)
        cand = np.flatnonzero(flat >= cut)
        want = cand[_peaks(flat, cand, *heat.shape)]
        np.testing.assert_array_equal(_dense_peaks(heat, cut), want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.float32, np.float16])
def test_padded_flat_peaks_equal_the_shifted_whole_array_test(dtype):
    """The padded flat layout (contiguous shifts, border at the dtype's lowest value) finds the very peaks of
    the plain shifted test: plateaus, the extreme codes, NaN, -0.0, one-row / one-column maps, every cut."""
    rng = np.random.default_rng(11)
    for trial in range(150):
        shape = (int(rng.integers(1, 14)), int(rng.integers(1, 14)), int(rng.integers(1, 6)))
        if np.dtype(dtype).kind == "f":
            heat = np.round(rng.normal(0, 1, shape), 1).astype(dtype)
            if trial % 5 == 0:
                heat.flat[rng.integers(0, heat.size, 2)] = np.nan
            if trial % 7 == 0:
                heat.flat[rng.integers(0, heat.size, 2)] = -0.0
            # cuts the dtype holds join the window max; the others (a float64 a float16 map cannot hold,
            # NaN) are compared as they are
            cuts = (-np.inf, -1.0, 0.0, 0.3, np.inf, np.nan, np.float64(0.1000000015), np.float64(65519.0))
        else:
            info = np.iinfo(dtype)
            low = info.min if trial % 2 else info.max - 6  # plateaus at both ends of the code range
            heat = rng.integers(low, low + 7, shape).astype(dtype)
            # also float cuts (integer maps without a quantisation) and NumPy integers of another dtype
            cuts = (info.min, low + 2, info.max, info.max + 1, info.min - 1, -4.6, -np.inf, np.int64(low + 1))
        for cut in cuts:
            np.testing.assert_array_equal(_dense_peaks(heat, cut), _dense_peaks_shifted(heat, cut))


def test_integer_heatmap_without_quantisation_takes_a_float_cut():
    """``find_proposals`` on integer values given as logits (no ``quant``): the threshold's float cut."""
    heat = np.full((5, 6, 3), -10, np.int16)  # sigmoid(-10) < 0.01: no proposal
    heat[1, 2, 0], heat[3, 4, 2] = 7, -4  # sigmoid(-4) = 0.018 > 0.01 (the cut is the logit -4.6)
    p = find_proposals(heat, 10, 0.01)
    assert p.yx.tolist() == [[1, 2], [3, 4]] and p.classes.tolist() == [0, 2]


def test_padded_flat_peaks_in_threads():
    """Each thread has its own padded buffer: threads decoding different heatmaps at once do not mix."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    heats = [rng.integers(-128, 128, (16, 16, 11)).astype(np.int8) for _ in range(64)]
    want = [_dense_peaks_shifted(h, -20) for h in heats]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda h: _dense_peaks(h, -20), heats))
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def _dense_reference_proposals(heat: np.ndarray, k: int, thr: float, quant) -> list[tuple[int, int, int]]:
    """The same rule with whole-array shifts (for heatmaps too big for the loop version)."""
    v = heat.astype(np.float64)
    h, w, c = v.shape
    pad = np.full((h + 2, w + 2, c), -np.inf)
    pad[1:-1, 1:-1] = v
    is_max = np.ones(v.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            is_max &= v >= pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    mpad = np.zeros((h + 2, w + 2, c), bool)
    mpad[1:-1, 1:-1] = is_max
    peak = is_max.copy()
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        same = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == v
        peak &= ~(same & mpad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
    idx = np.flatnonzero(peak)
    vals = v.ravel()[idx]
    order = np.lexsort((idx, -vals))[:k]
    logit = vals[order] if quant is None else quant[0] * (vals[order] - quant[1])
    idx = idx[order][1 / (1 + np.exp(-logit)) > thr]
    return [(int(i // c // w), int(i // c % w), int(i % c)) for i in idx]


@pytest.mark.parametrize("quantised", [False, True])
def test_peaks_large_heatmap_match_reference(quantised):
    """Big heatmaps take the sampled-cut path (several passes when int8 ties hide peaks)."""
    rng = np.random.default_rng(11)
    if quantised:
        heat, quant = (
            np.clip(rng.normal(-60, 20, (70, 60, 201)).round(), -128, 127).astype(np.int8),
            (0.08, -10),
        )
    else:
        heat, quant = (rng.standard_normal((70, 60, 201)) - 3).astype(np.float32), None
    p = find_proposals(heat, 100, 0.01, quant)
    got = [tuple(map(int, t)) for t in zip(p.yx[:, 0], p.yx[:, 1], p.classes, strict=True)]
    assert got == _dense_reference_proposals(heat, 100, 0.01, quant)
    assert len(got) == 100


@pytest.mark.parametrize("quantised", [False, True])
def test_peaks_cut_hint_from_the_last_heatmap_changes_nothing(quantised):
    """A peak setup remembers a candidate cut from the heatmap before (its 2K-th peak); heatmaps much
    hotter or colder than the last one (a hint too low or too high), hints set by hand and a hint whose
    candidates hold fewer than K peaks (a plateau) still give the reference's proposals."""
    from maskconver.runtime.peaks import peak_setup

    rng = np.random.default_rng(12)
    k, quant = 20, ((0.08, -10) if quantised else None)
    dtype = np.int8 if quantised else np.float32
    setup = peak_setup((40, 50, 41), np.dtype(dtype).str, k, 0.01, quant)
    hints = []
    for trial, offset in enumerate([0, 0, 30, -40, 5, 0, -90, 60, 0, 0, 0]):
        if quantised:
            heat = np.clip(rng.normal(-60 + offset, 20, setup.shape).round(), -128, 127).astype(np.int8)
        else:
            heat = (rng.standard_normal(setup.shape) - 3 + offset / 20).astype(np.float32)
        if trial == 8:  # hints set by hand: at the floor, far above every value
            setup.cut_hint[0] = setup.floor
        elif trial == 9:
            setup.cut_hint[0] = 127 if quantised else 1e9
        elif trial == 10:  # 100 candidates above the hint, one peak
            heat[:10, :10, 0] = heat.max() + 1
            setup.cut_hint[0] = heat.max().item()
        p = find_proposals(heat, setup=setup)
        got = [tuple(map(int, t)) for t in zip(p.yx[:, 0], p.yx[:, 1], p.classes, strict=True)]
        assert got == _dense_reference_proposals(heat, k, 0.01, quant)
        hints.append(setup.cut_hint[0])
    assert hints[1] is not None and len(set(hints)) > 2  # the hint follows the heatmaps


def test_mask_embeddings_float32_for_any_head_dtype():
    rng = np.random.default_rng(5)
    d = 8
    head = {
        "class_embeddings": rng.normal(size=(3, d)),
        "mlp_dense0_kernel": rng.normal(size=(d, d)),
        "mlp_dense0_bias": rng.normal(size=d),
        "mlp_norm_gamma": np.ones(d),
        "mlp_norm_beta": np.zeros(d),
        "mlp_dense1_kernel": rng.normal(size=(d, d)),
        "mlp_dense1_bias": rng.normal(size=d),
    }
    center = rng.normal(size=(4, d)).astype(np.float32)
    emb64 = mask_embeddings(center, np.array([0, 1, 2, 1]), head)
    emb32 = mask_embeddings(
        center, np.array([0, 1, 2, 1]), {k: v.astype(np.float32) for k, v in head.items()}
    )
    assert emb64.dtype == np.float32 and emb32.dtype == np.float32
    np.testing.assert_allclose(emb64, emb32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("as_type", [tuple, list, np.array])
def test_peaks_quant_given_as_any_pair(as_type):
    """The quantisation may be any (scale, zero_point) pair: tuple, list or array (numpy scalars too)."""
    heat = np.clip(np.random.default_rng(3).normal(-20, 30, (8, 8, 3)).round(), -128, 127).astype(np.int8)
    want = find_proposals(heat, 10, 0.01, (0.1, 0.0))
    got = find_proposals(heat, 10, 0.01, as_type([np.float32(0.1), np.int64(0)]))
    assert len(want) > 0
    np.testing.assert_array_equal(got.flat_index, want.flat_index)
    np.testing.assert_array_equal(got.scores, want.scores)


# --------------------------------------------------------------------------------------------------------
# quantised inputs


def _quantise(x: np.ndarray, dtype) -> tuple[np.ndarray, tuple[float, float]]:
    info = np.iinfo(dtype)
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / (info.max - info.min)
    zp = int(round(info.min - lo / scale))
    q = np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)
    return q, (scale, zp)


def _dequantise(q: np.ndarray, quant) -> np.ndarray:
    return np.float32(quant[0]) * (q.astype(np.float32) - np.float32(quant[1]))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantised_inputs_equal_dequantised_floats(golden, mask_head, dtype):
    g = golden[256]
    qh, hq = _quantise(g["class_heatmaps"], dtype)
    qc, cq = _quantise(g["center_embeddings"], dtype)
    qm, mq = _quantise(g["mask_features"], dtype)
    out_q = decode_panoptic(qh, qc, qm, mask_head, heatmap_quant=hq, center_quant=cq, mask_quant=mq)
    out_f = decode_panoptic(_dequantise(qh, hq), _dequantise(qc, cq), _dequantise(qm, mq), mask_head)
    np.testing.assert_array_equal(out_q.proposal_classes, out_f.proposal_classes)
    np.testing.assert_array_equal(out_q.proposal_yx, out_f.proposal_yx)
    np.testing.assert_array_equal(out_q.proposal_scores, out_f.proposal_scores)
    np.testing.assert_allclose(out_q.mask_logits, out_f.mask_logits, atol=1e-4)
    assert (out_q.category_mask == out_f.category_mask).mean() >= 0.9999
    assert (out_q.instance_mask == out_f.instance_mask).mean() >= 0.9999
    assert len(out_q.proposal_classes) == 50 and out_q.num_segments > 3
    # int8 codes create plateaus; the quantised decoding keeps only the first peak of each
    keys = zip(out_q.proposal_yx[:, 0], out_q.proposal_yx[:, 1], out_q.proposal_classes, strict=True)
    assert len(set(keys)) == 50


# --------------------------------------------------------------------------------------------------------
# original-resolution mode, empty input, errors


def _tiny_head(rng, c: int, d: int) -> dict[str, np.ndarray]:
    f = np.float32
    return {
        "class_embeddings": rng.standard_normal((c, d)).astype(f),
        "mlp_dense0_kernel": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(f),
        "mlp_dense0_bias": rng.standard_normal(d).astype(f) * f(0.1),
        "mlp_norm_gamma": rng.uniform(0.5, 1.5, d).astype(f),
        "mlp_norm_beta": rng.standard_normal(d).astype(f) * f(0.1),
        "mlp_dense1_kernel": (rng.standard_normal((d, d)) * 3 / np.sqrt(d)).astype(f),
        "mlp_dense1_bias": np.zeros(d, f),
    }


def test_original_resolution_mode_matches_direct_reference():
    """Letterboxed non-square image vs a straightforward reference (tf.image.resize, crop, argmax)."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(7)
    h, w, c, d = 8, 8, 6, 16  # model input 64 x 64 (stride 8)
    orig = (50, 30)  # original image H0 x W0
    s = min(64 / orig[0], 64 / orig[1])
    valid = (round(orig[0] * s), round(orig[1] * s))  # (64, 38)
    heat = rng.normal(-4, 1.5, (1, h, w, c)).astype(np.float32)
    center = rng.standard_normal((1, h, w, d)).astype(np.float32)
    head = _tiny_head(rng, c, d)
    # mask features designed so that the 10 proposals' logits are blobs (least squares through the
    # proposals' mask embeddings, exact since K < D)
    props = find_proposals(heat[0], 10, 0.01)
    emb = mask_embeddings(center[0][props.yx[:, 0], props.yx[:, 1]], props.classes, head)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform((0, 0), (h, 5), (len(props), 2))  # inside the letterboxed image (columns < ~4.7)
    owner = np.argmin(np.hypot(yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1]), axis=-1)
    target = np.where(owner[..., None] == np.arange(len(props)), 6.0, -6.0) + rng.normal(0, 0.5, (h, w, 1))
    feats = (target.reshape(-1, len(props)) @ np.linalg.pinv(emb).T).reshape(1, h, w, d).astype(np.float32)
    things = [1, 2, 3]
    out = decode_panoptic(
        heat, center, feats, head, output_size=orig, valid_size=valid, thing_ids=things, num_proposals=10
    )
    assert out.category_mask.shape == orig

    # reference
    logits = np.einsum("hwd,kd->hwk", feats[0], emb)
    canvas = (int(np.ceil(64 * orig[0] / valid[0])), int(np.ceil(64 * orig[1] / valid[1])))  # (50, 51)
    big = tf.image.resize(logits[None], canvas).numpy()[0][: orig[0], : orig[1]]
    p = 1.0 / (1.0 + np.exp(-big.astype(np.float64)))
    win = np.argmax(p * props.scores, axis=-1)
    area = np.bincount(win.ravel(), minlength=len(props))
    orig_area = (p > 0.5).sum(axis=(0, 1))
    small = 256.0 * canvas[0] * canvas[1] / (640 * 640)
    kept = (area > small) & (orig_area > 0) & (area > 0.7 * orig_area)
    cat = np.where(kept, props.classes, 0)
    inst = np.where(kept & np.isin(cat, things), np.arange(1, len(props) + 1), 0)
    assert kept.sum() >= 3 and np.isin(cat[kept], things).any(), "test data should keep a few segments"
    np.testing.assert_array_equal(out.category_mask, cat[win])
    np.testing.assert_array_equal(out.instance_mask, inst[win])
    np.testing.assert_array_equal(out.proposal_areas, area)
    dense = decode_panoptic(
        heat,
        center,
        feats,
        head,
        output_size=orig,
        valid_size=valid,
        thing_ids=things,
        num_proposals=10,
        method="dense",
    )
    np.testing.assert_array_equal(dense.category_mask, out.category_mask)
    np.testing.assert_array_equal(dense.segment_bboxes, out.segment_bboxes)


def test_output_plans_canvas_and_threshold_scaling():
    py, px, area = output_plans((8, 8), (50, 30), (64, 38), (64, 64))
    assert (py.out_size, px.out_size, py.n, px.n) == (50, 51, 50, 30)
    assert area == 50 * 51
    py, px, area = output_plans((32, 32), (640, 640), None, (256, 256))
    assert (py.out_size, px.n, area) == (640, 640, 640 * 640)


def test_empty_heatmap_gives_all_void():
    rng = np.random.default_rng(3)
    c, d = 5, 8
    heat = np.full((1, 6, 7, c), -30.0, np.float32)
    out = decode_panoptic(
        heat,
        rng.standard_normal((1, 6, 7, d)),
        rng.standard_normal((1, 6, 7, d)),
        _tiny_head(rng, c, d),
        output_size=(48, 56),
    )
    assert out.category_mask.shape == (48, 56) and not out.category_mask.any() and not out.instance_mask.any()
    assert out.num_segments == 0 and out.proposal_classes.size == 0 and out.segment_bboxes.shape == (0, 4)
    for method in ("fast", "dense"):
        q = decode_panoptic(
            np.full((6, 7, c), -128, np.int8),
            np.zeros((6, 7, d), np.int8),
            np.zeros((6, 7, d), np.int8),
            _tiny_head(rng, c, d),
            heatmap_quant=(0.1, 0),
            center_quant=(0.1, 0),
            mask_quant=(0.1, 0),
            method=method,
        )
        assert not q.category_mask.any() and q.category_mask.shape == (640, 640)


def test_mask_head_checks_are_remembered_per_array_objects():
    rng = np.random.default_rng(1)
    head = _tiny_head(rng, 5, 8)
    heat = rng.normal(-2, 2, (1, 4, 4, 5)).astype(np.float32)
    emb = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    first = decode_panoptic(heat, emb, emb, head, output_size=(32, 32))
    again = decode_panoptic(heat, emb, emb, dict(head), output_size=(32, 32))  # same arrays, new dict
    np.testing.assert_array_equal(first.category_mask, again.category_mask)
    bad = dict(head, mlp_norm_beta=np.full(8, np.nan, np.float32))  # a new array is checked
    with pytest.raises(ValueError, match="mlp_norm_beta"):
        decode_panoptic(heat, emb, emb, bad, output_size=(32, 32))
    other = _tiny_head(np.random.default_rng(2), 5, 8)  # other weights, other result
    assert not np.array_equal(
        decode_panoptic(heat, emb, emb, other, output_size=(32, 32)).mask_logits, first.mask_logits
    )


def test_blas_threads_are_set_for_the_calling_thread_and_restored():
    from maskconver.runtime.decode import _openblas_set_local, blas_threads

    fn = _openblas_set_local()
    if fn is None:
        pytest.skip("NumPy is not using its bundled OpenBLAS")
    before = fn(3)  # the setter returns the count in force: read it, then put it back
    fn(before)
    with blas_threads(1):
        inside = fn(1)
    after = fn(before)
    fn(after)
    assert inside == 1 and after == before
    with blas_threads(None):  # None leaves BLAS alone
        assert fn(before) == before


def test_bad_inputs_are_explained():
    rng = np.random.default_rng(0)
    head = _tiny_head(rng, 5, 8)
    heat = np.zeros((1, 4, 4, 5), np.float32)
    emb = np.zeros((1, 4, 4, 8), np.float32)
    with pytest.raises(ValueError, match="heatmap_quant"):
        decode_panoptic(heat.astype(np.int8), emb, emb, head)
    with pytest.raises(ValueError, match="batch size 2"):
        decode_panoptic(np.zeros((2, 4, 4, 5), np.float32), emb, emb, head)
    with pytest.raises(ValueError, match="shapes disagree"):
        decode_panoptic(heat, emb[:, :3], emb, head)
    with pytest.raises(ValueError, match="lacks mlp_norm_beta"):
        decode_panoptic(heat, emb, emb, {k: v for k, v in head.items() if k != "mlp_norm_beta"})
    with pytest.raises(ValueError, match="class_embeddings"):
        decode_panoptic(np.zeros((1, 4, 4, 6), np.float32), emb, emb, head)
    with pytest.raises(ValueError, match="method"):
        decode_panoptic(heat, emb, emb, head, method="approx")
    with pytest.raises(ValueError, match="valid_size needs output_size"):
        decode_panoptic(heat, emb, emb, head, valid_size=(32, 20))


def _segments_reference(classes, scores, merge, is_thing):
    """The segment grouping spelled out per proposal: a segment per kept thing proposal and per category
    of kept stuff proposals (class 0 none), boxes united, areas summed, the best score."""
    segs: dict[tuple[int, int], dict] = {}
    proposal_segment = np.zeros(classes.size, np.int32)
    for q in range(classes.size):
        if not merge.kept[q] or classes[q] == 0:
            continue
        key = (int(classes[q]), q + 1 if is_thing[classes[q]] else 0)
        s = segs.setdefault(key, {"id": len(segs) + 1, "box": [], "area": 0, "score": -np.inf})
        s["box"].append(merge.bbox[q])
        s["area"] += int(merge.mask_area[q])
        s["score"] = max(s["score"], float(scores[q]))
        proposal_segment[q] = s["id"]
    boxes = [np.concatenate([np.min(s["box"], 0)[:2], np.max(s["box"], 0)[2:]]) for s in segs.values()]
    return {
        "segment_ids": np.arange(1, len(segs) + 1, dtype=np.int32),
        "segment_category_ids": np.array([c for c, _ in segs], np.int32),
        "segment_instance_ids": np.array([i for _, i in segs], np.int32),
        "segment_scores": np.array([s["score"] for s in segs.values()], np.float32),
        "segment_areas": np.array([s["area"] for s in segs.values()], np.int64),
        "segment_bboxes": np.array(boxes, np.int32).reshape(-1, 4),
        "proposal_segment": proposal_segment,
    }


@pytest.mark.parametrize("seed", range(3))
def test_segments_group_kept_proposals_like_the_reference(seed):
    # random kept sets with several stuff proposals per category (merged segments), void-class proposals,
    # zero boxes and more than 255 proposals
    from maskconver.runtime.decode import _segments, segment_arrays
    from maskconver.runtime.merge import MergeResult

    rng = np.random.default_rng(seed)
    for _ in range(60):
        k, c = int(rng.choice([0, 1, 7, 50, 300])), int(rng.integers(1, 12))
        classes = rng.integers(0, c, k).astype(np.int32)
        scores = np.sort(rng.uniform(0.02, 1, k).astype(np.float32))[::-1]
        area = rng.integers(0, 5000, k).astype(np.int64)
        box = (
            np.sort(rng.integers(0, 640, (k, 2, 2)), axis=1).transpose(0, 2, 1).reshape(k, 4).astype(np.int64)
        )
        box[area == 0] = 0
        merge = MergeResult(area, area, rng.random(k) < 0.6, box)
        is_thing = rng.random(c) < 0.5
        rows, proposal_segment, cat_lut, inst_lut = _segments(classes, scores, merge, is_thing)
        seg = {**segment_arrays(rows), "proposal_segment": proposal_segment}
        want = _segments_reference(classes, scores, merge, is_thing)
        assert seg.keys() == want.keys()
        assert all(float(np.float32(r[2])) == r[2] for r in rows)  # scores are float32 values
        for key, value in want.items():
            assert seg[key].dtype == value.dtype and seg[key].shape == value.shape, key
            np.testing.assert_array_equal(seg[key], value, err_msg=key)
        np.testing.assert_array_equal(cat_lut, np.where(merge.kept, classes, 0))
        assert cat_lut.dtype == np.int32 and inst_lut.dtype == np.int32
        np.testing.assert_array_equal(
            inst_lut, np.where(merge.kept & is_thing[classes], np.arange(1, k + 1), 0)
        )


def test_thing_table_subclass_and_grid_size_errors_as_before():
    # a bool table that is an ndarray subclass (np.ma) is read through thing_table as before: plain int32
    # label maps; grid-mode size errors name valid_size as the caller gave it (as the full path does)
    rng = np.random.default_rng(0)
    c, d, h, w = 6, 8, 10, 12
    head = {
        "class_embeddings": rng.normal(size=(c, d)).astype(np.float32),
        "mlp_dense0_kernel": rng.normal(size=(d, d)).astype(np.float32),
        "mlp_dense0_bias": np.zeros(d, np.float32),
        "mlp_norm_gamma": np.ones(d, np.float32),
        "mlp_norm_beta": np.zeros(d, np.float32),
        "mlp_dense1_kernel": rng.normal(size=(d, d)).astype(np.float32),
        "mlp_dense1_bias": np.zeros(d, np.float32),
    }
    heat = rng.uniform(-6, 3, size=(h, w, c)).astype(np.float32)
    emb = rng.normal(size=(h, w, d)).astype(np.float32)
    table = np.zeros(c, bool)
    table[[1, 3]] = True
    kw = {"mask_resolution": "grid", "overlap_threshold": 0.0, "small_area_threshold": 0.0}
    want = decode_panoptic(heat, emb, emb, head, thing_ids=table, **kw)
    assert want.segment_instance_ids.any()
    for masked in (np.ma.array(table), np.ma.array(table, mask=[0, 1, 0, 0, 0, 0])):
        got = decode_panoptic(heat, emb, emb, head, thing_ids=masked, **kw)
        assert type(got.instance_mask) is np.ndarray
        np.testing.assert_array_equal(got.instance_mask, want.instance_mask)
    for res in ("grid", "full"):
        with pytest.raises(ValueError, match=r"valid_size \(700\.5, 30\) must lie"):
            decode_panoptic(
                heat, emb, emb, head, output_size=(50, 60), valid_size=(700.5, 30), mask_resolution=res
            )
        with pytest.raises(ValueError, match=r"valid_size \(700,\) must lie"):
            decode_panoptic(
                heat, emb, emb, head, output_size=(50, 60), valid_size=(700,), mask_resolution=res
            )


def test_blas_threads_as_context_and_decorator():
    # the count is set inside and restored after, also for nested and recursive decorated calls
    from maskconver.runtime.decode import _openblas_set_local, blas_threads

    fn = _openblas_set_local()
    if fn is None:
        pytest.skip("NumPy is not linked to an OpenBLAS with openblas_set_num_threads_local")
    before = fn(3)  # returns the previous count; 3 is the count outside the blocks below
    try:
        seen = []

        @blas_threads(1)
        def inner(depth: int) -> None:
            seen.append(fn(1))  # the count inside: 1 (set again to read it)
            if depth:
                with blas_threads(2):
                    seen.append(fn(2))
                    inner(depth - 1)
                    seen.append(fn(2))

        inner(2)
        assert seen == [1, 2, 1, 2, 1, 2, 2]
        assert fn(3) == 3  # restored
    finally:
        fn(before)


def test_decode_plan_equals_decode_panoptic_and_refuses_other_outputs():
    """plan_decode + decode_planned is decode_panoptic; a plan used on outputs of another shape or dtype, or
    on float outputs holding NaN, is an error that says what to do."""
    rng = np.random.default_rng(5)
    c, d = 5, 8
    head = _tiny_head(rng, c, d)
    heat = rng.integers(-128, 127, (1, 6, 7, c)).astype(np.int8)
    center = rng.integers(-128, 127, (1, 6, 7, d)).astype(np.int8)
    feats = rng.integers(-128, 127, (1, 6, 7, d)).astype(np.int8)
    kw = dict(
        heatmap_quant=(0.05, -20),
        center_quant=(0.02, 3),
        mask_quant=(0.03, -1),
        output_size=(50, 60),
        valid_size=(40, 56),
        thing_ids=(1, 2),
        mask_resolution="grid",
    )
    plan = plan_decode(heat, center, feats, head, **kw)
    got = decode_planned(plan, heat, center, feats)
    want = decode_panoptic(heat, center, feats, head, **kw)
    assert got.num_segments > 0
    for name in ("category_mask", "instance_mask", "segment_ids", "segment_bboxes", "proposal_areas"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    np.testing.assert_array_equal(
        decode_planned(plan, heat[0], center[0], feats[0]).category_mask, got.category_mask
    )
    with pytest.raises(
        ValueError, match=r"heatmap is int8 \(6, 8, 5\) but the decode plan was made for int8 \(6, 7, 5\)"
    ):
        decode_planned(plan, np.zeros((6, 8, c), np.int8), center, feats)
    with pytest.raises(ValueError, match="mask_features is uint8 .* make a new plan with plan_decode"):
        decode_planned(plan, heat, center, feats.view(np.uint8))
    # array-likes are taken as np.asarray takes them; a batch of two is refused as before
    fl = [a.astype(np.float64) * 0.05 for a in (heat, center, feats)]
    fkw = {**kw, "heatmap_quant": None, "center_quant": None, "mask_quant": None}
    as_lists = decode_panoptic(*(a.tolist() for a in fl), head, **fkw)
    np.testing.assert_array_equal(as_lists.category_mask, decode_panoptic(*fl, head, **fkw).category_mask)
    with pytest.raises(ValueError, match="heatmap has batch size 2; decode one image at a time"):
        decode_planned(plan, np.concatenate([heat, heat]), center, feats)
    fplan = plan_decode(heat.astype(np.float32), center, feats, head, **{**kw, "heatmap_quant": None})
    bad = heat.astype(np.float32)
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="heatmap holds 1 NaN"):
        decode_planned(fplan, bad, center, feats)


def test_mask_dtype_auto_picks_the_smallest_type_and_checks_named_ones():
    from maskconver.runtime.decode import mask_dtype_for

    assert mask_dtype_for("auto", 201, 50) == np.uint8
    assert mask_dtype_for("auto", 256, 255) == np.uint8
    assert mask_dtype_for("auto", 257, 50) == np.uint16
    assert mask_dtype_for("auto", 10, 300) == np.uint16
    assert mask_dtype_for("auto", 70_000, 50) == np.int32
    assert mask_dtype_for("int32", 201, 50) == np.int32 and mask_dtype_for(np.uint16, 300, 50) == np.uint16
    with pytest.raises(
        ValueError, match="mask_dtype uint8 cannot hold ids up to 300 .* use mask_dtype='auto'"
    ):
        mask_dtype_for("uint8", 301, 50)
    with pytest.raises(ValueError, match="mask_dtype must be one of"):
        mask_dtype_for("float32", 10, 50)
    with pytest.raises(ValueError, match="mask_dtype must be one of"):
        mask_dtype_for("nonsense", 10, 50)
    rng = np.random.default_rng(6)
    c, d = 5, 8
    heat = rng.normal(-1, 2, (6, 7, c)).astype(np.float32)
    emb = rng.standard_normal((6, 7, d)).astype(np.float32)
    head = _tiny_head(rng, c, d)
    kw = dict(output_size=(40, 44), thing_ids=(1, 2), overlap_threshold=0.0, small_area_threshold=0.0)
    for res in ("full", "grid"):
        ref = decode_panoptic(heat, emb, emb, head, mask_resolution=res, **kw)
        assert ref.category_mask.dtype == np.int32 and ref.num_segments > 2
        assert ref.instance_mask.any()
        small = decode_panoptic(heat, emb, emb, head, mask_resolution=res, mask_dtype="auto", **kw)
        assert small.category_mask.dtype == small.instance_mask.dtype == np.uint8
        np.testing.assert_array_equal(small.category_mask, ref.category_mask)
        np.testing.assert_array_equal(small.instance_mask, ref.instance_mask)
        np.testing.assert_array_equal(small.segment_areas, ref.segment_areas)
    empty = decode_panoptic(
        np.full((6, 7, c), -30.0, np.float32), emb, emb, head, output_size=(8, 9), mask_dtype="auto"
    )
    assert empty.category_mask.dtype == np.uint8 and not empty.category_mask.any()


@pytest.mark.parametrize("quantised", [False, True])
def test_folded_mask_head_equals_the_mlp(quantised):
    """The per-model folding (centre scale and LayerNorm mean into W0, sqrt(H) into gamma, the features' scale
    into W1) gives the MLP's embeddings up to float32 rounding, scaled by the features' scale."""
    from maskconver.runtime.decode import _check_mask_head, _folded_embeddings, fold_mask_head

    rng = np.random.default_rng(11)
    c, d = 7, 16
    head = _check_mask_head(_tiny_head(rng, c, d), c, d)
    classes = rng.integers(0, c, 12).astype(np.int32)
    if quantised:
        cq, mq = (0.05, -3.0), (0.02, 7.0)
        codes = rng.integers(-128, 127, (12, d)).astype(np.int8)
        rows = (codes.astype(np.float32) - np.float32(cq[1])) * np.float32(cq[0])
    else:
        cq = mq = None
        codes = rows = rng.standard_normal((12, d)).astype(np.float32)
    folded = fold_mask_head(head, cq, mq)
    got = _folded_embeddings(folded, codes, classes)
    want = mask_embeddings(rows, classes, head) * np.float32(1.0 if mq is None else mq[0])
    assert got.shape == (12, d + 1)
    np.testing.assert_allclose(got[:, :d], want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()))
    # the last column is minus the zero-point term of the mask logits: zp * sum_d (s_m emb)
    zp_term = (0.0 if mq is None else mq[1]) * want.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(
        got[:, d], zp_term, rtol=1e-4, atol=1e-4 * float(np.abs(want).sum(axis=1).max())
    )
    # and the logits on codes equal the MLP's embeddings dotted with the dequantised features
    from maskconver.runtime.decode import _scaled_mask_logits

    feats = rng.integers(-128, 127, (3, 4, d)).astype(np.int8)
    deq = feats.astype(np.float32) - np.float32(0.0 if mq is None else mq[1])
    want_logits = mask_logits(deq, want)
    got_logits = _scaled_mask_logits(feats, got)
    np.testing.assert_allclose(
        got_logits, want_logits, rtol=1e-4, atol=1e-4 * float(np.abs(want_logits).max())
    )
    assert fold_mask_head(head, cq, mq) is folded  # remembered for the same arrays and quantisation
    other = dict(head, mlp_norm_beta=head["mlp_norm_beta"] + np.float32(1))
    assert fold_mask_head(other, cq, mq) is not folded
    assert fold_mask_head(head, None if cq else (0.1, 0.0), mq) is not folded


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_finite_check_catches_every_non_finite_value_and_passes_huge_finite_ones(dtype):
    from maskconver.runtime.decode import _check_finite

    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 7, 9)).astype(dtype)
    big = rng.standard_normal((64, 64, 64)).astype(dtype)  # large enough for the one-pass path
    for a in (x, big):
        _check_finite(a, "x")
        _check_finite(
            np.full(a.shape, np.finfo(dtype).max, dtype), "huge"
        )  # the square sum overflows: no error
    for layout in (lambda a: a, np.asfortranarray, lambda a: a[:, ::2], lambda a: big.copy()):
        for value in (np.nan, np.inf, -np.inf):
            y = layout(x.copy())
            y[2, 3, 4] = value
            with pytest.raises(ValueError, match=r"^y holds .*first at index \(2, 3, 4\)"):
                _check_finite(y, "y")


def test_decode_panoptic_and_plan_decode_take_the_same_settings():
    """decode_panoptic forwards its keyword arguments to plan_decode: the two signatures must stay equal."""
    import inspect

    a = inspect.signature(decode_panoptic).parameters
    b = inspect.signature(plan_decode).parameters
    assert list(a) == list(b)
    assert all(a[k].default == b[k].default and a[k].kind == b[k].kind for k in a)


def test_segment_arrays_follow_the_rows_and_peak_setups_their_layout():
    """A decoding's segment arrays are made from its rows, again when the rows are replaced; a peak setup
    refuses a heatmap of another shape or dtype."""
    from maskconver.runtime.peaks import peak_setup

    rng = np.random.default_rng(8)
    c, d = 5, 8
    heat = rng.normal(-1, 2, (6, 7, c)).astype(np.float32)
    emb = rng.standard_normal((6, 7, d)).astype(np.float32)
    dec = decode_panoptic(
        heat,
        emb,
        emb,
        _tiny_head(rng, c, d),
        output_size=(40, 44),
        overlap_threshold=0.0,
        small_area_threshold=0,
    )
    assert dec.num_segments > 1 and isinstance(dec.segment_rows, tuple)
    assert dec.segment_ids.tolist() == list(range(1, dec.num_segments + 1))
    dec.segment_rows = dec.segment_rows[:1]
    assert dec.num_segments == 1 and dec.segment_ids.tolist() == [1] and dec.segment_bboxes.shape == (1, 4)
    dec.segment_rows = ()
    assert dec.segment_scores.dtype == np.float32 and dec.segment_bboxes.shape == (0, 4)
    q = np.zeros((6, 7, c), np.int8)
    setup = peak_setup(q.shape, q.dtype.str, 10, 0.01, (0.1, 0.0))
    with pytest.raises(ValueError, match=r"heatmap is uint8 \(6, 7, 5\), the peak setup was made for int8"):
        find_proposals(q.view(np.uint8), setup=setup)
    with pytest.raises(ValueError, match="the peak setup was made for int8 \\(6, 7, 5\\)"):
        find_proposals(np.zeros((6, 8, c), np.int8), setup=setup)
    q = rng.integers(-128, 127, (6, 7, c)).astype(np.int8)
    got, want = find_proposals(q, setup=setup), find_proposals(q, 10, 0.01, (0.1, 0.0))
    assert len(got) > 0 and np.array_equal(got.flat_index, want.flat_index)
