"""Export golden decoder cases for the Kotlin decoder tests (android_demo/decoder).

Each case is a folder holding the inputs of :func:`maskconver.runtime.decode.decode_panoptic` and what the
Python runtime returns for them:

* ``inputs.npz``: ``heatmap``, ``center_embeddings``, ``mask_features`` ``[h, w, C|D]`` (float32, or int8 /
  uint8 codes);
* ``mask_head.npz``: the ``mask_head.npz`` arrays (float32);
* ``case.json``: the decode arguments (output/valid/input size, thresholds, canvas, stride, thing ids,
  ``mask_resolution`` where it is not ``"full"``, the ``(scale, zero_point)`` of quantised inputs);
* ``expected.npz`` (compressed): ``category_mask``, ``instance_mask`` ``[H, W]`` int32, the segment arrays
  (``segment_category_ids``, ``segment_instance_ids``, ``segment_scores``, ``segment_areas``,
  ``segment_bboxes``), the proposal arrays (``proposal_classes``, ``proposal_scores``, ``proposal_yx``,
  ``proposal_areas``, ``proposal_segment``), ``mask_logits`` ``[h, w, K]`` (with a grid
  ``mask_resolution``: the used, possibly upsampled, grid cells ``[ny, nx, K]``) and ``winner`` ``[H, W]``.

Cases:

* ``small``: random float / int8 / uint8 cases built here (plateaus, original-resolution crops, no proposals,
  K below the number of peaks) and cases decoded with ``mask_resolution`` ``"grid"``, ``"grid2x"`` and
  ``"grid4x"`` (the real-time merge on the feature grid); tiny, committed as test resources.
* ``int8``: the Model Garden 256 golden outputs quantised to int8 (per tensor) with the export checkpoint's
  mask head; about 1.5 MB, committed.
* ``modelgarden``: the Model Garden 256 golden float outputs as they are (reference 640x640 canvas, and an
  original-resolution crop, the crop again with ``mask_resolution="grid"``); about 5 MB, written at test
  time only.
* ``demo``: the trained demo model (``models/demo``) on two synthetic scenes, its outputs quantised to int8
  per tensor: a trained model's scores (a few confident proposals, a long tail of weak ones), decoded with the
  full merge and with the grid merge at a letterboxed 240x320 output; small, committed. Needs TensorFlow.
* ``fuzz``: seeded random cases (``fuzz_NN``, the full merge, and ``fuzz_grid_NN``, the grid modes).

The Model Garden cases need ``shared/fixtures/modelgarden`` (golden_256.npz and export_ckpt) and TensorFlow
(to read the checkpoint).

Usage: ``python android_demo/tools/export_golden.py OUT_DIR [--cases small,int8,modelgarden]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from maskconver.runtime.decode import (
    GRID_FACTORS,
    PanopticDecoding,
    decode_panoptic,
    grid_axes,
    output_plans,
)
from maskconver.runtime.grid_merge import merge_grid
from maskconver.runtime.merge import merge_fast

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MG = SHARED / "fixtures" / "modelgarden"
ALL_CASES = ("small", "int8", "modelgarden", "letterbox", "model", "fuzz", "demo")
DEMO_CHECKPOINT = REPO / "models" / "demo" / "maskconver_nano_demo.npz"
FUZZ_CASES = 24
FUZZ_GRID_CASES = 8
# (image height, width) -> model input (height, width): upscale, downscale, exact 2x, odd sizes, identity
LETTERBOX_SHAPES = (
    ((37, 53), (64, 64)),
    ((480, 640), (256, 256)),
    ((128, 96), (64, 64)),
    ((150, 200), (64, 64)),
    ((83, 125), (64, 80)),
    ((64, 48), (64, 64)),
)
EXPECTED_KEYS = (
    "category_mask",
    "instance_mask",
    "segment_category_ids",
    "segment_instance_ids",
    "segment_scores",
    "segment_areas",
    "segment_bboxes",
    "proposal_classes",
    "proposal_scores",
    "proposal_yx",
    "proposal_areas",
    "proposal_segment",
    "mask_logits",
)
OUTPUT_NAMES = ("heatmap", "center_embeddings", "mask_features")
QUANT_ARGS = {"heatmap": "heatmap_quant", "center_embeddings": "center_quant", "mask_features": "mask_quant"}


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> None:
    """Write ``arrays`` to ``path`` (``.npz``) through a temp file and a rename."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    os.replace(tmp, path)


def write_case(
    folder: Path,
    outputs: dict[str, np.ndarray],
    mask_head: dict[str, np.ndarray],
    quant: dict[str, tuple[float, float]],
    args: dict[str, Any],
) -> PanopticDecoding:
    """Run ``decode_panoptic`` on one case and write inputs, settings and expected outputs into ``folder``.

    ``outputs``: the three model outputs ``[h, w, C|D]``; ``quant``: ``(scale, zero_point)`` per quantised
    output; ``args``: the other ``decode_panoptic`` keyword arguments (JSON-serialisable).
    """
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(args)
    for name, q in quant.items():
        kwargs[QUANT_ARGS[name]] = q
    dec = decode_panoptic(
        outputs["heatmap"][None],
        outputs["center_embeddings"][None],
        outputs["mask_features"][None],
        mask_head,
        method="fast",
        **kwargs,
    )
    _write_npz(folder / "inputs.npz", {k: np.ascontiguousarray(outputs[k]) for k in OUTPUT_NAMES}, False)
    _write_npz(folder / "mask_head.npz", {k: np.asarray(v, np.float32) for k, v in mask_head.items()}, False)
    expected = {k: np.ascontiguousarray(getattr(dec, k)) for k in EXPECTED_KEYS}
    for k in ("category_mask", "instance_mask"):
        expected[k] = expected[k].astype(np.int32)
    expected["winner"] = winner_map(dec, outputs["heatmap"].shape[:2], args)
    _write_npz(folder / "expected.npz", expected, True)
    meta = {
        "args": args,
        "quant": {k: [float(v[0]), float(v[1])] for k, v in quant.items()},
        "num_segments": dec.num_segments,
        "num_proposals_valid": len(dec.proposal_classes),
    }
    tmp = folder / "case.json.part"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, folder / "case.json")
    return dec


def winner_map(dec: PanopticDecoding, feature_size: tuple[int, int], args: dict[str, Any]) -> np.ndarray:
    """Winning proposal rank per output pixel ``[H, W]`` int32 (the merge's argmax, which the masks show only
    through category / instance), from the decoding's own mask logits and scores (the grid merge for a grid
    ``mask_resolution``)."""
    canvas = tuple(args.get("canvas_size", (640, 640)))
    output = tuple(args.get("output_size") or canvas)
    stride = int(args.get("stride", 8))
    input_size = tuple(args.get("input_size") or (stride * feature_size[0], stride * feature_size[1]))
    valid = tuple(args["valid_size"]) if args.get("valid_size") else None
    factor = GRID_FACTORS.get(args.get("mask_resolution", "full"), 0)
    if factor:
        grid = (feature_size[0] * factor, feature_size[1] * factor)
        gy, gx, area = grid_axes(grid, output, valid, input_size)
    else:
        py, px, area = output_plans(feature_size, output, valid, input_size)
    small = float(args.get("small_area_threshold", 256.0)) * area / float(canvas[0] * canvas[1])
    if len(dec.proposal_scores) == 0:
        return np.zeros(output, np.int32)
    overlap = float(args.get("overlap_threshold", 0.7))
    if factor:
        merge = merge_grid(dec.mask_logits, dec.proposal_scores, gy, gx, small, overlap)
    else:
        merge = merge_fast(dec.mask_logits, dec.proposal_scores, py, px, small, overlap)
    np.testing.assert_array_equal(merge.mask_area, dec.proposal_areas)
    return merge.winner.astype(np.int32)


# ---------------------------------------------------------------------------------------------------------
# inputs


def random_mask_head(rng: np.random.Generator, c: int, d: int, hidden: int) -> dict[str, np.ndarray]:
    """Random float32 mask head with C classes, embedding D and MLP width ``hidden``."""

    def n(*shape: int, s: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(np.float32)

    return {
        "class_embeddings": n(c, d),
        "mlp_dense0_kernel": n(d, hidden, s=1.0 / np.sqrt(d)),
        "mlp_dense0_bias": n(hidden, s=0.1),
        "mlp_norm_gamma": (1.0 + n(hidden, s=0.1)).astype(np.float32),
        "mlp_norm_beta": n(hidden, s=0.1),
        "mlp_dense1_kernel": n(hidden, d, s=1.0 / np.sqrt(hidden)),
        "mlp_dense1_bias": n(d, s=0.1),
    }


def blob_mask_head(rng: np.random.Generator, c: int, d: int, offset: float) -> dict[str, np.ndarray]:
    """A random mask head that keeps masks local: class embeddings near 1, MLP kernels near the identity, and
    ``-offset`` added to every mask logit through channel 0 (features carry 1 there). With mask features equal
    to the center embeddings, a proposal's mask is the region whose features resemble its center's."""
    head = random_mask_head(rng, c, d, d)
    head["class_embeddings"] = (1 + 0.2 * rng.standard_normal((c, d))).astype(np.float32)
    head["mlp_dense0_kernel"] = (np.eye(d) + 0.1 * rng.standard_normal((d, d))).astype(np.float32)
    head["mlp_dense1_kernel"] = (np.eye(d) + 0.1 * rng.standard_normal((d, d))).astype(np.float32)
    head["mlp_dense1_kernel"][:, 0] = 0
    head["mlp_dense1_bias"][0] = -offset
    return head


def smooth_field(rng: np.random.Generator, h: int, w: int, ch: int, scale: float) -> np.ndarray:
    """Spatially smooth random ``[h, w, ch]`` float32 (a 3x3 box blur twice), so peaks and blobs form."""
    x = rng.standard_normal((h, w, ch)).astype(np.float32)
    for _ in range(2):
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / np.float32(9)
    return (x * np.float32(scale)).astype(np.float32)


def quantize(x: np.ndarray, dtype: type) -> tuple[np.ndarray, tuple[float, float]]:
    """Per-tensor affine quantisation of float ``x`` to int8/uint8 codes -> ``(codes, (scale, zero_point))``."""
    info = np.iinfo(dtype)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = float(np.float32((hi - lo) / (info.max - info.min)))
    zero_point = int(np.clip(round(info.min - lo / scale), info.min, info.max))
    codes = np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)
    return codes, (scale, float(zero_point))


def small_cases(out: Path, log: Callable[[str], None]) -> None:
    """Random cases on small grids (see module doc)."""
    rng = np.random.default_rng(20261124)
    c, d = 9, 8
    head = blob_mask_head(rng, c, d, 4.0)
    things = [1, 2, 3, 4]

    def outputs(h: int, w: int, heat_scale: float, heat_bias: float) -> dict[str, np.ndarray]:
        feats = smooth_field(rng, h, w, d, 8.0)
        feats[..., 0] = 1
        return {
            "heatmap": (smooth_field(rng, h, w, c, heat_scale) + np.float32(heat_bias)).astype(np.float32),
            "center_embeddings": (feats + np.float32(0.3) * smooth_field(rng, h, w, d, 1.0)).astype(
                np.float32
            ),
            "mask_features": feats,
        }

    base = {
        "thing_ids": things,
        "num_proposals": 12,
        "object_mask_threshold": 0.01,
        "overlap_threshold": 0.7,
        "small_area_threshold": 40.0,
        "canvas_size": [160, 160],
        "stride": 8,
    }
    # 1. float, reference mode (canvas output)
    o = outputs(12, 16, 6.0, -1.0)
    dec = write_case(out / "rand_float_reference", o, head, {}, {**base, "output_size": [96, 128]})
    log(f"rand_float_reference: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # 2. float, original-resolution mode (crop), input 64x96 holding a 50x70 image as 40x56
    o = outputs(8, 12, 6.0, -1.0)
    args = {**base, "output_size": [50, 70], "valid_size": [40, 56], "input_size": [64, 96]}
    dec = write_case(out / "rand_float_valid", o, head, {}, args)
    log(f"rand_float_valid: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # 3. int8 heatmap with few distinct codes (plateaus), uint8 centers, int8 features; K = 5
    o = outputs(10, 10, 4.0, 0.0)
    heat, hq = quantize(np.round(o["heatmap"] * 2) / 2, np.int8)
    cen, cq = quantize(o["center_embeddings"], np.uint8)
    feat, fq = quantize(o["mask_features"], np.int8)
    q_out = {"heatmap": heat, "center_embeddings": cen, "mask_features": feat}
    quant = {"heatmap": hq, "center_embeddings": cq, "mask_features": fq}
    args = {**base, "num_proposals": 5, "output_size": [80, 80]}
    dec = write_case(out / "rand_int8_plateaus", q_out, head, quant, args)
    log(f"rand_int8_plateaus: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # 4. flat int8 heatmap: every location ties with its neighbours (the raster tie-break decides)
    flat = np.full((6, 7, c), 20, np.int8)
    flat[:, :, 5] = 40
    flat[2:4, 3:5, 2] = 60
    q_out = {"heatmap": flat, "center_embeddings": cen[:6, :7], "mask_features": feat[:6, :7]}
    quant = {"heatmap": (0.1, -10.0), "center_embeddings": cq, "mask_features": fq}
    args = {**base, "output_size": [48, 56], "small_area_threshold": 10.0}
    dec = write_case(out / "rand_int8_flat", q_out, head, quant, args)
    log(f"rand_int8_flat: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # 5. exact ties: two peaks of one thing class with equal values and equal center embeddings give equal
    #    mask logits everywhere; every pixel is a tie and goes to the better-ranked (lower flat index) one
    h, w = 8, 10
    heat = np.full((h, w, c), -8.0, np.float32)
    heat[2, 2, 1] = heat[5, 7, 1] = 2.0
    heat[1, 8, 6] = 1.0  # and a stuff peak
    feats = smooth_field(rng, h, w, d, 8.0)
    feats[..., 0] = 1
    center = np.repeat(np.repeat(feats[:1, :1], h, axis=0), w, axis=1).copy()
    q_out = {"heatmap": heat, "center_embeddings": center, "mask_features": feats}
    dec = write_case(out / "rand_exact_ties", q_out, head, {}, {**base, "output_size": [64, 80]})
    assert 3 in dec.segment_instance_ids or 1 in dec.segment_instance_ids, (
        "the tie case lost its thing segment"
    )
    log(f"rand_exact_ties: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # 6. no proposal above the threshold
    o = outputs(6, 6, 1.0, -9.0)
    dec = write_case(out / "rand_empty", o, head, {}, {**base, "output_size": [48, 48]})
    log(f"rand_empty: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # grid modes (the real-time merge): uneven cells, a letterbox crop, skipped cells, ties, upsampled grids
    o = outputs(12, 16, 6.0, -1.0)
    args = {**base, "output_size": [100, 130], "mask_resolution": "grid"}
    dec = write_case(out / "rand_grid_reference", o, head, {}, args)
    log(f"rand_grid_reference: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    o = outputs(8, 12, 6.0, -1.0)
    args = {**base, "output_size": [50, 70], "valid_size": [40, 56], "input_size": [64, 96]}
    dec = write_case(out / "rand_grid_valid", o, head, {}, {**args, "mask_resolution": "grid"})
    log(f"rand_grid_valid: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    dec = write_case(out / "rand_grid2x_valid", o, head, {}, {**args, "mask_resolution": "grid2x"})
    log(f"rand_grid2x_valid: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # int8 / uint8 inputs, output smaller than the 2x grid along x (cells are skipped)
    o = outputs(10, 10, 4.0, 0.0)
    heat, hq = quantize(o["heatmap"], np.int8)
    cen, cq = quantize(o["center_embeddings"], np.uint8)
    feat, fq = quantize(o["mask_features"], np.int8)
    q_out = {"heatmap": heat, "center_embeddings": cen, "mask_features": feat}
    quant = {"heatmap": hq, "center_embeddings": cq, "mask_features": fq}
    args = {**base, "output_size": [60, 14], "small_area_threshold": 5.0, "mask_resolution": "grid2x"}
    dec = write_case(out / "rand_grid2x_int8", q_out, head, quant, args)
    log(f"rand_grid2x_int8: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    # exact ties on the grid: two equal thing peaks with equal center embeddings (the better-ranked one wins)
    h, w = 8, 10
    heat = np.full((h, w, c), -8.0, np.float32)
    heat[2, 2, 1] = heat[5, 7, 1] = 2.0
    heat[1, 8, 6] = 1.0
    feats = smooth_field(rng, h, w, d, 8.0)
    feats[..., 0] = 1
    center = np.repeat(np.repeat(feats[:1, :1], h, axis=0), w, axis=1).copy()
    q_out = {"heatmap": heat, "center_embeddings": center, "mask_features": feats}
    dec = write_case(
        out / "rand_grid_ties", q_out, head, {}, {**base, "output_size": [64, 80], "mask_resolution": "grid"}
    )
    log(f"rand_grid_ties: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")
    o = outputs(6, 8, 6.0, -1.0)
    args = {**base, "output_size": [45, 61], "mask_resolution": "grid4x"}
    dec = write_case(out / "rand_grid4x_reference", o, head, {}, args)
    log(f"rand_grid4x_reference: {dec.num_segments} segments, {len(dec.proposal_classes)} proposals")


def letterbox_cases(out: Path, log: Callable[[str], None]) -> None:
    """Random smooth images letterboxed by the Python runtime (OpenCV INTER_LINEAR), one ``.npz`` per case
    in ``out/letterbox``: ``image`` uint8 ``[H, W, 3]``, ``size`` ``[2]``, ``canvas`` uint8 ``[h, w, 3]``,
    ``scale`` float32, ``valid`` int32 ``[2]``."""
    from maskconver.runtime.preprocess import letterbox

    rng = np.random.default_rng(7)
    folder = out / "letterbox"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (hw, size) in enumerate(LETTERBOX_SHAPES):
        block = 4 if hw[0] * hw[1] < 100_000 else 16  # large images: coarser noise (small files)
        noise = rng.integers(0, 256, (hw[0] // block + 2, hw[1] // block + 2, 3)).astype(np.uint8)
        image = np.ascontiguousarray(np.kron(noise, np.ones((block, block, 1), np.uint8))[: hw[0], : hw[1]])
        image[:: 7 * block // 4] = rng.integers(0, 256, image[:: 7 * block // 4].shape).astype(np.uint8)
        canvas, scale, valid = letterbox(image, size)
        arrays = {
            "image": image,
            "size": np.asarray(size, np.int32),
            "canvas": canvas,
            "scale": np.float32(scale),
            "valid": np.asarray(valid, np.int32),
        }
        _write_npz(folder / f"letterbox_{i}_{hw[0]}x{hw[1]}_to_{size[0]}x{size[1]}.npz", arrays, True)
    log(f"letterbox: {len(LETTERBOX_SHAPES)} cases")


def model_file_case(out: Path, log: Callable[[str], None]) -> None:
    """A tiny real ``.tflite`` with the maskconver metadata (TF Lite converter + the converter's metadata
    writer), for the Kotlin model-file reader, in ``out/model``: ``tiny.tflite``, ``expected.json`` (what the
    Python reader finds: info fields, labels) and ``mask_head.npz`` (the arrays it finds)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from maskconver.converter.tflite_export import convert_tflite
    from maskconver.converter.tflite_metadata import populate_metadata
    from maskconver.runtime.model_file import read_model_file
    from maskconver.runtime.model_info import Category, ModelInfo

    c, d = 5, 6
    rng = np.random.default_rng(3)
    k_heat = tf.constant(rng.normal(0, 0.1, (1, 1, 3, c)).astype(np.float32))
    k_emb = tf.constant(rng.normal(0, 0.1, (1, 1, 3, d)).astype(np.float32))

    def fn(image):
        x = tf.nn.avg_pool2d(tf.cast(image, tf.float32), 8, 8, "VALID")
        return {
            "heatmap": tf.nn.conv2d(x, k_heat, 1, "VALID"),
            "center_embeddings": tf.nn.conv2d(x, k_emb, 1, "VALID"),
            "mask_features": tf.nn.conv2d(x, k_emb, 1, "VALID") * 2.0,
        }

    cats = [
        Category(0, "void", False, (0, 0, 0)),
        Category(1, "person", True, (220, 20, 60)),
        Category(2, "car", True, (0, 0, 142)),
        Category(4, "sky", False, (70, 130, 180)),
    ]
    info = ModelInfo(
        config_name="tiny_test",
        input_size=(32, 40),
        num_classes=c,
        embedding_size=d,
        categories=cats,
        num_proposals=7,
        small_area_threshold=12.5,
        conversion={"quantization": "fp32", "calibration_seed": 0},
    )
    head = random_mask_head(rng, c, d, d)
    raw = convert_tflite(fn, info.input_size, "fp32")
    data = populate_metadata(raw, info, head, info.labels(), {"name": "tiny test model"})
    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tiny.tflite.part"
    tmp.write_bytes(data)
    os.replace(tmp, folder / "tiny.tflite")
    mf = read_model_file(folder / "tiny.tflite")
    expected = {
        "config_name": mf.info.config_name,
        "input_size": list(mf.info.input_size),
        "num_classes": mf.info.num_classes,
        "embedding_size": mf.info.embedding_size,
        "num_proposals": mf.info.num_proposals,
        "small_area_threshold": mf.info.small_area_threshold,
        "object_mask_threshold": mf.info.object_mask_threshold,
        "overlap_threshold": mf.info.overlap_threshold,
        "thing_ids": mf.info.thing_ids,
        "labels": list(mf.labels),
        "colors": [(r << 16) | (g << 8) | b for r, g, b in (cat.color for cat in mf.info.categories)],
        "color_ids": [cat.id for cat in mf.info.categories],
        "quantization": mf.info.conversion.get("quantization"),
    }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1))
    _write_npz(folder / "mask_head.npz", {k: np.asarray(v) for k, v in mf.mask_head.items()}, False)
    log(f"model: tiny.tflite ({len(data)} bytes)")


def fuzz_cases(
    out: Path,
    log: Callable[[str], None],
    n: int = FUZZ_CASES,
    n_grid: int = FUZZ_GRID_CASES,
) -> None:
    """``n`` seeded random cases ``fuzz_NN`` (the full merge) and ``n_grid`` cases ``fuzz_grid_NN`` (a random
    grid ``mask_resolution``): grid 3..14 x 3..14, C 2..12, D 2..10, float / int8 / uint8 per output, K 1..20,
    thresholds, canvas and original-resolution modes, output sizes from below to above the input."""
    _fuzz(out, "fuzz", np.random.default_rng(99), n, ())
    _fuzz(out, "fuzz_grid", np.random.default_rng(98), n_grid, tuple(GRID_FACTORS))
    log(f"fuzz: {n} + {n_grid} grid cases")


def _fuzz(out: Path, prefix: str, rng: np.random.Generator, n: int, modes: tuple[str, ...]) -> None:
    """``n`` cases ``{prefix}_NN`` (see :func:`fuzz_cases`); with ``modes``, each one's
    ``mask_resolution`` is drawn from them."""
    for i in range(n):
        h, w = (int(v) for v in rng.integers(3, 15, 2))
        c, d = int(rng.integers(2, 13)), int(rng.integers(2, 11))
        head = blob_mask_head(rng, c, d, float(rng.uniform(1.0, 6.0)))
        feats = smooth_field(rng, h, w, d, float(rng.uniform(2.0, 10.0)))
        feats[..., 0] = 1
        outputs = {
            "heatmap": (
                smooth_field(rng, h, w, c, float(rng.uniform(1, 8))) + np.float32(rng.uniform(-4, 1))
            ).astype(np.float32),
            "center_embeddings": (feats + np.float32(0.3) * smooth_field(rng, h, w, d, 1.0)).astype(
                np.float32
            ),
            "mask_features": feats,
        }
        quant: dict[str, tuple[float, float]] = {}
        for name in OUTPUT_NAMES:
            kind = rng.choice(["float", "int8", "uint8"], p=[0.5, 0.3, 0.2])
            if kind != "float":
                outputs[name], quant[name] = quantize(outputs[name], np.int8 if kind == "int8" else np.uint8)
        stride = 8
        canvas = [int(v) for v in rng.integers(40, 200, 2)]
        args: dict[str, Any] = {
            "thing_ids": sorted(
                int(t) for t in rng.choice(c, size=int(rng.integers(0, c + 1)), replace=False)
            ),
            "num_proposals": int(rng.integers(1, 21)),
            "object_mask_threshold": float(rng.choice([0.01, 0.05, 0.3])),
            "overlap_threshold": float(rng.uniform(0.3, 0.9)),
            "small_area_threshold": float(rng.uniform(0.0, 60.0)),
            "canvas_size": canvas,
            "stride": stride,
        }
        if rng.random() < 0.5:
            args["output_size"] = [int(v) for v in rng.integers(5, 150, 2)]
        else:
            inp = [stride * h, stride * w]
            valid = [int(rng.integers(1, inp[0] + 1)), int(rng.integers(1, inp[1] + 1))]
            args.update(
                output_size=[int(max(1, v * rng.uniform(0.4, 2.5))) for v in valid],
                valid_size=valid,
                input_size=inp,
            )
        if modes:
            args["mask_resolution"] = str(rng.choice(modes))
        write_case(out / f"{prefix}_{i:02d}", outputs, head, quant, args)


def modelgarden_head() -> dict[str, np.ndarray]:
    """The mask-head arrays read from the Model Garden export checkpoint (as tests/test_decode.py)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from maskconver.models.checkpoint import read_mask_head

    return read_mask_head(MG / "export_ckpt" / "ckpt-1")


def modelgarden_outputs() -> dict[str, np.ndarray]:
    g = np.load(MG / "golden_256.npz")
    return {
        "heatmap": g["class_heatmaps"][0],
        "center_embeddings": g["center_embeddings"][0],
        "mask_features": g["mask_features"][0],
    }


def modelgarden_cases(out: Path, which: set[str], log: Callable[[str], None]) -> None:
    if not (MG / "golden_256.npz").exists() or not (MG / "export_ckpt" / "ckpt-1.index").exists():
        raise FileNotFoundError(f"Model Garden fixtures (golden_256.npz, export_ckpt) not found under {MG}")
    head = modelgarden_head()
    o = modelgarden_outputs()
    if "modelgarden" in which:
        dec = write_case(out / "mg256_reference", o, head, {}, {})
        log(f"mg256_reference: {dec.num_segments} segments")
        args = {"output_size": [300, 400], "valid_size": [192, 256], "input_size": [256, 256]}
        dec = write_case(out / "mg256_valid", o, head, {}, args)
        log(f"mg256_valid: {dec.num_segments} segments")
        dec = write_case(out / "mg256_grid_valid", o, head, {}, {**args, "mask_resolution": "grid"})
        log(f"mg256_grid_valid: {dec.num_segments} segments")
    if "int8" in which:
        q_out, quant = {}, {}
        for k in OUTPUT_NAMES:
            q_out[k], quant[k] = quantize(o[k], np.int8)
        dec = write_case(out / "mg256_int8", q_out, head, quant, {})
        log(f"mg256_int8: {dec.num_segments} segments")


def demo_cases(out: Path, log: Callable[[str], None]) -> None:
    """The trained demo model's real outputs (see the module docstring), int8 like a converted model's."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.models.checkpoint import load_checkpoint
    from maskconver.models.synthetic import render_synthetic_image

    model = load_checkpoint(DEMO_CHECKPOINT)
    size = tuple(model.config.input_size)
    fn = build_inference_fn(model)
    head = model.mask_head_arrays()
    things = [int(t) for t in model.config.thing_ids]
    settings = {"thing_ids": things, "stride": int(model.config.stride)}
    for i, (name, args) in enumerate(
        [
            ("demo_int8", {}),
            (
                "demo_int8_grid",
                {"output_size": [240, 320], "valid_size": [96, 128], "input_size": list(size), "mask_resolution": "grid"},
            ),
        ]
    ):
        image = render_synthetic_image(2024, i, size).image
        out_t = fn(tf.constant(image[None]))
        q_out, quant = {}, {}
        for k in OUTPUT_NAMES:
            q_out[k], quant[k] = quantize(np.asarray(out_t[k])[0], np.int8)
        dec = write_case(out / name, q_out, head, quant, {**settings, **args})
        log(f"{name}: {len(dec.proposal_classes)} proposals, {dec.num_segments} segments")


def export(out: Path, cases: tuple[str, ...] = ALL_CASES, log: Callable[[str], None] = print) -> list[str]:
    """Write the chosen case groups under ``out`` (each case folder replaced atomically); returns case names."""
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        raise ValueError(f"unknown case groups {sorted(unknown)}; choose from {ALL_CASES}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        if "small" in cases:
            small_cases(tmp, log)
        if {"int8", "modelgarden"} & set(cases):
            modelgarden_cases(tmp, set(cases), log)
        if "letterbox" in cases:
            letterbox_cases(tmp, log)
        if "model" in cases:
            model_file_case(tmp, log)
        if "fuzz" in cases:
            fuzz_cases(tmp, log)
        if "demo" in cases:
            demo_cases(tmp, log)
        names = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        for name in names:
            dest = out / name
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp / name, dest)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the case folders into")
    ap.add_argument("--cases", default="small", help=f"comma-separated groups of {ALL_CASES} (default small)")
    ns = ap.parse_args(argv)
    cases = tuple(c.strip() for c in ns.cases.split(",") if c.strip())
    try:
        names = export(ns.out, cases)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} cases to {ns.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
