"""``maskconver-train``: train MaskConver on the synthetic dataset or a COCO panoptic folder.

Examples::

    maskconver-train --config nano --data synthetic --steps 6000 --out runs/nano
    maskconver-train --config mobilenet_mh_256 --data /data/coco --steps 100000 --batch 16 --out runs/mh256 \\
        --init mg_checkpoint_dir

``--data synthetic`` writes the synthetic dataset (``--num-images``, ``--image-size``, ``--seed``) into
``OUT/data`` unless it is already there. Interrupt at any time: running the same command again resumes
from ``OUT/latest.json`` (``--no-resume`` refuses to reuse a non-empty folder's checkpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskconver.models.config import ConfigError, get_config
from maskconver.runtime.argtypes import positive_float, positive_int

SYNTHETIC = "synthetic"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-train",
        description="Train MaskConver (teacher-forced centres, Model Garden losses) with resumable checkpoints.",
    )
    p.add_argument(
        "--config", required=True, help="nano, mobilenet_mh_256, mobilenet_mh_640 or a Model Garden YAML"
    )
    p.add_argument(
        "--data", required=True, help="'synthetic' or a COCO panoptic folder (panoptic.json + PNGs)"
    )
    p.add_argument("--steps", required=True, type=positive_int, help="total optimiser steps")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoints, log, model.npz)")
    p.add_argument("--batch", type=positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 2e-3 adamw)")
    p.add_argument(
        "--optimizer", choices=["adamw", "sgd"], default="adamw", help="adamw (default) or sgd with momentum"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default min(500, steps/10))")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init, batches and synthetic data")
    p.add_argument(
        "--init", type=Path, default=None, help="Model Garden or maskconver checkpoint to start from"
    )
    p.add_argument("--num-images", type=positive_int, default=2000, help="synthetic images (default 2000)")
    p.add_argument(
        "--image-size", type=positive_int, default=None, help="synthetic image side (default: input)"
    )
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints (default 500)"
    )
    p.add_argument(
        "--val-data", default=None, help="a COCO panoptic folder whose loss is logged at checkpoints"
    )
    p.add_argument("--no-resume", action="store_true", help="fail instead of resuming from OUT/latest.json")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def prepare_synthetic(out: Path, num_images: int, seed: int, image_size: int, quiet: bool = False) -> Path:
    """``OUT/data`` with the synthetic dataset; generated unless a matching one is already there."""
    from maskconver.models.synthetic import generate_synthetic_dataset

    data = out / "data"
    meta_path = data / "generated.json"
    meta = {"num_images": num_images, "seed": seed, "image_size": image_size}
    if (data / "panoptic.json").exists():
        if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
            old = json.loads(meta_path.read_text())
            raise SystemExit(
                f"maskconver-train: {data} holds a synthetic dataset made with {old}, not {meta}; "
                "use another --out or the original --num-images/--seed/--image-size"
            )
        return data

    def report(done: int, total: int) -> None:
        if not quiet and (done % 200 == 0 or done == total):
            print(f"synthetic data: {done}/{total} images", file=sys.stderr, flush=True)

    generate_synthetic_dataset(data, num_images, seed, (image_size, image_size), progress=report)
    meta_path.write_text(json.dumps(meta) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = get_config(args.config)
    except ConfigError as e:
        parser.error(str(e))
    from maskconver.models.checkpoint import CheckpointError
    from maskconver.models.panoptic_dataset import PanopticDatasetError
    from maskconver.models.train import TrainError, find_resume_checkpoint, train

    out: Path = args.out
    from maskconver.runtime.output_paths import OutputPathError, check_output_dir

    try:
        check_output_dir(out, "--out")
    except OutputPathError as e:
        parser.error(str(e))
    if args.image_size is not None and args.image_size < 16:
        parser.error(f"--image-size must be >= 16 (synthetic scenes need room), got {args.image_size}")
    if args.val_data is not None and not Path(args.val_data).is_dir():
        parser.error(
            f"--val-data {args.val_data} is not a folder; pass a COCO panoptic folder or leave it out"
        )
    if args.no_resume and out.is_dir() and find_resume_checkpoint(out) is not None:
        parser.error(
            f"--out {out} already holds checkpoints; remove it, pick another folder or drop --no-resume"
        )
    if args.init is not None and not (args.init.exists() or Path(str(args.init) + ".index").exists()):
        parser.error(f"--init {args.init} does not exist")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.data == SYNTHETIC:
        size = args.image_size or int(config.input_size[0])
        data: str | Path = prepare_synthetic(out, args.num_images, args.seed, size, args.quiet)
    else:
        data = Path(args.data)
        if not data.exists():
            parser.error(f"--data {data} does not exist; pass 'synthetic' or a COCO panoptic folder")
    try:
        result = train(
            config,
            data,
            args.steps,
            out,
            batch_size=args.batch,
            lr=args.lr,
            seed=args.seed,
            init=args.init,
            resume=not args.no_resume,
            checkpoint_every=args.checkpoint_every,
            progress=not args.quiet,
            val_data=args.val_data,
            optimizer=args.optimizer,
            warmup_steps=args.warmup,
        )
    except (TrainError, CheckpointError, PanopticDatasetError, FileNotFoundError) as e:
        print(f"maskconver-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nmaskconver-train: interrupted; run the same command again to resume from {out}/latest.json",
            file=sys.stderr,
        )
        return 130
    print(result.final_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
