"""``maskconver-bench``: latency of a maskconver model on this computer or on an Android phone.

    maskconver-bench MODEL --device host|pixel|SERIAL|emulator [--threads N] [--delegate xnnpack|gpu|nnapi]
                     [--runs N] [--warmup N] [--json OUT] [--markdown OUT] [--plot OUT.png]
                     [--benchmark-binary PATH] [--images DIR]
    maskconver-bench compare CKPT --config NAME [--sizes 256 640] [--rounds R] [--per-round P] [--out DIR]

``--device host`` runs the model in this process (LiteRT for .tflite, ONNX Runtime for .onnx) on real images
and reports preprocess / inference / decode / end-to-end percentiles, labelled as host numbers. Any other
device runs TFLite ``benchmark_model`` on an Android device over adb (see
:mod:`maskconver.benchmarks.android`). ``compare`` converts a checkpoint to fp32 / int8 / int8-lowered TFLite
and fp32 / int8 ONNX and times them all in one process (see :mod:`maskconver.benchmarks.compare`).

Errors (missing model, adb or device problems, missing benchmark_model binary) are printed as one line and
exit with status 1; a benchmark that ran but failed exits with 1 after writing its reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskconver.runtime.argtypes import non_negative_int, positive_int
from maskconver.runtime.decode import MASK_RESOLUTIONS

__all__ = ["main"]

DELEGATE_CHOICES = ("xnnpack", "gpu", "nnapi", "cpu")


def _delegate_chain(text: str) -> str:
    """``--delegate``: one of :data:`DELEGATE_CHOICES`, or a comma-separated fallback chain of them (host)."""
    names = [t.strip() for t in text.split(",")]
    bad = [n for n in names if n not in DELEGATE_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"invalid delegate {', '.join(bad) or text!r}: choose from {', '.join(DELEGATE_CHOICES)}, or a "
            "fallback chain such as gpu,xnnpack"
        )
    return ",".join(names)


def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-bench",
        description="Benchmark a maskconver model on this computer (--device host) or an Android device. "
        "Run `maskconver-bench compare --help` to compare every export of a checkpoint.",
    )
    p.add_argument("model", help="the .tflite (or, on the host, .onnx) written by maskconver-convert")
    p.add_argument(
        "--device",
        default="host",
        help="host (this computer, default), pixel (an attached device whose model contains 'pixel'), a serial "
        "from `adb devices`, emulator, or android (the only attached device)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads (host default: CPU count, at most 4; phone: 4)"
    )
    p.add_argument(
        "--delegate",
        type=_delegate_chain,
        help="host: xnnpack (default) / cpu / gpu / nnapi, or a fallback chain such as gpu,xnnpack; phone: "
        "xnnpack (default) / gpu / nnapi / cpu",
    )
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="warm-up runs (host 5, phone 10)")
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    p.add_argument("--markdown", metavar="OUT", help="write a Markdown report")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG plot (needs matplotlib)")
    p.add_argument(
        "--benchmark-binary",
        metavar="PATH",
        help="Android benchmark_model binary to push (or set MASKCONVER_BENCHMARK_MODEL)",
    )
    p.add_argument(
        "--images", metavar="DIR", help="host: benchmark on these images (default: synthetic scenes)"
    )
    p.add_argument("--adb", metavar="PATH", help="the adb binary (default: $ADB, $ANDROID_HOME, PATH)")
    p.add_argument(
        "--mask-resolution",
        choices=MASK_RESOLUTIONS,
        default="full",
        help="host: decoding timed in each frame, full (bilinear masks, default) or grid / grid2x / grid4x (the real-time merge)",
    )
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-bench compare",
        description="Convert a checkpoint to fp32 / int8 / int8-lowered TFLite and fp32 / int8 ONNX (cached), "
        "load all in one process and time them in alternating order on the host CPU.",
    )
    p.add_argument("checkpoint", help="a maskconver .npz or Model Garden checkpoint (folder or prefix)")
    p.add_argument("--config", required=True, help="config name (mobilenet_mh_256, nano, ...) or YAML")
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[256, 640], help="square input sizes")
    p.add_argument("--rounds", type=positive_int, default=8, help="alternating rounds (default 8)")
    p.add_argument("--per-round", type=positive_int, default=5, help="frames per model per round (default 5)")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="warm-up frames per model (default 5)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: CPU count, at most 4)")
    from maskconver.benchmarks.compare import DEFAULT_VARIANTS, VARIANTS

    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(DEFAULT_VARIANTS),
        help="exports to compare (default: %(default)s)",
    )
    p.add_argument("--out", default="maskconver-compare", help="folder for the model cache and the reports")
    p.add_argument("--json", metavar="OUT", help="JSON report (default OUT/compare_CONFIG.json)")
    p.add_argument("--markdown", metavar="OUT", help="Markdown report (default OUT/compare_CONFIG.md)")
    p.add_argument(
        "--num-calibration",
        type=positive_int,
        default=32,
        help="int8 calibration images (synthetic; speed does not depend on them; default 32)",
    )
    p.add_argument("--clock-ghz", type=float, help="CPU clock for the peak estimate (default /proc/cpuinfo)")
    p.add_argument("--images", metavar="DIR", help="benchmark on these images (default: synthetic scenes)")
    p.add_argument(
        "--mask-resolution",
        choices=MASK_RESOLUTIONS,
        default="full",
        help="decoding timed in each frame: full (bilinear masks, default) or grid / grid2x / grid4x (the real-time merge)",
    )
    return p


def _fail(message: str) -> int:
    first = " ".join(str(message).split())
    print(f"maskconver-bench: error: {first}", file=sys.stderr)
    return 1


def _run_bench(args: argparse.Namespace) -> int:
    from maskconver.benchmarks.report import ReportError
    from maskconver.runtime.output_paths import OutputPathError, check_output_file

    model = Path(args.model)
    if model.is_dir():
        return _fail(f"{model} is a folder; pass the .tflite (or .onnx) file written by maskconver-convert")
    if not model.is_file():
        return _fail(f"model file {model} does not exist; pass the .tflite written by maskconver-convert")
    try:  # before the run: a finished benchmark must not be lost to an unwritable report path
        for flag, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
            if path:
                check_output_file(path, flag, make_parents=True)
    except OutputPathError as e:
        return _fail(str(e))
    device = args.device.strip()
    delegate = args.delegate.split(",") if args.delegate and "," in args.delegate else args.delegate
    if device.lower() == "host":
        from maskconver.benchmarks.host import HostBenchmarkError, run_host

        try:
            result = run_host(
                model,
                threads=args.threads,
                delegate=delegate,
                runs=args.runs,
                warmup=5 if args.warmup is None else args.warmup,
                images=args.images,
                mask_resolution=args.mask_resolution,
            )
        except HostBenchmarkError as e:
            return _fail(str(e))
    else:
        from maskconver.benchmarks.adb import AdbError
        from maskconver.benchmarks.android import BenchmarkSetupError, run_android

        if args.images:
            return _fail(
                "--images applies to --device host only; benchmark_model on a phone feeds its own input"
            )
        if isinstance(delegate, list):
            return _fail(
                f"--delegate {args.delegate}: a fallback chain works on --device host only; benchmark_model on a "
                "phone takes one delegate (and reports where it falls back)"
            )
        try:
            result = run_android(
                model,
                device=device,
                threads=args.threads or 4,
                delegate=args.delegate or "xnnpack",
                runs=args.runs,
                warmup=10 if args.warmup is None else args.warmup,
                benchmark_binary=args.benchmark_binary,
                adb=args.adb,
            )
        except (AdbError, BenchmarkSetupError) as e:
            return _fail(str(e))
    try:
        from maskconver.benchmarks.report import to_markdown, verdict, write_reports

        written = write_reports(result, json=args.json, markdown=args.markdown, plot=args.plot)
    except (ReportError, OSError, ImportError) as e:
        return _fail(f"cannot write the reports: {e}")
    if not any((args.json, args.markdown)):
        print(to_markdown(result))
    else:
        print(verdict(result)["line"])
    for kind, path in written.items():
        print(f"wrote {kind}: {path}", file=sys.stderr)
    return 0 if result.get("status") == "ok" else 1


def _run_compare(args: argparse.Namespace) -> int:
    from maskconver.benchmarks.compare import (
        CompareError,
        compare,
        compare_to_markdown,
        write_compare_reports,
    )
    from maskconver.runtime.output_paths import OutputPathError, check_output_dir, check_output_file

    out = Path(args.out)
    try:
        check_output_dir(out, "--out")
        for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
            if path:
                check_output_file(path, flag, make_parents=True)
    except OutputPathError as e:
        return _fail(str(e))
    try:
        result = compare(
            args.checkpoint,
            args.config,
            sizes=args.sizes,
            rounds=args.rounds,
            per_round=args.per_round,
            warmup=args.warmup,
            threads=args.threads,
            variants=args.variants,
            out_dir=out,
            num_calibration=args.num_calibration,
            clock_ghz=args.clock_ghz,
            images=args.images,
            mask_resolution=args.mask_resolution,
        )
    except CompareError as e:
        return _fail(str(e))
    stem = Path(args.config).stem
    written = write_compare_reports(
        result,
        args.json or out / f"compare_{stem}.json",
        args.markdown or out / f"compare_{stem}.md",
    )
    print(compare_to_markdown(result))
    for kind, path in written.items():
        print(f"wrote {kind}: {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return _run_compare(_compare_parser().parse_args(argv[1:]))
    return _run_bench(_bench_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
