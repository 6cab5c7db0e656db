"""TFLite conversion of the inference graph: fp32, fp16 (weights) and full-integer int8."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

QUANT_MODES = ("int8", "fp16", "fp32")


def _converter(fn: Callable, input_size: tuple[int, int], dtype):
    """A TFLiteConverter whose ``serving_default`` signature is ``image -> heatmap, center_embeddings, ...``."""
    import tensorflow as tf

    h, w = input_size
    module = tf.Module()
    module.serve = tf.function(fn, input_signature=[tf.TensorSpec([1, h, w, 3], dtype, name="image")])
    return tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)


def convert_tflite(
    fn: Callable,
    input_size: tuple[int, int],
    mode: str,
    calibration: Iterable[np.ndarray] | None = None,
    per_channel: bool = True,
) -> bytes:
    """Convert ``fn`` (raw RGB image -> 3 outputs) to a TFLite flatbuffer.

    ``mode`` "fp32"/"fp16": uint8 input (a CAST inside), float32 outputs. "int8": full-integer post-training
    quantisation from ``calibration`` (uint8 ``[H,W,3]`` letterboxed canvases), uint8 input with scale 1 / zero
    point 0 (raw pixels; the normalisation runs in int8 inside), int8 outputs (the runtime dequantises lazily).
    """
    import tensorflow as tf

    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantisation {mode!r}; use one of {QUANT_MODES}")
    if mode == "int8":
        conv = _converter(fn, input_size, tf.float32)
        if calibration is None:
            raise ValueError("int8 conversion needs calibration images")
        images = list(calibration)
        if not images:
            raise ValueError("int8 conversion needs at least one calibration image")

        def representative():
            for img in images:
                x = np.asarray(img, np.float32).copy()
                # Pin the input range to exactly [0, 255] so the uint8 input is raw pixels (scale 1, zero point 0).
                x[0, 0, :] = 0.0
                x[-1, -1, :] = 255.0
                yield [x[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.int8
        if not per_channel:
            conv._experimental_disable_per_channel = True
    else:
        conv = _converter(fn, input_size, tf.uint8)
        if mode == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert()


def run_tflite(model: bytes | str, image: np.ndarray, num_threads: int = 2) -> dict[str, np.ndarray]:
    """Run a converted model on one uint8 canvas ``[H,W,3]``; outputs dequantised to float32 by name."""
    from ai_edge_litert.interpreter import Interpreter

    kw = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    it = Interpreter(num_threads=num_threads, **kw)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.asarray(image)[None]
    if inp["dtype"] == np.uint8:
        scale, zp = inp["quantization"]
        if scale and (abs(scale - 1.0) > 1e-6 or zp != 0):
            x = np.clip(np.round(x / scale + zp), 0, 255)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    return {name: dequantize(it.get_tensor(d["index"]), d) for name, d in output_details_by_name(it).items()}


def output_details_by_name(interpreter) -> dict[str, dict]:
    """Map ``heatmap`` / ``center_embeddings`` / ``mask_features`` to the interpreter's output details."""
    from maskconver.runtime.model_info import OUTPUT_NAMES, ModelFileError

    details = interpreter.get_output_details()
    try:
        sig = interpreter.get_signature_list()
        names = sig.get("serving_default", {}).get("outputs", [])
    except (AttributeError, ValueError):
        names = []
    out: dict[str, dict] = {}
    if sorted(names) == sorted(OUTPUT_NAMES):
        runner_out = interpreter.get_signature_runner("serving_default").get_output_details()
        for name in OUTPUT_NAMES:
            idx = runner_out[name]["index"]
            out[name] = next(d for d in details if d["index"] == idx)
        return out
    for name in OUTPUT_NAMES:
        hits = [d for d in details if name in d["name"]]
        if len(hits) != 1:
            raise ModelFileError(f"cannot find the output '{name}' among {[d['name'] for d in details]}")
        out[name] = hits[0]
    return out


def dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zp = detail.get("quantization", (0.0, 0))
    if x.dtype in (np.int8, np.uint8) and scale:
        return (x.astype(np.float32) - zp) * np.float32(scale)
    return x.astype(np.float32)
