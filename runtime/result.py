"""``PanopticResult``: what :meth:`maskconver.runtime.segmenter.Segmenter.segment` returns.

Masks are ``[H, W]`` label maps (uint8 when every id fits, see the Segmenter's ``mask_dtype``; int32 from
``decode_panoptic`` by default) at the original image resolution (or the 640x640 reference canvas with
``output="canvas"``): ``category_mask`` holds category ids (0 = void), ``instance_mask`` the instance id of
thing pixels (0 for stuff and void). ``segments`` lists one :class:`Segment` per distinct
(category, instance), best score first, with ids 1..N; :meth:`PanopticResult.panoptic_ids` maps every
pixel to its segment id, the COCO panoptic encoding written by :meth:`PanopticResult.to_coco_png`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime import atomic
from maskconver.runtime.model_info import Category

SPEED_KEYS = ("preprocess", "inference", "postprocess")


@dataclass(frozen=True)
class Segment:
    """One panoptic segment.

    ``bbox`` is ``(x0, y0, x1, y1)`` in mask pixels, x0/y0 inclusive and x1/y1 exclusive; ``area`` is the
    pixel count; ``score`` the best proposal's heatmap confidence; ``instance_id`` the value of this
    segment's pixels in ``instance_mask`` (0 for stuff).
    """

    id: int
    category_id: int
    name: str
    isthing: bool
    score: float
    area: int
    bbox: tuple[int, int, int, int]
    instance_id: int = 0

    @classmethod
    def _from_values(cls, *values: Any) -> Segment:
        """A Segment from the field values in field order, already of the field types (the Segmenter's
        per-frame path): the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
        this fills the instance dict at once, about 4x faster. Equal to ``Segment(*values)``."""
        seg = object.__new__(cls)
        seg.__dict__.update(zip(_SEGMENT_FIELDS, values, strict=True))
        return seg

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category_id": self.category_id,
            "name": self.name,
            "isthing": self.isthing,
            "score": round(float(self.score), 6),
            "area": self.area,
            "bbox": list(self.bbox),
            "instance_id": self.instance_id,
        }


_SEGMENT_FIELDS = tuple(f.name for f in fields(Segment))


def panoptic_id_map(
    category_mask: np.ndarray, instance_mask: np.ndarray, segments: list[Segment]
) -> np.ndarray:
    """``[H, W]`` category and instance masks + segments -> ``[H, W]`` int32 segment ids (0 = void).

    Pixels whose (category, instance) pair belongs to no segment are 0.
    """
    out = np.zeros(category_mask.shape, dtype=np.int32)
    if not segments:
        return out
    num_inst = max(int(instance_mask.max(initial=0)), max(s.instance_id for s in segments)) + 1
    num_cat = max(int(category_mask.max(initial=0)), max(s.category_id for s in segments)) + 1
    lut = np.zeros(num_cat * num_inst, dtype=np.int32)
    for s in segments:
        lut[s.category_id * num_inst + s.instance_id] = s.id
    key = category_mask.astype(np.int64) * num_inst + instance_mask
    return lut[key]


def encode_id_rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` non-negative integer ids < 2**24 -> ``[H, W, 3]`` uint8 RGB with
    ``id = R + 256 * G + 256**2 * B`` (the COCO panoptic PNG encoding)."""
    ids = np.asarray(ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 1 << 24):
        raise ValueError("segment ids must lie in [0, 2**24) to fit an RGB PNG")
    u = ids.astype(np.uint32)
    return np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=-1).astype(np.uint8)


def write_png_atomic(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 ``[H, W, 3]`` image as PNG via a temporary file in the same folder + rename."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"could not encode a PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    atomic.write_bytes_atomic(path, data)


@dataclass(eq=False)
class PanopticResult:
    """Panoptic segmentation of one image (compared by identity; pickles and deep-copies).

    Attributes:
        category_mask: ``[H, W]`` category id per pixel (0 = void); uint8, uint16 or int32 (the Segmenter's
            ``mask_dtype``).
        instance_mask: ``[H, W]`` instance id per pixel (1.. for things, 0 for stuff/void), same dtype.
        segments: list of :class:`Segment`, ids 1..N.
        speed: milliseconds per stage, ``{"preprocess", "inference", "postprocess"}``.
        decode_stages: where ``postprocess`` went, ms: the decoder's stages (``peaks``, ``mask_head``,
            ``mask_logits``, ``merge``, ``segments``, ``label_maps``, see ``PanopticDecoding.timings``) and
            ``result`` (building this object); the rest of ``postprocess`` is input checks and glue.
        categories: the model's categories (index == id), for names and colours.
        image_size: ``(H0, W0)`` of the input image.
        mode: ``"original"`` (masks at the input resolution) or ``"canvas"`` (the reference 640x640 canvas
            of the letterboxed model input).
    """

    category_mask: np.ndarray
    instance_mask: np.ndarray
    segments: list[Segment]
    speed: dict[str, float]
    categories: list[Category] = field(default_factory=list, repr=False)
    image_size: tuple[int, int] = (0, 0)
    mode: str = "original"
    decode_stages: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    _image_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the masks."""
        return tuple(self.category_mask.shape)  # type: ignore[return-value]

    @property
    def names(self) -> dict[int, str]:
        """Category id -> name."""
        return {c.id: c.name for c in self.categories}

    @property
    def image(self) -> np.ndarray | None:
        """The RGB image the masks align with (the input, or the canvas in ``"canvas"`` mode), if known.

        In ``"original"`` mode this is the array passed to ``segment`` when it was already contiguous RGB
        uint8, not a copy: copy the frame first if you refill the same buffer before drawing the result."""
        return None if self._image_fn is None else self._image_fn()

    def panoptic_ids(self) -> np.ndarray:
        """int32 ``[H, W]``: the segment id of each pixel, 0 for void."""
        return panoptic_id_map(self.category_mask, self.instance_mask, self.segments)

    def to_coco_png(self, path: str | os.PathLike | None = None) -> np.ndarray | Path:
        """COCO panoptic PNG encoding of :meth:`panoptic_ids` (``id = R + 256 G + 256^2 B``).

        Without ``path`` returns the uint8 ``[H, W, 3]`` RGB array; with ``path`` writes it as a PNG
        (atomically: temporary file + rename) and returns the path. Pair with :meth:`coco_segments_info`.
        """
        rgb = encode_id_rgb(self.panoptic_ids())
        if path is None:
            return rgb
        return write_png_atomic(path, rgb)

    def coco_segments_info(self) -> list[dict[str, Any]]:
        """COCO panoptic ``segments_info``: ``id``, ``category_id``, ``iscrowd`` (0), ``area``, ``bbox``
        ``[x, y, w, h]``, ``isthing`` and ``score``."""
        return [
            {
                "id": s.id,
                "category_id": s.category_id,
                "iscrowd": 0,
                "area": s.area,
                "bbox": [s.bbox[0], s.bbox[1], s.bbox[2] - s.bbox[0], s.bbox[3] - s.bbox[1]],
                "isthing": int(s.isthing),
                "score": round(float(s.score), 6),
            }
            for s in self.segments
        ]

    def overlay(self, image: np.ndarray, *, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """Draw the segments over ``image`` (RGB uint8 ``[H, W, 3]`` of the masks' size); returns a new
        RGB uint8 image with category colours, instance boundaries and names (see
        :func:`maskconver.runtime.overlay.draw_panoptic`)."""
        from maskconver.runtime.overlay import draw_panoptic

        return draw_panoptic(image, self, alpha=alpha, labels=labels)

    def plot(self, *, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """:meth:`overlay` on the image this result was computed from (RGB uint8)."""
        image = self.image
        if image is None:
            raise ValueError("this result does not hold its image; call result.overlay(image) instead")
        return self.overlay(image, alpha=alpha, labels=labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: size, mode, speed and segments (no masks)."""
        return {
            "image_size": list(self.image_size),
            "mask_size": list(self.shape),
            "mode": self.mode,
            "speed_ms": {k: round(float(v), 3) for k, v in self.speed.items()},
            "decode_stages_ms": {k: round(float(v), 3) for k, v in self.decode_stages.items()},
            "segments": [s.to_dict() for s in self.segments],
        }

    def summary(self) -> str:
        """One line: segment counts by name and the timing split, e.g.
        ``"640x480: 2 person, 1 grass | 3.1 ms pre, 21.0 ms inference, 6.2 ms post"``."""
        counts: dict[str, int] = {}
        for s in self.segments:
            counts[s.name] = counts.get(s.name, 0) + 1
        what = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no segments"
        h, w = self.shape
        sp = self.speed
        timing = (
            f"{sp.get('preprocess', 0.0):.1f} ms pre, {sp.get('inference', 0.0):.1f} ms inference, "
            f"{sp.get('postprocess', 0.0):.1f} ms post"
        )
        return f"{w}x{h}: {what} | {timing}"

    def __str__(self) -> str:
        return self.summary()
