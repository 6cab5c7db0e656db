"""Drawing panoptic results with OpenCV only: colour fill, segment boundaries, names and a text banner.

All images are RGB uint8 ``[H, W, 3]`` (colours are given in RGB; OpenCV's drawing functions do not
care about channel order). Stuff segments take their category colour; thing instances take the category
colour shifted by a deterministic per-instance offset so neighbouring instances of one class differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from maskconver.runtime.result import PanopticResult

FONT = cv2.FONT_HERSHEY_SIMPLEX
_INSTANCE_SHIFTS = np.array(
    [[0, 0, 0], [40, -30, 20], [-40, 30, -20], [30, 40, -40], [-30, -40, 40], [50, 10, -30], [-50, -10, 30]],
    dtype=np.int32,
)


def segment_colours(result: PanopticResult) -> np.ndarray:
    """uint8 ``[N + 1, 3]`` RGB colour per segment id (row 0 = void, black)."""
    table = {c.id: c.color for c in result.categories}
    out = np.zeros((len(result.segments) + 1, 3), dtype=np.int32)
    for s in result.segments:
        base = np.array(table.get(s.category_id, _fallback_colour(s.category_id)), dtype=np.int32)
        if s.isthing:
            base = base + _INSTANCE_SHIFTS[s.instance_id % len(_INSTANCE_SHIFTS)]
        out[s.id] = base
    return np.clip(out, 0, 255).astype(np.uint8)


def _fallback_colour(category_id: int) -> tuple[int, int, int]:
    """A deterministic colour for a category the model's table does not list."""
    rng = np.random.default_rng(category_id)
    return tuple(int(v) for v in rng.integers(64, 256, 3))  # type: ignore[return-value]


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: True where a pixel's id differs from its right or lower neighbour."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def blend(image: np.ndarray, ids: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha-blend ``colours[ids]`` over ``image`` where ``ids > 0``; void pixels keep the image.

    ``image`` uint8 ``[H, W, 3]``, ``ids`` int ``[H, W]``, ``colours`` uint8 ``[N + 1, 3]`` -> uint8 copy.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    fill = colours[ids]
    mixed = cv2.addWeighted(image, 1.0 - alpha, fill, alpha, 0.0)
    return np.where((ids > 0)[:, :, None], mixed, image)


def draw_text(
    image: np.ndarray,
    text: str,
    org: tuple[int, int],
    *,
    scale: float = 0.5,
    colour: tuple[int, int, int] = (255, 255, 255),
    background: tuple[int, int, int] | None = (0, 0, 0),
    anchor: str = "topleft",
) -> None:
    """Draw ``text`` in place at ``org`` = (x, y) on a filled box; ``anchor`` "topleft" or "center"."""
    thickness = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = int(org[0]), int(org[1])
    if anchor == "center":
        x, y = x - tw // 2, y - (th + base) // 2
    h, w = image.shape[:2]
    x = min(max(x, 0), max(w - tw - 2, 0))
    y = min(max(y, 0), max(h - th - base - 2, 0))
    if background is not None:
        cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 2), background, thickness=-1)
    cv2.putText(image, text, (x + 1, y + th + 1), FONT, scale, colour, thickness, cv2.LINE_AA)


def label_positions(ids: np.ndarray, count: int, max_side: int = 256) -> np.ndarray:
    """float ``[count + 1, 2]`` (x, y) per segment id 0..count (NaN where absent): the segment's pixel
    farthest from any segment boundary or the image border, found on an id map subsampled to at most
    ``max_side`` pixels per side (labels then sit inside their segment, also for rings and L shapes)."""
    step = max(1, -(-max(ids.shape) // max_side))
    small = ids[step // 2 :: step, step // 2 :: step]
    inner = np.zeros((small.shape[0] + 2, small.shape[1] + 2), dtype=np.uint8)
    inner[1:-1, 1:-1] = ~boundaries(small)
    dist = cv2.distanceTransform(inner, cv2.DIST_L2, 3)[1:-1, 1:-1]
    flat_ids = small.ravel()
    order = np.lexsort((dist.ravel(), flat_ids))  # by id, then distance ascending
    sorted_ids = flat_ids[order]
    last = np.flatnonzero(np.r_[sorted_ids[1:] != sorted_ids[:-1], True])  # farthest pixel of each id
    out = np.full((count + 1, 2), np.nan)
    ys, xs = np.divmod(order[last], small.shape[1])
    seg = sorted_ids[last]
    keep = seg <= count
    out[seg[keep], 0] = xs[keep] * step + step // 2
    out[seg[keep], 1] = ys[keep] * step + step // 2
    return out


def draw_panoptic(
    image: np.ndarray, result: PanopticResult, *, alpha: float = 0.5, labels: bool = True
) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` image + result with masks of the same ``[H, W]`` -> new RGB overlay image.

    Segments are filled with their colour at ``alpha``, boundaries drawn in white, and (``labels``) each
    segment's name (plus score for things) written at its centroid.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay needs an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if image.shape[:2] != result.shape:
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but the masks are {result.shape[1]}x{result.shape[0]};"
            " pass the image that was segmented (for output='canvas' results use result.plot())"
        )
    ids = result.panoptic_ids()
    out = blend(np.ascontiguousarray(image), ids, segment_colours(result), alpha)
    out[boundaries(ids)] = (255, 255, 255)
    if labels and result.segments:
        pos = label_positions(ids, len(result.segments))
        scale = float(np.clip(min(image.shape[:2]) / 900.0, 0.35, 1.0))
        for s in result.segments:
            x, y = pos[s.id]
            if not np.isfinite(x):
                continue
            text = f"{s.name} {s.score:.2f}" if s.isthing else s.name
            draw_text(out, text, (int(x), int(y)), scale=scale, anchor="center")
    return out


def draw_banner(image: np.ndarray, lines: list[str]) -> None:
    """Write ``lines`` (e.g. FPS and latency) in place at the top-left of an RGB image."""
    scale = float(np.clip(min(image.shape[:2]) / 700.0, 0.4, 1.0))
    y = 2
    for line in lines:
        (_, th), base = cv2.getTextSize(line, FONT, scale, max(1, int(round(scale * 2))))
        draw_text(image, line, (2, y), scale=scale, colour=(255, 255, 0), background=(0, 0, 0))
        y += th + base + 4
