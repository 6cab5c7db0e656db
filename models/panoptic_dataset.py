"""Reading COCO panoptic datasets (images + id PNGs + JSON) as NumPy samples, and plain image folders.

``PanopticDataset`` works for COCO panoptic 2017 (``annotations/panoptic_val2017.json`` with the PNGs in
``annotations/panoptic_val2017/`` and the images in ``val2017/``) and for the synthetic dataset of
:mod:`maskconver.models.synthetic` (``panoptic.json``, ``panoptic/``, ``images/``). Each sample gives:

* ``category_mask`` [H, W] int32: the category id of every pixel; **0 = void**, i.e. a pixel that belongs to
  no segment (PNG id 0). Category id 0 is therefore reserved and may not appear in the JSON.
* ``instance_mask`` [H, W] int32: 1..n for the thing segments in JSON order (crowd segments included, as in
  Model Garden's panoptic TFRecords), 0 for stuff and void.

Every mismatch between PNG and JSON is an error that names the file and the segment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime.model_info import Category

VOID = 0
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class PanopticDatasetError(ValueError):
    """A COCO panoptic dataset whose files do not agree with each other."""


@dataclass
class Sample:
    """One panoptic sample (all arrays share H and W)."""

    image: np.ndarray  # [H, W, 3] uint8 RGB
    category_mask: np.ndarray  # [H, W] int32, 0 = void (no segment)
    instance_mask: np.ndarray  # [H, W] int32, 1..n things, 0 stuff and void
    segments: list[dict[str, Any]]  # JSON segments_info, each with "instance_id" (0 for stuff) added
    image_id: Any
    image_file: Path
    panoptic_file: Path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB (greyscale is expanded, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise PanopticDatasetError(f"image {path} could not be decoded; is it a JPEG/PNG image?")
    return np.ascontiguousarray(img[:, :, ::-1])


def read_segment_ids(path: str | os.PathLike) -> np.ndarray:
    """Read a COCO panoptic PNG as ``[H, W]`` int64 segment ids (``R + 256 G + 65536 B``, 0 = void)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"panoptic PNG {path} does not exist; check panoptic_dir and the annotation's file_name"
        )
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise PanopticDatasetError(
            f"panoptic PNG {path} is not an 8-bit RGB image; COCO panoptic ids are encoded as R + 256 G + 65536 B"
        )
    c = img.astype(np.int64)  # OpenCV gives BGR(A)
    return c[:, :, 2] + 256 * c[:, :, 1] + 65536 * c[:, :, 0]


def _find_json(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a COCO panoptic JSON file nor a dataset folder")
    if (root / "panoptic.json").is_file():
        return root / "panoptic.json"
    candidates = sorted(root.glob("*.json")) or sorted(root.glob("annotations/panoptic_*.json"))
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"{root} has no panoptic.json and {len(candidates)} other JSON candidates; pass the JSON path itself"
    )


def _default_panoptic_dir(json_path: Path) -> Path:
    for cand in (json_path.with_suffix(""), json_path.parent / "panoptic"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"no PNG folder found for {json_path} (looked for {json_path.with_suffix('')} and "
        f"{json_path.parent / 'panoptic'}); pass panoptic_dir="
    )


def _default_images_dir(json_path: Path) -> Path:
    cands = [json_path.parent / "images"]
    stem = json_path.stem  # COCO: annotations/panoptic_val2017.json -> val2017/
    if stem.startswith("panoptic_"):
        split = stem[len("panoptic_") :]
        cands += [json_path.parent.parent / split, json_path.parent / split]
    for cand in cands:
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"no image folder found for {json_path} (looked in {', '.join(str(c) for c in cands)}); pass images_dir="
    )


class PanopticDataset:
    """A COCO panoptic dataset read lazily, one :class:`Sample` per annotation (JSON order).

    Args:
        root_or_json: the dataset folder (holding ``panoptic.json``) or the JSON file itself.
        images_dir: the RGB images (default ``images/`` beside the JSON, or ``<split>/`` for COCO).
        panoptic_dir: the id PNGs (default the folder named like the JSON, or ``panoptic/``).
        skip_crowd: label ``iscrowd`` segments void (category 0, instance 0) instead of keeping them.
    """

    def __init__(
        self,
        root_or_json: str | os.PathLike,
        images_dir: str | os.PathLike | None = None,
        panoptic_dir: str | os.PathLike | None = None,
        *,
        skip_crowd: bool = False,
    ) -> None:
        self.json_path = _find_json(Path(root_or_json))
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PanopticDatasetError(f"{self.json_path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise PanopticDatasetError(
                f"{self.json_path} is not COCO panoptic: it needs an 'annotations' list"
            )
        if not isinstance(data.get("categories"), list) or not data["categories"]:
            raise PanopticDatasetError(f"{self.json_path} is not COCO panoptic: it needs a 'categories' list")
        self.images_dir = Path(images_dir) if images_dir is not None else _default_images_dir(self.json_path)
        self.panoptic_dir = (
            Path(panoptic_dir) if panoptic_dir is not None else _default_panoptic_dir(self.json_path)
        )
        self.skip_crowd = skip_crowd
        self._categories: dict[int, dict] = {}
        for c in data["categories"]:
            if not isinstance(c, dict) or "id" not in c or "isthing" not in c:
                raise PanopticDatasetError(f"{self.json_path}: category {c!r} needs 'id' and 'isthing'")
            cid = int(c["id"])
            if cid == VOID:
                raise PanopticDatasetError(
                    f"{self.json_path}: category id 0 is reserved for void (pixels of no segment); renumber it"
                )
            if cid < 0 or cid in self._categories:
                raise PanopticDatasetError(f"{self.json_path}: category id {cid} is negative or repeated")
            self._categories[cid] = c
        self._images = {
            img["id"]: img for img in data.get("images", []) if isinstance(img, dict) and "id" in img
        }
        self._annotations = data["annotations"]
        for k, ann in enumerate(self._annotations):
            if not isinstance(ann, dict) or not {"file_name", "segments_info"} <= set(ann):
                raise PanopticDatasetError(
                    f"{self.json_path}: annotation {k} needs 'file_name' and 'segments_info' (and 'image_id')"
                )

    # ----------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._annotations)

    @property
    def num_classes(self) -> int:
        """Heatmap channels needed for the raw category ids: ``max id + 1``."""
        return max(self._categories) + 1

    @property
    def categories(self) -> list[Category]:
        """The JSON categories, sorted by id (void not included)."""
        return [self._to_category(cid) for cid in sorted(self._categories)]

    def _to_category(self, cid: int) -> Category:
        c = self._categories[cid]
        colour = tuple(int(v) for v in c.get("color", (0, 0, 0)))
        return Category(cid, str(c.get("name", f"class_{cid}")), bool(c["isthing"]), colour)  # type: ignore[arg-type]

    def category_table(self, num_classes: int | None = None) -> list[Category]:
        """One :class:`Category` per id ``0..num_classes-1`` (index == id): id 0 ``void``, gaps ``unused_<id>``."""
        from maskconver.runtime.coco_categories import distinct_colours

        n = self.num_classes if num_classes is None else int(num_classes)
        if n < self.num_classes:
            raise ValueError(
                f"num_classes={n} is smaller than the largest category id + 1 ({self.num_classes})"
            )
        taken = {tuple(int(v) for v in c.get("color", (0, 0, 0))) for c in self._categories.values()}
        gaps = [i for i in range(1, n) if i not in self._categories]
        spare = dict(zip(gaps, distinct_colours(len(gaps), taken | {(0, 0, 0)}), strict=True))
        out = [Category(VOID, "void", False, (0, 0, 0))]
        for i in range(1, n):
            out.append(
                self._to_category(i) if i in self._categories else Category(i, f"unused_{i}", False, spare[i])
            )
        return out

    def isthing_table(self, num_classes: int | None = None) -> np.ndarray:
        """``[num_classes]`` bool, True at the ids of thing categories."""
        n = self.num_classes if num_classes is None else int(num_classes)
        table = np.zeros(n, bool)
        for cid, c in self._categories.items():
            if c["isthing"] and cid < n:
                table[cid] = True
        return table

    def image_path(self, index: int) -> Path:
        """The RGB image file of annotation ``index`` (from ``images`` in the JSON, else the PNG's stem)."""
        ann = self._annotations[index]
        img = self._images.get(ann.get("image_id"))
        if img is not None and "file_name" in img:
            return self.images_dir / img["file_name"]
        stem = Path(ann["file_name"]).stem
        for ext in (".jpg", ".png", ".jpeg"):
            if (self.images_dir / (stem + ext)).is_file():
                return self.images_dir / (stem + ext)
        return self.images_dir / (stem + ".jpg")

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        ann = self._annotations[index]
        png = self.panoptic_dir / ann["file_name"]
        image_file = self.image_path(index)
        ids = read_segment_ids(png)
        image = read_rgb(image_file)
        if image.shape[:2] != ids.shape:
            raise PanopticDatasetError(
                f"size mismatch: image {image_file} is {image.shape[1]}x{image.shape[0]} but panoptic PNG {png} "
                f"is {ids.shape[1]}x{ids.shape[0]} (W x H)"
            )
        meta = self._images.get(ann.get("image_id"))
        if meta is not None and "height" in meta and "width" in meta:
            if (int(meta["height"]), int(meta["width"])) != ids.shape:
                raise PanopticDatasetError(
                    f"size mismatch: {self.json_path} says image {ann.get('image_id')} is "
                    f"{meta['width']}x{meta['height']} but {png} is {ids.shape[1]}x{ids.shape[0]} (W x H)"
                )
        category_mask, instance_mask, segments = self._decode(ids, ann, png)
        return Sample(
            image=image,
            category_mask=category_mask,
            instance_mask=instance_mask,
            segments=segments,
            image_id=ann.get("image_id"),
            image_file=image_file,
            panoptic_file=png,
        )

    def _decode(self, ids: np.ndarray, ann: dict, png: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Segment ids ``[H, W]`` -> (category_mask, instance_mask) ``[H, W]`` int32 and the segment list."""
        infos = ann["segments_info"]
        seg_ids = [int(s["id"]) for s in infos]
        if len(set(seg_ids)) != len(seg_ids):
            dup = sorted({i for i in seg_ids if seg_ids.count(i) > 1})
            raise PanopticDatasetError(f"{png}: segment ids {dup} appear twice in {self.json_path}")
        if VOID in seg_ids:
            raise PanopticDatasetError(f"{png}: segment id 0 in {self.json_path} is reserved for void")
        present = np.unique(ids)
        present = present[present != VOID]
        missing_in_json = sorted(set(present.tolist()) - set(seg_ids))
        if missing_in_json:
            raise PanopticDatasetError(
                f"{png}: segment ids {missing_in_json[:10]} are in the PNG but not in {self.json_path} "
                f"(annotation for image {ann.get('image_id')})"
            )
        missing_in_png = sorted(set(seg_ids) - set(present.tolist()))
        if missing_in_png:
            raise PanopticDatasetError(
                f"{png}: segment ids {missing_in_png[:10]} are listed in {self.json_path} but have no pixels "
                "in the PNG"
            )
        # Map segment id -> (category, instance) through a sorted lookup: one searchsorted for the whole image.
        lut_ids = np.asarray([VOID] + seg_ids, np.int64)
        lut_cat = np.zeros(len(lut_ids), np.int32)
        lut_inst = np.zeros(len(lut_ids), np.int32)
        segments = []
        next_instance = 1
        for k, s in enumerate(infos, start=1):
            cid = int(s["category_id"])
            if cid not in self._categories:
                raise PanopticDatasetError(
                    f"{png}: segment {s['id']} has category_id {cid}, which is not in the categories of "
                    f"{self.json_path}"
                )
            crowd = bool(s.get("iscrowd", 0))
            seg = dict(s)
            if crowd and self.skip_crowd:
                seg["instance_id"] = 0
            else:
                lut_cat[k] = cid
                if self._categories[cid]["isthing"]:
                    lut_inst[k] = next_instance
                    next_instance += 1
                seg["instance_id"] = int(lut_inst[k])
            segments.append(seg)
        order = np.argsort(lut_ids)
        pos = order[np.searchsorted(lut_ids[order], ids)]
        return lut_cat[pos], lut_inst[pos], segments


def list_images(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files (jpg, jpeg, png, bmp, webp, tif) in ``directory`` (and below if ``recursive``)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image folder {d} does not exist or is not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in d.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {d}"
            + ("" if recursive else "; try recursive=True")
        )
    return files


def iter_images(directory: str | os.PathLike, recursive: bool = False) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, [H, W, 3] uint8 RGB)`` for every image in a plain folder, in sorted order.

    Meant for int8 calibration from unlabelled photos; raises naming the file if one cannot be decoded.
    """
    for path in list_images(directory, recursive):
        yield path, read_rgb(path)
