"""maskconver: take a trained MaskConver panoptic segmentation model to a phone.

Subpackages: ``converter`` (checkpoint -> int8/fp16/fp32 TFLite and ONNX), ``runtime`` (LiteRT / ONNX
Runtime inference plus NumPy decoding), ``benchmarks`` (host and Android latency), ``models``
(architecture, configs, trainer, demo model).
"""

__version__ = "0.1.0"
