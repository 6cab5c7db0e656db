"""The MaskConver paper's mobile points and the SDK's latency targets.

Source: Model Garden ``official/projects/maskconver`` README (MobileNet-MH rows); the ICLR submission names a
Pixel 6 (see ``shared/reference/anchors.md`` section 4.2). The SDK targets are 17 ms at 256x256 and 25 ms at
640x640. Between the two sizes the target is interpolated linearly in input area (pixels); outside that range
there is no paper target, since extrapolating a phone figure would be a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PAPER_POINTS", "TARGETS_MS", "PaperPoint", "Target", "input_side_label", "target_for"]


@dataclass(frozen=True)
class PaperPoint:
    """One row of the paper's table: square input side, latency on the phone, compute and accuracy."""

    input_size: int
    latency_ms: float
    gmacs: float
    pq: float
    params_m: float
    config: str


PAPER_POINTS: tuple[PaperPoint, ...] = (
    PaperPoint(256, 17.12, 1.5, 29.7, 3.4, "maskconver_mobilenetv3p5_rf_256_coco.yaml"),
    PaperPoint(640, 24.93, 9.58, 37.2, 3.4, "maskconver_mobilenetv3p5_rf_640_coco.yaml"),
)

TARGETS_MS: dict[int, float] = {256: 17.0, 640: 25.0}


@dataclass(frozen=True)
class Target:
    """The latency target for one input size; ``ms`` is None when the paper gives none for that size."""

    input_size: tuple[int, int] | None
    ms: float | None
    basis: str  # "paper" | "interpolated" | "none"
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_hw(input_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    if len(input_size) != 2:
        raise ValueError(f"input_size must be an int or (H, W), got {input_size!r}")
    h, w = int(input_size[0]), int(input_size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    return (h, w)


def input_side_label(input_size: int | tuple[int, int] | list[int] | None) -> str:
    hw = _as_hw(input_size)
    return "unknown size" if hw is None else f"{hw[0]}x{hw[1]}"


def target_for(input_size: int | tuple[int, int] | list[int] | None) -> Target:
    """The latency target for a model input of ``input_size`` (an int side or ``(H, W)``).

    256x256 -> 17 ms and 640x640 -> 25 ms (the paper's 17.12 / 24.93 ms, rounded). Any other size whose area
    lies between 256^2 and 640^2 is interpolated linearly by area; anything else has no paper target.
    """
    hw = _as_hw(input_size)
    if hw is None:
        return Target(None, None, "none", "no paper target: the model's input size is unknown")
    h, w = hw
    if h == w and h in TARGETS_MS:
        point = next(p for p in PAPER_POINTS if p.input_size == h)
        return Target(
            hw,
            TARGETS_MS[h],
            "paper",
            f"{TARGETS_MS[h]:g} ms at {h}x{w} (paper: {point.latency_ms} ms on a Pixel 6, "
            f"{point.gmacs} GMACs, PQ {point.pq})",
        )
    lo, hi = min(TARGETS_MS), max(TARGETS_MS)
    area, a_lo, a_hi = h * w, lo * lo, hi * hi
    if a_lo <= area <= a_hi:
        t = TARGETS_MS[lo] + (area - a_lo) / (a_hi - a_lo) * (TARGETS_MS[hi] - TARGETS_MS[lo])
        return Target(
            hw,
            round(t, 2),
            "interpolated",
            f"{t:.2f} ms at {h}x{w}: interpolated by input area between the paper's {lo}x{lo} "
            f"({TARGETS_MS[lo]:g} ms) and {hi}x{hi} ({TARGETS_MS[hi]:g} ms) targets",
        )
    return Target(
        hw,
        None,
        "none",
        f"no paper target for {h}x{w}: the paper reports only {lo}x{lo} and {hi}x{hi}, and this size lies "
        "outside that range",
    )
