"""A small real model for the benchmark tests: the nano config, freshly built, saved and converted to fp32.

:func:`nano_model` converts once per test process (both benchmark test files share it) into a temporary
folder removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def nano_model() -> tuple[Path, Path]:
    """``(checkpoint .npz, fp32 .tflite)`` of a randomly initialised nano MaskConver (128x128 input)."""
    from maskconver.converter.convert import ConvertOptions, convert
    from maskconver.models.architecture import build_model
    from maskconver.models.checkpoint import save_checkpoint
    from maskconver.models.config import nano_config

    root = Path(tempfile.mkdtemp(prefix="maskconver-bench-test-"))
    atexit.register(shutil.rmtree, root, True)
    ckpt = save_checkpoint(build_model(nano_config(), seed=0), root / "nano.npz")
    opts = ConvertOptions(
        quantization="fp32", num_calibration=2, num_holdout=0, progress=False, allow_cpu_ops=True
    )
    convert(ckpt, None, root / "fp32", opts)
    models = sorted((root / "fp32").glob("*.tflite"))
    assert len(models) == 1, f"expected one .tflite, got {models}"
    return ckpt, models[0]


def small_frames(n: int = 2, size: tuple[int, int] = (96, 128)) -> list:
    """``n`` synthetic panoptic scenes of ``size`` (H, W): real images, small enough to decode quickly."""
    from maskconver.models.synthetic import render_synthetic_image

    return [render_synthetic_image(7, i, size).image for i in range(n)]
