"""``maskconver-eval``: panoptic quality of saved predictions, or of a model run over a dataset.

Two forms::

    maskconver-eval --gt-json GT.json --gt-dir GT_PNGS --pred-json PRED.json --pred-dir PRED_PNGS [--json OUT]
    maskconver-eval MODEL.tflite --data DATASET [--save-pred DIR] [--limit N] [--json OUT]

The first scores COCO panoptic predictions exactly like panopticapi's ``pq_compute``. The second runs the
model through :class:`maskconver.runtime.segmenter.Segmenter` on every ground-truth image and scores the
results in memory (``--save-pred`` also writes them as COCO panoptic PNG + JSON for the first form).
``DATASET`` is a COCO panoptic folder: ``panoptic.json`` + ``panoptic/`` + ``images/`` (the synthetic
layout), or ``annotations/panoptic_val2017.json`` + ``annotations/panoptic_val2017/`` + ``val2017/``.

Exit codes: 0 scored, 1 bad input (the message says what and how to fix it), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime.coco_panoptic_io import (
    PanopticFormatError,
    categories_by_id,
    load_gt_json,
    panoptic_from_masks,
    panoptic_record,
    read_panoptic_png,
    rgb_to_id,
    write_json,
    write_panoptic_png,
)
from maskconver.runtime.decode import MASK_RESOLUTIONS
from maskconver.runtime.output_paths import check_output_dir, check_output_file
from maskconver.runtime.panoptic_quality import PQAccumulator, PQResult, ProgressPrinter, pq_compute
from maskconver.runtime.preprocess import read_image

__all__ = ["EvalError", "build_parser", "find_dataset", "main", "prediction_from_result", "read_rgb"]


class EvalError(Exception):
    """Bad input for ``maskconver-eval``; the message names the problem and the fix."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-eval",
        description="Panoptic quality (PQ/SQ/RQ, as COCO panopticapi pq_compute) of saved COCO panoptic "
        "predictions, or of a .tflite/.onnx model run over a COCO panoptic dataset.",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="a .tflite or .onnx model to run (second form), or a checkpoint: a maskconver .npz, or a Model Garden "
        "checkpoint as CKPT::CONFIG (converted to float TFLite first)",
    )
    p.add_argument("--data", help="COCO panoptic dataset folder to run MODEL over")
    p.add_argument("--gt-json", help="ground-truth COCO panoptic JSON (with categories)")
    p.add_argument("--gt-dir", help="ground-truth PNG folder (default: the JSON path without .json)")
    p.add_argument("--pred-json", help="prediction COCO panoptic JSON")
    p.add_argument("--pred-dir", help="prediction PNG folder (default: the JSON path without .json)")
    p.add_argument("--images", help="RGB image folder for MODEL (default: found from --data)")
    p.add_argument("--save-pred", metavar="DIR", help="with MODEL: also write predictions (PNGs + pred.json)")
    p.add_argument("--limit", type=int, help="with MODEL: score only the first N images")
    p.add_argument(
        "--mask-resolution",
        choices=MASK_RESOLUTIONS,
        default="full",
        help="with MODEL: full (bilinear masks, default) or grid / grid2x / grid4x (the real-time merge on the feature grid, upsampled 1x / 2x / 4x)",
    )
    p.add_argument("--json", metavar="OUT", help="write the results as JSON (atomic)")
    p.add_argument("--workers", type=int, help="processes for scoring saved predictions (default: auto)")
    p.add_argument("--per-class", action="store_true", help="print the per-class table too")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.model is not None:
        print("note: --workers has no effect with a MODEL (it runs in this process)", file=sys.stderr)
    try:
        # output paths first: a run of minutes must not end in an unwritable --json
        if args.json:
            check_output_file(args.json, "--json", make_parents=True)
        if args.save_pred:
            check_output_dir(args.save_pred, "--save-pred")
        if args.model is not None:
            # a checkpoint is converted into it; removed after the run (the model file may still be open:
            # where that blocks removal, e.g. on Windows, it is left to the system's temp cleanup)
            with tempfile.TemporaryDirectory(prefix="maskconver-eval-", ignore_cleanup_errors=True) as work:
                result, inputs = _eval_model(args, Path(work))
        else:
            result, inputs = _eval_saved(args, parser)
    except (EvalError, PanopticFormatError, FileNotFoundError, ValueError) as e:
        print(f"maskconver-eval: error: {e}", file=sys.stderr)
        return 1
    print(result.table(per_class=args.per_class))
    if args.json:
        payload = result.to_dict()
        payload["inputs"] = inputs
        write_json(args.json, payload, indent=1)
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


def _default_png_dir(json_path: str, given: str | None, flag: str) -> Path:
    if given is not None:
        return Path(given)
    d = Path(json_path).with_suffix("")
    if not d.is_dir():
        raise EvalError(
            f"{flag} not given and {d} (the JSON path without .json) is not a folder; pass {flag}"
        )
    return d


def _eval_saved(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[PQResult, dict[str, Any]]:
    if args.data or args.images or args.save_pred or args.limit is not None:
        parser.error("--data/--images/--save-pred/--limit need a MODEL (the second form)")
    if not args.gt_json or not args.pred_json:
        parser.error("give --gt-json and --pred-json (and --gt-dir/--pred-dir), or a MODEL with --data")
    gt_dir = _default_png_dir(args.gt_json, args.gt_dir, "--gt-dir")
    pred_dir = _default_png_dir(args.pred_json, args.pred_dir, "--pred-dir")
    # The console script guards its entry point, so spawned worker processes are safe here.
    result = pq_compute(
        args.gt_json, gt_dir, args.pred_json, pred_dir, workers=args.workers, progress=not args.quiet,
        pool="processes",
    )  # fmt: skip
    inputs = {"gt_json": str(args.gt_json), "gt_dir": str(gt_dir), "pred_json": str(args.pred_json)}
    inputs["pred_dir"] = str(pred_dir)
    return result, inputs


# ---------------------------------------------------------------------------------------------------------
# MODEL --data DIR
# ---------------------------------------------------------------------------------------------------------


def find_dataset(
    data: str | None, gt_json: str | None, gt_dir: str | None, images: str | None, flag: str = "--data"
) -> dict[str, Path]:
    """Resolve the ground-truth JSON, PNG folder and image folder of a COCO panoptic dataset (``flag``: the
    option that named ``data``, for messages)."""
    if gt_json is None:
        if data is None:
            raise EvalError(f"give {flag} DATASET (or --gt-json with --images) to run a model")
        root = Path(data)
        if not root.is_dir():
            what = "does not exist" if not root.exists() else "is not a folder"
            raise EvalError(f"{flag} {root} {what}; pass a COCO panoptic dataset folder")
        if (root / "panoptic.json").is_file():
            json_path = root / "panoptic.json"
        else:
            cands = sorted(root.glob("*.json")) or sorted(root.glob("annotations/panoptic_*.json"))
            if len(cands) != 1:
                raise EvalError(
                    f"{root} has no panoptic.json and {len(cands)} other JSON candidates "
                    f"({', '.join(c.name for c in cands[:5])}); pass --gt-json"
                )
            json_path = cands[0]
    else:
        json_path = Path(gt_json)
    if gt_dir is not None:
        png_dir = Path(gt_dir)
    else:
        cands = [json_path.with_suffix(""), json_path.parent / "panoptic"]
        png_dir = next((c for c in cands if c.is_dir()), None)
        if png_dir is None:
            raise EvalError(
                f"no ground-truth PNG folder for {json_path} (looked for {cands[0]}, {cands[1]}); pass --gt-dir"
            )
    if images is not None:
        img_dir = Path(images)
    else:
        cands = [json_path.parent / "images"]
        if json_path.stem.startswith("panoptic_"):
            split = json_path.stem[len("panoptic_") :]
            cands += [json_path.parent.parent / split, json_path.parent / split]
        img_dir = next((c for c in cands if c.is_dir()), None)
        if img_dir is None:
            raise EvalError(
                f"no image folder for {json_path} (looked in {', '.join(map(str, cands))}); pass --images"
            )
    return {"gt_json": json_path, "gt_dir": png_dir, "images": img_dir}


def _image_path(images_dir: Path, ann: dict[str, Any], images_by_id: dict[Any, dict]) -> Path:
    img = images_by_id.get(ann.get("image_id"))
    if img is not None and "file_name" in img:
        return images_dir / img["file_name"]
    stem = Path(ann["file_name"]).stem
    for ext in (".jpg", ".jpeg", ".png"):
        if (images_dir / (stem + ext)).is_file():
            return images_dir / (stem + ext)
    return images_dir / (stem + ".jpg")


def read_rgb(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB image, read as the runtime reads it (:func:`maskconver.runtime.preprocess.read_image`:
    EXIF orientation applied, truncated files refused)."""
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check --images and the JSON file names")
    return read_image(path)


def _field(s: Any, *keys: str) -> Any:
    for k in keys:
        v = s.get(k) if isinstance(s, dict) else getattr(s, k, None)
        if v is not None:
            return v
    return None


def prediction_from_result(result: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(ids [H, W], segments_info)`` from a Segmenter result.

    In order of preference: ``result.panoptic_ids()`` with ``result.coco_segments_info()``;
    ``result.to_coco_png()`` (an ``[H, W, 3]`` RGB array, PNG bytes or ``[H, W]`` ids, or a
    ``(png, segments_info)`` tuple) with ``result.segments`` (``id`` and ``category_id``); else the
    ``category_mask`` / ``instance_mask`` pair. Segments without pixels are dropped (COCO panoptic lists
    only drawn segments).
    """
    ids = segments = None
    if callable(getattr(result, "panoptic_ids", None)) and callable(
        getattr(result, "coco_segments_info", None)
    ):
        ids, segments = np.asarray(result.panoptic_ids()), result.coco_segments_info()
    elif callable(getattr(result, "to_coco_png", None)):
        out = result.to_coco_png()
        if isinstance(out, tuple) and len(out) == 2:
            out, segments = out
        if isinstance(out, bytes | bytearray):
            decoded = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
            if decoded is None:
                raise ValueError("Segmenter.to_coco_png() returned bytes that are not a PNG")
            out = decoded[:, :, ::-1]
        out = np.asarray(out)
        ids = rgb_to_id(out) if out.ndim == 3 else out.astype(np.int64)
        if segments is None:
            segments = _field(result, "segments", "segments_info")
    if ids is not None and segments is not None:
        infos = []
        for s in segments:
            sid, cat = _field(s, "id", "segment_id"), _field(s, "category_id")
            if sid is None or cat is None:
                infos = None
                break
            infos.append({"id": int(sid), "category_id": int(cat), "iscrowd": 0})
        if infos is not None:
            drawn = set(np.unique(ids).tolist())
            return ids, [s for s in infos if s["id"] in drawn]
    cm, im = _field(result, "category_mask"), _field(result, "instance_mask")
    if cm is None or im is None:
        raise EvalError(
            "the Segmenter result has neither panoptic_ids()/to_coco_png() with segments (id, category_id) "
            "nor category_mask + instance_mask; update maskconver.runtime.segmenter"
        )
    return panoptic_from_masks(cm, im)


def _load_segmenter(model: str, mask_resolution: str = "full", work_dir: Path | None = None) -> Any:
    try:
        from maskconver.runtime.segmenter import Segmenter
    except ImportError as e:
        raise EvalError(
            f"cannot import maskconver.runtime.segmenter.Segmenter ({e}); running a model needs the runtime "
            "Segmenter. To score predictions you already saved, use --gt-json/--gt-dir/--pred-json/--pred-dir"
        ) from e
    return Segmenter(_model_file(model, work_dir), mask_resolution=mask_resolution)


def _model_file(model: str, work_dir: Path | None = None) -> str:
    """A .tflite/.onnx path as is; a checkpoint (maskconver .npz or Model Garden) converted to float TFLite first,
    into ``work_dir`` (the caller removes it; default: a new temporary folder, left to the caller too).

    Model Garden checkpoints need their config: ``MODEL=CKPT::CONFIG`` (e.g. ``ckpt-1::mobilenet_mh_256``).
    """
    if Path(model).suffix.lower() in (".tflite", ".onnx"):
        return model
    from maskconver.converter.convert import ConversionError, ConvertOptions, convert
    from maskconver.models.checkpoint import CheckpointError
    from maskconver.models.config import ConfigError

    ckpt, _, config = model.partition("::")
    out = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="maskconver-eval-"))
    print(f"converting checkpoint {ckpt} to a float TFLite model in {out}", file=sys.stderr)
    try:
        report = convert(ckpt, config or None, out, ConvertOptions(quantization="fp32", progress=False))
    except (ConversionError, CheckpointError, ConfigError) as e:
        msg = str(e).replace(
            "pass its config (--config)", f"pass its config as {ckpt}::CONFIG (e.g. ::mobilenet_mh_256)"
        )
        raise EvalError(f"cannot run checkpoint {ckpt}: {msg}") from e
    return str(out / f"{report['model']['name']}.tflite")


def _eval_model(args: argparse.Namespace, work_dir: Path | None = None) -> tuple[PQResult, dict[str, Any]]:
    if args.pred_json or args.pred_dir:
        raise EvalError("--pred-json/--pred-dir score saved predictions; do not combine them with a MODEL")
    if not Path(args.model.partition("::")[0]).exists():
        raise EvalError(f"model {args.model} does not exist")
    paths = find_dataset(args.data, args.gt_json, args.gt_dir, args.images)
    gt = load_gt_json(paths["gt_json"])
    categories = categories_by_id(gt["categories"], f"ground-truth JSON {paths['gt_json']}")
    anns = list(gt["annotations"])
    if args.limit is not None:
        if args.limit <= 0:
            raise EvalError("--limit must be positive")
        anns = anns[: args.limit]
    if not anns:
        raise EvalError(f"{paths['gt_json']} has no annotations to score")
    images_by_id = {im["id"]: im for im in gt.get("images", []) if isinstance(im, dict) and "id" in im}
    segmenter = _load_segmenter(args.model, args.mask_resolution, work_dir)
    acc = PQAccumulator(categories)
    saved: list[dict[str, Any]] = []
    save_dir = Path(args.save_pred) if args.save_pred else None
    bar = ProgressPrinter(len(anns), "eval", enabled=not args.quiet)
    try:
        for ann in anns:
            rgb = read_rgb(_image_path(paths["images"], ann, images_by_id))
            gt_png = paths["gt_dir"] / ann["file_name"]
            gt_ids = read_panoptic_png(gt_png)
            pred_ids, pred_segments = prediction_from_result(segmenter.segment(rgb))
            if pred_ids.shape != gt_ids.shape:
                raise EvalError(
                    f"the Segmenter returned {pred_ids.shape[1]}x{pred_ids.shape[0]} for image "
                    f"{ann.get('image_id')} but the ground truth {gt_png} is {gt_ids.shape[1]}x{gt_ids.shape[0]}"
                )
            acc.add(
                gt_ids, ann.get("segments_info", []), pred_ids, pred_segments, image_id=ann.get("image_id")
            )
            if save_dir is not None:
                name = Path(ann["file_name"]).with_suffix(".png").name
                write_panoptic_png(save_dir / "pred" / name, pred_ids)
                saved.append(panoptic_record(ann.get("image_id"), name, pred_ids, pred_segments))
            bar.update()
    finally:
        bar.close()
    if save_dir is not None:
        write_json(save_dir / "pred.json", {"annotations": saved, "categories": gt["categories"]})
        print(f"predictions written to {save_dir / 'pred.json'} and {save_dir / 'pred'}/", file=sys.stderr)
    inputs = {k: str(v) for k, v in paths.items()}
    inputs["model"] = str(args.model)
    inputs["num_images"] = len(anns)
    return acc.result(), inputs


if __name__ == "__main__":
    sys.exit(main())
