"""Shared test fixtures: paths to ../shared, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKCONVER_SHARED", REPO.parent / "shared"))
MG = SHARED / "fixtures" / "modelgarden"


@pytest.fixture(scope="session")
def mg_fixtures() -> Path:
    if not (MG / "golden_256.npz").exists():
        pytest.skip(f"Model Garden fixtures not found at {MG} (set MASKCONVER_SHARED to the shared/ folder)")
    return MG


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """The demo checkpoint converted to int8 once per session (``reliability_helpers.demo_int8_model``)."""
    from reliability_helpers import demo_int8_model

    try:
        return demo_int8_model(tmp_path_factory.getbasetemp())
    except FileNotFoundError as e:
        pytest.skip(str(e))
