"""The demo's closing summary (``maskconver-demo``): what it prints from a run's summary dict."""

from __future__ import annotations

from maskconver.runtime.demo import format_summary

SUMMARY = {
    "seconds": 28.4,
    "model": "out/model/m.tflite",
    "model_bytes": 640_000,
    "xnnpack_partitions": 1,
    "pq_float": 64.8,
    "pq_int8": 64.78,
    "pq_drop": 0.02,
    "sqnr_db": {"heatmap": 33.0},
    "latency_ms_p50": {"preprocess": 0.03, "inference": 0.76, "decode": 1.66, "end_to_end": 2.51},
    "grid_latency_ms_p50": {"preprocess": 0.03, "inference": 0.7, "decode": 0.45, "end_to_end": 1.2},
    "grid_decode_stages_ms_p50": {"peaks": 0.08, "mask_head": 0.05, "merge": 0.1, "label_maps": 0.09},
    "grid_decode_budget": {"ratio": 0.643, "budget": 0.15},
    "overlays": "out/overlays",
    "reports": {"conversion": "out/model/report.md", "markdown": "b.md", "plot": "b.png"},
}


def test_summary_shows_the_grid_decode_split_and_its_budget():
    lines = format_summary(SUMMARY).splitlines()
    split = next(ln for ln in lines if ln.strip().startswith("grid decode"))
    assert "peaks 0.08, mask_head 0.05, merge 0.10, label_maps 0.09 ms" in split
    assert split.endswith("decode/inference 0.64 (budget 0.15)")
    assert any("grid merge    inference 0.70 ms, decode 0.45 ms" in ln for ln in lines)


def test_summary_without_a_split_leaves_the_line_out():
    old = {k: v for k, v in SUMMARY.items() if not k.startswith("grid_decode")}
    assert not any("grid decode" in ln for ln in format_summary(old).splitlines())
