"""Reports for a maskconver-bench result: JSON (everything), Markdown (tables and verdict), PNG plot.

A result is a plain dict (schema ``maskconver-bench/1``). Both kinds share these keys (times in ms):

``kind``                ``"host"`` (in-process LiteRT on this computer) or ``"android"`` (benchmark_model on a device)
``label``               what was measured where; host labels are forced to say they are host numbers
``status``              ``"ok"`` / ``"failed"``; ``errors``, ``warnings``: lists of strings
``comparable``          False for emulators (Android); the host is never a phone and is labelled so
``model``               ``name``, ``path``, ``sha256``, ``size_bytes``, ``input_size`` ([H, W] or None)
``device``, ``settings``, ``runtime``   free-form dicts, printed as they are
``stages``              ``{stage: STATS}``; host: ``preprocess``, ``inference``, ``decode``, ``end_to_end``;
                        android: ``inference``. STATS = ``n, mean, std, min, max, p5, p50, p90, p95, p99``
                        (missing ones None). :func:`summarize_samples` builds STATS from per-run samples;
                        :func:`make_host_result` builds the whole host dict.
``samples_ms``          optional ``{stage: [ms, ...]}`` per-run samples (drawn as histograms when present)
``decode_stages``       host, optional: ``{decode stage: STATS}`` (``DECODE_STAGE_ORDER``: where the decode time goes,
                        from ``PanopticResult.decode_stages``; ``other`` = decode minus the stages, i.e. glue)
``decode_budget``       host, optional: decode p50 / inference p50 against ``DECODE_BUDGET`` (issue #5's 15%)
``init_ms``, ``first_inference_ms``, ``peak_memory_mb``
Android only: ``delegation``, ``op_profile``, ``memory``, ``warmup``, ``thermal``, ``raw_output``
(see :mod:`maskconver.benchmarks.android`).

:func:`write_reports` adds ``target`` and ``verdict`` (see :func:`verdict`) and writes each file through a temp
file and a rename, so a reader never sees half a report.
"""

from __future__ import annotations

import io
import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from maskconver.benchmarks.targets import PAPER_POINTS, TARGETS_MS, input_side_label, target_for
from maskconver.runtime.atomic import write_bytes_atomic
from maskconver.runtime.decode import STAGES as DECODE_STAGES

__all__ = [
    "DECODE_BUDGET",
    "DECODE_STAGE_ORDER",
    "HOST_DISCLAIMER",
    "STAGE_ORDER",
    "ReportError",
    "decode_budget",
    "make_host_result",
    "summarize_samples",
    "to_markdown",
    "validate_result",
    "verdict",
    "write_json",
    "write_markdown",
    "write_plot",
    "write_reports",
]

SCHEMA = "maskconver-bench/1"
STAGE_ORDER = ("preprocess", "inference", "decode", "end_to_end")
# the decoder's stages in pipeline order (PanopticResult.decode_stages) and the glue around them
DECODE_STAGE_ORDER = (*DECODE_STAGES, "result", "other")
DECODE_BUDGET = 0.15  # decoding at most 15% of the interpreter's time (issue #5)
STAT_KEYS = ("n", "mean", "std", "min", "max", "p5", "p50", "p90", "p95", "p99")
HOST_DISCLAIMER = "host numbers, not a phone's: the 17/25 ms targets are for a phone (Pixel 6 class)"


class ReportError(ValueError):
    """A result dict that cannot be reported; the message names the missing or malformed key."""


# --- statistics --------------------------------------------------------------------------------------------
def summarize_samples(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """STATS for per-run latencies ``samples_ms`` (shape ``[n]``, ms): n, mean, std, min, max, p5..p99.

    Percentiles use linear interpolation between order statistics (NumPy's default).
    """
    x = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ReportError("summarize_samples needs at least one latency sample")
    if not np.all(np.isfinite(x)):
        raise ReportError("latency samples contain NaN or infinity")
    p5, p50, p90, p95, p99 = np.percentile(x, [5, 50, 90, 95, 99])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "p5": float(p5),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
    }


def make_host_result(
    *,
    model: Mapping[str, Any],
    samples_ms: Mapping[str, Sequence[float] | np.ndarray],
    init_ms: float | None,
    first_inference_ms: float | None,
    peak_memory_mb: float | None,
    label: str,
    device: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    decode_stage_samples: Mapping[str, Sequence[float] | np.ndarray] | None = None,
) -> dict[str, Any]:
    """The host benchmark's result dict in the shared shape, STATS computed from per-run samples (ms).

    ``samples_ms`` maps stage names (``preprocess``, ``inference``, ``decode``, ``end_to_end``) to per-run
    latencies; ``model`` holds ``name``, ``path``, ``sha256``, ``input_size`` ([H, W]).
    ``decode_stage_samples``: per-run ms of the decode's stages (``DECODE_STAGE_ORDER``), if measured.
    """
    if not samples_ms:
        raise ReportError("make_host_result needs per-run samples for at least one stage")
    extra: dict[str, Any] = {}
    if decode_stage_samples:
        extra["decode_stages"] = {name: summarize_samples(x) for name, x in decode_stage_samples.items()}
    stages = {name: summarize_samples(x) for name, x in samples_ms.items()}
    budget = decode_budget(stages)
    if budget is not None:
        extra["decode_budget"] = budget
    return {
        "schema": SCHEMA,
        "kind": "host",
        "label": label,
        "comparable": False,
        "status": "ok",
        "errors": [],
        "warnings": list(warnings),
        "model": dict(model),
        "device": dict(device or {}),
        "settings": dict(settings or {}),
        "runtime": dict(runtime or {}),
        "stages": {name: summarize_samples(x) for name, x in samples_ms.items()},
        "samples_ms": {
            name: [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]
            for name, x in samples_ms.items()
        },
        "init_ms": init_ms,
        "first_inference_ms": first_inference_ms,
        "peak_memory_mb": peak_memory_mb,
        **extra,
    }


def decode_budget(
    stages: Mapping[str, Mapping[str, Any]], budget: float = DECODE_BUDGET
) -> dict[str, Any] | None:
    """Decode p50 / inference p50 against ``budget`` -> ``{decode_p50, inference_p50, ratio, budget, met}``, or
    None without both stages (or with a zero inference time)."""
    dec, inf = (stages.get(k, {}).get("p50") for k in ("decode", "inference"))
    if dec is None or not inf:
        return None
    ratio = float(dec) / float(inf)
    return {
        "decode_p50": float(dec),
        "inference_p50": float(inf),
        "ratio": ratio,
        "budget": budget,
        "met": bool(ratio <= budget),
    }


def validate_result(result: Mapping[str, Any]) -> None:
    """Raise :class:`ReportError` when ``result`` lacks what the reports need."""
    if not isinstance(result, Mapping):
        raise ReportError(f"a benchmark result must be a dict, got {type(result).__name__}")
    kind = result.get("kind")
    if kind not in ("host", "android"):
        raise ReportError(f"result['kind'] must be 'host' or 'android', got {kind!r}")
    if result.get("status") not in ("ok", "failed"):
        raise ReportError(f"result['status'] must be 'ok' or 'failed', got {result.get('status')!r}")
    stages = result.get("stages")
    if not isinstance(stages, Mapping):
        raise ReportError("result['stages'] must be a dict of stage name -> statistics")
    if result["status"] == "ok" and not stages:
        raise ReportError("result['stages'] is empty although status is 'ok'")
    for name, st in stages.items():
        if not isinstance(st, Mapping) or "mean" not in st:
            raise ReportError(f"result['stages']['{name}'] must be a dict with at least 'mean' (ms)")
    model = result.get("model", {})
    if not isinstance(model, Mapping):
        raise ReportError("result['model'] must be a dict")


def _headline(result: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """(stage, statistic, ms) compared with the target: inference p50 (mean when no median was reported)."""
    stages = result.get("stages", {})
    for stage in ("inference", "end_to_end"):
        st = stages.get(stage)
        if not st:
            continue
        for stat in ("p50", "mean"):
            v = st.get(stat)
            if v is not None and math.isfinite(v):
                return stage, "median" if stat == "p50" else "mean", float(v)
    return None


def verdict(result: Mapping[str, Any]) -> dict[str, Any]:
    """The pass/fail line against the paper target for the model's input size.

    ``status``: ``PASS`` / ``FAIL`` (a comparable phone run against a target), ``NO_TARGET``, ``HOST_ONLY``
    (host numbers, informative only), ``NOT_COMPARABLE`` (emulator) or ``FAILED`` (no valid timings).
    """
    validate_result(result)
    model = result.get("model", {})
    target = target_for(model.get("input_size"))
    head = _headline(result)
    base = {
        "target": target.to_dict(),
        "target_ms": target.ms,
        "stage": None,
        "statistic": None,
        "measured_ms": None,
    }
    delegation = result.get("delegation") or {}
    if result["status"] != "ok" or head is None:
        why = (result.get("errors") or ["no inference timings"])[0]
        return {
            **base,
            "status": "FAILED",
            "line": f"FAILED: the benchmark produced no valid timings ({why})",
        }
    stage, stat, ms = head
    base.update(stage=stage, statistic=stat, measured_ms=ms)
    size = input_side_label(model.get("input_size"))
    what = f"{stage.replace('_', '-')} {stat} {ms:.2f} ms at {size}"
    if result["kind"] == "android" and delegation.get("failed"):
        return {
            **base,
            "status": "FAILED",
            "line": f"FAILED: the delegate failed to apply, so {what} is CPU fallback",
        }
    if result["kind"] == "host":
        ref = f"; the phone target is {target.ms:g} ms" if target.ms is not None else f"; {target.note}"
        return {
            **base,
            "status": "HOST_ONLY",
            "line": f"HOST ONLY: {what} on this computer, not a phone{ref}",
        }
    if not result.get("comparable", True):
        return {
            **base,
            "status": "NOT_COMPARABLE",
            "line": f"NOT COMPARABLE: {what} on an emulator; functional only, not comparable with the phone targets",
        }
    if target.ms is None:
        return {**base, "status": "NO_TARGET", "line": f"NO TARGET: {what}; {target.note}"}
    scope = " (model inference only, benchmark_model)" if stage == "inference" else ""
    if ms <= target.ms:
        return {**base, "status": "PASS", "line": f"PASS: {what} <= {target.ms:g} ms target{scope}"}
    return {
        **base,
        "status": "FAIL",
        "line": f"FAIL: {what} > {target.ms:g} ms target ({ms / target.ms:.2f}x){scope}",
    }


def _labelled(result: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``result`` with ``target``, ``verdict`` and an honest label."""
    out = dict(result)
    label = str(out.get("label") or "")
    if out["kind"] == "host" and not label.upper().startswith("HOST"):
        out["label"] = f"HOST {label}".strip() + f" ({HOST_DISCLAIMER})"
    elif out["kind"] == "host" and "not a phone" not in label:
        out["label"] = f"{label} ({HOST_DISCLAIMER})"
    v = verdict(out)
    out["target"] = v["target"]
    out["verdict"] = v
    return out


# --- atomic writing ----------------------------------------------------------------------------------------
def _atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory and an atomic rename."""
    target = Path(path)
    if target.is_dir():
        raise ReportError(f"report path {target} is a directory; give a file name")
    return write_bytes_atomic(target, data, make_parents=True, fsync=True)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(result: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """The whole result, plus ``target`` and ``verdict``, as indented JSON."""
    validate_result(result)
    text = json.dumps(_jsonable(_labelled(result)), indent=2, sort_keys=False, allow_nan=False)
    return _atomic_write(path, (text + "\n").encode("utf-8"))


# --- Markdown ----------------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _kv_table(rows: list[tuple[str, Any]]) -> list[str]:
    body = [f"| {k} | {_fmt(v)} |" for k, v in rows if v not in (None, "", [])]
    return ["| | |", "|---|---|", *body] if body else []


def to_markdown(result: Mapping[str, Any]) -> str:
    """A human-readable report: verdict, setup, latency table, memory, delegation and op tables."""
    validate_result(result)
    r = _labelled(result)
    v = r["verdict"]
    model = r.get("model", {})
    lines = [f"# maskconver-bench: {model.get('name') or model.get('path') or 'model'}", ""]
    lines += [f"**Verdict:** {v['line']}", ""]
    if r["kind"] == "host":
        lines += [
            f"> These are {HOST_DISCLAIMER}. Run `maskconver-bench MODEL --device pixel` for phone numbers.",
            "",
        ]
    elif not r.get("comparable", True):
        lines += ["> Emulator run: functional only, not comparable with a phone or the paper's targets.", ""]
    lines += ["## Setup", ""]
    dev = r.get("device", {}) or {}
    settings = r.get("settings", {}) or {}
    runtime = r.get("runtime", {}) or {}
    sha = model.get("sha256")
    rows: list[tuple[str, Any]] = [
        ("Measured on", r.get("label")),
        ("Model", model.get("name")),
        ("Model sha256", sha),
        ("Input size", input_side_label(model.get("input_size"))),
        ("Target", v["target"]["note"]),
    ]
    rows += [(f"Device {k}", val) for k, val in dev.items() if not isinstance(val, (dict, list)) or val]
    rows += [
        (f"Setting {k}", " ".join(val) if k == "command" and isinstance(val, list) else val)
        for k, val in settings.items()
    ]
    rows += [(f"Runtime {k}", val) for k, val in runtime.items()]
    lines += _kv_table([(k, ", ".join(map(str, val)) if isinstance(val, list) else val) for k, val in rows])
    lines += ["", "## Latency (ms)", ""]
    stages = r.get("stages", {})
    if stages:
        lines += ["| stage | n | mean | std | min | p5 | p50 | p90 | p95 | p99 | max |", "|---" * 11 + "|"]
        for name in [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]:
            st = stages[name]
            lines.append(
                f"| {name} | "
                + " | ".join(
                    _fmt(st.get(k))
                    for k in ("n", "mean", "std", "min", "p5", "p50", "p90", "p95", "p99", "max")
                )
                + " |"
            )
        if r["kind"] == "android":
            lines += ["", "benchmark_model reports p5/median/p95 only; p90 and p99 are not available (-)."]
    else:
        lines.append("No timings.")
    lines += [""]
    lines += _decode_lines(r)
    lines += _kv_table(
        [
            ("Init (ms)", r.get("init_ms")),
            ("First inference (ms)", r.get("first_inference_ms")),
            ("Peak memory (MB)", r.get("peak_memory_mb")),
        ]
        + [(f"Memory {k}", val) for k, val in (r.get("memory") or {}).items()]
        + [(f"Thermal status {k}", val) for k, val in (r.get("thermal") or {}).items()]
    )
    deleg = r.get("delegation")
    if deleg:
        lines += ["", "## Delegation", ""]
        lines += _kv_table(
            [(k, ", ".join(val) if isinstance(val, list) else val) for k, val in deleg.items()]
        )
    prof = (r.get("op_profile") or {}).get("regular")
    if prof:
        if prof.get("top"):
            lines += [
                "",
                "## Top ops (regular runs)",
                "",
                "| node type | name | avg ms | % |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {_fmt(o['node_type'])} | {_fmt(o['name'])} | {_fmt(o['avg_ms'], 3)} | {_fmt(o['percent'])} |"
                for o in prof["top"][:15]
            ]
        if prof.get("by_type"):
            lines += ["", "## Time by op type", "", "| node type | count | avg ms | % |", "|---|---|---|---|"]
            lines += [
                f"| {_fmt(o['node_type'])} | {o['count']} | {_fmt(o['avg_ms'], 3)} | {_fmt(o['percent'])} |"
                for o in prof["by_type"]
            ]
    lines += ["", "## Paper reference (MaskConver MobileNet-MH, Pixel 6)", ""]
    lines += ["| input | latency ms | GMACs | PQ | target ms |", "|---|---|---|---|---|"]
    lines += [
        f"| {p.input_size}x{p.input_size} | {p.latency_ms} | {p.gmacs} | {p.pq} | {TARGETS_MS[p.input_size]:g} |"
        for p in PAPER_POINTS
    ]
    for title, items in (("Errors", r.get("errors")), ("Warnings", r.get("warnings"))):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {_fmt(e)}" for e in items]
    return "\n".join(lines) + "\n"


def _finite(v: Any) -> float | None:
    """``v`` as a float, or None if it is missing or not a finite number (hand-edited or foreign JSON)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ordered_decode_stages(r: Mapping[str, Any]) -> list[str]:
    ds = r.get("decode_stages") or {}
    return [s for s in DECODE_STAGE_ORDER if s in ds] + [s for s in ds if s not in DECODE_STAGE_ORDER]


def _decode_lines(r: Mapping[str, Any]) -> list[str]:
    """The decode budget line and the per-stage breakdown table (Markdown lines, empty without them)."""
    lines: list[str] = []
    b = r.get("decode_budget")
    if b:
        lines += [
            f"Decode / inference (p50): {b['decode_p50']:.3f} / {b['inference_p50']:.3f} ms = **{b['ratio']:.2f}** "
            f"(budget {b['budget']:.2f}: {'met' if b['met'] else 'not met'})",
            "",
        ]
    ds = r.get("decode_stages") or {}
    if ds:
        p50 = {s: _finite(ds[s].get("p50")) for s in ds}
        total = sum(v for v in p50.values() if v is not None) or 1.0
        lines += ["| decode stage | p50 ms | p90 ms | share of the stages' p50 sum |", "|---|---|---|---|"]
        lines += [
            f"| {s} | {_fmt(ds[s].get('p50'), 3)} | {_fmt(ds[s].get('p90'), 3)} | "
            f"{'-' if p50[s] is None else f'{100 * p50[s] / total:.0f}%'} |"
            for s in _ordered_decode_stages(r)
        ]
        lines += [""]
    return lines


def write_markdown(result: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    return _atomic_write(path, to_markdown(result).encode("utf-8"))


# --- plot --------------------------------------------------------------------------------------------------
def _render_plot(r: Mapping[str, Any]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    breakdown = bool(r.get("decode_stages")) and bool(r.get("decode_budget"))
    fig = Figure(figsize=(18.5 if breakdown else 13, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    if breakdown:
        ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1, 1]})
        _plot_decode_stages(ax3, r)
    else:
        ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    v = r["verdict"]
    stages = r.get("stages", {})
    samples = r.get("samples_ms") or {}
    names = [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]

    # Left: latency distribution per stage (whisker min-max, box p5-p95, median tick, mean diamond).
    for i, name in enumerate(names):
        st = stages[name]
        y = len(names) - 1 - i
        xs = samples.get(name)
        if xs is not None and len(xs):
            arr = np.asarray(xs, dtype=float)
            jitter = (np.arange(arr.size) % 7 - 3) / 30.0
            ax1.scatter(arr, y + jitter, s=6, color="tab:blue", alpha=0.25, linewidths=0)
        lo, hi = st.get("min"), st.get("max")
        if lo is not None and hi is not None:
            ax1.plot([lo, hi], [y, y], color="black", lw=1)
        b_lo = st.get("p5") if st.get("p5") is not None else st.get("p50")
        b_hi = st.get("p95") if st.get("p95") is not None else st.get("p90")
        if b_lo is not None and b_hi is not None:
            ax1.add_patch(_rect(b_lo, y - 0.18, b_hi - b_lo, 0.36, face="tab:orange", alpha=0.5))
        if st.get("p50") is not None:
            ax1.plot([st["p50"], st["p50"]], [y - 0.22, y + 0.22], color="darkred", lw=2.5)
        if st.get("mean") is not None:
            ax1.plot(st["mean"], y, marker="D", color="black", ms=5)
        label = f"{name}\n(n={st.get('n') if st.get('n') is not None else '?'})"
        ax1.text(0.0, y, label, transform=ax1.get_yaxis_transform(), ha="right", va="center", fontsize=9)
    if v["target_ms"] is not None:
        ax1.axvline(v["target_ms"], color="red", ls="--", lw=1.2, label=f"target {v['target_ms']:g} ms")
        ax1.legend(loc="lower right", fontsize=8)
    ax1.set_yticks([])
    ax1.set_ylim(-0.7, max(len(names), 1) - 0.3)
    values = [x for st in stages.values() for x in (st.get("min"), st.get("max")) if x is not None and x > 0]
    if values and max(values) / min(values) > 50:
        ax1.set_xscale("log")
    ax1.set_xlabel("latency (ms): line min-max, box p5-p95, red tick median, diamond mean")
    ax1.set_title("Latency per stage", fontsize=11)
    ax1.grid(axis="x", alpha=0.3)

    # Right: latency against the paper's points and the target curve.
    sides = np.linspace(256, 640, 50)
    curve = [target_for(int(s)).ms for s in sides]
    ax2.plot(sides, curve, color="red", ls="--", lw=1.2, label="SDK target (17 ms @256, 25 ms @640)")
    for p in PAPER_POINTS:
        ax2.plot(p.input_size, p.latency_ms, marker="s", color="black", ms=7)
        ax2.annotate(
            f"paper {p.input_size}: {p.latency_ms} ms\n{p.gmacs} GMACs, PQ {p.pq}",
            (p.input_size, p.latency_ms),
            textcoords="offset points",
            xytext=(8, -22),
            fontsize=8,
        )
    hw = (r.get("model") or {}).get("input_size")
    if v["measured_ms"] is not None and hw:
        side = math.sqrt(hw[0] * hw[1])
        st = stages.get(v["stage"], {})
        lo = st.get("p5") if st.get("p5") is not None else st.get("min")
        hi = st.get("p95") if st.get("p95") is not None else st.get("max")
        yerr = None
        if lo is not None and hi is not None:
            yerr = [[max(v["measured_ms"] - lo, 0)], [max(hi - v["measured_ms"], 0)]]
        color = "tab:gray" if r["kind"] == "host" or not r.get("comparable", True) else "tab:blue"
        if r["kind"] == "host":
            who = "host (not a phone)"
        elif not r.get("comparable", True):
            who = "emulator (not comparable)"
        else:
            who = str((r.get("device") or {}).get("model") or "this device")
        ax2.errorbar(
            [side], [v["measured_ms"]], yerr=yerr, fmt="o", color=color, ms=8, capsize=4,
            label=f"{who}: {v['statistic']} {v['measured_ms']:.2f} ms",
        )  # fmt: skip
    elif v["measured_ms"] is not None:
        ax2.text(
            0.5, 0.9, "model input size unknown: not placed", transform=ax2.transAxes, ha="center", fontsize=9
        )
    ax2.margins(x=0.08, y=0.18)
    ax2.set_xlabel("input size (square side, px)")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("Against the paper (MaskConver MobileNet-MH)", fontsize=11)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8)

    title = textwrap.fill(str(r.get("label", "")), 150) + "\n" + textwrap.fill(str(v["line"]), 150)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0.06, 0, 1, 0.93))
    fig.subplots_adjust(top=1.0 - 0.04 * (title.count("\n") + 2))  # room for every line of the title
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_decode_stages(ax, r: Mapping[str, Any]) -> None:
    """Stacked bar of the decode stages' p50 next to the inference p50, with the decode budget marked."""
    ds, b = r["decode_stages"], r["decode_budget"]
    colors = [
        "tab:blue",
        "tab:orange",
        "tab:green",
        "tab:red",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:gray",
    ]
    ax.barh(1, b["inference_p50"], color="lightgray", edgecolor="black", lw=0.8)
    ax.text(b["inference_p50"], 1, f" {b['inference_p50']:.2f} ms", va="center", fontsize=8)
    left = 0.0
    for i, name in enumerate(_ordered_decode_stages(r)):
        w = _finite(ds[name].get("p50")) or 0.0
        ax.barh(
            0, w, left=left, color=colors[i % len(colors)], edgecolor="black", lw=0.6, label=f"{name} {w:.3f}"
        )
        left += w
    ax.text(left, 0, f" {b['decode_p50']:.2f} ms (p50)", va="center", fontsize=8)
    limit = b["budget"] * b["inference_p50"]
    ax.axvline(limit, color="red", ls="--", lw=1.2, label=f"budget {b['budget']:.0%} of inference")
    ax.set_yticks([0, 1], ["decode", "inference"])
    ax.set_xlim(0, 1.3 * max(b["inference_p50"], left, limit))
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel("ms (p50 per stage; stages stacked in pipeline order)")
    ax.set_title(f"Decode / inference {b['ratio']:.2f} ({'met' if b['met'] else 'over'} budget)", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _rect(x: float, y: float, w: float, h: float, face: str, alpha: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=face, alpha=alpha, edgecolor="black", lw=0.8)


def write_plot(result: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """A PNG with the per-stage latency distribution and the latency against the paper's points."""
    validate_result(result)
    return _atomic_write(path, _render_plot(_labelled(result)))


def write_reports(
    result: Mapping[str, Any],
    json: str | os.PathLike[str] | None = None,
    markdown: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Write the requested reports; returns ``{"json"|"markdown"|"plot": path}`` for those written."""
    validate_result(result)
    written: dict[str, str] = {}
    if json is not None:
        written["json"] = str(write_json(result, json))
    if markdown is not None:
        written["markdown"] = str(write_markdown(result, markdown))
    if plot is not None:
        written["plot"] = str(write_plot(result, plot))
    return written
