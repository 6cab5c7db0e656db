"""ONNX export of the same inference graph (opset 17), float or static int8 (QDQ, uint8 activations)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from maskconver.runtime.model_info import OUTPUT_NAMES

OPSET = 17


def float_onnx(fn: Callable, input_size: tuple[int, int]):
    """tf2onnx conversion of ``fn`` with a uint8 ``image`` input and outputs named like the TFLite ones."""
    import tensorflow as tf
    import tf2onnx

    h, w = input_size
    spec = [tf.TensorSpec([1, h, w, 3], tf.uint8, name="image")]
    proto, _ = tf2onnx.convert.from_function(tf.function(fn), input_signature=spec, opset=OPSET)
    # tf2onnx names outputs after the graph tensors, in tf.nest order: a dict flattens by sorted key.
    old = [o.name for o in proto.graph.output]
    if len(old) != len(OUTPUT_NAMES):
        raise RuntimeError(f"unexpected ONNX outputs {old}")
    mapping = dict(zip(old, sorted(OUTPUT_NAMES), strict=True))
    for node in proto.graph.node:
        node.output[:] = [mapping.get(o, o) for o in node.output]
    for o in proto.graph.output:
        o.name = mapping[o.name]
    return proto


class _Reader:
    """onnxruntime CalibrationDataReader over uint8 canvases."""

    def __init__(self, images: list[np.ndarray]):
        self._it = iter(images)

    def get_next(self):
        img = next(self._it, None)
        return None if img is None else {"image": np.asarray(img, np.uint8)[None]}


def quantize_onnx(float_path: Path, out_path: Path, calibration: list[np.ndarray]) -> None:
    """Static int8: QDQ, uint8 activations, per-channel int8 weights (the fast x86 recipe)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(_Reader, CalibrationDataReader):
        pass

    quantize_static(
        str(float_path),
        str(out_path),
        Reader(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def export_onnx(
    fn: Callable,
    input_size,
    info,
    mask_head: dict[str, np.ndarray],
    out_path: Path,
    quantize: bool = False,
    calibration: list[np.ndarray] | None = None,
    reference_tflite: bytes | None = None,
) -> Path:
    """Write ``out_path`` (float, or int8 when ``quantize``) with maskconver metadata in ``metadata_props``."""
    import onnx
    from maskconver.converter.onnx_metadata import add_onnx_metadata

    proto = float_onnx(fn, input_size)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as td:
        fpath = Path(td) / "float.onnx"
        onnx.save(proto, str(fpath))
        if quantize:
            if not calibration:
                raise ValueError("int8 ONNX needs calibration images")
            qpath = Path(td) / "int8.onnx"
            quantize_onnx(fpath, qpath, calibration)
            proto = onnx.load(str(qpath))
        add_onnx_metadata(proto, info, mask_head)
        tmp = Path(td) / "final.onnx"
        onnx.save(proto, str(tmp))
        if reference_tflite is not None:
            check_against_tflite(tmp, reference_tflite, input_size)
        os.replace(tmp, out_path)
    return out_path


def check_against_tflite(onnx_path: Path, tflite: bytes, input_size, tol: float = 1e-4) -> float:
    """Max abs difference of ONNX Runtime vs float TFLite outputs on a fixed image; raise above ``tol``."""
    import onnxruntime as ort
    from maskconver.converter.tflite_export import run_tflite

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*input_size, 3), dtype=np.uint8)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": img[None]}), strict=True))
    ref = run_tflite(tflite, img)
    worst = max(float(np.abs(got[k] - ref[k]).max() / max(1.0, np.abs(ref[k]).max())) for k in OUTPUT_NAMES)
    if worst > tol:
        raise RuntimeError(f"ONNX Runtime differs from float TFLite by {worst:.2e} (> {tol})")
    return worst


def run_onnx(onnx_path: Path, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime (CPU) outputs by name for uint8 canvases ``[H,W,3]`` (QDQ models dequantise inside)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, {"image": np.asarray(img)[None]}), strict=True)) for img in images]
