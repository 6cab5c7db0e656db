"""argparse ``type=`` checkers shared by the command-line tools (clear messages, exit status 2)."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type, ok, want: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {want}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")
