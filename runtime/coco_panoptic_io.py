"""Reading and writing COCO panoptic annotations: RGB PNG id maps plus a JSON of ``segments_info``.

The COCO panoptic format (http://cocodataset.org/#format-data) stores, per image, a PNG whose pixel colour
encodes a segment id as ``id = R + 256 * G + 256**2 * B`` (id 0 = VOID, unlabelled) and a JSON record
``{"image_id", "file_name", "segments_info": [{"id", "category_id", "iscrowd", "area", ...}]}``.
Every writer here goes through a temporary file in the destination folder and an atomic rename, so a
crashed run never leaves a half-written PNG or JSON behind.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime.atomic import write_bytes_atomic

VOID = 0
OFFSET = 256 * 256 * 256  # one past the largest id an RGB PNG can hold
MAX_SEGMENT_ID = OFFSET - 1


class PanopticFormatError(KeyError):
    """Panoptic annotations that break the COCO format (the official ``pq_compute`` raises KeyError too).

    Subclasses KeyError so callers written against panopticapi keep working, but prints its message
    plainly instead of KeyError's quoted repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Decode a COCO panoptic colour image into segment ids.

    Args:
        rgb: ``[H, W, 3]`` (or ``[H, W, 4]``, alpha ignored) uint8 in RGB channel order.
    Returns:
        ``[H, W]`` uint32, ``R + 256*G + 256**2*B``.
    """
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"rgb_to_id expects an [H, W, 3] RGB array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb_to_id expects uint8 colours, got {rgb.dtype}")
    code = cv2.COLOR_RGB2RGBA if rgb.shape[2] == 3 else None
    return _rgba_bytes_to_id(np.ascontiguousarray(rgb), code)


def _rgba_bytes_to_id(img: np.ndarray, code: int | None) -> np.ndarray:
    """``[H, W, 3|4]`` uint8 -> ``[H, W]`` uint32 ids, after ``cv2.cvtColor(img, code)`` puts the bytes in
    R, G, B, A order (``code`` None: already RGBA). Reads the four bytes as one little-endian uint32."""
    rgba = cv2.cvtColor(img, code) if code is not None else img.copy()
    if sys.byteorder != "little":
        c = rgba.astype(np.uint32)
        return c[:, :, 0] | (c[:, :, 1] << 8) | (c[:, :, 2] << 16)
    ids = rgba.view(np.uint32)[:, :, 0]
    ids &= np.uint32(0xFFFFFF)
    return ids


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Encode segment ids as a COCO panoptic colour image.

    Args:
        ids: ``[H, W]`` integer ids in ``[0, 256**3)``.
    Returns:
        ``[H, W, 3]`` uint8 in RGB channel order.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"id_to_rgb expects an [H, W] integer id map, got {ids.dtype} {ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > MAX_SEGMENT_ID):
        raise ValueError(
            f"segment ids must lie in [0, {MAX_SEGMENT_ID}] to fit an RGB PNG; got [{ids.min()}, {ids.max()}]"
        )
    u = ids.astype(np.uint32)
    out = np.empty(ids.shape + (3,), dtype=np.uint8)
    out[:, :, 0] = u & 0xFF
    out[:, :, 1] = (u >> 8) & 0xFF
    out[:, :, 2] = (u >> 16) & 0xFF
    return out


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Read a COCO panoptic PNG and return its ``[H, W]`` uint32 segment ids."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(
            f"panoptic PNG {path} does not exist; check the folder and the JSON file_name"
        ) from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path} could not be decoded as an image; it must be an 8-bit RGB PNG")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(
            f"{path} is {img.dtype} with shape {img.shape}; a COCO panoptic PNG must be 8-bit RGB "
            "(ids encoded as R + 256*G + 256^2*B)"
        )
    # OpenCV returns BGR(A); reorder to RGBA and read R + 256 G + 256^2 B.
    return _rgba_bytes_to_id(img, cv2.COLOR_BGR2RGBA if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    return write_bytes_atomic(path, data, make_parents=True)


def encode_panoptic_png(ids: np.ndarray) -> bytes:
    """PNG bytes for an ``[H, W]`` id map (COCO panoptic colour encoding)."""
    rgb = id_to_rgb(ids)
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise RuntimeError("OpenCV failed to encode the panoptic PNG")
    return buf.tobytes()


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> Path:
    """Atomically write an ``[H, W]`` id map as a COCO panoptic PNG."""
    return atomic_write_bytes(path, encode_panoptic_png(ids))


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = None) -> Path:
    """Atomically write ``data`` as JSON (NumPy scalars converted to Python numbers)."""
    text = json.dumps(data, indent=indent, default=_json_default)
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Load a JSON file with an error that says which file (``what``) is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from e


def load_gt_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load a COCO panoptic ground-truth JSON and check it has ``annotations`` and ``categories``."""
    data = load_json(path, "ground-truth JSON")
    if not isinstance(data, dict) or "annotations" not in data or "categories" not in data:
        raise PanopticFormatError(
            f"ground-truth JSON {path} must be a COCO panoptic object with 'annotations' and 'categories'"
        )
    return data


def load_pred_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load COCO panoptic predictions: an object with ``annotations`` (or a bare list of them)."""
    data = load_json(path, "prediction JSON")
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise PanopticFormatError(
            f"prediction JSON {path} must be a COCO panoptic object with an 'annotations' list "
            "(one {image_id, file_name, segments_info} per image)"
        )
    return data


def categories_by_id(categories: Iterable[Mapping[str, Any]], source: str = "categories") -> dict[int, dict]:
    """``{id: category}`` from a COCO ``categories`` list, requiring ``id`` and ``isthing`` on each."""
    out: dict[int, dict] = {}
    for c in categories:
        if not isinstance(c, Mapping) or "id" not in c:
            raise PanopticFormatError(f"{source}: every category needs an 'id' (got {c!r})")
        if "isthing" not in c:
            raise PanopticFormatError(
                f"{source}: category {c['id']} has no 'isthing'; add isthing 1 (thing) or 0 (stuff)"
            )
        cid = int(c["id"])
        if cid in out:
            raise PanopticFormatError(f"{source}: category id {cid} appears twice")
        out[cid] = dict(c)
    if not out:
        raise PanopticFormatError(f"{source}: no categories")
    return out


def panoptic_record(
    image_id: Any, file_name: str, ids: np.ndarray, segments: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A COCO panoptic annotation record, filling each segment's ``area`` from the ``[H, W]`` id map."""
    labels, counts = np.unique(np.asarray(ids), return_counts=True)
    area = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    infos = []
    for s in segments:
        d = {k: _json_default(v) if isinstance(v, np.generic) else v for k, v in dict(s).items()}
        d["id"] = int(d["id"])
        d["category_id"] = int(d["category_id"])
        d.setdefault("iscrowd", 0)
        d["area"] = int(area.get(d["id"], 0))
        infos.append(d)
    return {"image_id": image_id, "file_name": file_name, "segments_info": infos}


def panoptic_from_masks(
    category_mask: np.ndarray, instance_mask: np.ndarray
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """COCO panoptic ids from a (category, instance) pair of masks.

    Args:
        category_mask: ``[H, W]`` category id per pixel, 0 = void.
        instance_mask: ``[H, W]`` instance number per pixel (0 for stuff); pixels sharing both values form
            one segment.
    Returns:
        ``ids [H, W]`` int64 (0 where the category is 0, segments numbered 1..N in ascending
        (category, instance) order) and ``segments_info`` ``[{"id", "category_id", "iscrowd": 0, "area"}]``.
    """
    cat = np.asarray(category_mask).astype(np.int64)
    inst = np.asarray(instance_mask).astype(np.int64)
    if cat.ndim != 2 or cat.shape != inst.shape:
        raise ValueError(
            f"category_mask {cat.shape} and instance_mask {inst.shape} must be equal [H, W] maps"
        )
    if cat.size and (cat.min() < 0 or inst.min() < 0):
        raise ValueError("category and instance ids must be non-negative")
    key = cat * (int(inst.max(initial=0)) + 1) + inst
    labels, inverse, counts = np.unique(key.ravel(), return_inverse=True, return_counts=True)
    label_cats = np.zeros(labels.size, dtype=np.int64)
    label_cats[inverse] = cat.ravel()
    is_seg = label_cats != 0
    seg_number = np.cumsum(is_seg) * is_seg  # 1..N for segments, 0 for void
    if int(seg_number.max(initial=0)) > MAX_SEGMENT_ID:
        raise ValueError("more segments than a COCO panoptic PNG can hold")
    ids = seg_number[inverse].reshape(cat.shape)
    segments = [
        {"id": int(seg_number[k]), "category_id": int(label_cats[k]), "iscrowd": 0, "area": int(counts[k])}
        for k in np.flatnonzero(is_seg)
    ]
    return ids, segments
