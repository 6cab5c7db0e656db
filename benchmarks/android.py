"""Run TFLite/LiteRT ``benchmark_model`` on an Android device over adb and return a result dict.

``run_android(model_path, device="pixel", threads=4, delegate="gpu", runs=50, warmup=10)`` finds adb and the
device, records its properties (flagging emulators as functional only), pushes the ``.tflite`` and the
``benchmark_model`` binary to ``/data/local/tmp/maskconver``, runs::

    benchmark_model --graph=M --num_threads=T --num_runs=R --warmup_runs=W --min_secs=0 --warmup_min_secs=0
                    --enable_op_profiling=true --report_peak_memory_footprint=true <delegate flags>

and parses the output with :mod:`maskconver.benchmarks.benchmark_model_output`.

The binary is not shipped: pass ``benchmark_binary=`` (CLI ``--benchmark-binary``) or set
``MASKCONVER_BENCHMARK_MODEL``. Get the prebuilt nightly ``android_aarch64_benchmark_model`` linked from the
TensorFlow Lite / LiteRT performance docs ("Performance measurement", benchmark tools), or build it with
``bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model``.

Result dict (``schema`` ``maskconver-bench/1``, shared with the host benchmark; times in ms, memory in MB):

``kind``            ``"android"``
``label``           who measured what, e.g. ``"Pixel 6 (Tensor, Android 14), benchmark_model, gpu"``; an emulator
                    says ``"EMULATOR ... functional only, not comparable"``
``comparable``      False on an emulator (never compared with the phone targets)
``status``          ``"ok"`` or ``"failed"``; ``errors`` / ``warnings``: lists of strings
``model``           ``path``, ``name``, ``sha256``, ``size_bytes``, ``input_size`` ([H, W] or None)
``device``          serial, model, manufacturer, soc, board_platform, hardware, android_version, sdk, abi, ...,
                    is_emulator, emulator_reasons, comparable
``settings``        threads, delegate, runs, warmup, op_profiling, taskset, command (the argv run on the device)
``runtime``         tool, tool_format, binary_path, binary_sha256, binary_arch, adb_version
``init_ms``, ``first_inference_ms``, ``peak_memory_mb``
``memory``          kind ("peak"/"delta"/"litert"), init_mb, overall_mb, peak_rss_mb
``stages``          ``{"inference": STATS}`` with STATS = n, mean, std, min, max, p5, p50, p90, p95, p99
                    (benchmark_model reports p5/median/p95 only: p90/p99 are None)
``warmup``          STATS of the warm-up runs (or None)
``delegation``      see ``BenchmarkOutput.delegation_summary``
``op_profile``      ``{"regular": {"top": [...], "by_type": [...], "nodes": n}, "init": {...}}`` (ms)
``thermal``         ``{"before": n, "after": n}`` (Android thermal status 0-6, None when unknown)
``raw_output``      the tool's full output
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maskconver.benchmarks.adb import Adb, DeviceInfo
from maskconver.benchmarks.benchmark_model_output import (
    BenchmarkOutput,
    CountStats,
    Profile,
    parse_benchmark_output,
)

__all__ = [
    "BENCHMARK_BINARY_ENV",
    "DELEGATES",
    "BenchmarkSetupError",
    "benchmark_command",
    "build_android_result",
    "elf_machine",
    "model_input_size",
    "resolve_benchmark_binary",
    "run_android",
    "stats_from_count",
]

SCHEMA = "maskconver-bench/1"
BENCHMARK_BINARY_ENV = "MASKCONVER_BENCHMARK_MODEL"
REMOTE_DIR = "/data/local/tmp/maskconver"
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")
_OPTIONAL_FLAGS = ("--report_peak_memory_footprint=true",)
GET_BINARY_HINT = (
    "download the prebuilt nightly `android_aarch64_benchmark_model` (linked from the TensorFlow Lite / LiteRT "
    "'Performance measurement' docs, benchmark tools section) or build it with `bazel build -c opt "
    "--config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`; then pass "
    f"--benchmark-binary PATH or set {BENCHMARK_BINARY_ENV}=PATH"
)


class BenchmarkSetupError(ValueError):
    """The inputs of an Android run are unusable (model, binary, settings); the message says how to fix it."""


# --- local checks ------------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
_ABI_FOR_ARCH = {"aarch64": "arm64-v8a", "arm": "armeabi-v7a", "x86_64": "x86_64", "x86": "x86"}


def elf_machine(path: str | os.PathLike[str]) -> str | None:
    """The CPU architecture of an ELF executable (``aarch64``, ``arm``, ``x86_64``, ``x86``), None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine}")


def resolve_benchmark_binary(benchmark_binary: str | os.PathLike[str] | None = None) -> Path:
    """The benchmark_model binary to push: the argument, else ``$MASKCONVER_BENCHMARK_MODEL``."""
    source = "--benchmark-binary"
    if benchmark_binary is None:
        env = os.environ.get(BENCHMARK_BINARY_ENV)
        if not env:
            raise BenchmarkSetupError(
                f"no benchmark_model binary given for the Android run: {GET_BINARY_HINT}"
            )
        benchmark_binary, source = env, f"${BENCHMARK_BINARY_ENV}"
    path = Path(benchmark_binary).expanduser()
    if not path.is_file():
        raise BenchmarkSetupError(
            f"benchmark_model binary {path} (from {source}) does not exist; {GET_BINARY_HINT}"
        )
    arch = elf_machine(path)
    if arch is None:
        hint = " (an .apk is not supported: use the command-line binary)" if path.suffix == ".apk" else ""
        raise BenchmarkSetupError(f"{path} (from {source}) is not an ELF executable{hint}; {GET_BINARY_HINT}")
    return path


def check_model_file(model_path: str | os.PathLike[str]) -> Path:
    path = Path(model_path)
    if not path.is_file():
        raise BenchmarkSetupError(
            f"model file {path} does not exist; pass the .tflite written by maskconver-convert"
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise BenchmarkSetupError(
            f"{path} is not a TFLite flatbuffer (no TFL3 identifier); benchmark_model on Android needs the "
            ".tflite model (convert with maskconver-convert)"
        )
    return path


def model_input_size(model_path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(H, W) of the model's first input (shape [1, H, W, C]), read with the LiteRT interpreter; None if unknown."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(model_path)).get_input_details()
        shape = [int(x) for x in details[0]["shape"]]
    except Exception:  # a model this host runtime cannot open still runs on the device
        return None
    if len(shape) == 4 and shape[1] > 0 and shape[2] > 0:
        return (shape[1], shape[2])
    return None


def check_binary_abi(binary: Path, arch: str | None, abis: Sequence[str], serial: str = "device") -> None:
    """Raise :class:`BenchmarkSetupError` when an ELF of ``arch`` cannot run on a device with ``abis``."""
    want = _ABI_FOR_ARCH.get(arch or "")
    if not want or not abis or want in abis:
        return
    raise BenchmarkSetupError(
        f"{binary} is an {arch} binary but device {serial} runs {', '.join(abis)}; use the benchmark_model "
        f"build for {abis[0]} (android_aarch64_benchmark_model for arm64-v8a phones)"
    )


# --- the device command ------------------------------------------------------------------------------------
def _delegate_flags(delegate: str) -> list[str]:
    if delegate == "cpu":
        return ["--use_xnnpack=false"]
    if delegate == "xnnpack":
        return ["--use_xnnpack=true"]
    if delegate == "gpu":
        return ["--use_gpu=true"]
    if delegate == "nnapi":
        return ["--use_nnapi=true"]
    raise BenchmarkSetupError(f"unknown delegate {delegate!r}: choose one of {', '.join(DELEGATES)}")


def benchmark_command(
    remote_binary: str,
    remote_model: str,
    *,
    threads: int = 4,
    delegate: str = "xnnpack",
    runs: int = 50,
    warmup: int = 10,
    op_profiling: bool = True,
    taskset: str | None = None,
    optional_flags: Sequence[str] = _OPTIONAL_FLAGS,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv run on the device. ``--min_secs=0`` / ``--warmup_min_secs=0`` make the run counts exact."""
    if threads < 1:
        raise BenchmarkSetupError(f"threads must be >= 1, got {threads}")
    if runs < 1:
        raise BenchmarkSetupError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise BenchmarkSetupError(f"warmup must be >= 0, got {warmup}")
    argv: list[str] = []
    if taskset:
        argv += ["taskset", taskset]
    argv += [
        remote_binary,
        f"--graph={remote_model}",
        f"--num_threads={threads}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        "--min_secs=0",
        "--warmup_min_secs=0",
        f"--enable_op_profiling={'true' if op_profiling else 'false'}",
        *optional_flags,
        *_delegate_flags(delegate),
        *extra_args,
    ]
    return argv


# --- building the result -----------------------------------------------------------------------------------
def stats_from_count(stats: CountStats | None) -> dict[str, float | int | None] | None:
    """A benchmark_model count line (us) as the report's stage statistics (ms)."""
    if stats is None:
        return None
    ms = stats.to_ms()
    return {
        "n": stats.count,
        "mean": ms["avg"],
        "std": ms["std"],
        "min": ms["min"],
        "max": ms["max"],
        "p5": ms["p5"],
        "p50": ms["median"],
        "p90": None,
        "p95": ms["p95"],
        "p99": None,
    }


def _profile_dict(profile: Profile, top_n: int = 15) -> dict[str, Any]:
    return {
        "top": [
            {
                "node_type": r.node_type,
                "name": r.name,
                "avg_ms": r.avg_ms,
                "first_ms": r.first_ms,
                "percent": r.percent,
            }
            for r in (profile.top or sorted(profile.run_order, key=lambda r: -r.avg_ms))[:top_n]
        ],
        "by_type": [
            {"node_type": r.node_type, "count": r.count, "avg_ms": r.avg_ms, "percent": r.percent}
            for r in profile.summary
        ],
        "run_order": [
            {"node_type": r.node_type, "name": r.name, "avg_ms": r.avg_ms, "percent": r.percent}
            for r in profile.run_order
        ],
        "nodes": profile.nodes_observed if profile.nodes_observed is not None else len(profile.run_order),
        "timings_ms": None if profile.timings is None else profile.timings.to_ms(),
    }


def build_android_result(
    parsed: BenchmarkOutput,
    *,
    device: DeviceInfo | dict[str, Any],
    model: dict[str, Any],
    settings: dict[str, Any],
    runtime: dict[str, Any],
    raw_output: str,
    thermal: dict[str, int | None] | None = None,
    extra_errors: Sequence[str] = (),
    extra_warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Assemble the result dict described in the module docstring from a parsed output and the run context."""
    dev = device.to_dict() if isinstance(device, DeviceInfo) else dict(device)
    comparable = bool(dev.get("comparable", not dev.get("is_emulator", False)))
    name = dev.get("model") or dev.get("serial") or "Android device"
    bits = [
        x
        for x in (dev.get("soc"), f"Android {dev['android_version']}" if dev.get("android_version") else None)
        if x
    ]
    label = f"{name} ({', '.join(bits)})" if bits else str(name)
    label += f", benchmark_model, {settings.get('delegate', '?')}"
    if not comparable:
        reasons = ", ".join(dev.get("emulator_reasons") or []) or "emulator"
        label = f"EMULATOR {label} [{reasons}]: functional only, not comparable"

    stages: dict[str, Any] = {}
    inference = stats_from_count(parsed.inference)
    if inference is None and parsed.inference_avg_us is not None:
        inference = {k: None for k in ("n", "std", "min", "max", "p5", "p50", "p90", "p95", "p99")}
        inference["mean"] = parsed.inference_avg_us / 1000.0
    if inference is not None:
        stages["inference"] = inference

    raw_errors = [
        e for e in parsed.errors if e not in parsed.failures and not e.startswith("Benchmarking failed")
    ]
    errors = list(extra_errors) + list(parsed.failures) + raw_errors
    warnings = list(extra_warnings) + list(parsed.warnings)
    if not comparable:
        warnings.append(
            "emulator: these numbers measure the host CPU through emulation, with no real GPU or NPU; "
            "they are functional only and are not compared with the phone targets"
        )
    status = "ok" if parsed.status == "ok" and "inference" in stages else "failed"
    if status == "failed" and not errors:
        errors.append("benchmark_model printed no inference timings")
    peak = parsed.peak_rss_mb if parsed.peak_rss_mb is not None else parsed.memory_overall_mb
    return {
        "schema": SCHEMA,
        "kind": "android",
        "label": label,
        "comparable": comparable,
        "status": status,
        "errors": errors,
        "warnings": warnings,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": dict(model),
        "device": dev,
        "settings": dict(settings),
        "runtime": {**runtime, "tool_format": parsed.fmt},
        "init_ms": parsed.init_ms,
        "first_inference_ms": parsed.first_inference_ms,
        "peak_memory_mb": peak,
        "memory": {
            "kind": parsed.memory_kind,
            "init_mb": parsed.memory_init_mb,
            "overall_mb": parsed.memory_overall_mb,
            "peak_rss_mb": parsed.peak_rss_mb,
        },
        "stages": stages,
        "warmup": stats_from_count(parsed.warmup),
        "delegation": parsed.delegation_summary(),
        "op_profile": {key: _profile_dict(p) for key, p in parsed.profiles.items()},
        "thermal": thermal or {"before": None, "after": None},
        "raw_output": raw_output,
    }


# --- the run -----------------------------------------------------------------------------------------------
def _stderr_progress(message: str) -> None:
    print(f"[maskconver-bench] {message}", file=sys.stderr, flush=True)


def _run_streaming(
    argv: list[str], timeout: float, progress: Callable[[str], None]
) -> tuple[int | None, str]:
    """Run argv, echoing benchmark progress lines; kill it after ``timeout`` s. Returns (exit code, output)."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            text = line.strip()
            if text.startswith(
                ("Running benchmark", "INFO: Running benchmark", "Initialized session", "INFO: Init")
            ):
                progress(text.removeprefix("INFO: "))
        code = proc.wait()
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    if timed_out:
        lines.append(f"\nmaskconver-bench: benchmark_model was stopped after {timeout:g} s\n")
        return None, "".join(lines)
    return code, "".join(lines)


def run_android(
    model_path: str | os.PathLike[str],
    device: str | None = None,
    threads: int = 4,
    delegate: str = "xnnpack",
    runs: int = 50,
    warmup: int = 10,
    benchmark_binary: str | os.PathLike[str] | None = None,
    *,
    adb: str | None = None,
    op_profiling: bool = True,
    taskset: str | None = None,
    extra_args: Sequence[str] = (),
    remote_dir: str = REMOTE_DIR,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = _stderr_progress,
) -> dict[str, Any]:
    """Benchmark ``model_path`` on an Android device with benchmark_model; return the result dict.

    ``device``: None (the only attached device), a serial, ``"emulator"``, or a model substring like ``"pixel"``.
    ``delegate``: ``cpu`` (XNNPACK off), ``xnnpack``, ``gpu`` or ``nnapi``. Setup problems raise
    :class:`BenchmarkSetupError` or an :class:`~maskconver.benchmarks.adb.AdbError`; a benchmark that runs but
    fails (delegate not applied, crash) returns a result with ``status == "failed"`` and the reasons in
    ``errors``.
    """
    say = progress or (lambda _m: None)
    if delegate not in DELEGATES:
        raise BenchmarkSetupError(f"unknown delegate {delegate!r}: choose one of {', '.join(DELEGATES)}")
    model = check_model_file(model_path)
    binary = resolve_benchmark_binary(benchmark_binary)
    arch = elf_machine(binary)
    remote_model = f"{remote_dir}/{model.name}"
    remote_binary = f"{remote_dir}/benchmark_model"
    # Validate the numbers before touching the device.
    benchmark_command(
        remote_binary, remote_model, threads=threads, delegate=delegate, runs=runs, warmup=warmup
    )

    runner = Adb(adb)
    adb_version = runner.version()
    dev = runner.select(device)
    info = dev.device_info()
    say(f"device {info.serial}: {info.model} ({info.soc}, Android {info.android_version}, {info.abi})")
    if info.is_emulator:
        say(
            f"emulator detected ({', '.join(info.emulator_reasons)}): results are functional only, not comparable"
        )
    check_binary_abi(binary, arch, info.abi_list or ([info.abi] if info.abi else []), info.serial)

    say(f"pushing {model.name} and {binary.name} to {remote_dir}")
    dev.shell(f"mkdir -p {shlex.quote(remote_dir)}", timeout=60)
    dev.push(model, remote_model)
    dev.push(binary, remote_binary)
    dev.shell(f"chmod 755 {shlex.quote(remote_binary)}", timeout=60)

    thermal_before = dev.thermal_status()
    warnings: list[str] = []
    limit = timeout if timeout is not None else 600.0 + 30.0 * (runs + warmup)
    argv = benchmark_command(
        remote_binary,
        remote_model,
        threads=threads,
        delegate=delegate,
        runs=runs,
        warmup=warmup,
        op_profiling=op_profiling,
        taskset=taskset,
        extra_args=extra_args,
    )
    say(f"running {' '.join(argv)}")
    shell_cmd = " ".join(shlex.quote(a) for a in argv) + " 2>&1"
    code, output = _run_streaming(dev._argv(["shell", shell_cmd]), limit, say)
    thermal_after = dev.thermal_status()

    parsed = parse_benchmark_output(output)
    extra_errors = []
    if code is None:
        extra_errors.append(f"benchmark_model did not finish within {limit:.0f} s")
    elif code != 0 and parsed.status == "ok":
        extra_errors.append(f"benchmark_model exited with code {code}")
        parsed.status = "failed"
    if info.is_emulator and delegate in ("gpu", "nnapi"):
        warnings.append(f"the {delegate} delegate on an emulator does not use a real accelerator")

    return build_android_result(
        parsed,
        device=info,
        model={
            "path": str(model),
            "name": model.name,
            "sha256": file_sha256(model),
            "size_bytes": model.stat().st_size,
            "input_size": list(model_input_size(model) or []) or None,
        },
        settings={
            "threads": threads,
            "delegate": delegate,
            "runs": runs,
            "warmup": warmup,
            "op_profiling": op_profiling,
            "taskset": taskset,
            "command": argv,
        },
        runtime={
            "tool": "benchmark_model",
            "binary_path": str(binary),
            "binary_sha256": file_sha256(binary),
            "binary_arch": arch,
            "adb_version": adb_version,
            "adb_path": runner.path,
        },
        raw_output=output,
        thermal={"before": thermal_before, "after": thermal_after},
        extra_errors=extra_errors,
        extra_warnings=warnings,
    )
