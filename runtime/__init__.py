"""maskconver.runtime: run a MaskConver model file (LiteRT or ONNX Runtime) and decode its outputs.

The public names are imported on first use, so ``import maskconver.runtime`` stays cheap (no OpenCV,
LiteRT or ONNX Runtime until a name that needs them is touched)::

    from maskconver.runtime import Segmenter, decode_panoptic
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS = {
    "Segmenter": "segmenter",
    "DelegateError": "segmenter",
    "decode_panoptic": "decode",
    "plan_decode": "decode",
    "decode_planned": "decode",
    "DecodePlan": "decode",
    "PanopticDecoding": "decode",
    "MASK_RESOLUTIONS": "decode",
    "PanopticResult": "result",
    "Segment": "result",
    "VideoSegmenter": "streams",
    "LiveSegmenter": "streams",
    "SegmentStream": "streams",
    "SourceError": "streams",
    "ModelFile": "model_file",
    "read_model_file": "model_file",
}

__all__ = [
    "DecodePlan",
    "DelegateError",
    "LiveSegmenter",
    "MASK_RESOLUTIONS",
    "ModelFile",
    "PanopticDecoding",
    "PanopticResult",
    "Segment",
    "SegmentStream",
    "Segmenter",
    "SourceError",
    "VideoSegmenter",
    "decode_panoptic",
    "decode_planned",
    "plan_decode",
    "read_model_file",
]

if TYPE_CHECKING:
    from maskconver.runtime.decode import (
        MASK_RESOLUTIONS,
        DecodePlan,
        PanopticDecoding,
        decode_panoptic,
        decode_planned,
        plan_decode,
    )
    from maskconver.runtime.model_file import ModelFile, read_model_file
    from maskconver.runtime.result import PanopticResult, Segment
    from maskconver.runtime.segmenter import DelegateError, Segmenter
    from maskconver.runtime.streams import LiveSegmenter, SegmentStream, SourceError, VideoSegmenter


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskconver.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"maskconver.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
