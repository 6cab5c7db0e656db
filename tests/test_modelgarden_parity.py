"""Parity with the TensorFlow Model Garden MaskConver mobile model on the public fixture set.

Both fixture checkpoints (training- and export-style key layouts) are loaded into the Keras architecture at
256 and 640, and the dense head outputs and the mask-embedding generator are compared with the golden arrays
the Model Garden code produced (``shared/fixtures/modelgarden/README.md``). Each size is built once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from maskconver.models.architecture import build_model
from maskconver.models.checkpoint import match_weights, read_checkpoint_arrays
from maskconver.models.config import get_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "modelgarden"
SIZES = (256, 640)
KINDS = ("train_ckpt", "export_ckpt")
# our output name -> (golden array name, absolute tolerance suggested by the fixture README)
DENSE = {
    "heatmap": ("class_heatmaps", 5e-4),
    "center_embeddings": ("center_embeddings", 1e-4),
    "mask_features": ("mask_features", 1e-4),
}
REL_TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "golden_256.npz").is_file(),
    reason=f"Model Garden fixtures not found at {FIXTURES} (clone the repo beside shared/)",
)


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """Frobenius relative error ||actual - expected|| / ||expected||, in float64."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(a - e) / np.linalg.norm(e))


def gather_centers(center_embeddings: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``[B,h,w,D]`` dense map and ``[B,K,2]`` (y, x) indices -> ``[B,K,D]`` gathered embeddings."""
    batch = np.arange(center_embeddings.shape[0])[:, None]
    return center_embeddings[batch, indices[..., 0], indices[..., 1]]


@pytest.fixture(scope="module")
def models():
    cfg = get_config("mobilenet_mh_256")
    return {size: build_model(cfg, input_size=(size, size)) for size in SIZES}


@pytest.fixture(scope="module")
def weights(models):
    expected = {k: tuple(v.shape) for k, v in models[256].variables_by_name().items()}
    out = {}
    for kind in KINDS:
        arrays, _config, _kind = read_checkpoint_arrays(FIXTURES / kind)
        out[kind] = match_weights(arrays, expected, kind)
    return out


@pytest.fixture(scope="module")
def golden():
    out = {}
    for size in SIZES:
        with np.load(FIXTURES / f"golden_{size}.npz") as z:
            out[size] = {k: z[k] for k in z.files}
    return out


@pytest.fixture(scope="module")
def results(models, weights, golden):
    """(checkpoint kind, size) -> our dense outputs plus ``mask_embeddings_after_mlp`` (numpy)."""
    res = {}
    for kind in KINDS:
        for size in SIZES:
            model, g = models[size], golden[size]
            model.set_weights_dict(weights[kind])
            out = {k: np.asarray(v) for k, v in model(g["image_normalized"]).items()}
            gathered = gather_centers(out["center_embeddings"], g["embedding_indices"])
            out["mask_embeddings_after_mlp"] = np.asarray(model.mask_embeddings(gathered, g["classes"]))
            res[kind, size] = out
    return res


def test_both_layouts_hold_identical_weights(weights):
    train, export = weights["train_ckpt"], weights["export_ckpt"]
    assert set(train) == set(export)
    assert len(train) == 371
    for k in train:
        np.testing.assert_array_equal(train[k], export[k], err_msg=k)


@pytest.mark.parametrize("name", sorted(DENSE))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_dense_outputs_match_golden(results, golden, kind, size, name):
    golden_name, abs_tol = DENSE[name]
    ours, expected = results[kind, size][name], golden[size][golden_name]
    h = size // 8
    assert ours.shape == expected.shape == (1, h, h, expected.shape[-1])
    err = rel_err(ours, expected)
    assert err < REL_TOL, f"{kind} {size} {name}: relative error {err:.3g}"
    assert np.abs(ours - expected).max() < abs_tol


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_mask_embeddings_and_logits_match_golden(results, golden, kind, size):
    g, ours = golden[size], results[kind, size]
    emb = ours["mask_embeddings_after_mlp"]
    assert emb.shape == g["mask_embeddings_after_mlp"].shape == (1, 50, 256)
    err = rel_err(emb, g["mask_embeddings_after_mlp"])
    assert err < REL_TOL, f"{kind} {size} mask embeddings: relative error {err:.3g}"
    assert np.abs(emb - g["mask_embeddings_after_mlp"]).max() < 1e-4
    np.testing.assert_allclose(emb[..., 0], -5.0, atol=1e-5)  # the fixture's mask-logit offset
    logits = np.einsum("bqc,bhwc->bhwq", emb.astype(np.float64), ours["mask_features"].astype(np.float64))
    assert np.abs(logits - g["mask_proposal_logits"]).max() < 1e-3


def test_call_without_training_flag_is_inference_and_keeps_weights(models, weights, golden):
    """Regression: a Keras 3 ``Resizing`` layer once put every later layer in training mode (batch
    statistics, moving-stat updates) whenever the graph was called without ``training=False``."""
    model, g = models[256], golden[256]
    model.set_weights_dict(weights["export_ckpt"])
    out = model.dense(g["image_normalized"])  # no training argument on purpose
    for name, (golden_name, _tol) in DENSE.items():
        assert rel_err(np.asarray(out[name]), g[golden_name]) < REL_TOL, name
    after = model.get_weights_dict()
    changed = [k for k, v in weights["export_ckpt"].items() if not np.array_equal(after[k], v)]
    assert not changed, f"calling the model changed {len(changed)} variables, e.g. {changed[:3]}"
