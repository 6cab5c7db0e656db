"""Soak: 3000 frames through one ``Segmenter`` with flat memory (``-m soak``; excluded by default).

The long test runs :func:`maskconver.benchmarks.soak.run_soak` on the int8 demo model: RSS sampled every
100 frames must not grow by more than 4 MB after a 300-frame warm-up (least-squares slope under 1 MB per
1000 frames), the live Python object count must not grow, and every frame's result must equal the first
result of the same image. A short smoke run of the script (default run) keeps it working.

    /work/venv/bin/pytest -m soak tests/test_soak.py
"""

from __future__ import annotations

import json

import pytest
from maskconver.benchmarks.soak import main as soak_main
from maskconver.benchmarks.soak import plot, run_soak

MAX_GROWTH_MB = 4.0
MAX_SLOPE_MB_PER_1000 = 1.0


@pytest.mark.soak
def test_3000_frames_flat_memory(demo_model, tmp_path):
    res = run_soak(
        demo_model, frames=3000, sample_every=100, warmup_frames=300, num_threads=2, progress=False
    )
    png = plot(res, tmp_path / "soak.png")
    summary = res.summary()
    print(
        json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}, indent=1), f"\nplot: {png}"
    )
    assert len(res.rss_mb) == 31 and png.stat().st_size > 10_000
    assert res.mismatched_results == 0
    assert abs(res.growth_mb) < MAX_GROWTH_MB, summary
    assert abs(res.slope_mb_per_1000) < MAX_SLOPE_MB_PER_1000, summary
    assert summary["python_objects_growth_after_warmup"] <= 100, summary


def test_soak_script_smoke(demo_model, tmp_path, capsys):
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    code = soak_main(
        ["--model", str(demo_model), "--frames", "40", "--sample-every", "10", "--warmup", "10"]
        + ["--threads", "1", "--plot", str(png), "--json", str(js)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "growth_after_warmup_mb:" in out and "mismatched_results: 0" in out
    data = json.loads(js.read_text())
    assert data["sample_frames"] == [0, 10, 20, 30, 40] and len(data["rss_mb"]) == 5
    assert data["mismatched_results"] == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="multiple of 5"):
        run_soak(demo_model, frames=20, sample_every=7, warmup_frames=0, progress=False)
    assert soak_main(["--model", str(tmp_path / "missing.tflite"), "--frames", "5", "--warmup", "0"]) == 2
    assert "no such model file" in capsys.readouterr().err
