"""Calibration and held-out images for quantisation, preprocessed exactly like the runtime (letterbox)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class CalibrationError(ValueError):
    """The calibration folder is missing, empty or unreadable."""


def find_images(folder: str | Path) -> list[Path]:
    """Image files of a plain folder or of a COCO panoptic dataset (its ``images`` list), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist or is not a folder")
    for js in sorted(folder.glob("*.json")) + sorted(folder.glob("annotations/panoptic_*.json")):
        try:
            doc = json.loads(js.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
            names = [im["file_name"] for im in doc["images"]]
            # synthetic layout: images/ beside the JSON; COCO: annotations/panoptic_val2017.json -> val2017/
            for sub in ("images", ".", js.stem.replace("panoptic_", "")):
                cand = [folder / sub / n for n in names]
                cand = [
                    c.with_suffix(".jpg") if not c.exists() and c.with_suffix(".jpg").exists() else c
                    for c in cand
                ]
                if cand and all(c.exists() for c in cand):
                    return cand
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith("panoptic") for part in p.relative_to(folder).parts[:-1])
    )
    if not files:
        raise CalibrationError(
            f"no images (*.jpg, *.png, ...) in {folder}; pass --calibration with a folder of images from your domain"
        )
    return files


def load_canvases(
    files: list[Path], input_size: tuple[int, int], progress: str | None = None
) -> Iterator[np.ndarray]:
    """Read each file as RGB and letterbox it to ``input_size`` -> uint8 ``[H,W,3]`` canvases."""
    from maskconver.runtime.panoptic_quality import ProgressPrinter
    from maskconver.runtime.preprocess import letterbox, read_image

    # one redrawn line on a terminal, a line per 10% in a log file
    bar = ProgressPrinter(len(files), progress or "", enabled=bool(progress))
    try:
        for f in files:
            try:
                rgb = read_image(f)  # grey, RGBA and 16-bit files become RGB uint8 exactly as in the runtime
            except (OSError, ValueError) as e:
                raise CalibrationError(
                    f"cannot read calibration image {f} ({e}); remove it or fix the file"
                ) from e
            canvas = letterbox(rgb, input_size)[0]
            bar.update()
            yield canvas
    finally:
        bar.close()


def split_calibration(files: list[Path], num_calibration: int, num_holdout: int, seed: int):
    """Seeded disjoint (calibration, held-out) file lists; held-out is empty if nothing is left."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    cal = [files[i] for i in order[:num_calibration]]
    hold = [files[i] for i in order[num_calibration : num_calibration + num_holdout]]
    return cal, hold


def lowered_depthwise_ranges(
    model, images: list[np.ndarray], samples_per_image: int = 64, seed: int = 0
) -> dict:
    """Per-channel band ranges of every lowered depthwise conv of ``model`` on uint8 ``[H,W,3]`` canvases.

    Runs the float inference graph with its bands exposed -> ``{layer name: BandRanges}``. Each image also leaves
    its bands at ``samples_per_image`` seeded random pixels (all channels) in ``BandRanges.samples``, from which
    :mod:`maskconver.converter.range_refine` fits the int8 ranges of the lowering's tensors.
    """
    import tensorflow as tf
    from maskconver.converter.inference_graph import BandRanges, build_inference_fn

    fn = tf.function(build_inference_fn(model, probe_bands=True))
    rng = np.random.default_rng(seed)
    ranges: dict[str, BandRanges] = {}
    for img in images:
        out = fn(tf.constant(np.asarray(img, np.float32)[None]))
        names = sorted({k.rsplit("/", 1)[0] for k in out if k.endswith("/bias")})
        for name in names:
            bands = []
            while f"{name}/band{len(bands)}" in out:
                bands.append(out[f"{name}/band{len(bands)}"].numpy().astype(np.float64))
            if name not in ranges:
                ranges[name] = BandRanges.empty(len(bands), out[f"{name}/bias"].numpy())
            pixels = bands[0].size // bands[0].shape[-1]
            pick = (
                rng.choice(pixels, min(pixels, samples_per_image), replace=False)
                if samples_per_image
                else None
            )
            ranges[name].update(bands, pick)
    return ranges
