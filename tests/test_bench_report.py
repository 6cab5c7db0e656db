"""Benchmark reports (JSON, Markdown, PNG), the verdict against the paper targets, and the targets themselves."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from maskconver.benchmarks.adb import device_info_from_props
from maskconver.benchmarks.android import build_android_result
from maskconver.benchmarks.benchmark_model_output import parse_benchmark_output
from maskconver.benchmarks.report import (
    ReportError,
    make_host_result,
    summarize_samples,
    to_markdown,
    verdict,
    write_json,
    write_reports,
)
from maskconver.benchmarks.targets import PAPER_POINTS, target_for

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "benchmark_model"


# --- targets -----------------------------------------------------------------------------------------------
def test_paper_points():
    assert [(p.input_size, p.latency_ms, p.gmacs, p.pq) for p in PAPER_POINTS] == [
        (256, 17.12, 1.5, 29.7),
        (640, 24.93, 9.58, 37.2),
    ]


def test_targets_at_paper_sizes_and_interpolated():
    assert target_for(256).ms == 17.0 and target_for((256, 256)).basis == "paper"
    assert target_for([640, 640]).ms == 25.0
    # 448x448: area 200704, (200704 - 65536) / (409600 - 65536) = 0.39286 of the way from 17 to 25 ms.
    t = target_for(448)
    assert t.basis == "interpolated" and t.ms == pytest.approx(17 + 8 * 135168 / 344064, abs=0.01)
    assert t.ms == pytest.approx(20.14, abs=0.01)
    # A non-square size is placed by its area: 256x640 has area 163840.
    assert target_for((256, 640)).ms == pytest.approx(17 + 8 * (163840 - 65536) / 344064, abs=0.01)


def test_no_target_outside_the_paper_range():
    for size in (128, 1024, (200, 200)):
        t = target_for(size)
        assert t.ms is None and t.basis == "none" and "no paper target" in t.note
    assert target_for(None).ms is None
    with pytest.raises(ValueError, match="positive"):
        target_for((0, 256))


# --- statistics --------------------------------------------------------------------------------------------
def test_summarize_samples_hand_checked():
    s = summarize_samples([10.0, 20.0, 30.0, 40.0, 50.0])
    assert s["n"] == 5 and s["mean"] == 30.0 and s["min"] == 10.0 and s["max"] == 50.0
    assert s["p50"] == 30.0
    assert s["p90"] == pytest.approx(46.0)  # rank 0.9 * 4 = 3.6 -> 40 + 0.6 * 10
    assert s["p99"] == pytest.approx(49.6)
    assert s["p5"] == pytest.approx(12.0)
    assert s["std"] == pytest.approx(np.sqrt(250.0))  # sample std of 10..50
    with pytest.raises(ReportError, match="at least one"):
        summarize_samples([])
    with pytest.raises(ReportError, match="NaN"):
        summarize_samples([1.0, float("nan")])


# --- result fixtures ---------------------------------------------------------------------------------------
def _host_result(size: int = 256, e2e_median: float = 30.0) -> dict:
    rng = np.random.default_rng(7)
    samples = {
        "preprocess": 1.0 + rng.gamma(4, 0.2, 120),
        "inference": e2e_median - 6.0 + rng.normal(0, 0.5, 120),
        "decode": 4.0 + rng.gamma(3, 0.3, 120),
    }
    samples["end_to_end"] = samples["preprocess"] + samples["inference"] + samples["decode"]
    return {
        "schema": "maskconver-bench/1",
        "kind": "host",
        "label": "x86_64 CPU (2 cores), LiteRT XNNPACK, 2 threads",
        "status": "ok",
        "errors": [],
        "warnings": [],
        "model": {"name": f"maskconver_{size}.tflite", "sha256": "ab" * 32, "input_size": [size, size]},
        "device": {"machine": "x86_64", "cpu_count": 2},
        "settings": {"threads": 2, "runs": 120, "warmup": 5},
        "runtime": {"ai_edge_litert": "2.3.0", "numpy": np.__version__},
        "stages": {k: summarize_samples(v) for k, v in samples.items()},
        "samples_ms": {k: v.tolist() for k, v in samples.items()},
        "init_ms": 25.0,
        "first_inference_ms": 60.0,
        "peak_memory_mb": 180.0,
    }


def _android_result(prefix: str, props: dict, size: int = 256, delegate: str = "gpu") -> dict:
    if not FIXTURES.is_dir():
        pytest.skip(f"benchmark_model fixtures not found at {FIXTURES}")
    text = next(FIXTURES.glob(f"{prefix}-*.txt")).read_text(encoding="utf-8")
    return build_android_result(
        parse_benchmark_output(text),
        device=device_info_from_props("1A281FDF6003KE", props),
        model={"name": "m.tflite", "sha256": "cd" * 32, "input_size": [size, size]},
        settings={"threads": 4, "delegate": delegate, "runs": 50, "warmup": 5},
        runtime={"tool": "benchmark_model"},
        raw_output=text,
    )


PIXEL = {"ro.product.model": "Pixel 6", "ro.soc.model": "Tensor", "ro.build.version.release": "14"}
EMULATOR = {"ro.product.model": "sdk_gphone64_x86_64", "ro.boot.qemu": "1", "ro.product.cpu.abi": "x86_64"}


# --- verdicts ----------------------------------------------------------------------------------------------
def test_verdict_pass_and_fail_on_a_phone():
    # File 20: GPU, mean 8.68 ms, no median -> the mean is compared.
    v = verdict(_android_result("20", PIXEL, size=256))
    assert v["status"] == "PASS" and v["statistic"] == "mean" and v["measured_ms"] == pytest.approx(8.68033)
    assert v["target_ms"] == 17.0 and "PASS" in v["line"] and "8.68 ms" in v["line"]
    # File 12: median 105.718 ms, far over 25 ms at 640.
    v = verdict(_android_result("12", PIXEL, size=640, delegate="xnnpack"))
    assert v["status"] == "FAIL" and v["statistic"] == "median"
    assert v["measured_ms"] == pytest.approx(105.718) and "4.23x" in v["line"]


def test_verdict_other_cases():
    assert verdict(_android_result("12", PIXEL, size=192))["status"] == "NO_TARGET"
    assert verdict(_android_result("12", EMULATOR))["status"] == "NOT_COMPARABLE"
    failed = verdict(_android_result("06", PIXEL, delegate="nnapi"))
    assert failed["status"] == "FAILED" and "NNAPI delegate could not be applied" in failed["line"]
    host = verdict(_host_result(256, 14.0))
    assert host["status"] == "HOST_ONLY"  # fast, but a host number is never a phone pass
    assert "not a phone" in host["line"] and "17 ms" in host["line"]
    assert verdict(_android_result("12", PIXEL, size=448))["target_ms"] == pytest.approx(20.14, abs=0.01)


def test_bad_results_are_rejected():
    with pytest.raises(ReportError, match="kind"):
        verdict({"kind": "phone", "status": "ok", "stages": {}})
    with pytest.raises(ReportError, match="stages"):
        verdict({"kind": "host", "status": "ok", "stages": {}})
    with pytest.raises(ReportError, match="'mean'"):
        verdict({"kind": "host", "status": "ok", "stages": {"inference": {"p50": 3.0}}})


# --- files -------------------------------------------------------------------------------------------------
def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    ihdr = data[16 : 16 + 13]
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(b"IHDR" + ihdr), "IHDR CRC mismatch"
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"
    return struct.unpack(">II", ihdr[:8])


def test_write_reports_host(tmp_path):
    r = _host_result(640, 60.0)
    paths = write_reports(
        r,
        json=tmp_path / "out" / "r.json",
        markdown=tmp_path / "out" / "r.md",
        plot=tmp_path / "out" / "r.png",
    )
    assert set(paths) == {"json", "markdown", "plot"}
    assert sorted(os.listdir(tmp_path / "out")) == ["r.json", "r.md", "r.png"]  # no temp files left behind
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert data["verdict"]["status"] == "HOST_ONLY" and data["target"]["ms"] == 25.0
    assert data["label"].startswith("HOST ") and "not a phone" in data["label"]
    assert data["stages"]["end_to_end"]["n"] == 120
    assert data["model"]["sha256"] == "ab" * 32
    md = (tmp_path / "out" / "r.md").read_text()
    assert data["verdict"]["line"] in md and "**Verdict:** HOST ONLY" in md
    assert "host numbers, not a phone's" in md
    for stage in ("preprocess", "inference", "decode", "end_to_end"):
        assert f"| {stage} | 120 |" in md
    w, h = _png_size((tmp_path / "out" / "r.png").read_bytes())
    assert (w, h) == (1300, 540)
    assert r["label"] == "x86_64 CPU (2 cores), LiteRT XNNPACK, 2 threads"  # the caller's dict is untouched


def test_write_reports_android(tmp_path):
    r = _android_result("14", PIXEL, size=640, delegate="xnnpack")
    write_reports(r, json=tmp_path / "a.json", markdown=tmp_path / "a.md", plot=tmp_path / "a.png")
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["verdict"]["status"] == "FAIL" and data["verdict"]["measured_ms"] == pytest.approx(245.871)
    assert data["device"]["model"] == "Pixel 6" and data["delegation"]["partitions"] == 19
    assert "Inference timings in us" in data["raw_output"]
    md = (tmp_path / "a.md").read_text()
    assert "**Verdict:** FAIL: inference median 245.87 ms at 640x640 > 25 ms target" in md
    assert "| partitions | 19 |" in md and "| delegated_nodes | 642 |" in md
    assert "p90 and p99 are not available" in md
    _png_size((tmp_path / "a.png").read_bytes())


def test_markdown_of_failed_and_emulator_runs():
    md = to_markdown(_android_result("07", PIXEL, delegate="nnapi"))
    assert "**Verdict:** FAILED" in md and "## Errors" in md and "ANEURALNETWORKS_BAD_DATA" in md
    md = to_markdown(_android_result("13", EMULATOR))
    assert "**Verdict:** NOT COMPARABLE" in md and "functional only" in md


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    bad = _host_result()
    bad["settings"] = {"threads": object()}  # not JSON-serialisable
    with pytest.raises(TypeError):
        write_json(bad, target)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(ReportError, match="directory"):
        write_json(_host_result(), tmp_path)


def test_reports_are_replaced_by_rename(tmp_path):
    target = tmp_path / "r.md"
    write_reports(_host_result(), markdown=target)
    first_inode = target.stat().st_ino
    write_reports(_host_result(640), markdown=target)
    assert target.stat().st_ino != first_inode  # a new file renamed over the old one, not rewritten in place
    assert "640x640" in target.read_text()
    assert os.listdir(tmp_path) == ["r.md"]


def test_make_host_result_has_the_shared_shape(tmp_path):
    r = make_host_result(
        model={"name": "m.tflite", "input_size": [256, 256]},
        samples_ms={"inference": [10.0, 12.0, 11.0], "end_to_end": np.array([15.0, 17.0, 16.0])},
        init_ms=5.0,
        first_inference_ms=20.0,
        peak_memory_mb=99.5,
        label="x86_64 CPU",
    )
    assert r["kind"] == "host" and r["status"] == "ok" and r["schema"] == "maskconver-bench/1"
    assert r["stages"]["inference"]["p50"] == 11.0 and r["stages"]["end_to_end"]["n"] == 3
    assert r["samples_ms"]["end_to_end"] == [15.0, 17.0, 16.0]
    v = verdict(r)
    assert v["status"] == "HOST_ONLY" and v["measured_ms"] == 11.0
    write_reports(r, json=tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text())["label"].startswith("HOST x86_64 CPU")
    with pytest.raises(ReportError, match="samples"):
        make_host_result(
            model={}, samples_ms={}, init_ms=None, first_inference_ms=None, peak_memory_mb=None, label="x"
        )


def _with_decode_stages(decode_ms: float) -> dict:
    return make_host_result(
        model={"name": "m.tflite", "input_size": [256, 256]},
        samples_ms={"inference": [10.0, 12.0, 11.0], "decode": [decode_ms, decode_ms + 0.2, decode_ms - 0.2]},
        init_ms=5.0,
        first_inference_ms=20.0,
        peak_memory_mb=99.5,
        label="x86_64 CPU",
        decode_stage_samples={"merge": [0.5, 0.6, 0.4], "peaks": [0.3, 0.3, 0.3], "other": [0.1, 0.2, 0.3]},
    )


def test_decode_budget_and_breakdown_are_reported(tmp_path):
    over = _with_decode_stages(2.2)  # p50 2.2 against 11 ms of inference: 0.20
    b = over["decode_budget"]
    assert b["ratio"] == pytest.approx(0.2) and b["budget"] == 0.15 and b["met"] is False
    assert over["decode_stages"]["merge"]["p50"] == 0.5 and over["decode_stages"]["peaks"]["n"] == 3
    md = to_markdown(over)
    assert "= **0.20** (budget 0.15: not met)" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| peaks |") or ln.startswith("| merge |")]
    assert rows[0].startswith("| peaks | 0.300 |") and rows[1].startswith(
        "| merge | 0.500 |"
    )  # pipeline order
    assert "| merge | 0.500 | 0.580 | 50% |" in md  # 0.5 of the stages' 1.0 ms (other included)
    assert _with_decode_stages(1.6)["decode_budget"]["met"] is True  # 1.6 / 11 = 0.145
    no_inference = make_host_result(
        model={}, samples_ms={"decode": [1.0]}, init_ms=None, first_inference_ms=None, peak_memory_mb=None,
        label="x",
    )  # fmt: skip
    assert "decode_budget" not in no_inference and "Decode / inference" not in to_markdown(no_inference)
    png = write_reports(over, plot=tmp_path / "p.png")["plot"]
    width, height = struct.unpack(">II", Path(png).read_bytes()[16:24])
    assert (width, height) == (1850, 540)  # the third panel: decode stages against the budget
    plain = write_reports(_host_result(), plot=tmp_path / "q.png")["plot"]
    assert struct.unpack(">II", Path(plain).read_bytes()[16:24]) == (1300, 540)


def test_decode_breakdown_tolerates_missing_stage_values(tmp_path):
    # hand-edited or foreign JSON: a stage without a p50 is shown as "-", not a crash (shares of 0.7 ms)
    from maskconver.benchmarks.host import decode_line

    r = _with_decode_stages(2.2)
    r["decode_stages"]["peaks"]["p50"] = None
    md = to_markdown(r)
    assert "| peaks | - |" in md and "| merge | 0.500 | 0.580 | 71% |" in md
    assert "merge 0.50" in decode_line(r) and "peaks" not in decode_line(r)
    assert write_reports(r, plot=tmp_path / "p.png")["plot"]
