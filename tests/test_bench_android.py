"""The Android benchmark run: setup checks, the device command, the real adb with no device, result assembly."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import flatbuffers
import pytest
from ai_edge_litert import schema_py_generated as schema
from maskconver.benchmarks.adb import AdbNotInstalledError, NoDeviceError, device_info_from_props
from maskconver.benchmarks.android import (
    BENCHMARK_BINARY_ENV,
    BenchmarkSetupError,
    benchmark_command,
    build_android_result,
    check_model_file,
    elf_machine,
    file_sha256,
    model_input_size,
    resolve_benchmark_binary,
    run_android,
)
from maskconver.benchmarks.benchmark_model_output import parse_benchmark_output

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "benchmark_model"
ADB = shutil.which("adb")


def tiny_tflite(path: Path, h: int, w: int) -> Path:
    """A real one-op TFLite model (ADD of the input with itself), input ``image`` float32 [1, h, w, 3]."""
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT() for _ in range(3)]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]
    sub = schema.SubGraphT()
    sub.tensors = []
    for i, name in enumerate(("image", "out")):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, h, w, 3], schema.TensorType.FLOAT32, i + 1, name
        sub.tensors.append(t)
    sub.inputs, sub.outputs = [0], [1]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    sub.operators = [op]
    model.subgraphs = [sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _host_elf() -> Path:
    return Path(os.path.realpath(sys.executable))


# --- setup checks ------------------------------------------------------------------------------------------
def test_missing_binary_explains_where_to_get_it(monkeypatch):
    monkeypatch.delenv(BENCHMARK_BINARY_ENV, raising=False)
    with pytest.raises(BenchmarkSetupError, match="android_aarch64_benchmark_model") as ei:
        resolve_benchmark_binary(None)
    assert "--benchmark-binary" in str(ei.value) and BENCHMARK_BINARY_ENV in str(ei.value)


def test_binary_from_env_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(BENCHMARK_BINARY_ENV, str(tmp_path / "benchmark_model"))
    with pytest.raises(BenchmarkSetupError, match="does not exist") as ei:
        resolve_benchmark_binary(None)
    assert f"${BENCHMARK_BINARY_ENV}" in str(ei.value)


def test_binary_must_be_elf(tmp_path):
    apk = tmp_path / "benchmark_model.apk"
    apk.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(BenchmarkSetupError, match="apk is not supported"):
        resolve_benchmark_binary(apk)
    text = tmp_path / "benchmark_model"
    text.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(BenchmarkSetupError, match="not an ELF"):
        resolve_benchmark_binary(text)


def test_elf_machine_of_a_real_binary(monkeypatch):
    expected = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        platform.machine().lower()
    )
    if expected is None:
        pytest.skip(f"no expectation for host machine {platform.machine()}")
    assert elf_machine(_host_elf()) == expected
    monkeypatch.setenv(BENCHMARK_BINARY_ENV, str(_host_elf()))
    assert resolve_benchmark_binary(None) == _host_elf()


def test_model_checks_and_input_size(tmp_path):
    with pytest.raises(BenchmarkSetupError, match="does not exist"):
        check_model_file(tmp_path / "absent.tflite")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x04test" + b"\0" * 16)
    with pytest.raises(BenchmarkSetupError, match="not a TFLite flatbuffer"):
        check_model_file(onnx)
    model = tiny_tflite(tmp_path / "tiny.tflite", 32, 48)
    assert check_model_file(model) == model
    assert model_input_size(model) == (32, 48)
    assert model_input_size(onnx) is None


@pytest.mark.parametrize(
    ("delegate", "flag"),
    [
        ("cpu", "--use_xnnpack=false"),
        ("xnnpack", "--use_xnnpack=true"),
        ("gpu", "--use_gpu=true"),
        ("nnapi", "--use_nnapi=true"),
    ],
)
def test_benchmark_command(delegate, flag):
    argv = benchmark_command(
        "/d/bm", "/d/m.tflite", threads=2, delegate=delegate, runs=30, warmup=5, taskset="f0"
    )
    assert argv[:3] == ["taskset", "f0", "/d/bm"]
    for expected in (
        "--graph=/d/m.tflite",
        "--num_threads=2",
        "--num_runs=30",
        "--warmup_runs=5",
        "--enable_op_profiling=true",
        "--min_secs=0",
        flag,
    ):
        assert expected in argv
    assert sum(a.startswith("--use_") for a in argv) == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"delegate": "hexagon"}, "unknown delegate"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"runs": 0}, "runs must be >= 1"),
        ({"warmup": -1}, "warmup must be >= 0"),
    ],
)
def test_benchmark_command_rejects_bad_settings(kwargs, words):
    with pytest.raises(BenchmarkSetupError, match=words):
        benchmark_command("/d/bm", "/d/m.tflite", **kwargs)


# --- the real adb, no device -------------------------------------------------------------------------------
@pytest.fixture
def private_adb_port(monkeypatch):
    if ADB is None:
        pytest.skip("adb is not installed (apt-get install -y adb)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    yield port
    subprocess.run([ADB, "kill-server"], capture_output=True, timeout=30, check=False)


def test_run_android_without_a_device(private_adb_port, tmp_path):
    model = tiny_tflite(tmp_path / "tiny.tflite", 16, 16)
    with pytest.raises(NoDeviceError, match="no Android device found"):
        run_android(model, device="pixel", benchmark_binary=_host_elf(), progress=None)


def test_run_android_without_adb(tmp_path):
    model = tiny_tflite(tmp_path / "tiny.tflite", 16, 16)
    with pytest.raises(AdbNotInstalledError, match="apt-get install adb"):
        run_android(
            model, device="pixel", benchmark_binary=_host_elf(), adb=str(tmp_path / "adb"), progress=None
        )


def test_run_android_checks_inputs_before_adb(tmp_path):
    model = tiny_tflite(tmp_path / "tiny.tflite", 16, 16)
    with pytest.raises(BenchmarkSetupError, match="unknown delegate"):
        run_android(
            model, delegate="dsp", benchmark_binary=_host_elf(), adb=str(tmp_path / "adb"), progress=None
        )
    with pytest.raises(BenchmarkSetupError, match="runs must be"):
        run_android(model, runs=0, benchmark_binary=_host_elf(), adb=str(tmp_path / "adb"), progress=None)


# --- result assembly from real outputs ---------------------------------------------------------------------
def _fixture(prefix: str) -> str:
    if not FIXTURES.is_dir():
        pytest.skip(f"benchmark_model fixtures not found at {FIXTURES}")
    return next(FIXTURES.glob(f"{prefix}-*.txt")).read_text(encoding="utf-8")


PIXEL = {
    "ro.product.model": "Pixel 6",
    "ro.soc.model": "Tensor",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a",
}
EMULATOR = {"ro.product.model": "sdk_gphone64_x86_64", "ro.kernel.qemu": "1", "ro.product.cpu.abi": "x86_64"}


def _result(prefix: str, props: dict[str, str], serial: str = "1A281FDF6003KE", delegate: str = "xnnpack"):
    text = _fixture(prefix)
    return build_android_result(
        parse_benchmark_output(text),
        device=device_info_from_props(serial, props),
        model={"name": "m.tflite", "sha256": "0" * 64, "input_size": [256, 256]},
        settings={"threads": 4, "delegate": delegate, "runs": 10, "warmup": 2},
        runtime={"tool": "benchmark_model"},
        raw_output=text,
    )


def test_result_from_logcat_run():
    r = _result("14", PIXEL)
    assert r["kind"] == "android" and r["status"] == "ok" and r["comparable"] is True
    assert r["label"] == "Pixel 6 (Tensor, Android 14), benchmark_model, xnnpack"
    inf = r["stages"]["inference"]
    assert inf["n"] == 10 and inf["p50"] == pytest.approx(245.871) and inf["mean"] == pytest.approx(244.240)
    assert inf["p5"] == pytest.approx(216.081) and inf["p95"] == pytest.approx(264.534)
    assert inf["p90"] is None and inf["p99"] is None
    assert r["init_ms"] == 110.85 and r["first_inference_ms"] == pytest.approx(268.586)
    assert r["peak_memory_mb"] == 89.4453 and r["memory"]["kind"] == "delta"
    assert r["warmup"]["n"] == 2
    d = r["delegation"]
    assert (d["delegated_nodes"], d["total_nodes"], d["partitions"], d["full"]) == (642, 685, 19, False)
    assert r["runtime"]["tool_format"] == "classic"


def test_result_from_failed_run_has_reasons():
    r = _result("06", PIXEL, delegate="nnapi")
    assert r["status"] == "failed" and r["stages"] == {}
    assert "NNAPI delegate could not be applied" in r["errors"]
    assert any("ANEURALNETWORKS_OP_FAILED" in e for e in r["errors"])


def test_emulator_result_is_labelled_not_comparable():
    r = _result("12", EMULATOR, serial="emulator-5554")
    assert r["comparable"] is False
    assert r["label"].startswith("EMULATOR sdk_gphone64_x86_64")
    assert "functional only, not comparable" in r["label"]
    assert any("emulator" in w for w in r["warnings"])
    assert r["device"]["emulator_reasons"] == ["ro.kernel.qemu=1", "x86 ABI (x86_64)", "serial emulator-5554"]


def test_op_profile_in_result():
    r = _result("04", PIXEL, delegate="nnapi")
    assert r["status"] == "failed"  # the trimmed paste has no timings
    prof = r["op_profile"]["regular"]
    assert prof["nodes"] == 11
    assert prof["top"][0]["avg_ms"] == 79.010 and prof["top"][0]["node_type"] == "TfLiteNnapiDelegate"
    assert [t["node_type"] for t in prof["by_type"]] == [
        "TfLiteNnapiDelegate",
        "STRIDED_SLICE",
        "RESIZE_NEAREST_NEIGHBOR",
    ]
    assert prof["timings_ms"]["avg"] == pytest.approx(158.715)


def test_file_sha256(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- the streaming runner used for `adb shell benchmark_model` -------------------------------------------
def test_streaming_runner_reports_progress_and_output(tmp_path):
    from maskconver.benchmarks.android import _run_streaming

    log = tmp_path / "out.txt"
    log.write_text(_fixture("12"))
    seen: list[str] = []
    code, output = _run_streaming(["sh", "-c", f"cat {log}; echo oops >&2; exit 3"], 60, seen.append)
    assert code == 3
    assert output.startswith("INFO: STARTING!") and output.rstrip().endswith("oops")  # stderr merged in order
    assert seen[0] == "Initialized session in 87.639ms."
    assert [s for s in seen if s.startswith("Running benchmark")] == [
        "Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.",
        "Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.",
    ]
    assert parse_benchmark_output(output).inference.median == 105718


def test_streaming_runner_stops_at_the_time_limit():
    from maskconver.benchmarks.android import _run_streaming

    code, output = _run_streaming(["sh", "-c", "echo started; exec sleep 30"], 0.5, lambda _m: None)
    assert code is None
    assert output.startswith("started") and "stopped after 0.5 s" in output


def test_binary_abi_must_match_the_device():
    from maskconver.benchmarks.android import check_binary_abi

    phone = ["arm64-v8a", "armeabi-v7a", "armeabi"]
    check_binary_abi(Path("bm"), "aarch64", phone)
    check_binary_abi(Path("bm"), "arm", phone)  # 32-bit ARM runs on a 64-bit phone
    check_binary_abi(Path("bm"), "x86_64", ["x86_64", "arm64-v8a"])  # an emulator with ARM translation
    with pytest.raises(
        BenchmarkSetupError, match=r"x86_64 binary but device P6 runs arm64-v8a.*android_aarch64"
    ):
        check_binary_abi(Path("bm"), "x86_64", phone, "P6")
    with pytest.raises(BenchmarkSetupError, match="aarch64 binary"):
        check_binary_abi(Path("bm"), "aarch64", ["x86_64", "x86"])
