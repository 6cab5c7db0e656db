"""Speed of the model-file pieces on a real converted float model of 18.7 MB (201 classes, D=256).

Run under pytest-benchmark::

    /work/venv/bin/pytest benchmarks/bench_model_file.py --benchmark-only

Times ``parse_tflite`` (flatbuffer reader), ``populate_metadata`` (re-serialise + zip), ``read_model_file``
(parse + unzip + checks) and ``check_delegates``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from maskconver.converter.delegate_check import check_delegates
from maskconver.converter.tflite_metadata import populate_metadata
from maskconver.runtime.model_file import mask_head_shapes, read_model_file
from maskconver.runtime.model_info import Category, ModelInfo
from maskconver.runtime.tflite_flatbuffer import parse_tflite

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
H = W = 64
WIDTH = 640  # 10 1x1 convs of 640x640 float weights: ~16 MB, plus the heads
C, D = 201, 256


def _big_tflite() -> bytes:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    stem = tf.constant(rng.normal(0, 0.1, (8, 8, 3, WIDTH)).astype(np.float32))
    body = [tf.constant(rng.normal(0, 0.05, (1, 1, WIDTH, WIDTH)).astype(np.float32)) for _ in range(10)]
    heads = {
        n: tf.constant(rng.normal(0, 0.05, (1, 1, WIDTH, ch)).astype(np.float32))
        for n, ch in (("heatmap", C), ("center_embeddings", D), ("mask_features", D))
    }

    class Big(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8, name="image")])
        def serve(self, image):
            x = tf.nn.relu(tf.nn.conv2d(tf.cast(image, tf.float32) / 255.0, stem, 8, "SAME"))
            for k in body:
                x = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME"))
            return {n: tf.nn.conv2d(x, k, 1, "SAME") for n, k in heads.items()}

    module = Big()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    return conv.convert()


@pytest.fixture(scope="module")
def model() -> tuple[bytes, ModelInfo, dict[str, np.ndarray]]:
    info = ModelInfo("bench", (H, W), C, D, [Category(i, f"c{i}", i > 100, (i, i, i)) for i in range(C)])
    rng = np.random.default_rng(1)
    head = {k: rng.normal(size=s).astype(np.float32) for k, s in mask_head_shapes(C, D).items()}
    return _big_tflite(), info, head


def test_parse_tflite(benchmark, model):
    plain, _, _ = model
    parsed = benchmark(parse_tflite, plain)
    assert len(parsed.subgraphs[0].operators) >= 14


def test_populate_metadata(benchmark, model):
    plain, info, head = model
    out = benchmark(populate_metadata, plain, info, head)
    assert len(out) > len(plain)


def test_read_model_file(benchmark, model, tmp_path):
    plain, info, head = model
    path = tmp_path / "big.tflite"
    path.write_bytes(populate_metadata(plain, info, head))
    mf = benchmark(read_model_file, path)
    assert mf.info.num_classes == C


def test_check_delegates(benchmark, model):
    plain, _, _ = model
    report = benchmark(check_delegates, plain)
    assert report.forbidden == []
