"""Conversion quality report: sizes, op table, int8-vs-float agreement per output, optional PQ."""

from __future__ import annotations

from collections import Counter

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - test)^2)."""
    ref = np.asarray(reference, np.float64)
    noise = np.sum((ref - np.asarray(test, np.float64)) ** 2)
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(np.sum(ref**2) / noise))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else 1.0


def op_table(model_bytes: bytes) -> dict[str, int]:
    """Builtin op name -> count, from the interpreter's op list (without delegates)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=model_bytes,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return dict(sorted(Counter(op["op_name"] for op in it._get_ops_details()).items()))


def to_markdown(report: dict) -> str:
    lines = [f"# maskconver conversion report: {report['model']['name']}", ""]
    m = report["model"]
    lines += [
        f"- config: `{m['config']}`, input {m['input_size'][0]}x{m['input_size'][1]}, quantisation **{m['quantization']}**",
        f"- source checkpoint: `{m['checkpoint']}` (sha256 {m['checkpoint_sha256'][:16]}...)",
        f"- depthwise lowering: {m['lower_depthwise']}; conversion time {report['timing_s']['total']:.1f} s",
        "",
        "## Files",
        "",
        "| file | bytes |",
        "|---|---|",
    ]
    lines += [f"| {f} | {n:,} |" for f, n in report["files"].items()]
    if report.get("calibration"):
        c = report["calibration"]
        lines += [
            "",
            f"Calibration: {c['num_images']} images from `{c['source']}` (seed {c['seed']}, "
            f"{'per-channel' if c['per_channel'] else 'per-tensor'} weights).",
        ]
        fitted = c.get("lowered_ranges_refined")
        if fitted:
            lines.append(
                f"Fitted int8 ranges of the depthwise lowering: {fitted['narrowed']} of {fitted['tensors']} band and "
                "partial-sum tensors narrowed"
                + (f"; not found: {', '.join(fitted['not_found'])}" if fitted["not_found"] else "")
                + "."
            )
    if report.get("delegates"):
        d = report["delegates"]
        lines += [
            "",
            "## Delegates",
            "",
            f"- XNNPACK partitions: {d.get('xnnpack_partitions')} "
            f"(ops not delegated: {d.get('xnnpack_undelegated_ops')})",
        ]
        for k, v in d.get("per_delegate", {}).items():
            lines.append(f"- {k}: {'all ops supported' if not v else '; '.join(v)}")
        for k, v in d.get("perf_warnings", {}).items():
            lines += [f"- {k} performance warning: {w}" for w in v]
    if report.get("agreement"):
        lines += [
            "",
            "## int8 vs float (held-out images)",
            "",
            "| output | SQNR dB | cosine |",
            "|---|---|---|",
        ]
        onnx = report.get("agreement_onnx") or {}
        if onnx:
            lines[-2:] = [
                "| output | SQNR dB (TFLite) | cosine (TFLite) | SQNR dB (ONNX int8) |",
                "|---|---|---|---|",
            ]
        for k, v in report["agreement"].items():
            extra = f" {onnx[k]['sqnr_db']:.2f} |" if k in onnx else ""
            lines.append(f"| {k} | {v['sqnr_db']:.2f} | {v['cosine']:.5f} |{extra}")
    if report.get("pq"):
        lines += ["", "## Panoptic quality (validation)", "", "| model | PQ | SQ | RQ |", "|---|---|---|---|"]
        for k, v in report["pq"].items():
            if isinstance(v, dict) and "pq" in v:
                lines.append(f"| {k} | {v['pq']:.2f} | {v['sq']:.2f} | {v['rq']:.2f} |")
        if "drop" in report["pq"]:
            lines.append(f"\nPQ drop float -> {m['quantization']}: {report['pq']['drop']:.2f}")
    lines += ["", "## Ops", "", "| op | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["ops"].items()]
    return "\n".join(lines) + "\n"
