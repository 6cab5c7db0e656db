"""``maskconver-bench compare CKPT --config NAME``: every export of one checkpoint, timed in one process.

For each input size the checkpoint is converted (once; cached under ``OUT/models``) to

=================  ==========================================================================
``tflite_fp32``    float32 TFLite, original graph (7x7 depthwise convs as they are)
``tflite_int8``    full-integer int8 TFLite, original graph
``tflite_int8_lo`` full-integer int8 TFLite with the 7x7 depthwise convs lowered to <=25-tap bands
``onnx_fp32``      float32 ONNX (original graph), ONNX Runtime CPU
``onnx_int8``      static int8 ONNX, QDQ with uint8 activations and per-channel int8 weights
=================  ==========================================================================

(``tflite_fp32_lo``, float32 with the lowering, can be added with ``--variants``.) All of them are loaded as
:class:`~maskconver.runtime.segmenter.Segmenter` objects in the same process and timed in alternating order:
after a warm-up, each round runs every variant for ``per_round`` frames, and the order is reversed every
other round, so slow drift of a shared machine hits every variant alike
(``shared/reference/int8-cpu-performance.md``, "Method"). Each frame is a real image through the whole
pipeline, so both the inference and the whole frame (preprocess + inference + decode) are reported as median
and p90, with p10 and the range of per-round medians as a stability check.

Throughput: GMAC/s = the dense graph's multiply-adds / median inference (1.532 G at 256x256 and 9.577 G at
640x640 for MobileNet-MH; other configs from :func:`maskconver.models.summary.model_summary`), and the share
of the CPU's int8 peak, estimated as 64 int8 MACs/cycle/core (AVX-512 VNNI) x cores used x clock. The clock
is read from ``/proc/cpuinfo`` (``cpu MHz``) unless ``clock_ghz`` is given; the result says which.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from maskconver.benchmarks.host import (
    cpu_info,
    file_sha256,
    load_benchmark_images,
    runtime_versions,
    time_frame,
)
from maskconver.runtime.atomic import write_bytes_atomic

__all__ = [
    "DEFAULT_VARIANTS",
    "INT8_MACS_PER_CYCLE_PER_CORE",
    "KNOWN_MACS",
    "VARIANTS",
    "CompareError",
    "Variant",
    "alternating_orders",
    "compare",
    "compare_to_markdown",
    "convert_variants",
    "int8_peak_gmacs",
    "round_robin_times",
    "summarize_variant",
]

INT8_MACS_PER_CYCLE_PER_CORE = 64  # AVX-512 VNNI: vpdpbusd, 16 lanes x 4 int8 MACs per cycle per core
# Dense-graph multiply-adds (backbone + ASPP + 3 heads), maskconver.models.summary.model_summary.
KNOWN_MACS: dict[tuple[str, int, int], int] = {
    ("mobilenet_mh_256", 256, 256): 1_532_444_672,
    ("mobilenet_mh_256", 640, 640): 9_577_177_088,
    ("mobilenet_mh_640", 256, 256): 1_532_444_672,
    ("mobilenet_mh_640", 640, 640): 9_577_177_088,
}


class CompareError(ValueError):
    """The comparison cannot run; the message names the problem and the fix."""


@dataclass(frozen=True)
class Variant:
    """One export: which conversion produces it (``quantization``, ``lower_depthwise``) and which file."""

    key: str
    label: str
    quantization: str
    lower_depthwise: bool
    fmt: str  # "tflite" | "onnx"

    @property
    def conversion_key(self) -> str:
        """The conversion folder: one convert() call yields the TFLite and (with onnx=True) the ONNX file."""
        return f"{self.quantization}_{'lowered' if self.lower_depthwise else 'original'}"


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("tflite_fp32", "TFLite fp32", "fp32", False, "tflite"),
        Variant("tflite_fp32_lo", "TFLite fp32, 7x7 dw lowered", "fp32", True, "tflite"),
        Variant("tflite_int8", "TFLite int8, 7x7 dw as is", "int8", False, "tflite"),
        Variant("tflite_int8_lo", "TFLite int8, 7x7 dw lowered", "int8", True, "tflite"),
        Variant("onnx_fp32", "ONNX Runtime fp32", "fp32", False, "onnx"),
        Variant("onnx_int8", "ONNX Runtime int8 (QDQ u8s8)", "int8", False, "onnx"),
    )
}
DEFAULT_VARIANTS = ("tflite_fp32", "tflite_int8", "tflite_int8_lo", "onnx_fp32", "onnx_int8")


def _say(message: str) -> None:
    print(f"[maskconver-bench compare] {message}", file=sys.stderr, flush=True)


# --- pure helpers --------------------------------------------------------------------------------------------
def alternating_orders(n_variants: int, rounds: int) -> list[list[int]]:
    """Variant order per round: ``0..n-1`` in even rounds, reversed in odd rounds -> ``rounds`` lists of ``n``."""
    if n_variants < 1 or rounds < 1:
        raise CompareError(f"need at least one variant and one round, got {n_variants} and {rounds}")
    forward = list(range(n_variants))
    return [forward if r % 2 == 0 else forward[::-1] for r in range(rounds)]


def int8_peak_gmacs(cores: int, clock_ghz: float) -> float:
    """Estimated int8 peak in GMAC/s: 64 MACs/cycle/core x ``cores`` x ``clock_ghz``."""
    return INT8_MACS_PER_CYCLE_PER_CORE * cores * clock_ghz


def summarize_variant(
    inference_ms: np.ndarray, frame_ms: np.ndarray, decode_ms: np.ndarray, rounds: int
) -> dict[str, Any]:
    """Statistics of one variant's samples (each ``[rounds * per_round]`` ms, in round order).

    Returns median/p10/p90/mean of inference, frame and decode, and the min/max of per-round medians.
    """
    out: dict[str, Any] = {"n": int(inference_ms.size)}
    for name, x in (("inference", inference_ms), ("frame", frame_ms), ("decode", decode_ms)):
        x = np.asarray(x, np.float64)
        p10, p50, p90 = np.percentile(x, [10, 50, 90])
        per_round = np.median(x.reshape(rounds, -1), axis=1)
        out[name] = {
            "median": float(p50),
            "p10": float(p10),
            "p90": float(p90),
            "mean": float(x.mean()),
            "min": float(x.min()),
            "max": float(x.max()),
            "round_median_min": float(per_round.min()),
            "round_median_max": float(per_round.max()),
        }
    return out


# --- conversion (cached) -------------------------------------------------------------------------------------
def _conversion_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for suffix in ("tflite", "onnx"):
        hits = sorted(folder.glob(f"maskconver_*.{suffix}"))
        if len(hits) == 1:
            found[suffix] = hits[0]
    return found


def _plan(
    checkpoint: str | os.PathLike[str],
    config: str,
    input_size: tuple[int, int],
    variants: Sequence[Variant],
    cache_dir: str | os.PathLike[str],
    num_calibration: int,
) -> list[tuple[str, Path, dict[str, Any]]]:
    """The conversions ``variants`` need: ``[(conversion key, folder, cache record)]``."""
    from maskconver.models.checkpoint import checkpoint_hash

    ckpt_sha = checkpoint_hash(checkpoint)
    h, w = input_size
    base = Path(cache_dir) / f"{config}_{h}x{w}_{ckpt_sha[:12]}"
    want_onnx: dict[str, bool] = {}
    for v in variants:
        want_onnx[v.conversion_key] = want_onnx.get(v.conversion_key, False) or v.fmt == "onnx"
    plan = []
    for conv_key, onnx in want_onnx.items():
        quantization, lowering = conv_key.split("_")
        record = {
            "checkpoint_sha256": ckpt_sha,
            "config": config,
            "input_size": [h, w],
            "quantization": quantization,
            "lower_depthwise": lowering == "lowered",
            "onnx": onnx,
            "num_calibration": num_calibration if quantization == "int8" else None,
        }
        plan.append((conv_key, base / conv_key, record))
    return plan


def _cached(folder: Path, record: dict[str, Any]) -> dict[str, Path] | None:
    """The folder's model files when its ``cache.json`` matches ``record`` and the files exist, else None."""
    try:
        cached = json.loads((folder / "cache.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    files = _conversion_files(folder)
    if cached != record or "tflite" not in files or (record["onnx"] and "onnx" not in files):
        return None
    return files


def convert_variants(
    checkpoint: str | os.PathLike[str],
    config: str,
    input_size: tuple[int, int],
    variants: Sequence[Variant],
    cache_dir: str | os.PathLike[str],
    *,
    num_calibration: int = 32,
    isolate: bool = True,
    progress: Callable[[str], None] | None = _say,
) -> dict[str, Path]:
    """Model files for ``variants`` at ``input_size``: ``{variant key: path}``, converted only when missing.

    Each conversion folder (``cache_dir/<config>_<H>x<W>_<ckpt sha[:12]>/<quantization>_<original|lowered>``)
    holds a ``cache.json`` with the checkpoint hash and options; a folder whose record differs is rebuilt.
    With ``isolate`` (default) the conversions run in a child process, so TensorFlow's thread pools never
    live in the process that is timed afterwards.
    """
    say = progress or (lambda _m: None)
    plan = _plan(checkpoint, config, input_size, variants, cache_dir, num_calibration)
    h, w = input_size
    missing = [(k, f, r) for k, f, r in plan if _cached(f, r) is None]
    for k, f, r in plan:
        if (k, f, r) not in missing:
            say(f"{h}x{w} {k}: cached in {f}")
    if missing and isolate:
        _convert_in_child(checkpoint, config, input_size, variants, cache_dir, num_calibration, progress)
    elif missing:
        from maskconver.converter.convert import ConvertOptions, convert

        for conv_key, folder, record in missing:
            say(f"{h}x{w} {conv_key}: converting {checkpoint} ({config}) -> {folder}")
            t0 = time.perf_counter()
            opts = ConvertOptions(
                quantization=record["quantization"],
                onnx=record["onnx"],
                lower_depthwise=record["lower_depthwise"],
                input_size=(h, w),
                num_calibration=num_calibration,
                allow_cpu_ops=True,  # a speed comparison: keep the model even if a phone delegate would not
                progress=progress is not None,
            )
            (folder / "cache.json").unlink(missing_ok=True)  # a half-replaced folder is never "cached"
            try:
                convert(str(checkpoint), config, folder, opts)
            except Exception as e:
                raise CompareError(f"conversion {conv_key} at {h}x{w} failed: {type(e).__name__}: {e}") from e
            if _conversion_files(folder).get("tflite") is None:
                raise CompareError(f"conversion {conv_key} at {h}x{w} wrote no model file into {folder}")
            _atomic_write(folder / "cache.json", json.dumps(record, indent=1).encode())
            say(f"{h}x{w} {conv_key}: converted in {time.perf_counter() - t0:.0f} s")
    paths: dict[str, Path] = {}
    for conv_key, folder, record in plan:
        files = _cached(folder, record)
        if files is None:
            raise CompareError(f"conversion {conv_key} at {h}x{w} left no usable model in {folder}")
        for v in variants:
            if v.conversion_key == conv_key:
                paths[v.key] = files[v.fmt]
    return paths


_CHILD = (
    "import json, sys\n"
    "from maskconver.benchmarks.compare import VARIANTS, CompareError, convert_variants\n"
    "a = json.loads(sys.argv[1])\n"
    "try:\n"
    "    convert_variants(a['checkpoint'], a['config'], tuple(a['size']), [VARIANTS[k] for k in a['variants']],\n"
    "                     a['cache'], num_calibration=a['num_calibration'], isolate=False,\n"
    "                     **({} if a['progress'] else {'progress': None}))\n"
    "except CompareError as e:\n"
    "    print('CONVERT-ERROR: ' + ' '.join(str(e).split()))\n"
    "    sys.exit(1)\n"
)


def _convert_in_child(checkpoint, config, input_size, variants, cache_dir, num_calibration, progress) -> None:
    """Run :func:`convert_variants` (``isolate=False``) in a child Python; its stderr shows progress."""
    import subprocess

    arg = json.dumps(
        {
            "checkpoint": str(checkpoint),
            "config": config,
            "size": list(input_size),
            "variants": [v.key for v in variants],
            "cache": str(cache_dir),
            "num_calibration": num_calibration,
            "progress": progress is not None,
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, arg],
        stdout=subprocess.PIPE,
        stderr=None if progress is not None else subprocess.DEVNULL,
        text=True,
        check=False,
    )
    errors = [
        ln[len("CONVERT-ERROR: ") :] for ln in proc.stdout.splitlines() if ln.startswith("CONVERT-ERROR: ")
    ]
    if errors:
        raise CompareError(errors[-1])
    if proc.returncode != 0:
        raise CompareError(
            f"the conversion process exited with code {proc.returncode}; run with progress on to see its output"
        )


def _atomic_write(path: Path, data: bytes) -> Path:
    return write_bytes_atomic(path, data, make_parents=True, fsync=True)


def dense_macs(config: str, input_size: tuple[int, int]) -> tuple[int, str]:
    """(multiply-adds of the dense graph, where the number comes from) for ``config`` at ``input_size``.

    Configs other than MobileNet-MH are counted by building the Keras model (imports TensorFlow)."""
    key = (config, int(input_size[0]), int(input_size[1]))
    if key in KNOWN_MACS:
        return KNOWN_MACS[key], "MobileNet-MH dense graph (maskconver-summary)"
    from maskconver.models.config import get_config
    from maskconver.models.summary import model_summary

    return int(model_summary(get_config(config), tuple(input_size))["total_macs"]), "model_summary"


# --- timing --------------------------------------------------------------------------------------------------
def round_robin_times(
    segmenters: Sequence[Any],
    frames: Sequence[np.ndarray],
    rounds: int,
    per_round: int,
    warmup: int,
    progress: Callable[[str], None] | None = _say,
    label: str = "",
) -> list[dict[str, np.ndarray]]:
    """Time ``segmenters`` on ``frames`` in alternating order.

    Returns, per segmenter, ``{"inference", "decode", "preprocess", "frame"}`` arrays of shape
    ``[rounds * per_round]`` (ms), in round order, and ``"decode.<stage>"`` for the decode's stages.
    Warm-up frames run first (forward order) and are dropped.
    """
    say = progress or (lambda _m: None)
    n = len(segmenters)
    for _ in range(warmup):
        for s in segmenters:
            time_frame(s, frames[0])
    out = [{k: [] for k in ("preprocess", "inference", "decode", "frame")} for _ in range(n)]
    k = 0
    for r, order in enumerate(alternating_orders(n, rounds)):
        for i in order:
            for j in range(per_round):
                t = time_frame(segmenters[i], frames[(k + j) % len(frames)])
                out[i]["preprocess"].append(t["preprocess"])
                out[i]["inference"].append(t["inference"])
                out[i]["decode"].append(t["decode"])
                out[i]["frame"].append(t["end_to_end"])
                for key, ms in t.items():  # the decode's stages ("decode.peaks", ...)
                    if key.startswith("decode."):
                        out[i].setdefault(key, []).append(ms)
        k += per_round
        say(f"{label}round {r + 1}/{rounds} done")
    return [{key: np.asarray(v, np.float64) for key, v in d.items()} for d in out]


def compare(
    checkpoint: str | os.PathLike[str],
    config: str,
    sizes: Sequence[int] = (256, 640),
    rounds: int = 8,
    per_round: int = 5,
    warmup: int = 5,
    threads: int | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    out_dir: str | os.PathLike[str] = "maskconver-compare",
    *,
    num_calibration: int = 32,
    clock_ghz: float | None = None,
    images: str | os.PathLike[str] | Sequence[Any] | None = None,
    isolate: bool = True,
    mask_resolution: str = "full",
    progress: Callable[[str], None] | None = _say,
) -> dict[str, Any]:
    """Convert ``checkpoint`` to every variant at every size (cached) and time them; return the result dict.

    ``result["sizes"][str(size)]["rows"]`` holds one row per variant (median/p90 of inference and frame,
    GMAC/s, % of int8 peak) and ``ratios`` the int8-lowered/fp32 and decode/inference ratios. ``images``: a
    folder or a list of RGB arrays (default: synthetic 480x640 scenes); ``isolate``: convert in a child process;
    ``mask_resolution``: the decoding timed in the frame (``"full"`` or ``"grid"``, see ``Segmenter``).
    """
    say = progress or (lambda _m: None)
    if not Path(checkpoint).exists():
        raise CompareError(f"checkpoint {checkpoint} does not exist; pass a checkpoint file or folder")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise CompareError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise CompareError(
            f"rounds and per_round must be >= 1 and warmup >= 0 (got {rounds}, {per_round}, {warmup})"
        )
    for s in sizes:
        if s < 32 or s % 16:
            raise CompareError(f"input size {s} must be a multiple of 16 and at least 32")
    from maskconver.runtime.segmenter import Segmenter, default_threads

    chosen = [VARIANTS[v] for v in variants]
    out_dir = Path(out_dir)
    dev = cpu_info()
    n_threads = threads or default_threads()
    cores = min(n_threads, dev["logical_cores"] or n_threads)
    clock = clock_ghz if clock_ghz is not None else dev["clock_ghz"]
    clock_source = "given (--clock-ghz)" if clock_ghz is not None else dev["clock_source"]
    peak = int8_peak_gmacs(cores, clock) if clock else None
    frames, source = load_benchmark_images(images)
    result: dict[str, Any] = {
        "schema": "maskconver-bench-compare/1",
        "kind": "host",
        "label": f"HOST {dev['cpu']}: all exports in one process, alternating order (host numbers, not a phone's)",
        "checkpoint": str(checkpoint),
        "config": config,
        "device": dev,
        "runtime": runtime_versions(),
        "settings": {
            "rounds": rounds,
            "per_round": per_round,
            "warmup": warmup,
            "threads": n_threads,
            "mask_resolution": mask_resolution,
            "variants": list(variants),
            "images": source,
            "num_calibration": num_calibration,
            "order": "round-robin, direction reversed every round",
        },
        "peak": {
            "int8_macs_per_cycle_per_core": INT8_MACS_PER_CYCLE_PER_CORE,
            "cores": cores,
            "clock_ghz": clock,
            "clock_source": clock_source,
            "int8_peak_gmacs": peak,
        },
        "sizes": {},
    }
    t_start = time.perf_counter()
    for size in sizes:
        hw = (int(size), int(size))
        paths = convert_variants(
            checkpoint,
            config,
            hw,
            chosen,
            out_dir / "models",
            num_calibration=num_calibration,
            isolate=isolate,
            progress=progress,
        )
        say(f"{size}x{size}: loading {len(chosen)} models")
        segs = [
            Segmenter(paths[v.key], num_threads=n_threads, mask_resolution=mask_resolution) for v in chosen
        ]
        say(f"{size}x{size}: warm-up {warmup}, then {rounds} rounds x {per_round} frames per model")
        load = os.getloadavg()
        times = round_robin_times(segs, frames, rounds, per_round, warmup, progress, f"{size}x{size} ")
        load_after = os.getloadavg()
        engines = [(s.backend, s.delegate) for s in segs]
        for s in segs:
            s.close()
        macs, macs_source = dense_macs(config, hw)  # after timing: other configs import TensorFlow
        rows = []
        for v, (backend, delegate), t in zip(chosen, engines, times, strict=True):
            st = summarize_variant(t["inference"], t["frame"], t["decode"], rounds)
            med = st["inference"]["median"]
            gmacs = macs / med / 1e6
            rows.append(
                {
                    "variant": v.key,
                    "label": v.label,
                    "file": str(paths[v.key]),
                    "sha256": file_sha256(paths[v.key]),
                    "size_bytes": paths[v.key].stat().st_size,
                    "backend": backend,
                    "delegate": delegate,
                    **st,
                    "gmac_per_s": gmacs,
                    "percent_int8_peak": 100.0 * gmacs / peak if peak else None,
                    "decode_over_inference": st["decode"]["median"] / med,
                    "decode_stages_median": {
                        k[len("decode.") :]: float(np.median(x))
                        for k, x in t.items()
                        if k.startswith("decode.")
                    },
                }
            )
        by = {r["variant"]: r for r in rows}
        ratios: dict[str, float | None] = {}
        if "tflite_int8_lo" in by and "tflite_fp32" in by:
            ratios["int8_lowered_over_fp32_inference"] = (
                by["tflite_int8_lo"]["inference"]["median"] / by["tflite_fp32"]["inference"]["median"]
            )
            ratios["int8_lowered_over_fp32_frame"] = (
                by["tflite_int8_lo"]["frame"]["median"] / by["tflite_fp32"]["frame"]["median"]
            )
        if "tflite_int8_lo" in by and "tflite_int8" in by:
            ratios["int8_lowered_over_int8_inference"] = (
                by["tflite_int8_lo"]["inference"]["median"] / by["tflite_int8"]["inference"]["median"]
            )
        if "onnx_int8" in by and "onnx_fp32" in by:
            ratios["onnx_int8_over_onnx_fp32_inference"] = (
                by["onnx_int8"]["inference"]["median"] / by["onnx_fp32"]["inference"]["median"]
            )
        result["sizes"][str(size)] = {
            "targets": size_targets(by, ratios),
            "input_size": [size, size],
            "macs": macs,
            "macs_source": macs_source,
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in load_after],
            "rows": rows,
            "ratios": ratios,
        }
        best = min(rows, key=lambda r: r["inference"]["median"])
        say(f"{size}x{size}: fastest inference {best['label']} {best['inference']['median']:.2f} ms")
    result["elapsed_s"] = time.perf_counter() - t_start
    return result


# --- reports -------------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def compare_to_markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: setup, one table per input size, ratios, method notes."""
    dev, peak, st = result["device"], result["peak"], result["settings"]
    lines = [f"# maskconver-bench compare: {result['config']}", ""]
    lines += [
        f"> {result['label']}. These are host CPU numbers; the 17/25 ms targets are for a phone.",
        "",
        f"- Checkpoint: `{result['checkpoint']}`",
        f"- CPU: {dev['cpu']}, {dev['logical_cores']} logical cores, {st['threads']} threads"
        + (" (under a hypervisor)" if dev.get("hypervisor") else ""),
        f"- Runtimes: {', '.join(f'{k} {v}' for k, v in result['runtime'].items())}",
        f"- Method: {st['warmup']} warm-up frames per model, then {st['rounds']} rounds x {st['per_round']} frames "
        f"per model, {st['order']}; frames: {st['images']}; decoding: mask_resolution="
        f"{st.get('mask_resolution', 'full')!r}",
        f"- int8 peak estimate: {peak['int8_macs_per_cycle_per_core']} MAC/cycle/core x {peak['cores']} cores x "
        f"{_f(peak['clock_ghz'], 3)} GHz ({peak['clock_source']}) = {_f(peak['int8_peak_gmacs'], 0)} GMAC/s",
        "",
    ]
    for size, sec in result["sizes"].items():
        lines += [
            f"## {size}x{size} ({sec['macs'] / 1e9:.3f} G MACs; load average {sec['load_average_before'][0]} -> "
            f"{sec['load_average_after'][0]})",
            "",
            "| model | infer median ms | infer p90 | frame median ms | frame p90 | decode median | "
            "round medians (infer) | GMAC/s | % int8 peak | decode/infer |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sec["rows"]:
            inf, fr = r["inference"], r["frame"]
            lines.append(
                f"| {r['label']} | {_f(inf['median'])} | {_f(inf['p90'])} | {_f(fr['median'])} | {_f(fr['p90'])} | "
                f"{_f(r['decode']['median'])} | {_f(inf['round_median_min'])}-{_f(inf['round_median_max'])} | "
                f"{_f(r['gmac_per_s'], 0)} | {_f(r['percent_int8_peak'], 1)} | {_f(r['decode_over_inference'])} |"
            )
        if sec["ratios"]:
            lines += [""] + [f"- {k.replace('_', ' ')}: **{_f(v, 3)}**" for k, v in sec["ratios"].items()]
        if sec.get("targets"):
            lines += ["", *_target_lines(sec["targets"])]
        staged = [r for r in sec["rows"] if r.get("decode_stages_median")]
        if staged:
            lines += ["", "Decode stages (median ms; `other` = input checks and glue):", ""]
            lines += [
                f"- {r['label']}: "
                + ", ".join(f"{k} {_f(v, 3)}" for k, v in r["decode_stages_median"].items())
                for r in staged
            ]
        lines.append("")
    lines += [
        "Frame = preprocess (letterbox) + inference + decode (NumPy) of one real image, i.e. the whole "
        "`Segmenter.segment()` call. GMAC/s uses the inference median. The machine is shared: compare rows "
        "inside one table, not across runs. LiteRT and ONNX Runtime share the process (as asked): their "
        "thread pools can slow each other, so the ONNX rows may be slower than in an ONNX-only process.",
    ]
    return "\n".join(lines) + "\n"


# the CPU targets of the int8 work (issue #11): lowered int8 / fp32 inference, share of the int8 peak
# (within 3x of it), decode / lowered int8 inference
TARGET_LOWERED_OVER_FP32 = 0.4
TARGET_PERCENT_OF_PEAK = 100.0 / 3.0
TARGET_DECODE_OVER_INFERENCE = 0.15
NOISY_ROUND_SPREAD = 0.15  # round medians of the lowered model spread wider than this: a busy machine


def size_targets(rows: dict[str, dict[str, Any]], ratios: dict[str, float | None]) -> list[dict[str, Any]]:
    """The targets of one size from its rows (by variant key) and ratios: ``[{name, value, limit, met}]``, plus
    a ``noisy`` entry (informational, no limit) when the lowered model's round medians spread widely. Targets
    whose variants were not run are left out."""
    lo = rows.get("tflite_int8_lo")
    out: list[dict[str, Any]] = []
    value = ratios.get("int8_lowered_over_fp32_inference")
    if value is not None:
        limit = f"<= {TARGET_LOWERED_OVER_FP32}"
        out.append(_target("lowered int8 / fp32 inference", value, limit, value <= TARGET_LOWERED_OVER_FP32))
    if lo is None:
        return out
    pct = lo.get("percent_int8_peak")
    if pct is not None:
        name = "lowered int8, % of the int8 peak"
        out.append(_target(name, pct, ">= 33.3 (within 3x)", pct >= TARGET_PERCENT_OF_PEAK))
    ratio = lo["decode_over_inference"]
    limit = f"<= {TARGET_DECODE_OVER_INFERENCE}"
    out.append(
        _target("decode / lowered int8 inference", ratio, limit, ratio <= TARGET_DECODE_OVER_INFERENCE)
    )
    inf = lo["inference"]
    spread = inf["round_median_max"] / inf["round_median_min"] - 1.0 if inf["round_median_min"] > 0 else 0.0
    if spread > NOISY_ROUND_SPREAD:
        out.append(_target("noisy run: lowered int8 round medians spread", spread, None, None))
    return out


def _target(name: str, value: float, limit: str | None, met: bool | None) -> dict[str, Any]:
    """One entry of :func:`size_targets` (``limit`` and ``met`` None: informational)."""
    return {"name": name, "value": value, "limit": limit, "met": met}


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in targets:
        if t["met"] is None:
            lines.append(
                f"- {t['name']} {100 * t['value']:.0f}%: ratios against its inference are unreliable"
            )
        else:
            verdict = "**met**" if t["met"] else "**not met**"
            digits = 1 if "%" in t["name"] else 3
            lines.append(f"- target {t['name']} {t['limit']}: {_f(t['value'], digits)}, {verdict}")
    return lines


def write_compare_reports(
    result: dict[str, Any],
    json_path: str | os.PathLike[str] | None,
    markdown_path: str | os.PathLike[str] | None,
) -> dict[str, str]:
    """Write the comparison as JSON and/or Markdown (atomically); returns the paths written."""
    written = {}
    if json_path is not None:
        data = json.dumps(result, indent=2, default=str, allow_nan=False)
        written["json"] = str(_atomic_write(Path(json_path), (data + "\n").encode()))
    if markdown_path is not None:
        written["markdown"] = str(_atomic_write(Path(markdown_path), compare_to_markdown(result).encode()))
    return written
