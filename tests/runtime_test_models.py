"""Small real maskconver model files for the runtime API tests, built with the real TF Lite converter,
tf2onnx and the real metadata writers.

The "red square" model has fixed, designed weights so its output is known exactly: on a 64x64 input
(stride 8, an 8x8 grid) it averages ``(R - G) / 255`` over each 8x8 cell (``p``: about 1 on red, about
0 on gray) and emits

* ``heatmap`` [1, 8, 8, 3]: void -8, ``square`` (thing, id 1) ``10 p - 5``, ``background`` (stuff, id 2)
  ``5 - 10 p``;
* ``center_embeddings`` [1, 8, 8, 2]: ones;
* ``mask_features`` [1, 8, 8, 2]: ``(10 p - 5, 5 - 10 p)``;

and its mask head turns class 1 into the embedding (1, 0) and class 2 into (0, 1). So a red square whose
edges fall on the 8-pixel grid of the letterboxed input comes out as exactly one ``square`` segment with
the square's pixels, and everything else is ``background``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

INPUT_SIZE = (64, 64)
GRAY = (128, 128, 128)
RED = (255, 0, 0)


def categories():
    from maskconver.runtime.model_info import Category

    return [
        Category(0, "void", False, (0, 0, 0)),
        Category(1, "square", True, (220, 20, 60)),
        Category(2, "background", False, (70, 130, 180)),
    ]


def model_info(input_dtype: str = "uint8", quantization: str = "fp32"):
    from maskconver.runtime.model_info import ModelInfo

    return ModelInfo(
        config_name="red_square_test",
        input_size=INPUT_SIZE,
        num_classes=3,
        embedding_size=2,
        categories=categories(),
        input_dtype=input_dtype,
        conversion={"quantization": quantization},
    )


def mask_head() -> dict[str, np.ndarray]:
    eye = np.eye(2, dtype=np.float32)
    return {
        "class_embeddings": np.array([[0, 0], [1, 0], [0, 1]], np.float32),
        "mlp_dense0_kernel": eye,
        "mlp_dense0_bias": np.zeros(2, np.float32),
        "mlp_norm_gamma": np.ones(2, np.float32),
        "mlp_norm_beta": np.zeros(2, np.float32),
        "mlp_dense1_kernel": eye,
        "mlp_dense1_bias": np.zeros(2, np.float32),
    }


def red_square_fn(image):
    """TF graph: image ``[1, 64, 64, 3]`` (uint8 or float raw pixels) -> the three outputs (see module doc)."""
    import tensorflow as tf

    x = tf.cast(image, tf.float32)
    red = tf.nn.conv2d(x, tf.constant([[[[1 / 255], [-1 / 255], [0.0]]]], tf.float32), 1, "VALID")
    p = tf.nn.avg_pool2d(red, 8, 8, "VALID")  # [1, 8, 8, 1]
    heat = tf.nn.conv2d(p, tf.constant([[[[0.0, 10.0, -10.0]]]]), 1, "VALID") + tf.constant([-8.0, -5.0, 5.0])
    feats = tf.nn.conv2d(p, tf.constant([[[[10.0, -10.0]]]]), 1, "VALID") + tf.constant([-5.0, 5.0])
    center = tf.nn.conv2d(p, tf.constant([[[[0.0, 0.0]]]]), 1, "VALID") + tf.constant([1.0, 1.0])
    return {"heatmap": heat, "center_embeddings": center, "mask_features": feats}


def square_image(height: int, width: int, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Gray RGB uint8 image with a red ``box = (x0, y0, x1, y1)`` (exclusive ends), or none."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GRAY
    if box is not None:
        x0, y0, x1, y1 = box
        img[y0:y1, x0:x1] = RED
    return img


def calibration_images(n: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x0, y0 = (int(v) * 8 for v in rng.integers(0, 5, 2))
        out.append(square_image(64, 64, (x0, y0, x0 + 24, y0 + 24)))
    return out


def build_tflite(path: Path, mode: str = "fp32") -> Path:
    """Write the red-square model as a maskconver ``.tflite`` (``mode`` "fp32" or "int8")."""
    from maskconver.converter.tflite_export import convert_tflite
    from maskconver.converter.tflite_metadata import populate_metadata

    info = model_info(quantization=mode)
    raw = convert_tflite(red_square_fn, INPUT_SIZE, mode, calibration_images() if mode == "int8" else None)
    data = populate_metadata(raw, info, mask_head(), info.labels(), {"name": "red square test model"})
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def build_float_input_tflite(path: Path) -> Path:
    """The red-square model taking float32 ImageNet-normalised input (``input_dtype="float32"``)."""
    import tensorflow as tf
    from maskconver.converter.tflite_metadata import populate_metadata
    from maskconver.runtime.model_info import MEAN_RGB, STD_RGB

    def fn(image):
        return red_square_fn(image * tf.constant(STD_RGB) + tf.constant(MEAN_RGB))

    module = tf.Module()
    module.serve = tf.function(
        fn, input_signature=[tf.TensorSpec([1, *INPUT_SIZE, 3], tf.float32, name="image")]
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    info = model_info(input_dtype="float32")
    data = populate_metadata(conv.convert(), info, mask_head(), info.labels())
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def build_onnx(path: Path) -> Path:
    """Write the red-square model as a float maskconver ``.onnx``."""
    import tensorflow as tf
    import tf2onnx
    from maskconver.converter.onnx_metadata import populate_onnx_metadata

    info = model_info()
    spec = [tf.TensorSpec([1, *INPUT_SIZE, 3], tf.uint8, name="image")]
    proto, _ = tf2onnx.convert.from_function(tf.function(red_square_fn), input_signature=spec, opset=17)
    data = populate_onnx_metadata(proto.SerializeToString(), info, mask_head(), info.labels())
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def build_test_models(folder: Path) -> dict[str, Path]:
    """Build (once per folder) and return ``{"fp32", "int8", "float_input": .tflite, "onnx": .onnx}``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "fp32": folder / "red_square_fp32.tflite",
        "int8": folder / "red_square_int8.tflite",
        "onnx": folder / "red_square.onnx",
        "float_input": folder / "red_square_float_input.tflite",
    }
    if not out["fp32"].exists():
        build_tflite(out["fp32"], "fp32")
    if not out["int8"].exists():
        build_tflite(out["int8"], "int8")
    if not out["onnx"].exists():
        build_onnx(out["onnx"])
    if not out["float_input"].exists():
        build_float_input_tflite(out["float_input"])
    return out
