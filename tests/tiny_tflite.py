"""Tiny real TFLite models built with the TensorFlow converter, shared by the model-file tests.

Each graph has the MaskConver I/O: ``image`` [1, 32, 32, 3] and three stride-8 outputs ``heatmap`` [C=5],
``center_embeddings`` and ``mask_features`` [D=6]. Converted models are cached per process.
"""

from __future__ import annotations

import functools
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

H = W = 32
C, D = 5, 6
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _weights(seed: int, dw_kernel: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.3, shape).astype(np.float32)

    return {
        "k1": w(3, 3, 3, 8),
        "k2": w(3, 3, 8, 8),
        "k3": w(3, 3, 8, 8),
        "dw": w(dw_kernel, dw_kernel, 8, 1),
        "b1": w(8),
        "h1": w(1, 1, 8, C),
        "h2": w(1, 1, 8, D),
        "h3": w(1, 1, 8, D),
    }


def _module(input_dtype: str, dw_kernel: int, extra: str | None, dynamic: bool):
    import tensorflow as tf

    p = {k: tf.constant(v) for k, v in _weights(0, dw_kernel).items()}
    mean, std = tf.constant(MEAN), tf.constant(STD)
    shape = [1, None, None, 3] if dynamic else [1, H, W, 3]
    spec = tf.TensorSpec(shape, tf.uint8 if input_dtype == "uint8" else tf.float32, name="image")

    class Tiny(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, image):
            x = (tf.cast(image, tf.float32) - mean) / std
            x = tf.nn.relu(tf.nn.conv2d(x, p["k1"], 2, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, p["k2"], 2, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, p["k3"], 2, "SAME"))
            x = tf.nn.relu(tf.nn.depthwise_conv2d(x, p["dw"], [1, 1, 1, 1], "SAME") + p["b1"])
            out = {
                "heatmap": tf.nn.conv2d(x, p["h1"], 1, "SAME"),
                "center_embeddings": tf.nn.conv2d(x, p["h2"], 1, "SAME"),
                "mask_features": tf.nn.conv2d(x, p["h3"], 1, "SAME"),
            }
            if extra == "topk_gather":
                scores, idx = tf.math.top_k(tf.reshape(out["heatmap"], [1, -1]), k=3)
                flat = tf.reshape(out["center_embeddings"], [-1, D])
                out["peak_scores"] = scores
                out["peak_embeddings"] = tf.gather(flat, idx[0] // C)
                out["upsampled"] = tf.image.resize(out["heatmap"], [H // 4, W // 4], "bilinear")
            return out

    return Tiny()


@functools.cache
def tiny_tflite(
    quant: str = "float",
    input_dtype: str = "uint8",
    dw_kernel: int = 3,
    extra: str | None = None,
    dynamic: bool = False,
) -> bytes:
    """Convert the tiny graph. ``quant``: "float", "fp16" (float16 weights), "int8" (uint8 in, int8 out) or
    "int8_io" (int8 I/O)."""
    import tensorflow as tf

    module = _module("float32" if quant not in ("float", "fp16") else input_dtype, dw_kernel, extra, dynamic)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    if quant == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant != "float":
        rng = np.random.default_rng(1)

        def representative():
            for _ in range(8):
                yield {"image": rng.integers(0, 256, (1, H, W, 3)).astype(np.float32)}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8 if quant == "int8" else tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def run_tflite(content: bytes, image: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the ``serving_default`` signature in LiteRT, keyed by output name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    return {k: np.array(v) for k, v in runner(image=image).items()}
