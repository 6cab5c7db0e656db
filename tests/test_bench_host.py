"""maskconver-bench on the host: run_host on a real converted model, machine facts, compare's pieces."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from bench_models import nano_model, small_frames
from maskconver.benchmarks.compare import (
    VARIANTS,
    CompareError,
    alternating_orders,
    compare,
    compare_to_markdown,
    int8_peak_gmacs,
    summarize_variant,
)
from maskconver.benchmarks.host import (
    HostBenchmarkError,
    cpu_info,
    load_benchmark_images,
    paper_point,
    run_host,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
cpu MHz\t\t: 3700.000
flags\t\t: fpu avx2 avx512f avx512_vnni hypervisor

processor\t: 1
model name\t: something else
cpu MHz\t\t: 1200.000
"""

PCTS = ("min", "p5", "p50", "p90", "p95", "p99", "max")


def test_cpu_info_reads_the_first_processor_block():
    info = cpu_info(CPUINFO)
    assert info["cpu"] == "AMD EPYC 9R14 96-Core Processor"
    assert info["clock_ghz"] == pytest.approx(3.7)
    assert "cpuinfo" in info["clock_source"]
    assert info["avx512_vnni"] and info["avx2"] and info["hypervisor"]
    bare = cpu_info("processor\t: 0\nflags\t: sse2\n")
    assert bare["clock_ghz"] is None and bare["clock_source"] == "unknown" and not bare["avx512_vnni"]


def test_paper_points_for_the_two_sizes_only():
    assert paper_point([256, 256])["latency_ms"] == 17.12
    assert paper_point((640, 640))["latency_ms"] == 24.93
    assert paper_point((640, 640))["gmacs"] == 9.58
    assert paper_point([128, 128]) is None
    assert paper_point([256, 320]) is None
    assert paper_point(None) is None


def test_alternating_orders_reverse_every_round():
    orders = alternating_orders(3, 4)
    assert orders == [[0, 1, 2], [2, 1, 0], [0, 1, 2], [2, 1, 0]]
    # over a pair of rounds every variant has the same mean position
    pos = np.array([[o.index(i) for o in orders] for i in range(3)])
    assert np.all(pos.mean(axis=1) == 1.0)
    with pytest.raises(CompareError):
        alternating_orders(0, 3)


def test_int8_peak():
    assert int8_peak_gmacs(2, 2.5) == pytest.approx(320.0)


def test_summarize_variant_per_round_medians():
    inf = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])  # 2 rounds x 3
    st = summarize_variant(inf, inf + 5.0, np.full(6, 0.5), rounds=2)
    assert st["n"] == 6
    assert st["inference"]["median"] == pytest.approx(6.5)
    assert st["inference"]["round_median_min"] == 2.0 and st["inference"]["round_median_max"] == 11.0
    assert st["frame"]["median"] == pytest.approx(11.5)
    assert st["inference"]["p10"] < st["inference"]["median"] < st["inference"]["p90"] <= 12.0
    assert st["decode"]["mean"] == 0.5


def test_benchmark_images_sources(tmp_path):
    frames, source = load_benchmark_images(None, num_images=2, image_size=(64, 80))
    assert len(frames) == 2 and frames[0].shape == (64, 80, 3) and frames[0].dtype == np.uint8
    assert "synthetic" in source
    assert frames[0].std() > 5  # a scene, not a flat image
    with pytest.raises(HostBenchmarkError, match="does not exist"):
        load_benchmark_images(tmp_path / "nope")
    with pytest.raises(HostBenchmarkError, match="no images"):
        load_benchmark_images(tmp_path)
    with pytest.raises(HostBenchmarkError, match="empty"):
        load_benchmark_images([])


def test_run_host_rejects_bad_input(tmp_path):
    with pytest.raises(HostBenchmarkError, match="does not exist"):
        run_host(tmp_path / "missing.tflite", progress=None)
    with pytest.raises(HostBenchmarkError, match="runs must be"):
        run_host(tmp_path / "missing.tflite", runs=0, progress=None)
    with pytest.raises(HostBenchmarkError, match="threads must be"):
        run_host(tmp_path / "missing.tflite", threads=0, progress=None)


def test_run_host_on_a_converted_model():
    _ckpt, model = nano_model()
    lines: list[str] = []
    r = run_host(model, threads=1, runs=4, warmup=2, images=small_frames(), progress=lines.append)
    assert r["kind"] == "host" and r["status"] == "ok" and r["comparable"] is False
    assert r["label"].startswith("HOST") and "not a phone" in r["label"]
    assert r["verdict"]["status"] == "HOST_ONLY" and "HOST ONLY" in r["verdict"]["line"]
    assert r["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert r["model"]["input_size"] == [128, 128] and r["model"]["quantization"] == "fp32"
    assert r["paper"] is None and r["target"]["ms"] is None  # no paper point at 128x128
    assert r["settings"]["threads"] == 1 and r["settings"]["delegate"] == "xnnpack"
    assert r["settings"]["image_sizes"] == ["96x128"]
    assert "ai-edge-litert" in r["runtime"] and r["device"]["logical_cores"] >= 1
    samples = r["samples_ms"]
    for stage in ("preprocess", "inference", "decode", "end_to_end"):
        st = r["stages"][stage]
        assert st["n"] == 4 and len(samples[stage]) == 4
        values = [st[k] for k in PCTS]
        assert values == sorted(values) and values[0] > 0
    parts = np.add.reduce([np.array(samples[s]) for s in ("preprocess", "inference", "decode")])
    assert np.all(np.array(samples["end_to_end"]) >= parts)  # the stages lie inside the whole call
    assert r["init_ms"] > 0 and r["first_inference_ms"] > 0
    mem = r["memory"]
    # getrusage's high-water mark is sampled by the kernel in pages and can trail /proc's current RSS slightly
    assert mem["peak_rss_mb"] >= mem["rss_after_init_mb"] - 1.0 and mem["rss_after_init_mb"] > 0
    assert r["peak_memory_mb"] == mem["peak_rss_mb"]
    assert any("run 4/4" in ln for ln in lines) and "HOST ONLY" in lines[-1]
    # where the decode time went: every stage of every run, inside the decode time of that run
    ds = r["decode_stages"]
    stages = ("peaks", "mask_head", "mask_logits", "merge", "segments", "label_maps", "result", "other")
    assert tuple(ds) == stages and all(ds[s]["n"] == 4 and ds[s]["min"] >= 0 for s in stages)
    inside = sum(ds[s]["mean"] for s in stages if s != "other")
    assert inside <= r["stages"]["decode"]["mean"] + 1e-9
    assert ds["other"]["mean"] == pytest.approx(r["stages"]["decode"]["mean"] - inside, abs=1e-6)
    b = r["decode_budget"]
    assert b["ratio"] == pytest.approx(r["stages"]["decode"]["p50"] / r["stages"]["inference"]["p50"])
    assert (
        b["met"] == (b["ratio"] <= 0.15)
        and "first_frame_ms" in r
        and "decode.peaks" not in r["first_frame_ms"]
    )
    assert any(
        ln.startswith("decode ") and "of inference (budget 0.15)" in ln and "label_maps" in ln for ln in lines
    )


def test_compare_on_the_nano_model(tmp_path):
    ckpt, _model = nano_model()
    lines: list[str] = []
    kwargs = dict(
        sizes=[128],
        rounds=2,
        per_round=2,
        warmup=1,
        threads=1,
        variants=["tflite_fp32"],
        out_dir=tmp_path,
        num_calibration=2,
        images=small_frames(1),
        isolate=False,
        clock_ghz=2.0,
    )
    r = compare(ckpt, "nano", progress=lines.append, **kwargs)
    row = r["sizes"]["128"]["rows"][0]
    assert row["variant"] == "tflite_fp32" and row["backend"] == "litert" and row["n"] == 4
    assert row["inference"]["median"] <= row["frame"]["median"]
    macs = r["sizes"]["128"]["macs"]
    assert 1e7 < macs < 1e9  # the nano dense graph at 128x128
    assert row["gmac_per_s"] == pytest.approx(macs / row["inference"]["median"] / 1e6)
    assert r["peak"]["int8_peak_gmacs"] == pytest.approx(64 * 1 * 2.0)
    assert row["percent_int8_peak"] == pytest.approx(100 * row["gmac_per_s"] / 128.0)
    assert r["sizes"]["128"]["ratios"] == {}  # one variant: nothing to divide
    assert r["sizes"]["128"]["targets"] == []  # and no lowered int8 model to hold to the targets
    md = compare_to_markdown(r)
    assert "| TFLite fp32 |" in md and "128 GMAC/s" in md and "given (--clock-ghz)" in md
    dsm = row["decode_stages_median"]
    assert list(dsm)[0] == "peaks" and list(dsm)[-2:] == ["result", "other"]
    assert sum(dsm.values()) >= 0 and "- TFLite fp32: peaks " in md
    # the second run finds the converted model in the cache
    lines.clear()
    compare(ckpt, "nano", progress=lines.append, **kwargs)
    assert any("cached in" in ln for ln in lines) and not any("converting" in ln for ln in lines)


def test_compare_rejects_bad_settings(tmp_path):
    ckpt, _ = tmp_path / "none.npz", None
    with pytest.raises(CompareError, match="does not exist"):
        compare(ckpt, "nano", progress=None)
    ckpt.write_bytes(b"x")
    with pytest.raises(CompareError, match="unknown variant"):
        compare(ckpt, "nano", variants=["tflite_int4"], progress=None)
    with pytest.raises(CompareError, match="multiple of 16"):
        compare(ckpt, "nano", sizes=[250], progress=None)
    assert set(VARIANTS) >= {"tflite_fp32", "tflite_int8", "tflite_int8_lo", "onnx_fp32", "onnx_int8"}


def _row(median: float, decode: float, pct: float, rounds: tuple[float, float]) -> dict:
    return {
        "inference": {"median": median, "round_median_min": rounds[0], "round_median_max": rounds[1]},
        "decode_over_inference": decode / median,
        "percent_int8_peak": pct,
    }


def test_compare_targets_say_met_or_not_and_flag_a_noisy_run():
    from maskconver.benchmarks.compare import _target_lines, size_targets

    rows = {
        "tflite_int8_lo": _row(8.6, 1.18, 53.4, (8.5, 8.8)),
        "tflite_fp32": _row(32.6, 1.4, 14.1, (32, 33)),
    }
    got = size_targets(rows, {"int8_lowered_over_fp32_inference": 8.6 / 32.6})
    assert [(t["name"], t["met"]) for t in got] == [
        ("lowered int8 / fp32 inference", True),
        ("lowered int8, % of the int8 peak", True),
        ("decode / lowered int8 inference", True),
    ]
    assert got[2]["value"] == pytest.approx(1.18 / 8.6)
    slow = {"tflite_int8_lo": _row(10.0, 1.6, 30.0, (8.0, 10.0))}
    got = size_targets(slow, {"int8_lowered_over_fp32_inference": 0.45})
    assert [t["met"] for t in got] == [False, False, False, None]  # 25% spread: a noisy run
    lines = _target_lines(got)
    assert lines[0] == "- target lowered int8 / fp32 inference <= 0.4: 0.450, **not met**"
    assert lines[1] == "- target lowered int8, % of the int8 peak >= 33.3 (within 3x): 30.0, **not met**"
    assert "unreliable" in lines[3] and "25%" in lines[3]
