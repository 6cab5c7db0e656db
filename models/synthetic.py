"""A deterministic synthetic panoptic dataset in COCO panoptic format, for training, eval and calibration.

Taxonomy (``SYNTHETIC_CATEGORIES``, ``num_classes = 11``; heatmap channel == category id):

====  ==========  =====  ==============================================================
id    name        thing  look
====  ==========  =====  ==============================================================
0     void        --     unlabelled: thin borders, tiny leftovers, random blobs
1     circle      yes    filled disc, reddish
2     square      yes    rotated square, violet
3     triangle    yes    rotated, slightly irregular triangle, yellow
4     ellipse     yes    elongated rotated ellipse, orange
5     cross       yes    rotated plus sign, cyan
6     ring        yes    annulus (the hole shows what is behind), magenta
7     sky         no     vertical blue gradient with soft clouds
8     grass       no     green, fine noise texture with blades
9     water       no     dark blue with wavy horizontal stripes
10    wall        no     brownish grey brick pattern
====  ==========  =====  ==============================================================

Each image has 1-3 stuff bands split by curved horizontal boundaries, 0-``max_things`` thing instances
(varied size, colour, texture, rotation; later ones occlude earlier ones, things may be cut by the border),
void pixels (boundary lines, unlabelled blobs, thin outlines, fragments too small to keep) and sometimes a
crowd segment (a cluster of small shapes labelled once with ``iscrowd = 1``).

Files (``out_dir``): ``images/NNNN.jpg`` (or ``.png``, RGB), ``panoptic/NNNN.png`` (segment id =
R + 256 G + 65536 B, 0 = void) and ``panoptic.json`` with ``images``, ``annotations`` and ``categories``.
Segment ids are ``category_id * 1000 + k``. Every image is drawn from its own generator seeded by
``(seed, index)``, so the same ``seed`` gives byte-identical files and image ``i`` does not depend on
``num_images``. Run ``python -m maskconver.models.synthetic OUT_DIR --num-images 1000`` to build one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from maskconver.runtime.atomic import write_bytes_atomic
from maskconver.runtime.model_info import Category

VOID = 0
SEGMENT_ID_FACTOR = 1000  # segment id = category_id * 1000 + k

SYNTHETIC_CATEGORIES: list[Category] = [
    Category(0, "void", False, (0, 0, 0)),
    Category(1, "circle", True, (215, 45, 45)),
    Category(2, "square", True, (125, 60, 205)),
    Category(3, "triangle", True, (235, 205, 40)),
    Category(4, "ellipse", True, (240, 130, 30)),
    Category(5, "cross", True, (40, 200, 205)),
    Category(6, "ring", True, (225, 60, 170)),
    Category(7, "sky", False, (130, 180, 240)),
    Category(8, "grass", False, (60, 150, 50)),
    Category(9, "water", False, (30, 70, 150)),
    Category(10, "wall", False, (150, 130, 115)),
]
SYNTHETIC_NUM_CLASSES = len(SYNTHETIC_CATEGORIES)
SYNTHETIC_THING_IDS: tuple[int, ...] = tuple(c.id for c in SYNTHETIC_CATEGORIES if c.isthing)
SYNTHETIC_STUFF_IDS: tuple[int, ...] = tuple(c.id for c in SYNTHETIC_CATEGORIES if not c.isthing and c.id)
CIRCLE, SQUARE, TRIANGLE, ELLIPSE, CROSS, RING = SYNTHETIC_THING_IDS
SKY, GRASS, WATER, WALL = SYNTHETIC_STUFF_IDS


def synthetic_json_categories() -> list[dict]:
    """The COCO ``categories`` list of the synthetic dataset (void excluded, as in COCO)."""
    return [
        {
            "id": c.id,
            "name": c.name,
            "isthing": int(c.isthing),
            "color": list(c.color),
            "supercategory": "shape" if c.isthing else "background",
        }
        for c in SYNTHETIC_CATEGORIES
        if c.id != VOID
    ]


@dataclass
class SyntheticImage:
    """One rendered sample: ``image`` [H,W,3] uint8 RGB, ``ids`` [H,W] int32 segment ids, ``segments``."""

    image: np.ndarray
    ids: np.ndarray
    segments: list[dict]


# --------------------------------------------------------------------------------------------------------------
# Stuff textures: each returns a float32 [H, W, 3] RGB image covering the whole canvas.


def _low_freq_noise(rng: np.random.Generator, hw: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: ``[H, W]`` float32, bicubic upsampling of a ``cells``-sized grid."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def _jitter_colour(rng: np.random.Generator, base: tuple[int, int, int], spread: float) -> np.ndarray:
    """``[3]`` float32: ``base`` scaled by a random brightness and shifted per channel by N(0, spread)."""
    colour = np.asarray(base, np.float32) * rng.uniform(0.8, 1.15) + rng.normal(0.0, spread, 3)
    return np.clip(colour, 0, 255).astype(np.float32)


def _sky(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    top = _jitter_colour(rng, (80, 140, 225), 10)
    bottom = _jitter_colour(rng, (190, 220, 250), 10)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    clouds = np.clip(_low_freq_noise(rng, hw, 5), 0, None)[..., None] * rng.uniform(40, 90)
    return img + clouds


def _grass(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    base = _jitter_colour(rng, (60, 150, 50), 12)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    img += _low_freq_noise(rng, hw, 6)[..., None] * np.float32(25)
    fine = rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32)
    blades = cv2.blur(fine, (1, 5))  # short vertical streaks
    img += (blades * 28)[..., None] * np.asarray([0.5, 1.0, 0.4], np.float32)
    return img


def _water(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    base = _jitter_colour(rng, (30, 70, 150), 10)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    period = rng.uniform(5.0, 10.0)
    wobble = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * x / rng.uniform(20, 50) + rng.uniform(0, 2 * np.pi))
    stripes = np.sin(2 * np.pi * (y + wobble) / period).astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    img += (stripes * rng.uniform(18, 32))[..., None] * np.asarray([0.6, 0.8, 1.0], np.float32)
    return img


def _wall(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    base = _jitter_colour(rng, (150, 130, 115), 12)
    mortar = _jitter_colour(rng, (205, 200, 190), 8)
    bh = int(rng.integers(6, 12))
    bw = int(rng.integers(12, 24))
    oy, ox = int(rng.integers(0, bh)), int(rng.integers(0, bw))
    y = (np.arange(h)[:, None] + oy) % (2 * bh)
    x = np.arange(w)[None, :] + ox
    shifted = np.where(y >= bh, x + bw // 2, x) % bw
    lines = (y % bh == 0) | (shifted == 0)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    img += _low_freq_noise(rng, hw, 10)[..., None] * np.float32(12)
    img[lines] = mortar
    return img


_STUFF_TEXTURES: dict[int, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    SKY: _sky,
    GRASS: _grass,
    WATER: _water,
    WALL: _wall,
}


# --------------------------------------------------------------------------------------------------------------
# Thing shapes: each draws a filled uint8 {0,1} mask [H, W].


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """``[4, 2]`` int32 corner points of a rectangle centred at (cx, cy), rotated by ``angle`` degrees."""
    return np.round(cv2.boxPoints(((cx, cy), (w, h), angle))).astype(np.int32)


def _shape_mask(rng: np.random.Generator, cls: int, hw: tuple[int, int], cx: float, cy: float, r: float):
    """``[H, W]`` uint8 {0,1} mask of a thing of class ``cls`` with centre (cx, cy) and size ``r`` px."""
    mask = np.zeros(hw, np.uint8)
    angle = float(rng.uniform(0, 180))
    c = (int(round(cx)), int(round(cy)))
    if cls == CIRCLE:
        cv2.circle(mask, c, max(1, int(round(r))), 1, -1)
    elif cls == SQUARE:
        side = 1.6 * r
        cv2.fillPoly(mask, [_rotated_rect(cx, cy, side, side, angle)], 1)
    elif cls == TRIANGLE:
        theta = (
            np.deg2rad(angle) + np.asarray([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.15, 0.15, 3)
        )
        radii = r * 1.15 * rng.uniform(0.9, 1.1, 3)
        pts = np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    elif cls == ELLIPSE:
        axes = (max(1, int(round(r * 1.2))), max(1, int(round(r * rng.uniform(0.35, 0.6)))))
        cv2.ellipse(mask, c, axes, angle, 0, 360, 1, -1)
    elif cls == CROSS:
        arm = max(2.0, r * rng.uniform(0.3, 0.45))
        cv2.fillPoly(mask, [_rotated_rect(cx, cy, 2 * r, arm, angle)], 1)
        cv2.fillPoly(mask, [_rotated_rect(cx, cy, 2 * r, arm, angle + 90)], 1)
    elif cls == RING:
        cv2.circle(mask, c, max(2, int(round(r))), 1, -1)
        cv2.circle(mask, c, max(1, int(round(r * rng.uniform(0.4, 0.65)))), 0, -1)
    else:
        raise ValueError(f"unknown synthetic thing class {cls}")
    return mask


def _thing_texture(rng: np.random.Generator, cls: int, hw: tuple[int, int], cx: float, cy: float, r: float):
    """``[H, W, 3]`` float32 paint for one instance: class colour with jitter, flat / gradient / speckled."""
    colour = _jitter_colour(rng, SYNTHETIC_CATEGORIES[cls].color, 18)
    h, w = hw
    kind = rng.random()
    if kind < 0.5:
        return np.broadcast_to(colour, (h, w, 3))
    if kind < 0.8:
        a = rng.uniform(0, 2 * np.pi)
        y = np.arange(h, dtype=np.float32)[:, None] - cy
        x = np.arange(w, dtype=np.float32)[None, :] - cx
        ramp = (np.cos(a) * x + np.sin(a) * y) / max(r, 1.0)
        return colour + (np.clip(ramp, -1, 1) * rng.uniform(15, 40))[..., None]
    speckle = rng.normal(0.0, rng.uniform(8, 18), size=(h, w)).astype(np.float32)
    return colour + speckle[..., None]


# --------------------------------------------------------------------------------------------------------------


def _stuff_layout(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Curved horizontal bands: (``band`` [H,W] int index, class per band, ``edge`` [H,W] bool boundary)."""
    h, w = hw
    n_bands = int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3]))
    classes = [int(c) for c in rng.permutation(np.asarray(SYNTHETIC_STUFF_IDS))[:n_bands]]
    x = np.arange(w, dtype=np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    band = np.zeros(hw, np.int32)
    edge = np.zeros(hw, bool)
    if n_bands > 1:
        bases = np.sort(rng.uniform(0.2, 0.8, n_bands - 1)) * h
        for i in range(1, len(bases)):  # keep bands at least 15 % of the height apart
            bases[i] = max(bases[i], bases[i - 1] + 0.15 * h)
        for base in bases:
            amp = rng.uniform(0.0, 0.12) * h
            curve = base + amp * np.sin(2 * np.pi * x / rng.uniform(0.5, 2.0) / w + rng.uniform(0, 2 * np.pi))
            curve = curve + rng.uniform(-0.15, 0.15) * (x - w / 2)
            below = y >= curve[None, :]
            band += below
            edge |= np.abs(y - curve[None, :]) < 1.0
    return band, classes, edge


def render_synthetic_image(
    seed: int,
    index: int,
    image_size: tuple[int, int] = (128, 128),
    *,
    max_things: int = 8,
    crowd_prob: float = 0.12,
    void_prob: float = 0.35,
    min_thing_area: int = 12,
) -> SyntheticImage:
    """Draw image ``index`` of the dataset ``seed``: a pure function of its arguments.

    Returns a :class:`SyntheticImage` with ``image`` [H,W,3] uint8 RGB, ``ids`` [H,W] int32 (0 = void) and
    ``segments``: ``{id, category_id, iscrowd, area, bbox [x, y, w, h]}`` for each segment with area > 0.
    """
    h, w = (int(s) for s in image_size)
    if h < 16 or w < 16:
        raise ValueError(f"image_size {image_size} is too small; use at least 16x16 (default 128x128)")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    hw = (h, w)
    ids = np.zeros(hw, np.int32)
    img = np.zeros((h, w, 3), np.float32)
    crowd_ids: set[int] = set()

    # 1. stuff bands, each class drawn from its own texture (a class can only appear once per image).
    band, classes, edge = _stuff_layout(rng, hw)
    for b, cls in enumerate(classes):
        region = band == b
        img[region] = _STUFF_TEXTURES[cls](rng, hw)[region]
        ids[region] = cls * SEGMENT_ID_FACTOR + 1
    if len(classes) > 1 and rng.random() < void_prob:
        ids[edge] = VOID  # an unlabelled line along the stuff boundaries

    # 2. unlabelled blobs of random colour (void, may be occluded by things later).
    if rng.random() < void_prob:
        blob = np.zeros(hw, np.uint8)
        size = (int(rng.integers(3, max(4, w // 8))), int(rng.integers(3, max(4, h // 8))))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(blob, centre, size, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img[blob > 0] = rng.uniform(0, 255, 3)
        ids[blob > 0] = VOID

    # 3. things, painted back to front; the crowd (if any) is painted at a random depth.
    n_things = int(rng.integers(0, max_things + 1))
    crowd_at = int(rng.integers(0, n_things + 1)) if rng.random() < crowd_prob else -1
    per_class = dict.fromkeys(SYNTHETIC_THING_IDS, 0)
    scale = min(h, w) / 128.0
    for k in range(n_things + 1):
        if k == crowd_at:
            cls = int(rng.choice(SYNTHETIC_THING_IDS))
            per_class[cls] += 1
            sid = cls * SEGMENT_ID_FACTOR + per_class[cls]
            ccx, ccy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
            for _ in range(int(rng.integers(4, 10))):
                cx = ccx + rng.normal(0, 8 * scale)
                cy = ccy + rng.normal(0, 8 * scale)
                m = _shape_mask(rng, cls, hw, cx, cy, rng.uniform(2.5, 5.0) * scale) > 0
                img[m] = _thing_texture(rng, cls, hw, cx, cy, 4.0)[m]
                ids[m] = sid
            crowd_ids.add(sid)
        if k == n_things:
            break
        cls = int(rng.choice(SYNTHETIC_THING_IDS))
        per_class[cls] += 1
        sid = cls * SEGMENT_ID_FACTOR + per_class[cls]
        r = float(np.exp(rng.uniform(np.log(5.0), np.log(34.0)))) * scale
        cx = rng.uniform(-0.1 * w, 1.1 * w)
        cy = rng.uniform(-0.1 * h, 1.1 * h)
        m = _shape_mask(rng, cls, hw, cx, cy, r) > 0
        img[m] = _thing_texture(rng, cls, hw, cx, cy, r)[m]
        ids[m] = sid
        if rng.random() < 0.15:  # a thin unlabelled outline, as around many COCO objects
            ring = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~m
            ids[ring] = VOID

    # 4. photometric noise, optional slight blur.
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), 0.7)
    img = img + rng.normal(0.0, rng.uniform(2.0, 7.0), size=img.shape).astype(np.float32)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    # 5. segments: drop fragments too small to learn from (they become void), compute area and bbox.
    segments = []
    labels = np.unique(ids)
    for sid in labels[labels != VOID].tolist():
        m = ids == sid
        cls = sid // SEGMENT_ID_FACTOR
        area = int(m.sum())
        if SYNTHETIC_CATEGORIES[cls].isthing and area < min_thing_area:
            ids[m] = VOID
            continue
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        segments.append(
            {"id": sid, "category_id": cls, "iscrowd": int(sid in crowd_ids), "area": area, "bbox": bbox}
        )
    return SyntheticImage(image=image, ids=ids, segments=segments)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    write_bytes_atomic(path, data)


def _encode(ext: str, rgb: np.ndarray, jpeg_quality: int) -> bytes:
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    )
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {ext} image")
    return buf.tobytes()


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` segment ids -> ``[H, W, 3]`` uint8 RGB with id = R + 256 G + 65536 B."""
    u = ids.astype(np.uint32)
    return np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=-1).astype(np.uint8)


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 128),
    *,
    image_format: str = "jpg",
    jpeg_quality: int = 92,
    max_things: int = 8,
    crowd_prob: float = 0.12,
    void_prob: float = 0.35,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``num_images`` synthetic images in COCO panoptic format under ``out_dir``; return the JSON path.

    ``image_size`` is (H, W). ``image_format`` is ``"jpg"`` (smaller, realistic artefacts) or ``"png"``
    (lossless). ``progress(done, total)`` is called after each image. The JSON is written last, so an
    interrupted run leaves no ``panoptic.json``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    ext = "." + fmt
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "panoptic").mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(num_images - 1)))
    images, annotations = [], []
    for i in range(num_images):
        sample = render_synthetic_image(
            seed, i, image_size, max_things=max_things, crowd_prob=crowd_prob, void_prob=void_prob
        )
        stem = f"{i:0{digits}d}"
        _atomic_write(out / "images" / (stem + ext), _encode(ext, sample.image, jpeg_quality))
        _atomic_write(out / "panoptic" / (stem + ".png"), _encode(".png", ids_to_rgb(sample.ids), 0))
        h, w = sample.ids.shape
        images.append({"id": i, "file_name": stem + ext, "height": h, "width": w})
        annotations.append({"image_id": i, "file_name": stem + ".png", "segments_info": sample.segments})
        if progress is not None:
            progress(i + 1, num_images)
    data = {
        "info": {"description": f"maskconver synthetic panoptic dataset, seed {seed}", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": synthetic_json_categories(),
    }
    json_path = out / "panoptic.json"
    _atomic_write(json_path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
    return json_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a deterministic synthetic COCO panoptic dataset.")
    p.add_argument("out_dir")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs="+", default=[128], help="H [W] (default 128)")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg")
    args = p.parse_args(argv)
    size = (args.size[0], args.size[-1])

    tty = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:  # redrawn on a terminal, one line each in a log
            end = "\n" if done == total or not tty else ""
            print(f"{chr(13) if tty else ''}{done}/{total} images", end=end, file=sys.stderr, flush=True)

    path = generate_synthetic_dataset(
        args.out_dir, args.num_images, args.seed, size, image_format=args.format, progress=report
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
