"""``maskconver-convert CKPT [--config NAME|YAML] [--int8|--fp16|--fp32] [--onnx] -o OUT_DIR``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-convert",
        description="Convert a MaskConver checkpoint (Model Garden or maskconver) to a delegate-friendly TFLite "
        "model (int8 by default) with embedded metadata, plus ONNX on request.",
    )
    p.add_argument("checkpoint", help="Model Garden checkpoint (folder, prefix or .index) or maskconver .npz")
    p.add_argument(
        "--config",
        help="mobilenet_mh_256 | mobilenet_mh_640 | nano | a Model Garden YAML "
        "(required for Model Garden checkpoints; maskconver .npz files carry their config)",
    )
    q = p.add_mutually_exclusive_group()
    q.add_argument(
        "--int8", dest="quant", action="store_const", const="int8", help="full-integer int8 (default)"
    )
    q.add_argument("--fp16", dest="quant", action="store_const", const="fp16", help="float16 weights")
    q.add_argument("--fp32", dest="quant", action="store_const", const="fp32", help="float32")
    p.add_argument(
        "--onnx", action="store_true", help="also write ONNX (opset 17; static int8 QDQ with --int8)"
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--input-size", type=int, nargs="+", metavar="N", help="export another static size: N or H W"
    )
    p.add_argument("--calibration", help="folder of images or a COCO panoptic dataset for int8 calibration")
    p.add_argument("--num-calibration", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling calibration / held-out images")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor int8 weights (default per-channel)")
    p.add_argument(
        "--no-lower-depthwise",
        action="store_true",
        help="keep 7x7 depthwise convs as is (default: lower to <=25-tap bands, fast on XNNPACK)",
    )
    p.add_argument(
        "--allow-cpu-ops", action="store_true", help="warn instead of failing on non-delegable ops"
    )
    p.add_argument("--val", help="COCO panoptic dataset: report PQ of float and converted models")
    p.add_argument("--max-pq-drop", type=float, help="fail if PQ drops by more than this (needs --val)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (errors are still printed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from maskconver.converter.convert import ConversionError, ConvertOptions, convert

    size = None
    if args.input_size:
        if len(args.input_size) not in (1, 2) or any(s <= 0 or s % 16 for s in args.input_size):
            print(
                "error: --input-size takes N or H W, positive multiples of 16 (e.g. 256 or 640)",
                file=sys.stderr,
            )
            return 2
        size = tuple(args.input_size * 2)[:2] if len(args.input_size) == 1 else tuple(args.input_size)
    if args.max_pq_drop is not None and not args.val:
        print("error: --max-pq-drop needs --val DATASET", file=sys.stderr)
        return 2
    if args.num_calibration < 1:
        print("error: --num-calibration must be >= 1", file=sys.stderr)
        return 2
    quant = args.quant or "int8"
    if quant != "int8":  # int8-only options: say so rather than ignore them
        unused = ["--per-tensor"] if args.per_tensor else []
        if quant == "fp32" and args.calibration:
            unused.append("--calibration (fp32 is neither calibrated nor compared on held-out images)")
        for flag in unused:
            print(f"note: {flag} has no effect with --{quant}", file=sys.stderr)
    opts = ConvertOptions(
        quantization=quant,
        onnx=args.onnx,
        input_size=size,
        calibration=args.calibration,
        num_calibration=args.num_calibration,
        seed=args.seed,
        per_channel=not args.per_tensor,
        lower_depthwise=not args.no_lower_depthwise,
        allow_cpu_ops=args.allow_cpu_ops,
        val=args.val,
        max_pq_drop=args.max_pq_drop,
        progress=not args.quiet,
    )
    from maskconver.converter.calibration import CalibrationError
    from maskconver.models.checkpoint import CheckpointError
    from maskconver.models.config import ConfigError

    try:
        report = convert(args.checkpoint, args.config, args.out, opts)
    except (ConversionError, CheckpointError, ConfigError, CalibrationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the output disk filled up; nothing under a final name was replaced
        where = e.filename or args.out
        print(
            f"error: cannot write to {where}: {e.strerror or e}; free space or choose another -o",
            file=sys.stderr,
        )
        return 1
    name = report["model"]["name"]
    print(f"{args.out}/{name}.tflite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
