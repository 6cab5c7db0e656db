"""The names the issues promise at ``maskconver.runtime`` (``Segmenter``, ``decode_panoptic``, ...)."""

from __future__ import annotations

import subprocess
import sys

import maskconver.runtime as runtime
import pytest


def test_names_are_the_submodules_objects():
    from maskconver.runtime import decode, model_file, result, segmenter, streams

    assert runtime.Segmenter is segmenter.Segmenter
    assert runtime.decode_panoptic is decode.decode_panoptic
    assert runtime.PanopticResult is result.PanopticResult
    assert runtime.Segment is result.Segment
    assert runtime.VideoSegmenter is streams.VideoSegmenter
    assert runtime.LiveSegmenter is streams.LiveSegmenter
    assert runtime.read_model_file is model_file.read_model_file
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None
        assert name in dir(runtime)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Segmentor'"):
        runtime.Segmentor  # noqa: B018


def test_importing_the_package_loads_no_backend():
    code = (
        "import sys, maskconver.runtime\n"
        "heavy = [m for m in ('cv2', 'ai_edge_litert', 'onnxruntime', 'tensorflow') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_lists_every_export():
    assert sorted(runtime.__all__) == sorted(runtime._EXPORTS)
