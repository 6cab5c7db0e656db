"""Property-based tests of :func:`maskconver.runtime.decode.decode_panoptic` (hypothesis).

For any finite model outputs of valid shapes (small h, w, C, D, a random mask head, float or int8 codes,
reference-canvas or original-resolution output, any thresholds) the decoding must be self-consistent:

* every non-void ``(category, instance)`` pair in the masks is a listed segment whose area and bbox are
  exactly those of its pixels, and every listed segment has pixels;
* segment ids are 1..N, ``(category, instance)`` pairs are unique, at most one segment per stuff category;
* instance ids are > 0 exactly for thing categories, void pixels carry instance 0;
* no kept proposal won fewer pixels than the scaled ``small_area_threshold`` (nor at most
  ``overlap_threshold`` of its own ``p > 0.5`` area), segment areas are the sums of their proposals' areas;
* proposals are sorted by score, all above ``object_mask_threshold``;
* ``method="fast"`` gives the same masks and segments as ``method="dense"``, bit for bit.

Non-finite outputs (NaN, +-inf) are refused with a ValueError naming the output (before the check they
crashed the merge with an IndexError or silently decoded garbage).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from maskconver.runtime.decode import MASK_HEAD_KEYS, decode_panoptic, mask_embeddings

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def finite32(lo: float = -3.0e38, hi: float = 3.0e38):
    lo, hi = float(np.float32(lo)), float(np.float32(hi))  # bounds representable in float32
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def problems(draw, value_bound: float | None = None, quantised: bool | None = None):
    """A random decoding problem: ``(args, kwargs, meta)`` for ``decode_panoptic(*args, **kwargs)``."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    c, d = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    hidden = d  # the decoder (and the model file) fix the MLP width to D
    quant = draw(st.booleans()) if quantised is None else quantised
    # Logit-sized values most of the time; the whole float32 range when value_bound is None.
    bound = value_bound if value_bound is not None else draw(st.sampled_from([8.0, 1e3, 3.0e38]))
    elems = finite32(-bound, bound)

    def float_array(shape):
        return draw(hnp.arrays(np.float32, shape, elements=elems))

    kwargs: dict = {}
    if quant:
        heat = draw(hnp.arrays(np.int8, (h, w, c)))
        center = draw(hnp.arrays(np.int8, (h, w, d)))
        feats = draw(hnp.arrays(np.int8, (h, w, d)))
        for name in ("heatmap_quant", "center_quant", "mask_quant"):
            kwargs[name] = (draw(st.floats(1e-3, 0.5)), draw(st.integers(-128, 127)))
    else:
        heat, center, feats = float_array((h, w, c)), float_array((h, w, d)), float_array((h, w, d))
    head_elems = finite32(-4.0, 4.0)
    head = {
        "class_embeddings": (c, d),
        "mlp_dense0_kernel": (d, hidden),
        "mlp_dense0_bias": (hidden,),
        "mlp_norm_gamma": (hidden,),
        "mlp_norm_beta": (hidden,),
        "mlp_dense1_kernel": (hidden, d),
        "mlp_dense1_bias": (d,),
    }
    mask_head = {k: draw(hnp.arrays(np.float32, s, elements=head_elems)) for k, s in head.items()}
    is_thing = np.array(draw(st.lists(st.booleans(), min_size=c, max_size=c)), dtype=bool)
    is_thing[0] = False  # id 0 is void in every maskconver model (never a thing)
    stride = draw(st.sampled_from([1, 2, 4, 8]))
    input_size = (stride * h, stride * w)
    canvas = (draw(st.integers(4, 40)), draw(st.integers(4, 40)))
    if draw(st.booleans()):  # original-resolution mode: an (H0, W0) image letterboxed into input_size
        valid = (draw(st.integers(1, input_size[0])), draw(st.integers(1, input_size[1])))
        out = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        kwargs |= {"output_size": out, "valid_size": valid, "input_size": input_size}
        canvas_area = (-(-input_size[0] * out[0] // valid[0])) * (-(-input_size[1] * out[1] // valid[1]))
    else:
        out = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        kwargs |= {"output_size": out}
        canvas_area = out[0] * out[1]
    kwargs |= {
        "stride": stride,
        "thing_ids": is_thing,
        "num_proposals": draw(st.integers(1, 12)),
        "object_mask_threshold": draw(st.sampled_from([0.0, 0.01, 0.3, 0.9])),
        "overlap_threshold": draw(st.sampled_from([0.0, 0.5, 0.7, 1.0])),
        "small_area_threshold": draw(st.sampled_from([0.0, 1.0, 50.0, 256.0])),
        "canvas_size": canvas,
    }
    small_area = kwargs["small_area_threshold"] * canvas_area / float(canvas[0] * canvas[1])
    meta = {"out": out, "is_thing": is_thing, "small_area": small_area}
    return (heat, center, feats, mask_head), kwargs, meta


def check_consistent(dec, kwargs: dict, meta: dict) -> None:
    """Every property listed in the module docstring (except fast == dense)."""
    cat, inst = dec.category_mask, dec.instance_mask
    assert cat.shape == inst.shape == meta["out"] and cat.dtype == inst.dtype == np.int32
    is_thing = meta["is_thing"]
    n = dec.num_segments
    np.testing.assert_array_equal(dec.segment_ids, np.arange(1, n + 1))
    pairs = list(zip(dec.segment_category_ids.tolist(), dec.segment_instance_ids.tolist(), strict=True))
    assert len(set(pairs)) == n
    # void (class 0) is never a segment, even when a void proposal is kept (test_void_proposal_is_not_a_segment)
    assert all(c != 0 for c, _ in pairs)
    assert (inst[cat == 0] == 0).all()
    # masks -> segments: every non-void pair present is listed, with its exact area and bbox
    present = {(int(a), int(b)) for a, b in np.unique(np.stack([cat, inst], -1).reshape(-1, 2), axis=0)}
    present.discard((0, 0))
    assert present == set(pairs) - {(0, 0)}, (present, pairs)
    for s, (c, i) in enumerate(pairs):
        if c == 0:
            continue
        assert 1 <= c < is_thing.shape[0]
        assert (i > 0) == bool(is_thing[c]), (c, i)  # instance ids only for things
        ys, xs = np.nonzero((cat == c) & (inst == i))
        assert dec.segment_areas[s] == ys.size > 0
        assert tuple(dec.segment_bboxes[s]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        members = np.flatnonzero(dec.proposal_segment == s + 1)
        assert members.size >= 1
        assert dec.segment_areas[s] == dec.proposal_areas[members].sum()
        assert dec.segment_scores[s] == dec.proposal_scores[members].max()
        assert (dec.proposal_classes[members] == c).all()
        assert np.all(dec.proposal_areas[members] > meta["small_area"])  # none below the scaled threshold
    stuff = [c for c, i in pairs if c != 0 and not is_thing[c]]
    assert len(stuff) == len(set(stuff))  # stuff proposals of one category merge into one segment
    # proposals: sorted, valid, and dropped ones won no pixel in the final masks
    k = dec.proposal_scores.shape[0]
    assert k <= kwargs["num_proposals"]
    assert (dec.proposal_scores > np.float32(kwargs["object_mask_threshold"])).all()
    assert (np.diff(dec.proposal_scores) <= 0).all()
    assert dec.mask_logits.shape[2] == k and np.isfinite(dec.mask_logits).all()


def _same(a, b) -> None:
    for name in ("category_mask", "instance_mask", "segment_category_ids", "segment_instance_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("segment_areas", "segment_bboxes", "segment_scores", "proposal_areas", "proposal_segment"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@SETTINGS
@given(problems())
def test_any_finite_outputs_decode_consistently(problem):
    args, kwargs, meta = problem
    try:
        fast = decode_panoptic(*args, **kwargs)
    except ValueError as e:
        # The only refusal allowed for finite inputs: mask logits that overflow float32 (huge values).
        assert "overflowed float32" in str(e)
        assert max(float(np.abs(a.astype(np.float64)).max()) for a in args[1:3]) > 1e15
        return
    check_consistent(fast, kwargs, meta)
    _same(fast, decode_panoptic(*args, **kwargs, method="dense"))


@SETTINGS
@given(problems(value_bound=30.0))
def test_logit_sized_outputs_always_decode(problem):
    args, kwargs, meta = problem
    dec = decode_panoptic(*args, **kwargs)
    check_consistent(dec, kwargs, meta)


@settings(max_examples=60, deadline=None)
@given(
    problems(value_bound=8.0, quantised=False),
    st.sampled_from([0, 1, 2]),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.data(),
)
def test_non_finite_outputs_are_refused_naming_the_output(problem, which, value, data):
    args, kwargs, _ = problem
    arrays = [a.copy() for a in args[:3]]
    target = arrays[which]
    pos = tuple(data.draw(st.integers(0, n - 1)) for n in target.shape)
    target[pos] = value
    name = ("heatmap", "center_embeddings", "mask_features")[which]
    with pytest.raises(ValueError, match=f"^{name} holds .*first at index {re.escape(str(pos))}"):
        decode_panoptic(*arrays, args[3], **kwargs)


@pytest.mark.parametrize("key", MASK_HEAD_KEYS)
def test_non_finite_mask_head_is_refused(key):
    rng = np.random.default_rng(0)
    heat, center, feats = (rng.normal(size=(3, 3, n)).astype(np.float32) for n in (3, 2, 2))
    head = {
        "class_embeddings": np.ones((3, 2), np.float32),
        "mlp_dense0_kernel": np.eye(2, dtype=np.float32),
        "mlp_dense0_bias": np.zeros(2, np.float32),
        "mlp_norm_gamma": np.ones(2, np.float32),
        "mlp_norm_beta": np.zeros(2, np.float32),
        "mlp_dense1_kernel": np.eye(2, dtype=np.float32),
        "mlp_dense1_bias": np.zeros(2, np.float32),
    }
    decode_panoptic(heat, center, feats, head, output_size=(12, 12))  # the clean head decodes
    head[key] = head[key].copy()
    head[key].flat[0] = np.nan
    with pytest.raises(ValueError, match=f"mask_head\\['{key}'\\] holds 1 NaN"):
        decode_panoptic(heat, center, feats, head, output_size=(12, 12))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mask_resolution", ["full", "grid", "grid2x"])
def test_overflowing_mask_logits_are_refused(mask_resolution):
    """Finite but float32-overflowing features (3e38 x 3e38 embeddings) raise instead of crashing the merge."""
    heat = np.full((2, 2, 2), -9.0, np.float32)
    heat[0, 0, 1] = 5.0
    center = np.full((2, 2, 1), 3e38, np.float32)
    feats = np.full((2, 2, 1), 3e38, np.float32)
    head = {
        "class_embeddings": np.ones((2, 1), np.float32),
        "mlp_dense0_kernel": np.ones((1, 1), np.float32),
        "mlp_dense0_bias": np.zeros(1, np.float32),
        "mlp_norm_gamma": np.ones(1, np.float32),
        "mlp_norm_beta": np.full(1, 3e38, np.float32),
        "mlp_dense1_kernel": np.full((1, 1), 3e38, np.float32),
        "mlp_dense1_bias": np.zeros(1, np.float32),
    }
    # (the grid path checks the embeddings first: here they are infinite already)
    with pytest.raises(ValueError, match="overflowed (float32|the mask head)"):
        decode_panoptic(heat, center, feats, head, output_size=(8, 8), mask_resolution=mask_resolution)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_grid_refuses_a_nan_embedding_of_a_proposal_it_never_scores():
    """The pruned grid merge never computes the logits of a weak 17th proposal that cannot win a cell; a NaN
    mask embedding there (its centre embedding overflows the mask head) is still refused, as on the full
    path."""
    rng = np.random.default_rng(0)
    h, w, c, d = 8, 8, 20, 4
    heat = np.full((h, w, c), -9.0, np.float32)
    for q in range(16):  # 16 confident proposals
        heat[q // 4 * 2, q % 4 * 2, q] = 5.0
    heat[7, 7, 16] = -4.0  # a weak 17th, score 0.018
    center = rng.standard_normal((h, w, d)).astype(np.float32)
    center[7, 7] = 3e38  # finite output, NaN mask embedding
    head = {
        "class_embeddings": np.full((c, d), 4.0, np.float32),
        "mlp_dense0_kernel": rng.standard_normal((d, d)).astype(np.float32),
        "mlp_dense0_bias": np.zeros(d, np.float32),
        "mlp_norm_gamma": np.ones(d, np.float32),
        "mlp_norm_beta": np.zeros(d, np.float32),
        "mlp_dense1_kernel": rng.standard_normal((d, d)).astype(np.float32),
        "mlp_dense1_bias": np.zeros(d, np.float32),
    }
    e0 = mask_embeddings(center[0, 0][None], np.array([0]), head)[0].astype(np.float64)
    feats = np.broadcast_to(20 * e0 / (e0 @ e0), (h, w, d)).astype(np.float32)  # proposal 1: logit 20
    kw = dict(output_size=(64, 64), mask_resolution="grid")
    clean = center.copy()
    clean[7, 7] = 0.0
    ok = decode_panoptic(heat, clean, feats, head, **kw)  # decodes without the NaN
    assert len(ok.proposal_scores) == 17 and ok.proposal_areas[0] == 64 * 64
    with pytest.raises(ValueError, match="mask embeddings .* NaN"):
        decode_panoptic(heat, center, feats, head, **kw)


def test_void_proposal_is_not_a_segment():
    heat = np.full((2, 2, 2), -9.0, np.float32)
    heat[0, 0, 0] = 5.0  # the only proposal: class 0 (void)
    center = np.ones((2, 2, 1), np.float32)
    feats = np.ones((2, 2, 1), np.float32)
    head = {
        "class_embeddings": np.ones((2, 1), np.float32),
        "mlp_dense0_kernel": np.ones((1, 1), np.float32),
        "mlp_dense0_bias": np.zeros(1, np.float32),
        "mlp_norm_gamma": np.ones(1, np.float32),
        "mlp_norm_beta": np.zeros(1, np.float32),
        "mlp_dense1_kernel": np.ones((1, 1), np.float32),
        "mlp_dense1_bias": np.ones(1, np.float32),
    }
    dec = decode_panoptic(heat, center, feats, head, output_size=(8, 8), small_area_threshold=0.0)
    assert (dec.category_mask == 0).all() and dec.proposal_classes.tolist() == [0]
    assert dec.num_segments == 0, list(zip(dec.segment_category_ids, dec.segment_areas, strict=True))
