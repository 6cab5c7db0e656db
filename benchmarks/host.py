"""Benchmark a maskconver model on this computer, in process: ``run_host(model_path, ...) -> dict``.

The model runs through :class:`maskconver.runtime.segmenter.Segmenter` (LiteRT for ``.tflite``, ONNX Runtime
for ``.onnx``) on real images -- the synthetic panoptic scenes of :mod:`maskconver.models.synthetic` rendered at
a camera-like 480x640, or the images of a folder -- never on noise, so decoding sees a realistic number of
peaks. Each frame is timed per stage (``preprocess``: letterbox + input tensor, ``inference``: set input,
invoke, read outputs, ``decode``: NumPy decoding into the panoptic result, ``end_to_end``: the whole
``segment()`` call). Warm-up frames are run first and not counted; the first of them gives the first-inference
time.

The result is the shared ``maskconver-bench/1`` dict (see :mod:`maskconver.benchmarks.report`) with, beyond the
common keys: ``paper`` (the MaskConver paper's Pixel 6 point for this input size, 17.12 ms at 256 and 24.93 ms
at 640), ``target`` and ``verdict`` (always ``HOST_ONLY``: a host is not a phone), ``memory`` (RSS before, after
init and the high-water mark from ``resource.getrusage``, with deltas) and ``device`` (CPU name, cores, clock,
load average). Progress goes to stderr.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "HostBenchmarkError",
    "cpu_info",
    "file_sha256",
    "load_benchmark_images",
    "paper_point",
    "run_host",
    "runtime_versions",
]

DEFAULT_IMAGE_SIZE = (480, 640)  # (H, W): a VGA camera frame, letterboxed by the runtime like a real one
DEFAULT_NUM_IMAGES = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class HostBenchmarkError(ValueError):
    """The host benchmark cannot run with these inputs; the message names the problem and the fix."""


def _say(message: str) -> None:
    print(f"[maskconver-bench] {message}", file=sys.stderr, flush=True)


# --- facts about the machine and the model -----------------------------------------------------------------
def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` as ``{key: value}``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def cpu_info(cpuinfo_text: str | None = None) -> dict[str, Any]:
    """CPU name, logical cores, clock and int8-relevant flags of this machine.

    ``clock_ghz`` is the ``cpu MHz`` line of ``/proc/cpuinfo`` (``clock_source`` says so). Under a hypervisor
    (KVM) that is the nominal/TSC clock; the real boost clock can be higher, so peak estimates built on it are
    upper bounds on the percentage.
    """
    text = cpuinfo_text
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
    fields = _cpuinfo_fields(text)
    flags = set(fields.get("flags", "").split())
    name = fields.get("model name") or platform.processor() or platform.machine()
    clock_ghz: float | None = None
    clock_source = "unknown"
    try:
        clock_ghz = float(fields["cpu MHz"]) / 1000.0
        clock_source = "/proc/cpuinfo 'cpu MHz' (first core)"
    except (KeyError, ValueError):
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": name,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "clock_ghz": clock_ghz,
        "clock_source": clock_source,
        "hypervisor": "hypervisor" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx2": "avx2" in flags,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15": load,
    }


def runtime_versions() -> dict[str, str]:
    """Installed versions of the packages that run the model (missing ones are left out)."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for pkg in ("maskconver", "ai-edge-litert", "onnxruntime", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def paper_point(input_size: Sequence[int] | None) -> dict[str, Any] | None:
    """The paper's Pixel 6 row for a square 256 or 640 input (latency, GMACs, PQ), else None."""
    from maskconver.benchmarks.targets import PAPER_POINTS

    if not input_size or len(input_size) != 2 or input_size[0] != input_size[1]:
        return None
    for p in PAPER_POINTS:
        if p.input_size == int(input_size[0]):
            return {
                "input_size": p.input_size,
                "latency_ms": p.latency_ms,
                "gmacs": p.gmacs,
                "pq": p.pq,
                "device": "Pixel 6",
                "config": p.config,
            }
    return None


# --- memory --------------------------------------------------------------------------------------------------
def _rss_mb() -> float | None:
    """Current resident set size of this process (MB) from ``/proc/self/statm``; None where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """High-water RSS of this process (MB): ``ru_maxrss`` is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


# --- images --------------------------------------------------------------------------------------------------
def load_benchmark_images(
    images: str | os.PathLike[str] | Sequence[Any] | None = None,
    *,
    num_images: int = DEFAULT_NUM_IMAGES,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> tuple[list[np.ndarray], str]:
    """The frames to benchmark on, as RGB uint8 ``[H, W, 3]`` arrays, and a description of their source.

    ``images``: None -> ``num_images`` synthetic panoptic scenes (:func:`render_synthetic_image`, dataset
    ``seed``) of ``image_size`` (H, W); a folder -> its image files (sorted, at most ``num_images``; images in
    ``images/`` of a COCO-style folder are found too); a sequence of arrays and/or file paths -> those.
    """
    from maskconver.runtime.preprocess import as_rgb_uint8, read_image

    if images is None:
        from maskconver.models.synthetic import render_synthetic_image

        if num_images < 1:
            raise HostBenchmarkError(f"num_images must be >= 1, got {num_images}")
        frames = [render_synthetic_image(seed, i, image_size).image for i in range(num_images)]
        return frames, f"synthetic scenes (seed {seed}), {num_images} x {image_size[0]}x{image_size[1]}"
    if isinstance(images, str | os.PathLike):
        folder = Path(images)
        if not folder.is_dir():
            raise HostBenchmarkError(
                f"image folder {folder} does not exist; pass a folder of .jpg/.png images or omit --images "
                "to use synthetic scenes"
            )
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "panoptic" not in p.parts
        )
        if not files:
            raise HostBenchmarkError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; pass a folder with images"
            )
        files = files[:num_images]
        frames = []
        for f in files:
            try:
                frames.append(read_image(f))
            except (ValueError, OSError) as e:
                raise HostBenchmarkError(
                    f"benchmark image {f} is unusable: {e}; remove it from {folder}"
                ) from e
        return frames, f"{len(files)} images from {folder}"
    frames = []
    for i, item in enumerate(images):
        try:
            frames.append(read_image(item) if isinstance(item, str | os.PathLike) else as_rgb_uint8(item))
        except ValueError as e:
            raise HostBenchmarkError(f"benchmark image {i} is unusable: {e}") from e
    if not frames:
        raise HostBenchmarkError("the list of benchmark images is empty; pass at least one image")
    return frames, f"{len(frames)} caller-supplied images"


# --- the benchmark -------------------------------------------------------------------------------------------
def _check_counts(runs: int, warmup: int, threads: int | None) -> None:
    if not isinstance(runs, int) or runs < 1:
        raise HostBenchmarkError(f"runs must be a positive integer, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise HostBenchmarkError(f"warmup must be a non-negative integer, got {warmup!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise HostBenchmarkError(f"threads must be a positive integer or None (CPU count), got {threads!r}")


def time_frame(segmenter: Any, image: np.ndarray) -> dict[str, float]:
    """One timed ``segment()`` call: ``{preprocess, inference, decode, end_to_end}`` in ms, plus
    ``"decode.<stage>"`` for every stage of ``result.decode_stages`` and ``"decode.other"`` (the decode time
    outside those stages)."""
    t0 = time.perf_counter()
    result = segmenter.segment(image)
    end = 1000.0 * (time.perf_counter() - t0)
    s = result.speed
    out = {
        "preprocess": float(s["preprocess"]),
        "inference": float(s["inference"]),
        "decode": float(s["postprocess"]),
        "end_to_end": end,
    }
    stages = getattr(result, "decode_stages", None) or {}
    if stages:
        for name, ms in stages.items():
            out[f"decode.{name}"] = float(ms)
        out["decode.other"] = max(0.0, out["decode"] - sum(float(v) for v in stages.values()))
    return out


def decode_line(result: Mapping[str, Any]) -> str:
    """One line: decode / inference against the budget and the stages' p50, e.g.
    ``"decode 1.65 ms = 0.19 of inference (budget 0.15): peaks 0.30, mask_head 0.29, ... ms"``."""
    from maskconver.benchmarks.report import DECODE_STAGE_ORDER

    ds = result.get("decode_stages") or {}
    names = [s for s in DECODE_STAGE_ORDER if s in ds] + [s for s in ds if s not in DECODE_STAGE_ORDER]
    parts = ", ".join(f"{n} {ds[n]['p50']:.2f}" for n in names if ds[n].get("p50") is not None)
    b = result.get("decode_budget")
    head = (
        f"decode {b['decode_p50']:.2f} ms = {b['ratio']:.2f} of inference (budget {b['budget']:.2f})"
        if b
        else "decode"
    )
    return f"{head}: {parts} ms (p50 per stage)"


def run_host(
    model_path: str | os.PathLike[str],
    threads: int | None = None,
    delegate: str | None = None,
    runs: int = 50,
    warmup: int = 5,
    images: str | os.PathLike[str] | Sequence[Any] | None = None,
    backend: str | None = None,
    *,
    mask_resolution: str = "full",
    progress: Callable[[str], None] | None = _say,
) -> dict[str, Any]:
    """Benchmark ``model_path`` in this process and return the ``maskconver-bench/1`` host result dict.

    Args:
        model_path: a ``.tflite`` (LiteRT) or ``.onnx`` (ONNX Runtime) written by ``maskconver-convert``.
        threads: inference threads; None = the runtime default (CPU count, at most 4).
        delegate: LiteRT delegate (``xnnpack`` default, ``cpu``, ``gpu``, ``nnapi``); ONNX ignores ``xnnpack``.
        runs: timed frames; warmup: untimed frames before them (at least the first frame is always timed
            separately as the first inference).
        images: None (synthetic scenes at 480x640), a folder, or a list of RGB arrays / paths; frames are used
            in turn.
        backend: ``"litert"`` / ``"onnx"``; None = by file suffix.
        mask_resolution: decoding timed in each frame, ``"full"`` (default) or ``"grid"`` (see ``Segmenter``).
        progress: called with progress lines (default: stderr); None for silence.
    Raises:
        HostBenchmarkError: missing model or bad settings (message says what to change).
    """
    say = progress or (lambda _m: None)
    _check_counts(runs, warmup, threads)
    path = Path(model_path)
    if not path.is_file():
        raise HostBenchmarkError(
            f"model file {path} does not exist; pass the .tflite or .onnx written by maskconver-convert"
        )
    from maskconver.benchmarks.report import HOST_DISCLAIMER, make_host_result, verdict
    from maskconver.runtime.model_info import ModelFileError
    from maskconver.runtime.segmenter import DelegateError, Segmenter

    frames, source = load_benchmark_images(images)
    rss_before = _rss_mb()
    peak_before = _peak_rss_mb()
    say(f"loading {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    t0 = time.perf_counter()
    try:
        seg = Segmenter(
            path, backend=backend, num_threads=threads, delegate=delegate, mask_resolution=mask_resolution
        )
    except (ModelFileError, DelegateError, ValueError) as e:
        raise HostBenchmarkError(f"cannot load {path} for the host benchmark: {e}") from e
    init_ms = 1000.0 * (time.perf_counter() - t0)
    rss_init = _rss_mb()
    cfg = seg.config
    input_size = [int(v) for v in cfg["input_size"]]

    first = time_frame(seg, frames[0])
    say(
        f"init {init_ms:.1f} ms, first frame {first['end_to_end']:.1f} ms (inference {first['inference']:.1f} ms)"
    )
    for i in range(1, warmup):
        time_frame(seg, frames[i % len(frames)])
        say(f"warm-up {i + 1}/{warmup}")
    samples: dict[str, list[float]] = {k: [] for k in ("preprocess", "inference", "decode", "end_to_end")}
    decode_stages: dict[str, list[float]] = {}
    step = max(1, runs // 10)
    for i in range(runs):
        t = time_frame(seg, frames[(warmup + i) % len(frames)])
        for k, v in t.items():
            if k.startswith("decode."):
                decode_stages.setdefault(k[len("decode.") :], []).append(v)
            else:
                samples[k].append(v)
        if (i + 1) % step == 0 or i + 1 == runs:
            say(
                f"run {i + 1}/{runs}: median inference {np.median(samples['inference']):.2f} ms, "
                f"end-to-end {np.median(samples['end_to_end']):.2f} ms"
            )
    rss_after = _rss_mb()
    peak_after = _peak_rss_mb()
    notes = seg.delegate_notes
    seg.close()

    dev = cpu_info()
    label = (
        f"HOST {dev['cpu']} ({dev['logical_cores']} logical cores), in-process {cfg['backend']}/{cfg['delegate']}, "
        f"{cfg['num_threads']} threads"
    )
    warnings = list(notes)
    if dev["load_average_1_5_15"] and dev["load_average_1_5_15"][0] > (dev["logical_cores"] or 1) * 0.5:
        warnings.append(
            f"the machine was busy (1-minute load {dev['load_average_1_5_15'][0]} on {dev['logical_cores']} "
            "cores): latencies may be inflated"
        )
    result = make_host_result(
        model={
            "path": str(path),
            "name": path.name,
            "sha256": file_sha256(path),
            "size_bytes": path.stat().st_size,
            "input_size": input_size,
            "config_name": cfg.get("config_name"),
            "quantization": cfg.get("quantization"),
            "format": "onnx" if cfg["backend"] == "onnx" else "tflite",
        },
        samples_ms=samples,
        init_ms=init_ms,
        first_inference_ms=first["inference"],
        peak_memory_mb=peak_after,
        label=f"{label} ({HOST_DISCLAIMER})",
        device=dev,
        settings={
            "threads": cfg["num_threads"],
            "mask_resolution": cfg["mask_resolution"],
            "delegate": cfg["delegate"],
            "delegate_requested": delegate,
            "backend": cfg["backend"],
            "runs": runs,
            "warmup": warmup,
            "images": source,
            "num_distinct_images": len(frames),
            "image_sizes": sorted({f"{f.shape[0]}x{f.shape[1]}" for f in frames}),
            "output": cfg.get("output"),
        },
        runtime=runtime_versions(),
        warnings=warnings,
        decode_stage_samples={k: v for k, v in decode_stages.items() if len(v) == runs},
    )
    result["first_frame_ms"] = {k: v for k, v in first.items() if not k.startswith("decode.")}
    result["memory"] = {
        "kind": "rss",
        "rss_before_mb": rss_before,
        "rss_after_init_mb": rss_init,
        "rss_after_runs_mb": rss_after,
        "peak_rss_mb": peak_after,
        "peak_rss_before_mb": peak_before,
        "init_delta_mb": None if rss_before is None or rss_init is None else rss_init - rss_before,
        "run_delta_mb": None if rss_before is None or rss_after is None else rss_after - rss_before,
        "peak_delta_mb": max(0.0, peak_after - (rss_before if rss_before is not None else peak_before)),
        "note": "peak is the process high-water mark (getrusage ru_maxrss), so it includes anything the "
        "process held before the model was loaded",
    }
    result["paper"] = paper_point(input_size)
    v = verdict(result)
    result["target"] = v["target"]
    result["verdict"] = v
    if result.get("decode_stages"):
        say(decode_line(result))
    say(v["line"])
    return result
