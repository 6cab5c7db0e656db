"""The real-time merge on the feature grid (runtime/grid_merge.py, ``mask_resolution="grid"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maskconver.runtime.decode import decode_panoptic, grid_axes
from maskconver.runtime.grid_merge import (
    FIRST_PROPOSALS,
    _grid_bbox,
    grid_axis,
    merge_grid,
    merge_grid_pruned,
)
from maskconver.runtime.mask_resize import axis_plan
from maskconver.runtime.merge import bbox_from_winner, merge_dense

MG = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "modelgarden"


@given(cells=st.integers(1, 90), canvas=st.integers(1, 1500), frac=st.floats(0.01, 1.0))
@settings(max_examples=200, deadline=None)
def test_grid_axis_is_the_cell_under_each_pixel_centre(cells, canvas, frac):
    keep = max(1, int(canvas * frac))
    ax = grid_axis(cells, canvas, keep)
    want = np.floor((np.arange(keep) + 0.5) * cells / canvas).astype(np.int64)  # float64 is exact enough here
    got = np.repeat(ax.cells, ax.count)
    assert np.array_equal(got, want)
    assert int(ax.count.sum()) == keep and np.array_equal(ax.start, np.cumsum(ax.count) - ax.count)
    assert (ax.cells < cells).all() and (np.diff(ax.cells) > 0).all()


def test_grid_axis_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="keep <= canvas"):
        grid_axis(8, 10, 11)


def _nearest_up(small: np.ndarray, gy, gx) -> np.ndarray:
    return np.repeat(np.repeat(small, gy.count, axis=0), gx.count, axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_grid_bbox_is_the_pixel_box_of_the_upsampled_winner_map(seed):
    # the presence-table box against bbox_from_winner on the winner map repeated over each cell's pixels,
    # with proposals that won nothing and more than 255 proposals (int32 winners)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        ny, nx = (int(v) for v in rng.integers(1, 30, 2))
        cy, cx = (int(v) for v in rng.integers(1, 700, 2))
        gy = grid_axis(ny, cy, int(rng.integers(1, cy + 1)))
        gx = grid_axis(nx, cx, int(rng.integers(1, cx + 1)))
        k = int(rng.choice([1, 3, 50, 300]))
        used = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)  # the others win nothing
        dtype = rng.choice([np.intp, np.int32, np.uint8 if k <= 255 else np.int32])
        win = used[rng.integers(0, used.size, (gy.n, gx.n))].astype(dtype)
        got = _grid_bbox(win, k, gy, gx)
        want = bbox_from_winner(_nearest_up(win, gy, gx), k)
        assert got.dtype == np.int64 and got.shape == (k, 4)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_grid_merge_is_the_reference_merge_of_nearest_upsampled_logits(seed):
    """Merging on the grid with pixel-count weights == the full merge of logits upsampled by repetition."""
    rng = np.random.default_rng(seed)
    h, w, k = rng.integers(3, 12), rng.integers(3, 12), int(rng.integers(1, 30))
    gy = grid_axis(h, int(h * rng.integers(3, 9)), int(h * 3))
    gx = grid_axis(w, int(w * rng.integers(3, 9)), int(w * 3))
    logits = rng.normal(0, 3, (gy.n, gx.n, k)).astype(np.float32)
    logits[rng.random(logits.shape) < 0.2] = 0.0  # exact ties on p * score
    scores = np.sort(rng.uniform(0.02, 1.0, k).astype(np.float32))[::-1]
    scores[1::3] = scores[0::3][: len(scores[1::3])]  # tied scores
    small_area, overlap = float(rng.uniform(0, 30)), 0.7
    got = merge_grid(logits, scores, gy, gx, small_area, overlap)
    up = _nearest_up(logits, gy, gx)
    ref = merge_dense(
        up,
        scores,
        axis_plan(up.shape[0], up.shape[0]),
        axis_plan(up.shape[1], up.shape[1]),
        small_area,
        overlap,
    )
    assert np.array_equal(got.winner, ref.winner)
    assert np.array_equal(got.mask_area, ref.mask_area)
    assert np.array_equal(got.original_area, ref.original_area)
    assert np.array_equal(got.kept, ref.kept) and np.array_equal(got.bbox, ref.bbox)
    lut = rng.integers(0, 1000, k).astype(np.int32)
    assert np.array_equal(got.paint(lut), lut[ref.winner])


def _exact_case(rng: np.random.Generator, k: int, spread: bool, d: int = 6):
    """Features, embeddings, offsets whose products are exact in float32 whatever the summation order
    (small integers times multiples of 1/8), so the pruned merge must equal the plain one bit for bit."""
    h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    gy = grid_axis(h, int(h * rng.integers(2, 6)), int(h * 2))
    gx = grid_axis(w, int(w * rng.integers(2, 6)), int(w * 2))
    features = rng.integers(-4, 5, (gy.n * gx.n, d)).astype(np.float32)
    emb = (rng.integers(-8, 9, (k, d + 1)) / 8.0).astype(np.float32)
    emb[1::4] = emb[0::4][: len(emb[1::4])]  # identical proposals: tied products
    offset = (rng.integers(-16, 17, k) / 8.0).astype(np.float32)
    if spread:  # a trained model's scores: a few confident proposals, then a long tail
        scores = np.sort(rng.uniform(0.01, 1.0, k) ** 4).astype(np.float32)[::-1].copy()
        scores[:3] = np.float32(0.95)
    else:  # an untrained model's: all alike
        scores = np.sort(rng.uniform(0.4, 0.5, k)).astype(np.float32)[::-1].copy()
    scores[2::5] = scores[1::5][: len(scores[2::5])]  # tied scores
    return gy, gx, features, emb, offset, scores


@pytest.mark.parametrize("seed", range(40))
def test_pruned_grid_merge_equals_the_plain_grid_merge(seed):
    """The pruned merge scores only proposals that can win a cell; with exact products it must give the
    plain merge's winners, areas, keep decisions, boxes and label maps, with and without pruning."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 60))
    gy, gx, features, emb, offset, scores = _exact_case(rng, k, spread=seed % 4 != 0)
    if seed % 3 == 0:
        scores = rng.permutation(scores)  # unsorted scores: the bound still holds
    if seed % 7 == 0:
        offset = None
    small_area = float(rng.choice([0.0, 3.0, 40.0, -1.0]))
    logits = features @ emb[:, :-1].T - (0 if offset is None else offset)
    want = merge_grid(logits.reshape(gy.n, gx.n, k), scores, gy, gx, small_area, 0.7)
    blocks: list[tuple[int, int]] = []
    got = merge_grid_pruned(
        features, emb, offset, scores, gy, gx, small_area, 0.7, check=lambda b: blocks.append(b.shape)
    )
    assert np.array_equal(got.winner, want.winner)
    assert np.array_equal(got.mask_area, want.mask_area)
    assert np.array_equal(got.kept, want.kept) and np.array_equal(got.bbox, want.bbox)
    assert np.array_equal(got.original_area[got.kept], want.original_area[want.kept])
    lut = rng.integers(0, 1000, k).astype(np.int32)
    assert np.array_equal(got.paint(lut), lut[want.winner])
    # every proposal that won a cell was scored; the check saw each block of negated logits
    assert sum(n for _, n in blocks) <= k and all(c == gy.n * gx.n for c, _ in blocks)
    if k > FIRST_PROPOSALS and small_area >= 0 and 2 * scores[FIRST_PROPOSALS] <= scores[0]:
        assert blocks[0][1] == FIRST_PROPOSALS


def test_pruned_grid_merge_skips_proposals_that_cannot_win():
    """A confident proposal covering every cell leaves the low-score tail unscored (and unwinning)."""
    rng = np.random.default_rng(0)
    k, d = 50, 4
    gy, gx = grid_axis(6, 48, 48), grid_axis(5, 40, 40)
    features = np.ones((gy.n * gx.n, d), np.float32)
    emb = rng.normal(0, 0.1, (k, d + 1)).astype(np.float32)
    emb[0, :d] = 5.0  # logit 20 everywhere: p = 1
    scores = (0.9 * 0.8 ** np.arange(k)).astype(np.float32)
    blocks: list[int] = []
    got = merge_grid_pruned(
        features, emb, None, scores, gy, gx, 0.0, 0.7, check=lambda b: blocks.append(b.shape[1])
    )
    assert blocks == [FIRST_PROPOSALS]  # 0.9 * 1.0 beats every later score: no second block
    assert got.mask_area[0] == 48 * 40 and not got.mask_area[1:].any() and got.kept[0]


@pytest.mark.parametrize("first,small_area", [(0, 0.0), (1, 0.0), (16, float("nan")), (16, -1.0)])
def test_pruned_grid_merge_edge_settings(first, small_area):
    """``first`` below 1 scores one proposal first; a NaN or negative small-area threshold scores all (a
    proposal that wins nothing could then be kept): the plain merge's result either way."""
    rng = np.random.default_rng(7)
    gy, gx, features, emb, offset, scores = _exact_case(rng, 40, spread=True)
    scores[0] = 0.0 if first == 0 else scores[0]
    logits = (features @ emb[:, :-1].T - offset).reshape(gy.n, gx.n, -1)
    want = merge_grid(logits, scores, gy, gx, small_area, -1.0)
    got = merge_grid_pruned(features, emb, offset, scores, gy, gx, small_area, -1.0, first=first)
    assert np.array_equal(got.winner, want.winner) and np.array_equal(got.kept, want.kept)
    assert np.array_equal(got.original_area, want.original_area)
    assert np.array_equal(got.mask_area, want.mask_area) and np.array_equal(got.bbox, want.bbox)


def test_pruned_grid_merge_without_proposals():
    gy, gx = grid_axis(4, 32, 30), grid_axis(5, 40, 40)
    out = merge_grid_pruned(
        np.zeros((gy.n * gx.n, 3), np.float32),
        np.zeros((0, 4), np.float32),
        None,
        np.zeros(0, np.float32),
        gy,
        gx,
        0.0,
        0.7,
    )
    assert out.winner.shape == (30, 40) and out.kept.size == 0


@pytest.mark.parametrize("quantised", [False, True])
def test_grid_decode_without_proposals(quantised):
    """No heatmap value passes the threshold: empty maps and segments, and [ny, nx, 0] mask logits."""
    head, heat, center, feats = _random_outputs(np.random.default_rng(4), 6, 7, 3, 4, -30.0)
    kw: dict = dict(output_size=(40, 50), mask_resolution="grid")
    if quantised:
        heat, feats = np.full(heat.shape, -128, np.int8), np.zeros(feats.shape, np.int8)
        kw.update(heatmap_quant=(0.1, 0.0), mask_quant=(0.05, 3.0))
    dec = decode_panoptic(heat, center, feats, head, **kw)
    assert dec.num_segments == 0 and not dec.category_mask.any() and dec.category_mask.shape == (40, 50)
    assert dec.mask_logits.shape == (6, 7, 0)


def test_grid_merge_without_proposals():
    gy, gx = grid_axis(4, 32, 30), grid_axis(5, 40, 40)
    out = merge_grid(np.zeros((gy.n, gx.n, 0), np.float32), np.zeros(0, np.float32), gy, gx, 0.0, 0.7)
    assert out.winner.shape == (30, 40) and out.kept.size == 0


def _golden(size: int) -> dict[str, np.ndarray]:
    path = MG / f"golden_{size}.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return dict(np.load(path))


def _random_outputs(rng: np.random.Generator, h: int, w: int, c: int, d: int, heat_mean: float):
    """A random mask head and float model outputs ``heat [1,h,w,c]``, ``center``, ``feats [1,h,w,d]``."""
    head = {
        "class_embeddings": rng.standard_normal((c, d)).astype(np.float32),
        "mlp_dense0_kernel": (rng.standard_normal((d, d)) / 4).astype(np.float32),
        "mlp_dense0_bias": np.zeros(d, np.float32),
        "mlp_norm_gamma": np.ones(d, np.float32),
        "mlp_norm_beta": np.zeros(d, np.float32),
        "mlp_dense1_kernel": (rng.standard_normal((d, d)) / 2).astype(np.float32),
        "mlp_dense1_bias": np.zeros(d, np.float32),
    }
    heat = rng.normal(heat_mean, 2, (1, h, w, c)).astype(np.float32)
    center = rng.standard_normal((1, h, w, d)).astype(np.float32)
    feats = rng.standard_normal((1, h, w, d)).astype(np.float32)
    return head, heat, center, feats


def test_grid_decode_letterbox_matches_upsampled_reference():
    """decode_panoptic(mask_resolution="grid") on a letterboxed 480x640 image equals the full merge of
    logits nearest-upsampled along the same cell maps, and keeps the full mode's proposals."""
    rng = np.random.default_rng(0)
    h = w = 16
    c, d = 7, 24
    head, heat, center, feats = _random_outputs(rng, h, w, c, d, -3.0)
    kw = dict(output_size=(480, 640), valid_size=(96, 128), input_size=(128, 128), thing_ids=(1, 2, 3))
    grid = decode_panoptic(heat, center, feats, head, mask_resolution="grid", **kw)
    full = decode_panoptic(heat, center, feats, head, **kw)
    assert np.array_equal(grid.proposal_classes, full.proposal_classes)
    assert np.array_equal(grid.proposal_scores, full.proposal_scores)
    gy, gx, _ = grid_axes((h, w), (480, 640), (96, 128), (128, 128))
    assert (gy.n, gx.n) == (12, 16)  # the letterbox covers 96 / 8 x 128 / 8 cells
    assert grid.mask_logits.shape[:2] == (12, 16)
    assert np.allclose(grid.mask_logits, full.mask_logits[:12, :16], atol=1e-5)
    assert grid.category_mask.shape == (480, 640)
    # every 40 x 40 block of the original image is one cell: constant labels
    blocks = grid.category_mask.reshape(12, 40, 16, 40)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert grid.segment_areas.sum() + (grid.category_mask == 0).sum() == 480 * 640
    for i in range(grid.num_segments):
        sel = (grid.category_mask == grid.segment_category_ids[i]) & (
            grid.instance_mask == grid.segment_instance_ids[i]
        )
        assert sel.sum() == grid.segment_areas[i]
        ys, xs = np.nonzero(sel)
        assert tuple(grid.segment_bboxes[i]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize(
    "output,valid",
    [
        ((480, 640), (96, 128)),
        ((300, 200), (128, 85)),
        ((3, 5), (77, 128)),
        ((2, 900), (2, 128)),
        ((640, 640), None),
    ],
)
def test_grid_decode_equals_the_dense_merge_of_the_cell_under_every_pixel(output, valid):
    """An independent reference: every output pixel's cell from float64 arithmetic through the letterbox,
    its logits gathered from the full mode's (all-cell) logits, merged by ``merge_dense`` at full size with
    identity resize plans. Covers outputs smaller than the grid (cells no pixel falls into)."""
    from maskconver.runtime.decode import output_canvas

    rng = np.random.default_rng(sum(output))
    h = w = 16
    head, heat, center, feats = _random_outputs(rng, h, w, 6, 20, -2.0)
    kw = dict(
        output_size=output,
        valid_size=valid,
        input_size=(128, 128),
        thing_ids=(1, 2),
        small_area_threshold=300.0,
    )
    grid = decode_panoptic(heat, center, feats, head, mask_resolution="grid", **kw)
    full = decode_panoptic(heat, center, feats, head, **kw)  # its mask_logits cover every cell
    cy, cx = output_canvas(output, valid, (128, 128))
    iy = np.floor((np.arange(output[0]) + 0.5) * h / cy).astype(int)
    ix = np.floor((np.arange(output[1]) + 0.5) * w / cx).astype(int)
    per_pixel = full.mask_logits[iy][:, ix]
    small = 300.0 * cy * cx / (640 * 640)
    ref = merge_dense(
        per_pixel,
        full.proposal_scores,
        axis_plan(output[0], output[0]),
        axis_plan(output[1], output[1]),
        small,
        0.7,
    )
    assert np.array_equal(grid.proposal_areas, ref.mask_area)
    cat = np.where(ref.kept, full.proposal_classes, 0).astype(np.int32)[ref.winner]
    assert np.array_equal(grid.category_mask, cat)
    assert len(full.proposal_scores) >= 3


def test_grid_decode_on_the_model_garden_golden_agrees_with_full_where_masks_are_decisive():
    g = _golden(256)
    from maskconver.models.checkpoint import read_mask_head

    ckpt = MG / "export_ckpt"
    if not (ckpt / "ckpt-1.index").exists():
        pytest.skip("Model Garden checkpoint not found")
    pytest.importorskip("tensorflow")
    head = read_mask_head(ckpt)
    outs = (g["class_heatmaps"], g["center_embeddings"], g["mask_features"])
    full = decode_panoptic(*outs, head)
    grid = decode_panoptic(*outs, head, mask_resolution="grid")
    assert grid.category_mask.shape == (640, 640)
    assert np.array_equal(grid.proposal_classes, full.proposal_classes)
    # where the bilinear logits and the cell's own logits give the same decisive winner the labels agree;
    # the random-weight golden is nearly tied everywhere, so only a loose bound holds overall
    assert (grid.category_mask == full.category_mask).mean() > 0.6


def test_bad_mask_resolution_is_refused():
    z = np.zeros((1, 4, 4, 3), np.float32)
    head: dict[str, np.ndarray] = {}
    with pytest.raises(ValueError, match="mask_resolution must be one of"):
        decode_panoptic(z, z, z, head, mask_resolution="coarse")


@pytest.mark.parametrize("mode,factor", [("grid", 1), ("grid2x", 2), ("grid4x", 4)])
def test_grid_at_its_own_resolution_is_the_full_merge(mode, factor):
    """When every output pixel is one (upsampled) grid cell, the grid merge is the reference merge."""
    rng = np.random.default_rng(factor)
    h, w, c, d = 6, 9, 5, 16
    head, heat, center, feats = _random_outputs(rng, h, w, c, d, -2.0)
    size = (h * factor, w * factor)
    kw = dict(
        output_size=size,
        input_size=(8 * h, 8 * w),
        small_area_threshold=0.0,
        overlap_threshold=0.3,
        thing_ids=(1, 2),
    )
    full = decode_panoptic(heat, center, feats, head, **kw)
    grid = decode_panoptic(heat, center, feats, head, mask_resolution=mode, **kw)
    assert np.array_equal(grid.category_mask, full.category_mask)
    assert np.array_equal(grid.instance_mask, full.instance_mask)
    assert np.array_equal(grid.proposal_areas, full.proposal_areas)
    assert np.array_equal(grid.segment_bboxes, full.segment_bboxes)
    assert full.num_segments >= 1 and len(full.proposal_scores) >= 3


@pytest.mark.parametrize("dim,first", [(32, FIRST_PROPOSALS), (128, None)])
def test_large_mask_heads_score_every_proposal_in_one_block(monkeypatch, dim, first):
    """The split into a first block and the survivors pays for small heads only (``SPLIT_HEAD_WEIGHTS``): a
    head of 128 x 128 weights or more is scored in one block, with the same result."""
    import dataclasses

    import maskconver.runtime.grid_merge as gm
    from maskconver.runtime.decode import decode_planned, plan_decode

    rng = np.random.default_rng(9)
    c, h, w = 4, 12, 12
    f = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    head = {
        "class_embeddings": 1 + f(c, dim),
        "mlp_dense0_kernel": f(dim, dim),
        "mlp_dense0_bias": f(dim),
        "mlp_norm_gamma": 1 + f(dim),
        "mlp_norm_beta": f(dim),
        "mlp_dense1_kernel": f(dim, dim),
        "mlp_dense1_bias": f(dim),
    }
    heat = rng.integers(-128, -100, (h, w, c)).astype(np.int8)
    heat.reshape(-1)[rng.permutation(h * w * c)[:40]] = np.r_[
        np.full(8, 120), np.linspace(-40, -90, 32)
    ].astype(np.int8)
    center = rng.integers(-128, 128, (h, w, dim)).astype(np.int8)
    feats = rng.integers(-128, 128, (h, w, dim)).astype(np.int8)
    kw = dict(heatmap_quant=(0.1, -20), center_quant=(0.02, 1), mask_quant=(0.02, -3), output_size=(90, 90))
    plan = plan_decode(heat, center, feats, head, mask_resolution="grid", **kw)
    k = plan.peaks.k
    assert plan.grid_first == (first or k)
    blocks: list[int] = []
    scored = gm._scored_block
    monkeypatch.setattr(gm, "_scored_block", lambda *a: (blocks.append(a[1].shape[0]), scored(*a))[1])
    got = decode_planned(plan, heat, center, feats)
    n = got.proposal_scores.shape[0]
    assert n > FIRST_PROPOSALS and (blocks[0] == FIRST_PROPOSALS if first else blocks == [n])
    other = decode_planned(
        dataclasses.replace(plan, grid_first=k if first else FIRST_PROPOSALS), heat, center, feats
    )
    np.testing.assert_array_equal(got.category_mask, other.category_mask)
    np.testing.assert_array_equal(got.instance_mask, other.instance_mask)
    assert got.segment_rows == other.segment_rows
