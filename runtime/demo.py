"""``maskconver-demo``: the whole SDK on the bundled demo model in one command.

Converts the bundled demo checkpoint to int8 (checked against the float model on held-out images and by PQ on a
validation split), segments sample images and writes overlays, benchmarks the int8 model on this host, and ends
in a short summary of where everything is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "demo" / "maskconver_nano_demo.npz"
VAL_SEED = 2024  # the held-out synthetic split (training uses seed 0)
CALIB_SEED = 7


def _say(msg: str) -> None:
    print(f"[maskconver-demo] {msg}", file=sys.stderr, flush=True)


def _num_images(folder: Path) -> int:
    """Images in a generated dataset folder (0 if there is none yet)."""
    try:
        return len(json.loads((folder / "panoptic.json").read_text())["images"])
    except (OSError, ValueError, KeyError):
        return 0


def _write_overlays(seg, samples: list[Path], overlays: Path) -> None:
    """Side-by-side (image, overlay) panels at 3x and COCO panoptic PNGs of ``samples``."""
    import cv2

    for p in samples:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        result = seg.segment(rgb)
        big = cv2.resize(rgb, (rgb.shape[1] * 3, rgb.shape[0] * 3), interpolation=cv2.INTER_NEAREST)
        panel = cv2.hconcat([big, seg.segment(big).overlay(big)])
        if not cv2.imwrite(str(overlays / f"{p.stem}_overlay.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write overlays to {overlays}")
        result.to_coco_png(overlays / f"{p.stem}_panoptic.png")


def run_demo(
    out: Path, num_val: int = 100, num_calibration: int = 300, runs: int = 100, checkpoint: Path | None = None
):
    """Run the main job; returns the summary dict (also written to ``out/summary.json``)."""
    from maskconver.benchmarks.host import run_host
    from maskconver.benchmarks.report import write_reports
    from maskconver.converter.convert import ConvertOptions, convert
    from maskconver.models.synthetic import generate_synthetic_dataset
    from maskconver.runtime.segmenter import Segmenter

    t0 = time.perf_counter()
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"--checkpoint {checkpoint} does not exist or is not a file; pass a maskconver .npz checkpoint "
                "(maskconver-train writes one), or leave --checkpoint out for the bundled demo model"
            )
    else:
        checkpoint = DEMO_CHECKPOINT
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"the bundled demo checkpoint {checkpoint} is missing; reinstall maskconver from a full clone, or "
                "train one with maskconver-train and pass it as --checkpoint (see README)"
            )
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    val, calib = data / "val", data / "calibration"
    if _num_images(val) != num_val:
        _say(f"writing {num_val} held-out synthetic validation images (seed {VAL_SEED}) to {val}")
        shutil.rmtree(val, ignore_errors=True)
        generate_synthetic_dataset(val, num_val, seed=VAL_SEED, image_size=(128, 128))
    if _num_images(calib) != num_calibration + 16:
        _say(f"writing {num_calibration} calibration images (seed {CALIB_SEED}) to {calib}")
        shutil.rmtree(calib, ignore_errors=True)
        generate_synthetic_dataset(calib, num_calibration + 16, seed=CALIB_SEED, image_size=(128, 128))

    models = out / "model"
    _say(f"converting {checkpoint.name} to int8 (+ ONNX), with the PQ gate on {num_val} validation images")
    report = convert(
        checkpoint,
        None,
        models,
        ConvertOptions(
            quantization="int8",
            onnx=True,
            calibration=str(calib),
            num_calibration=num_calibration,
            val=str(val),
            max_pq_drop=5.0,
        ),
    )
    tflite = models / f"{report['model']['name']}.tflite"

    _say("segmenting sample images")
    overlays = out / "overlays"
    overlays.mkdir(exist_ok=True)
    seg = Segmenter(tflite)
    samples = sorted((val / "images").iterdir())[:6]
    try:
        _write_overlays(seg, samples, overlays)
    finally:
        seg.close()

    _say(f"benchmarking the int8 model on this host ({runs} runs)")
    bench = run_host(tflite, runs=runs, warmup=10, images=str(val / "images"))
    bench_dir = out / "bench"
    written = write_reports(
        bench, json=bench_dir / "bench.json", markdown=bench_dir / "bench.md", plot=bench_dir / "bench.png"
    )

    _say("timing the real-time grid merge (mask_resolution='grid') on the same frames")
    grid = run_host(
        tflite, runs=runs, warmup=5, images=str(val / "images"), mask_resolution="grid", progress=None
    )

    stages = bench.get("stages", {})
    summary = {
        "model": str(tflite),
        "model_bytes": tflite.stat().st_size,
        "onnx": str(models / f"{report['model']['name']}.onnx"),
        "pq_float": report["pq"]["float"]["pq"],
        "pq_int8": report["pq"]["quantized"]["pq"],
        "pq_drop": report["pq"]["drop"],
        "sqnr_db": {k: v["sqnr_db"] for k, v in report.get("agreement", {}).items()},
        "xnnpack_partitions": report["delegates"]["xnnpack_partitions"],
        "latency_ms_p50": {k: v.get("p50") for k, v in stages.items()},
        "grid_latency_ms_p50": {k: v.get("p50") for k, v in grid.get("stages", {}).items()},
        "grid_decode_stages_ms_p50": {k: v.get("p50") for k, v in grid.get("decode_stages", {}).items()},
        "grid_decode_budget": grid.get("decode_budget"),
        "overlays": str(overlays),
        "reports": {"conversion": str(models / "report.md"), **{k: str(v) for k, v in written.items()}},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(s: dict) -> str:
    lat = s["latency_ms_p50"]
    lines = [
        "",
        "maskconver demo: done in {:.0f} s".format(s["seconds"]),
        f"  model         {s['model']} ({s['model_bytes'] / 1e6:.2f} MB, int8, {s['xnnpack_partitions']} XNNPACK partition)",
        f"  PQ            float {s['pq_float']:.1f} -> int8 {s['pq_int8']:.1f} (drop {s['pq_drop']:.2f}) on the held-out split",
        "  SQNR int8     " + ", ".join(f"{k} {v:.1f} dB" for k, v in s["sqnr_db"].items()),
        "  latency p50   "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in lat.items() if v is not None)
        + " (host CPU)",
        "  grid merge    "
        + ", ".join(
            f"{k} {v:.2f} ms"
            for k, v in s.get("grid_latency_ms_p50", {}).items()
            if v is not None and k != "preprocess"
        )
        + " (mask_resolution='grid', the real-time path)",
        *_decode_split(s),
        f"  overlays      {s['overlays']}/",
        f"  reports       {s['reports']['conversion']}, {s['reports'].get('markdown')}, {s['reports'].get('plot')}",
    ]
    return "\n".join(lines)


def _decode_split(s: dict) -> list[str]:
    """The grid decode's stages and its share of inference, as one summary line (none if not measured)."""
    split, budget = s.get("grid_decode_stages_ms_p50") or {}, s.get("grid_decode_budget")
    if not split or not budget:
        return []
    parts = ", ".join(f"{k} {v:.2f}" for k, v in split.items() if v is not None)
    return [
        f"  grid decode   {parts} ms; decode/inference {budget['ratio']:.2f} (budget {budget['budget']:.2f})"
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="maskconver-demo",
        description="The whole SDK on the bundled demo model in one command: convert it to int8 (+ ONNX) with a "
        "PQ gate, segment sample images into overlays, benchmark it on this host, and print a summary.",
    )
    p.add_argument("--out", default="maskconver_demo", help="output folder (default ./maskconver_demo)")
    p.add_argument("--num-val", type=int, default=100, help="validation images for the PQ gate (default 100)")
    p.add_argument("--num-calibration", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--runs", type=int, default=100, help="timed benchmark frames (default 100)")
    p.add_argument(
        "--checkpoint", help="another maskconver .npz checkpoint (default: the bundled demo model)"
    )
    args = p.parse_args(argv)
    for flag, value in (("--num-val", args.num_val), ("--num-calibration", args.num_calibration)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")
    from maskconver.runtime.eval_cli import EvalError
    from maskconver.runtime.output_paths import check_output_dir

    try:
        check_output_dir(args.out, "--out")
        s = run_demo(Path(args.out), args.num_val, args.num_calibration, args.runs, args.checkpoint)
    # conversion, checkpoint, config and calibration errors are RuntimeError / ValueError subclasses
    except (OSError, ValueError, RuntimeError, EvalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
