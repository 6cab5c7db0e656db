"""The benchmark_model output parser against every real output in shared/fixtures/benchmark_model.

The expected numbers are the ones INDEX.md lists for each file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from maskconver.benchmarks.benchmark_model_output import (
    parse_benchmark_output,
    parse_count_line,
    strip_prefix,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "benchmark_model"


def _load(prefix: str) -> str:
    if not FIXTURES.is_dir():
        pytest.skip(f"benchmark_model fixtures not found at {FIXTURES} (shared/ must sit beside the repo)")
    matches = sorted(FIXTURES.glob(f"{prefix}-*.txt"))
    assert len(matches) == 1, f"expected one fixture {prefix}-*.txt, found {matches}"
    return matches[0].read_text(encoding="utf-8")


def test_every_fixture_is_covered_and_parses():
    if not FIXTURES.is_dir():
        pytest.skip(f"benchmark_model fixtures not found at {FIXTURES}")
    files = sorted(FIXTURES.glob("[0-9][0-9]-*.txt"))
    tested = {f"{n:02d}" for n in (*range(1, 16), 18, 19, 20)}  # each has its own test below
    assert tested <= {p.name[:2] for p in files}
    for path in files:  # any file added later must at least parse to a status
        text = path.read_text(encoding="utf-8")
        o = parse_benchmark_output(text)
        assert o.status in ("ok", "failed", "no_results"), path.name
        if "Inference timings in us" in text or "BENCHMARK RESULTS" in text:
            assert o.inference_avg_us is not None, path.name


def test_01_zedboard_old_format_no_stats():
    o = parse_benchmark_output(_load("01"))
    assert o.status == "ok" and o.fmt == "old"
    assert o.session_init_ms == 18.764
    assert o.init_us == 18764 and o.warmup_avg_us == 395037 and o.inference_avg_us == 394183
    assert o.first_inference_us is None  # the old format has no First inference field
    assert (o.warmup.count, o.warmup.first, o.warmup.avg, o.warmup.std) == (2, 393500, 395037, 1537)
    inf = o.inference
    assert (inf.count, inf.first, inf.curr, inf.min, inf.max, inf.avg, inf.std) == (
        50, 390368, 390936, 389982, 417669, 394183, 4373
    )  # fmt: skip
    assert inf.median is None and inf.p5 is None and inf.p95 is None
    assert o.memory_overall_mb is None and o.memory_init_mb is None
    assert "init" not in o.profiles
    reg = o.profiles["regular"]
    assert len(reg.run_order) == 31 and reg.nodes_observed == 31
    assert reg.run_order[0].name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]"  # no ":index" suffix
    top = reg.top[0]
    assert (top.node_type, top.avg_ms, top.percent) == ("CONV_2D", 37.559, 9.531)
    assert top.name == "[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]"
    by_type = {r.node_type: r for r in reg.summary}
    assert (by_type["CONV_2D"].count, by_type["CONV_2D"].avg_ms, by_type["CONV_2D"].percent) == (
        15,
        322.055,
        81.730,
    )
    assert (by_type["DEPTHWISE_CONV_2D"].count, by_type["DEPTHWISE_CONV_2D"].avg_ms) == (13, 71.644)
    assert by_type["DEPTHWISE_CONV_2D"].percent == 18.182
    assert (reg.timings.count, reg.timings.avg, reg.timings.std) == (50, 394059, 4373)
    assert o.params["Num threads"] == "2"
    assert o.init_ms == 18.764


def test_02_readme_example_old_inference_format():
    o = parse_benchmark_output(_load("02"))
    assert o.status == "ok" and o.fmt == "old"
    assert (o.init_us, o.warmup_avg_us, o.inference_avg_us) == (38467, 83235, 79760.9)
    assert o.first_inference_us is None and o.session_init_ms is None
    assert o.init_ms == pytest.approx(38.467)
    assert o.inference is None  # no steady count line, only the summary's average
    reg = o.profiles["regular"]
    t = reg.timings
    assert (t.count, t.first, t.curr, t.min, t.max, t.avg, t.std) == (
        50,
        79449,
        81350,
        77385,
        88213,
        79732,
        1929,
    )
    assert reg.nodes_observed == 31 and len(reg.run_order) == 31
    assert (reg.top[0].node_type, reg.top[0].avg_ms) == ("CONV_2D", 6.652)
    assert "Conv2d_3_pointwise/Relu6" in reg.top[0].name
    assert all(r.times_called == 0 for r in reg.run_order)
    conv = next(r for r in reg.summary if r.node_type == "CONV_2D")
    assert (conv.count, conv.avg_ms, conv.percent) == (15, 1.406, 89.270)


def test_03_x86_classic_with_init_profile():
    o = parse_benchmark_output(_load("03"))
    assert o.status == "ok" and o.fmt == "classic"
    assert o.session_init_ms == 0.243 and o.init_us == 243
    assert o.first_inference_us == 28285 and o.warmup_avg_us == 11610.3 and o.inference_avg_us == 11040.4
    assert (o.warmup.count, o.warmup.avg) == (43, 11610.3)
    assert (o.inference.count, o.inference.min, o.inference.max, o.inference.std) == (90, 10546, 12261, 437)
    assert o.inference.median is None
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("peak", 4.87109, 41.4102)
    assert o.model_size_mb == 16.9008
    init = o.profiles["init"]
    assert [(r.node_type, r.avg_ms) for r in init.run_order] == [("AllocateTensors", 0.029)]
    assert (init.timings.count, init.timings.curr) == (1, 29)
    reg = o.profiles["regular"]
    assert len(reg.run_order) == 31
    assert (reg.top[0].name, reg.top[0].avg_ms, reg.top[0].percent) == (
        "[MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6]:26", 0.811, 7.348
    )  # fmt: skip
    by_type = {r.node_type: r for r in reg.summary}
    assert (by_type["CONV_2D"].count, by_type["CONV_2D"].avg_ms, by_type["CONV_2D"].percent) == (
        15,
        8.342,
        75.706,
    )
    assert (by_type["DEPTHWISE_CONV_2D"].avg_ms, by_type["DEPTHWISE_CONV_2D"].percent) == (2.668, 24.213)
    assert (reg.timings.count, reg.timings.avg, reg.timings.std) == (90, 11036, 437)
    assert o.params["Use xnnpack"] == "0"


def test_04_nnapi_partial_profile_only():
    o = parse_benchmark_output(_load("04"))
    assert o.status == "no_results"  # trimmed by its author: profiles, no timing lines
    assert o.inference is None and o.inference_avg_us is None
    init = o.profiles["init"]
    mgwd = init.run_order[0]
    assert (mgwd.node_type, mgwd.first_ms, mgwd.mem_kb) == ("ModifyGraphWithDelegate", 413.346, 1748.0)
    alloc = init.run_order[1]
    assert (alloc.first_ms, alloc.avg_ms, alloc.times_called) == (316.039, 158.023, 2)
    assert (init.timings.count, init.timings.curr) == (1, 729391)
    reg = o.profiles["regular"]
    assert reg.nodes_observed == 11 and len(reg.run_order) == 11
    top = [(r.node_type, r.avg_ms, r.percent) for r in reg.top[:3]]
    assert top == [
        ("TfLiteNnapiDelegate", 79.010, 49.781),
        ("TfLiteNnapiDelegate", 56.058, 35.320),
        ("TfLiteNnapiDelegate", 14.418, 9.084),
    ]
    assert (
        reg.top[0].name == "[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231"
    )
    assert reg.top[1].name == "[Identity, Identity_1, Identity_2]:233"
    summary = [(r.node_type, r.count, r.avg_ms) for r in reg.summary]
    assert summary == [
        ("TfLiteNnapiDelegate", 3, 149.483),
        ("STRIDED_SLICE", 6, 8.347),
        ("RESIZE_NEAREST_NEIGHBOR", 2, 0.879),
    ]
    assert reg.summary[0].percent == 94.187
    t = reg.timings
    assert (t.count, t.first, t.curr, t.min, t.max, t.avg, t.std) == (
        50,
        164033,
        158560,
        146535,
        166638,
        158715,
        2931,
    )
    d = o.delegation_summary()
    assert (d["profile_delegate_nodes"], d["profile_cpu_nodes"]) == (3, 8)


def test_05_trimmed_single_count_line_is_steady_state():
    o = parse_benchmark_output(_load("05"))
    assert o.status == "ok"
    i = o.inference
    assert (i.count, i.first, i.curr, i.min, i.max, i.avg, i.std) == (
        50,
        96719,
        90158,
        89745,
        96719,
        92571.2,
        1638,
    )
    assert o.warmup is None
    assert (o.init_us, o.first_inference_us, o.warmup_avg_us, o.inference_avg_us) == (
        365972, 120877, 108605, 92571.2
    )  # fmt: skip
    assert o.session_init_ms is None and o.init_ms == pytest.approx(365.972)
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("peak", 6.90625, 61.0547)


@pytest.mark.parametrize(
    ("prefix", "first_error"),
    [
        (
            "06",
            "NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 "
            "while completing NNAPI compilation.",
        ),
        ("07", "NN API returned error ANEURALNETWORKS_BAD_DATA at line 1068 while adding operation."),
    ],
)
def test_06_07_nnapi_failures(prefix, first_error):
    o = parse_benchmark_output(_load(prefix))
    assert o.status == "failed"
    assert o.delegate_failed
    assert "NNAPI delegate could not be applied" in o.failures
    assert any("Benchmarking failed" in f for f in o.failures)
    assert o.errors[0] == first_error
    assert o.inference is None and o.inference_avg_us is None and o.init_ms is None
    assert o.memory_overall_mb is None
    assert o.params["NNAPI accelerators available"] == "qti-default,qti-dsp,qti-gpu,nnapi-reference"
    d = o.delegation_summary()
    assert d["failed"] is True and d["full"] is False
    if prefix == "06":
        assert "Node number 248 (TfLiteNnapiDelegate) failed to prepare." in o.errors


def test_08_riscv_scientific_notation_and_single_warmup():
    o = parse_benchmark_output(_load("08"))
    assert o.status == "ok"
    assert o.session_init_ms == 17.187 and o.init_us == 17187 and o.first_inference_us == 3512391
    assert o.warmup_avg_us == 3.51239e06 and o.inference_avg_us == 2.95034e06
    w = o.warmup
    assert (w.count, w.curr, w.first, w.min, w.max, w.avg) == (1, 3512391, 3512391, 3512391, 3512391, 3512391)
    i = o.inference
    assert (i.count, i.first, i.curr, i.min, i.max, i.avg, i.std) == (
        50, 2990275, 2913402, 2727568, 3189954, 2.95034e06, 109798
    )  # fmt: skip
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("delta", 4.21094, 46.0859)
    assert o.model_size_mb == 16.9008
    assert o.profiles["init"].run_order[0].avg_ms == 1.356
    reg = o.profiles["regular"]
    assert (reg.top[0].name, reg.top[0].avg_ms, reg.top[0].percent) == (
        "[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10", 277.374, 9.403
    )  # fmt: skip
    by_type = {r.node_type: r for r in reg.summary}
    assert (by_type["CONV_2D"].avg_ms, by_type["CONV_2D"].percent) == (2651.853, 89.897)
    assert (by_type["DEPTHWISE_CONV_2D"].avg_ms, by_type["DEPTHWISE_CONV_2D"].percent) == (296.919, 10.065)
    assert (reg.timings.avg, reg.timings.std) == (2.9499e06, 109770)


def test_09_external_npu_delegate_and_overflowing_node_type():
    o = parse_benchmark_output(_load("09"))
    assert o.status == "ok"
    assert o.session_init_ms == 14.432 and o.init_us == 14432 and o.first_inference_us == 8454279
    assert o.warmup_avg_us == 8.45428e06 and o.warmup.count == 1
    i = o.inference
    assert (i.count, i.min, i.max, i.std, i.avg) == (77, 12656, 12920, 41, 12822.1)
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("peak", 8.5625, 50.668)
    assert o.model_size_mb == 6.89901
    init = {r.node_type: r for r in o.profiles["init"].run_order}
    assert (init["ModifyGraphWithDelegate"].first_ms, init["ModifyGraphWithDelegate"].avg_ms) == (
        1.819,
        0.935,
    )
    assert init["ModifyGraphWithDelegate"].times_called == 2
    assert (init["AllocateTensors"].first_ms, init["AllocateTensors"].avg_ms) == (0.093, 0.042)
    assert init["AllocateTensors"].times_called == 3
    assert o.profiles["init"].timings.curr == 1997
    reg = o.profiles["regular"]
    assert [(r.node_type, r.avg_ms, r.percent) for r in reg.run_order] == [
        ("Vx Delegate", 10.864, 85.049),
        ("TFLite_Detection_PostProcess", 1.910, 14.951),  # wider than its column: no padding after the tab
    ]
    assert reg.run_order[0].name == "[Squeeze, convert_scores]:64"
    assert reg.run_order[1].name.endswith("TFLite_Detection_PostProcess:3]:63")
    assert (reg.timings.count, reg.timings.avg, reg.timings.std) == (77, 12773.9, 42)
    d = o.delegation_summary()
    assert d["delegate"] == "EXTERNAL" and d["full"] is False and d["delegate_kernels"] == 1
    assert d["delegated_nodes"] is None  # no X-of-Y count is printed
    assert (d["profile_delegate_nodes"], d["profile_cpu_nodes"]) == (1, 1)


def test_10_cpu_reference_kernels_percentiles():
    o = parse_benchmark_output(_load("10"))
    assert o.status == "ok" and o.fmt == "classic"
    assert o.session_init_ms == 5.579 and o.init_us == 5579 and o.first_inference_us == 1357602
    assert o.warmup_avg_us == 1.3576e06
    w = o.warmup
    assert (w.count, w.curr, w.p5, w.median, w.p95) == (1, 1357602, 1357602, 1357602, 1357602)
    i = o.inference
    assert (i.count, i.first, i.curr, i.min, i.max, i.std) == (50, 1249964, 1240143, 1238588, 1252566, 2565)
    assert (i.avg, i.p5, i.median, i.p95) == (1.24027e06, 1238753, 1239807, 1247415)
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("delta", 6.36328, 109.832)
    assert o.model_size_mb == 67.3128
    assert o.params["Use xnnpack"] == "0"
    assert o.profiles == {}


def test_11_xnnpack_partial_no_blank_lines():
    o = parse_benchmark_output(_load("11"))
    assert o.status == "ok"
    assert o.session_init_ms == 614.333 and o.init_us == 614333
    assert (o.first_inference_us, o.warmup_avg_us, o.inference_avg_us) == (905463, 905463, 899641)
    assert o.warmup.count == 1
    i = o.inference
    assert (i.count, i.min, i.max, i.std, i.p5, i.median, i.p95) == (
        50,
        898007,
        906121,
        1549,
        898333,
        899281,
        904305,
    )
    assert (o.memory_init_mb, o.memory_overall_mb) == (146.363, 150.141)
    d = o.delegation_summary()
    assert d["delegate"] == "XNNPACK" and d["full"] is False and d["delegate_kernels"] == 1
    assert d["statement"].startswith("Explicitly applied XNNPACK delegate")


def test_12_qrb2210_cpu_default_xnnpack():
    o = parse_benchmark_output(_load("12"))
    assert o.status == "ok"
    assert o.session_init_ms == 87.639 and o.init_us == 87639 and o.first_inference_us == 106436
    w = o.warmup
    assert (w.count, w.avg, w.median, w.p5, w.p95) == (5, 106065, 105948, 105929, 106436)
    i = o.inference
    assert (i.count, i.avg, i.min, i.max, i.std) == (50, 105784, 105416, 106528, 260)
    assert (i.p5, i.median, i.p95) == (105485, 105718, 106281)
    assert (o.memory_init_mb, o.memory_overall_mb, o.model_size_mb) == (14.4414, 14.8164, 4.2761)
    d = o.delegation_summary()
    assert d["delegates_created"] == ["XNNPACK"] and d["delegated_nodes"] is None and d["full"] is None


def test_13_gpu_opencl_full_delegation():
    o = parse_benchmark_output(_load("13"))
    assert o.status == "ok"
    assert o.session_init_ms == 1361.24 and o.init_us == 1361236 and o.first_inference_us == 125113
    assert (o.warmup.count, o.warmup.avg, o.warmup.median) == (5, 115344, 112912)
    i = o.inference
    assert (i.avg, i.count, i.min, i.max, i.std, i.p5, i.median, i.p95) == (
        115246, 50, 111842, 119614, 1329, 112107, 115350, 116620
    )  # fmt: skip
    assert (o.memory_init_mb, o.memory_overall_mb) == (132.816, 132.816)
    d = o.delegation_summary()
    assert d["delegate"] == "GPU" and d["full"] is True and d["delegate_kernels"] == 1
    assert "completely executed" in d["statement"]


def test_14_logcat_brief_xnnpack_partial():
    o = parse_benchmark_output(_load("14"))
    assert o.status == "ok"
    assert o.session_init_ms == 110.85 and o.init_us == 110850 and o.first_inference_us == 268586
    assert (o.warmup.count, o.warmup.avg, o.warmup.median) == (2, 259707, 268586)
    i = o.inference
    assert (i.avg, i.count, i.min, i.max, i.std, i.p5, i.median, i.p95) == (
        244240, 10, 216081, 264534, 13396, 216081, 245871, 264534
    )  # fmt: skip
    assert (o.memory_init_mb, o.memory_overall_mb, o.model_size_mb) == (64.8047, 89.4453, 5.05872)
    assert o.params["Min num runs"] == "10" and o.params["Graph"] == "/data/local/tmp/yolo26n_fp16.tflite"
    d = o.delegation_summary()
    assert (d["delegate"], d["delegated_nodes"], d["total_nodes"], d["partitions"]) == (
        "TfLiteXNNPackDelegate", 642, 685, 19
    )  # fmt: skip
    assert d["full"] is False


def test_15_logcat_threadtime_xnnpack_partial():
    o = parse_benchmark_output(_load("15"))
    assert o.status == "ok"
    assert o.session_init_ms == 47.882 and o.init_us == 47882 and o.first_inference_us == 84630
    assert (o.warmup.count, o.warmup.avg, o.warmup.median) == (4, 126596, 145308)
    i = o.inference
    assert (i.avg, i.count, i.min, i.max, i.std, i.p5, i.median, i.p95) == (
        74900.7, 25, 47408, 220482, 38502, 47464, 58959, 136481
    )  # fmt: skip
    assert i.median < i.avg  # a skewed run: the median is far below the mean
    assert (o.memory_init_mb, o.memory_overall_mb, o.model_size_mb) == (35.7969, 47.1055, 9.43909)
    d = o.delegation_summary()
    assert (d["delegated_nodes"], d["total_nodes"], d["partitions"], d["full"]) == (233, 263, 58, False)


@pytest.mark.parametrize(
    ("prefix", "expect"),
    [
        (
            "18",
            dict(session=4.478, model_init_us=4480, warm=(1055, 1033, 465.319, 459, 463, 478),
                 inf=(2112, 442, 979, 464.545, 13, 460, 462, 478), mem=(8.94, 11.51), thr=525.55,
                 top=("Fully Connected (NC, PF32) GEMM", 0.382, 92.948), top_sum=93.171,
                 prof=(3166, 411.071, 14)),
        ),
        (
            "19",
            dict(session=4.488, model_init_us=4490, warm=(358, 1927, 1386.31, 1366, 1377, 1428),
                 inf=(1000, 1362, 1452, 1379.64, 14, 1365, 1373, 1409), mem=(9.07, 11.25), thr=176.96,
                 top=("Fully Connected (NC, F32) GEMM", 1.269, 97.059), top_sum=97.090,
                 prof=(1357, 1307.19, 21)),
        ),
    ],
)  # fmt: skip
def test_18_19_litert_compiled_model(prefix, expect):
    o = parse_benchmark_output(_load(prefix))
    assert o.status == "ok" and o.fmt == "litert"
    assert o.session_init_ms == expect["session"] and o.init_ms == expect["session"]
    assert o.init_us == pytest.approx(expect["model_init_us"])  # "Model initialization: 4.48 ms"
    w = o.warmup
    assert (w.count, w.first, w.avg, w.p5, w.median, w.p95) == expect["warm"]
    assert o.first_inference_us == expect["warm"][1]
    i = o.inference
    assert (i.count, i.min, i.max, i.avg, i.std, i.p5, i.median, i.p95) == expect["inf"]
    assert o.inference_avg_us == expect["inf"][3]
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb) == ("litert", *expect["mem"])
    assert o.peak_rss_mb is None  # "Peak memory usage not available."
    assert o.throughput_mb_s == expect["thr"]
    reg = o.profiles["regular"]
    assert "init" not in o.profiles
    assert all(r.start_ms is None for r in reg.run_order)  # the new table has no [start] column
    assert (reg.top[0].node_type, reg.top[0].avg_ms, reg.top[0].percent) == expect["top"]
    assert reg.summary[0].percent == expect["top_sum"]
    alloc = next(r for r in reg.run_order if r.node_type == "AllocateTensors")
    assert alloc.times_called == 0
    assert [r.node_type for r in reg.run_order if r.node_type.startswith("LiteRT::Run")] == [
        "LiteRT::Run[buffer registration]",
        "LiteRT::Run[Buffer sync]",
    ]
    assert (reg.timings.count, reg.timings.avg, reg.timings.std) == expect["prof"]
    d = o.delegation_summary()
    assert (d["delegated_nodes"], d["total_nodes"], d["partitions"], d["full"]) == (1, 1, 1, True)
    assert (d["profile_delegate_nodes"], d["profile_cpu_nodes"]) == (2, 0)


def test_20_gpu_full_old_wording_with_init_profile():
    o = parse_benchmark_output(_load("20"))
    assert o.status == "ok"
    assert o.session_init_ms == 1451.51 and o.init_us == 1451507 and o.first_inference_us == 11147
    assert (o.warmup.count, o.warmup_avg_us) == (56, 8779.68)
    i = o.inference
    assert (i.avg, i.count, i.min, i.max, i.std) == (8680.33, 110, 7863, 10688, 591)
    assert (o.memory_kind, o.memory_init_mb, o.memory_overall_mb, o.model_size_mb) == (
        "peak", 63.4883, 63.4883, 3.79893
    )  # fmt: skip
    init = {r.node_type: r for r in o.profiles["init"].run_order}
    assert (init["ModifyGraphWithDelegate"].avg_ms, init["ModifyGraphWithDelegate"].mem_kb) == (
        1450.744,
        62364.0,
    )
    alloc = init["AllocateTensors"]
    assert (alloc.first_ms, alloc.avg_ms, alloc.times_called) == (0.028, 0.016, 2)
    assert o.profiles["init"].timings.curr == 1450776
    reg = o.profiles["regular"]
    assert [(r.node_type, r.name, r.avg_ms, r.percent) for r in reg.run_order] == [
        ("TfLiteGpuDelegateV2", "[Identity]:77", 8.671, 100.0)
    ]
    assert (reg.timings.count, reg.timings.avg, reg.timings.std) == (110, 8671.49, 590)
    d = o.delegation_summary()
    assert d["delegate"] == "GPU" and d["full"] is True
    assert (d["profile_delegate_nodes"], d["profile_cpu_nodes"]) == (1, 0)
    assert o.params["Use gpu"] == "1" and o.params["Num threads"] == "1"


def test_to_dict_is_json_ready_and_in_ms():
    import json

    o = parse_benchmark_output(_load("13"))
    d = json.loads(json.dumps(o.to_dict()))
    assert d["init_ms"] == 1361.24 and d["first_inference_ms"] == pytest.approx(125.113)
    assert d["inference"]["median"] == 115350
    assert o.inference.to_ms()["median"] == pytest.approx(115.35)
    assert d["delegation"]["delegate"] == "GPU"


# --- formats the fixtures lack, written in the tool's documented line formats ---------------------------
def test_strip_prefix_variants():
    assert strip_prefix("07-08 15:37:34.588 I/tflite  ( 6071): count=1 curr=5") == ("count=1 curr=5", False)
    assert strip_prefix("I/tflite  ( 6071): Num threads: [4]") == ("Num threads: [4]", False)
    assert strip_prefix("07-14 13:18:38.406 23449 23449 E tflite  : Failed to invoke!") == (
        "Failed to invoke!",
        True,
    )
    assert strip_prefix("2026-07-14 13:18:38.406 23449 23449 I tflite  : x: y") == ("x: y", False)
    assert strip_prefix("ERROR: Node number 3 failed") == ("Node number 3 failed", True)
    assert strip_prefix(
        "INFO: [./litert/tools/benchmark_litert_model.h:82] Model initialization: 4.48 ms"
    ) == (
        "Model initialization: 4.48 ms",
        False,
    )
    assert strip_prefix("\t   CONV_2D\t1.0") == ("\t   CONV_2D\t1.0", False)


def test_count_line_rejects_non_count_text():
    assert parse_count_line("count=abc") is None
    assert parse_count_line("Timings (microseconds): count=3") is None
    s = parse_count_line("count=3 first=1 curr=2 min=1 max=3 avg=2 std=0.816 p5=1 median=2 p95=3")
    assert (s.count, s.median, s.std) == (3, 2, 0.816)


_RUN = (
    "Running benchmark for at least {} iterations and at least {} seconds but terminate if exceeding 150 s."
)


def test_gpu_partial_delegation_and_peak_memory_monitoring():
    lines = [
        "Created TensorFlow Lite delegate for GPU.",
        "ERROR: Following operations are not supported by GPU delegate:",
        "ERROR: GATHER_ND: Operation is not supported.",
        "ERROR: TOPK_V2: Operation is not supported.",
        "ERROR: 60 operations will run on the GPU, and the remaining 7 operations will run on the CPU.",
        "VERBOSE: Replacing 60 out of 67 node(s) with delegate (TfLiteGpuDelegateV2) node, "
        "yielding 3 partitions for subgraph 0.",
        "Initialized session in 2400.5ms.",
        _RUN.format(1, 0.5),
        "count=3 first=30000 curr=20000 min=20000 max=30000 avg=23333.3 std=4714 p5=20000 median=20000 "
        "p95=30000",
        _RUN.format(50, 1),
        "count=50 first=19000 curr=18000 min=17500 max=21000 avg=18200 std=300 p5=17600 median=18100 "
        "p95=18900",
        "Inference timings in us: Init: 2400500, First inference: 30000, Warmup (avg): 23333.3, "
        "Inference (avg): 18200",
        "Memory footprint delta from the start of the tool (MB): init=120.5 overall=130.25",
        "Overall peak memory footprint (MB) via periodic monitoring: 145.75",
    ]
    text = "\n".join(ln if ln.startswith(("ERROR", "VERBOSE")) else "INFO: " + ln for ln in lines)
    o = parse_benchmark_output(text)
    assert o.status == "ok"
    assert o.peak_rss_mb == 145.75 and o.memory_overall_mb == 130.25
    assert o.gpu_unsupported_ops == [
        "GATHER_ND: Operation is not supported.",
        "TOPK_V2: Operation is not supported.",
    ]
    assert o.errors == []  # the unsupported-op lines are delegation facts, not errors
    d = o.delegation_summary()
    assert (d["gpu_ops_on_gpu"], d["gpu_ops_on_cpu"], d["partitions"], d["full"]) == (60, 7, 3, False)
    assert d["delegate"] == "TfLiteGpuDelegateV2"


def test_space_aligned_op_table_without_start_column():
    header = "[node type]    [first]   [avg ms]       [%]    [cdf%]    [mem KB]  [times called]  [Name]"
    sum_header = "[Node type]    [count]   [avg ms]     [avg %]     [cdf %]   [mem KB]  [times called]"
    text = "\n".join(
        [
            "Operator-wise Profiling Info for Regular Benchmark Runs:",
            "============================== Run Order ==============================",
            "                 " + header,
            "  Convolution (NHWC, QC8) GEMM  0.500  0.400  80.000%  80.000%  0.000  1  Delegate/Conv:0",
            "                   TOPK_V2        0.100    0.100   20.000%  100.000%    0.000    1  [topk]:7",
            "",
            "============================== Summary by node type ==============================",
            "                 " + sum_header,
            "  Convolution (NHWC, QC8) GEMM        1      0.400     80.000%     80.000%      0.000         1",
            "                   TOPK_V2            1      0.100     20.000%    100.000%      0.000         1",
            "",
            "Timings (microseconds): count=20 first=600 curr=500 min=480 max=700 avg=505 std=10",
        ]
    )
    o = parse_benchmark_output(text)
    reg = o.profiles["regular"]
    assert [(r.node_type, r.avg_ms, r.percent, r.name) for r in reg.run_order] == [
        ("Convolution (NHWC, QC8) GEMM", 0.4, 80.0, "Delegate/Conv:0"),
        ("TOPK_V2", 0.1, 20.0, "[topk]:7"),
    ]
    assert [(r.node_type, r.count, r.avg_ms) for r in reg.summary] == [
        ("Convolution (NHWC, QC8) GEMM", 1, 0.4),
        ("TOPK_V2", 1, 0.1),
    ]
    assert reg.timings.avg == 505
    assert o.status == "no_results"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/system/bin/sh: /data/local/tmp/benchmark_model: not found", "file not found"),
        (
            'CANNOT LINK EXECUTABLE "./benchmark_model": library "libc++_shared.so" not found',
            "cannot be linked",
        ),
        ("Failed to parse flag: num_threads", "could not parse a command-line flag"),
        ("Failed to mmap model /data/local/tmp/x.tflite", "model not loaded"),
        ("ERROR: Failed to invoke!", "Invoke"),
        ("Segmentation fault", "crashed"),
    ],
)
def test_fatal_lines_fail_without_numbers(text, reason):
    o = parse_benchmark_output("STARTING!\n" + text + "\n")
    assert o.status == "failed"
    assert any(reason in f for f in o.failures), o.failures


def test_empty_and_foreign_text_have_no_results():
    assert parse_benchmark_output("").status == "no_results"
    o = parse_benchmark_output("hello world\nsomething: else\n")
    assert o.status == "no_results" and o.inference is None


def test_unknown_flags_are_a_warning_not_a_failure():
    text = "WARN: Unconsumed cmdline flags: --report_peak_memory_footprint=true\n" + _load("12")
    o = parse_benchmark_output(text)
    assert o.status == "ok" and o.failures == []
    assert o.warnings == [
        "benchmark_model ignored flags it does not know: --report_peak_memory_footprint=true"
    ]
