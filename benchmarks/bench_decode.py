"""Speed of the NumPy MaskConver decoding (``maskconver.runtime.decode``), dense vs fast merge.

Run under pytest-benchmark. On a shared machine, CPU time of a single BLAS thread is the steadier
measure (process_time would also count idle-spinning OpenBLAS threads)::

    OPENBLAS_NUM_THREADS=1 /work/venv/bin/pytest benchmarks/bench_decode.py --benchmark-only \
        --benchmark-timer=time.process_time

Cases:

* ``golden``: the Model Garden golden outputs (random weights; 32x32 for the 256 model, 80x80 for the 640
  model; 201 classes, D = 256; masks to the 640x640 canvas). Their masks are weak and nearly tied
  everywhere (a fixture offset of -5 on every mask logit), so the winner map is fragmented: a worst case
  for the coarse-to-fine merge.
* ``sharp``: the same heatmap / embeddings, but mask features made (least squares through the proposals'
  mask embeddings) to give each proposal a solid region with logits of about +-6, as a trained model does.
  ``sharp 256 original``: the 256 model's outputs decoded to a 480 x 640 original image (letterbox), the
  Segmenter's default mode.
* ``demo size``: the demo model's shapes (16 x 16 x 11 heatmap, int8, 128 x 128 output; D = 64) with a
  random mask head and blob masks: the per-call overhead of the decoder dominates there.
* stage benchmarks: proposals (float and int8 heatmap) and the merge alone.

TensorFlow imported and initialised in the same process was measured not to slow the decoding (TF 2.21:
sharp 640 int8 11.5 ms without, 11.6 ms with a checkpoint read and a resize op); the mask head is still
read in a subprocess so that TensorFlow's thread pools cannot compete with the timed code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from maskconver.runtime.decode import decode_panoptic, mask_embeddings
from maskconver.runtime.mask_resize import axis_plan
from maskconver.runtime.merge import merge_dense, merge_fast
from maskconver.runtime.peaks import find_proposals

MG = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "modelgarden"


def _golden(size: int) -> dict[str, np.ndarray]:
    path = MG / f"golden_{size}.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return dict(np.load(path))


_EXTRACT = """
import sys, numpy as np, tensorflow as tf
r = tf.train.load_checkpoint(sys.argv[1])
names = dict(class_embeddings="class_embeddings/embeddings", mlp_dense0_kernel="mlp/dense/0/kernel",
             mlp_dense0_bias="mlp/dense/0/bias", mlp_norm_gamma="mlp/norms/0/gamma",
             mlp_norm_beta="mlp/norms/0/beta", mlp_dense1_kernel="mlp/dense/1/kernel",
             mlp_dense1_bias="mlp/dense/1/bias")
np.savez(sys.argv[2], **{k: r.get_tensor(f"model/{v}/.ATTRIBUTES/VARIABLE_VALUE") for k, v in names.items()})
"""


@pytest.fixture(scope="module")
def mask_head(tmp_path_factory) -> dict[str, np.ndarray]:
    """The mask-head arrays from the export checkpoint, read by TensorFlow in a subprocess: TensorFlow's
    threads in this process would slow NumPy down several-fold and distort the timings."""
    if not (MG / "export_ckpt" / "ckpt-1.index").exists():
        pytest.skip("Model Garden checkpoint not found")
    out = tmp_path_factory.mktemp("mask_head") / "mask_head.npz"
    subprocess.run([sys.executable, "-c", _EXTRACT, str(MG / "export_ckpt" / "ckpt-1"), str(out)], check=True)
    return dict(np.load(out))


def _sharp_features(g: dict, mask_head: dict, seed: int = 0) -> np.ndarray:
    """Mask features ``[1, h, w, D]`` giving each golden proposal a Voronoi region (+6 inside, -6 outside)."""
    rng = np.random.default_rng(seed)
    heat = g["class_heatmaps"][0]
    h, w, _ = heat.shape
    props = find_proposals(heat)
    emb = mask_embeddings(g["center_embeddings"][0][props.yx[:, 0], props.yx[:, 1]], props.classes, mask_head)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform((0, 0), (h, w), (len(props), 2))
    owner = np.argmin(np.hypot(yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1]), axis=-1)
    target = np.where(owner[..., None] == np.arange(len(props)), 6.0, -6.0) + rng.normal(0, 1.0, (h, w, 1))
    feats = target.reshape(-1, len(props)) @ np.linalg.pinv(emb).T
    return feats.reshape(1, h, w, -1).astype(np.float32)


def _quantise(x: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255.0
    zp = int(round(-128 - lo / scale))
    return np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8), (scale, zp)


@pytest.mark.parametrize("method", ["fast", "dense"])
@pytest.mark.parametrize("size", [256, 640])
def test_decode_golden(benchmark, mask_head, size, method):
    g = _golden(size)
    benchmark.group = f"decode golden {size}"
    out = benchmark(
        decode_panoptic,
        g["class_heatmaps"],
        g["center_embeddings"],
        g["mask_features"],
        mask_head,
        method=method,
    )
    assert out.num_segments == {256: 11, 640: 9}[size]


@pytest.mark.parametrize("method", ["fast", "dense"])
@pytest.mark.parametrize("size", [256, 640])
def test_decode_sharp(benchmark, mask_head, size, method):
    g = _golden(size)
    feats = _sharp_features(g, mask_head)
    benchmark.group = f"decode sharp {size}"
    out = benchmark(
        decode_panoptic, g["class_heatmaps"], g["center_embeddings"], feats, mask_head, method=method
    )
    assert out.num_segments > 5


@pytest.mark.parametrize("size", [256, 640])
def test_decode_sharp_int8(benchmark, mask_head, size):
    """The runtime's case: int8 model outputs, proposals in the integer domain, fast merge."""
    g = _golden(size)
    (qh, hq), (qc, cq), (qm, mq) = (
        _quantise(x) for x in (g["class_heatmaps"], g["center_embeddings"], _sharp_features(g, mask_head))
    )
    benchmark.group = f"decode sharp {size}"
    out = benchmark(decode_panoptic, qh, qc, qm, mask_head, heatmap_quant=hq, center_quant=cq, mask_quant=mq)
    assert out.num_segments > 5


def test_decode_sharp_original_size(benchmark, mask_head):
    """256 model, int8, decoded to a 480 x 640 original image (letterboxed to 192 x 256 in the input)."""
    g = _golden(256)
    (qh, hq), (qc, cq), (qm, mq) = (
        _quantise(x) for x in (g["class_heatmaps"], g["center_embeddings"], _sharp_features(g, mask_head))
    )
    benchmark.group = "decode sharp 256 original"
    out = benchmark(
        decode_panoptic,
        qh,
        qc,
        qm,
        mask_head,
        heatmap_quant=hq,
        center_quant=cq,
        mask_quant=mq,
        output_size=(480, 640),
        valid_size=(192, 256),
    )
    assert out.category_mask.shape == (480, 640) and out.num_segments > 3


def _demo_size_case(seed: int = 0) -> tuple[tuple[np.ndarray, ...], dict, dict]:
    """Outputs shaped like the nano demo model's (int8), with blob masks for ~50 proposals."""
    rng = np.random.default_rng(seed)
    h = w = 16
    c, d = 11, 64  # D >= K: the least-squares masks below are exact (the demo model has D = 32)
    f = np.float32
    head = {
        "class_embeddings": rng.standard_normal((c, d)).astype(f),
        "mlp_dense0_kernel": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(f),
        "mlp_dense0_bias": rng.standard_normal(d).astype(f) * f(0.1),
        "mlp_norm_gamma": rng.uniform(0.5, 1.5, d).astype(f),
        "mlp_norm_beta": rng.standard_normal(d).astype(f) * f(0.1),
        "mlp_dense1_kernel": (rng.standard_normal((d, d)) * 3 / np.sqrt(d)).astype(f),
        "mlp_dense1_bias": np.zeros(d, f),
    }
    heat = rng.normal(-6.5, 1.2, (1, h, w, c)).astype(f)
    heat[0, rng.integers(0, h, 6), rng.integers(0, w, 6), rng.integers(0, c, 6)] = rng.uniform(-1, 1.5, 6)
    center = rng.standard_normal((1, h, w, d)).astype(f)
    props = find_proposals(heat[0], 50, 0.01)
    emb = mask_embeddings(center[0][props.yx[:, 0], props.yx[:, 1]], props.classes, head)
    # a few confident objects (the best proposals) and faint ones, as a trained model gives
    yy, xx = np.mgrid[0:h, 0:w]
    k = len(props)
    strong = np.arange(k) < 6
    centres = rng.uniform(0, h, (k, 2))
    radius = np.where(strong, rng.uniform(2, 6, k), rng.uniform(1, 3, k))
    dist = np.hypot(yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1])
    target = np.where(strong, 12.0, 3.0) * (radius - dist) / radius - np.where(strong, 0.0, 6.0)
    feats = (target.reshape(-1, k) @ np.linalg.pinv(emb).T).reshape(1, h, w, d)
    (qh, hq), (qc, cq), (qm, mq) = (_quantise(x) for x in (heat, center, feats))
    kw = dict(heatmap_quant=hq, center_quant=cq, mask_quant=mq, output_size=(128, 128), valid_size=(128, 128))
    return (qh, qc, qm), head, kw


@pytest.mark.parametrize("method", ["fast", "dense"])
def test_decode_demo_size(benchmark, method):
    outs, head, kw = _demo_size_case()
    benchmark.group = "decode demo size"
    out = benchmark(decode_panoptic, *outs, head, thing_ids=(1, 2, 3, 4, 5), method=method, **kw)
    assert out.category_mask.shape == (128, 128) and out.num_segments >= 3


@pytest.mark.parametrize("size", [256, 640])
def test_proposals(benchmark, size):
    g = _golden(size)
    benchmark.group = f"stages {size}"
    props = benchmark(find_proposals, g["class_heatmaps"][0])
    assert len(props) == 50


@pytest.mark.parametrize("size", [256, 640])
def test_proposals_int8(benchmark, size):
    g = _golden(size)
    q, quant = _quantise(g["class_heatmaps"][0])
    benchmark.group = f"stages {size}"
    props = benchmark(find_proposals, q, 50, 0.01, quant)
    assert len(props) == 50


@pytest.mark.parametrize("merge", [merge_fast, merge_dense], ids=["fast", "dense"])
@pytest.mark.parametrize("size", [256, 640])
def test_merge_golden_logits(benchmark, size, merge):
    g = _golden(size)
    logits = g["mask_proposal_logits"][0]
    py, px = axis_plan(logits.shape[0], 640), axis_plan(logits.shape[1], 640)
    benchmark.group = f"stages {size}"
    res = benchmark(merge, logits, g["confidence"][0], py, px, 256.0, 0.7)
    assert res.kept.sum() > 5


DEMO_GRID_CASE = (
    Path(__file__).resolve().parents[1] / "android_demo/decoder/src/test/resources/golden/demo_int8_grid"
)


def _trained_grid_case() -> tuple:
    """The trained demo model's int8 outputs on a synthetic scene (the committed Kotlin golden case
    ``demo_int8_grid``: 50 proposals, a few confident and a long weak tail) at the grid merge's inputs:
    ``(features [cells, D], emb [K, D + 1], offset [K] | None, scores [K], gy, gx, small_area, overlap)``."""
    import json

    from maskconver.runtime.decode import _find_proposals, _folded_embeddings, plan_decode

    inp = dict(np.load(DEMO_GRID_CASE / "inputs.npz"))
    head = dict(np.load(DEMO_GRID_CASE / "mask_head.npz"))
    meta = json.loads((DEMO_GRID_CASE / "case.json").read_text())
    args = dict(meta["args"])
    # heatmap -> heatmap_quant, center_embeddings -> center_quant, mask_features -> mask_quant
    args.update({f"{k.split('_')[0]}_quant": tuple(v) for k, v in meta["quant"].items()})
    for k in ("output_size", "valid_size", "input_size", "thing_ids"):
        if k in args:
            args[k] = tuple(args[k])
    heat, center, feats = inp["heatmap"], inp["center_embeddings"], inp["mask_features"]
    plan = plan_decode(heat, center, feats, head, **args)
    props = _find_proposals(heat, plan.peaks)
    d = center.shape[2]
    emb = _folded_embeddings(plan.head, center.reshape(-1, d).take(props.pixel, axis=0), props.classes)
    gy, gx = plan.axes
    cells = feats if plan.cells is None else feats[plan.cells[0]][:, plan.cells[1]]
    features = cells.astype(np.float32).reshape(-1, d)
    offset = emb[:, d].copy() if plan.head.mask_zero_point else None
    return features, emb, offset, props.scores, gy, gx, plan.small_area, plan.overlap


@pytest.mark.parametrize("merge", ["all logits", "pruned"])
def test_grid_merge_trained_demo(benchmark, merge):
    """The grid merge on a trained model's outputs: the mask-logit product of all 50 proposals and
    ``merge_grid``, against ``merge_grid_pruned`` (what ``mask_resolution="grid"`` runs), which multiplies out
    only the proposals that can win a cell. Same winners and areas."""
    from maskconver.runtime.grid_merge import merge_grid, merge_grid_pruned

    if not DEMO_GRID_CASE.exists():
        pytest.skip(f"{DEMO_GRID_CASE} not found")
    features, emb, offset, scores, gy, gx, small, overlap = _trained_grid_case()
    d = features.shape[1]

    def plain():
        logits = features @ emb[:, :d].T
        if offset is not None:
            logits -= offset
        return merge_grid(logits.reshape(gy.n, gx.n, -1), scores, gy, gx, small, overlap)

    def pruned():
        return merge_grid_pruned(features, emb, offset, scores, gy, gx, small, overlap)

    benchmark.group = "grid merge, trained demo model"
    res = benchmark(plain if merge == "all logits" else pruned)
    want = plain()
    assert np.array_equal(res.mask_area, want.mask_area) and np.array_equal(res.kept, want.kept)
