"""``convert(...)``: a trained checkpoint to the self-contained maskconver model file(s), atomically."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskconver.models.config import MaskConverConfig


class ConversionError(RuntimeError):
    """Conversion failed a check; nothing was written to the output folder."""


@dataclass
class ConvertOptions:
    quantization: str = "int8"  # int8 | fp16 | fp32
    onnx: bool = False
    input_size: tuple[int, int] | None = None
    calibration: str | None = None
    num_calibration: int = 300
    num_holdout: int = 16
    seed: int = 0
    per_channel: bool = True
    lower_depthwise: bool = True
    # MSE-fitted int8 ranges for the lowering's bands and partial sums (converter/range_refine.py)
    refine_lowered_ranges: bool = True
    allow_cpu_ops: bool = False
    val: str | None = None
    max_pq_drop: float | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


def log(msg: str, progress: bool = True) -> None:
    if progress:
        print(f"[maskconver-convert] {msg}", file=sys.stderr, flush=True)


ONNX_INT8 = "QDQ: uint8 activations, int8 per-channel weights (onnxruntime quantize_static)"


def onnx_model_info(info):
    """``info`` with the conversion record of the ONNX twin: the same graph, but an int8 ONNX model is
    quantised by ONNX Runtime's own static quantiser, not by the TFLite converter, so the TFLite-only fields
    (per-channel setting, the lowering tensors' fitted ranges) give way to how it was quantised."""
    import dataclasses

    conversion = dict(info.conversion)
    conversion["format"] = "onnx"
    if conversion.get("quantization") == "int8":
        conversion["onnx_quantization"] = ONNX_INT8
        conversion["per_channel"] = True
        conversion["lowered_ranges_refined"] = None
    return dataclasses.replace(info, conversion=conversion)


def _with_checkpoint_labels(cfg: MaskConverConfig, checkpoint: Path) -> MaskConverConfig:
    """``cfg`` (given with ``--config``) with the category labels a maskconver ``.npz`` checkpoint recorded
    when it was trained, if they fit its class count; else ``cfg`` unchanged."""
    from maskconver.models.checkpoint import CONFIG_KEY

    if checkpoint.suffix != ".npz" or not checkpoint.is_file():
        return cfg
    try:
        with np.load(checkpoint) as z:
            embedded = json.loads(bytes(z[CONFIG_KEY]).decode()) if CONFIG_KEY in z.files else {}
    except (OSError, ValueError, KeyError):
        return cfg  # load_checkpoint reports what is wrong with the file
    labels = embedded.get("labels") if isinstance(embedded, dict) else None
    if not labels or len(labels) != cfg.num_classes:
        return cfg
    return type(cfg).from_dict({**cfg.to_dict(), "labels": labels})


def model_info_for(config: MaskConverConfig, input_size: tuple[int, int], conversion: dict):
    """The ``maskconver.json`` contents for a model converted from ``config``."""
    from maskconver.runtime.model_info import Category, ModelInfo

    if config.labels:  # recorded by the trainer from its dataset
        cats = [Category(i, name, thing, tuple(colour)) for i, name, thing, colour in config.labels]
    elif config.categories == "synthetic":
        from maskconver.models.synthetic import SYNTHETIC_CATEGORIES

        cats = list(SYNTHETIC_CATEGORIES)
    else:
        from maskconver.runtime.coco_categories import NUM_COCO_PANOPTIC_CLASSES, coco_panoptic_categories

        if config.num_classes < NUM_COCO_PANOPTIC_CLASSES:
            raise ConversionError(
                f"config {config.name!r} has {config.num_classes} classes and no category names: the COCO "
                f"panoptic names need {NUM_COCO_PANOPTIC_CLASSES}. Convert a checkpoint trained with "
                "maskconver-train (it records its dataset's categories; a --config given then keeps them), "
                "or give a config with 201 classes"
            )
        cats = coco_panoptic_categories(config.num_classes)
    things = set(config.thing_ids)
    cats = [Category(c.id, c.name, c.id in things, tuple(c.color)) for c in cats if c.id < config.num_classes]
    return ModelInfo(
        config_name=config.name,
        input_size=tuple(input_size),
        num_classes=config.num_classes,
        embedding_size=config.embedding_size,
        categories=cats,
        stride=config.stride,
        num_proposals=config.num_instances,
        object_mask_threshold=config.object_mask_threshold,
        overlap_threshold=config.overlap_threshold,
        small_area_threshold=config.small_area_threshold,
        canvas_size=tuple(config.canvas_size),
        conversion=conversion,
    )


def _calibration_images(opts: ConvertOptions, input_size, config):
    """(calibration canvases, held-out canvases, description) — letterboxed like the runtime."""
    from maskconver.converter.calibration import find_images, load_canvases, split_calibration

    def load(files: list[Path], num_calibration: int):
        cal, hold = split_calibration(files, num_calibration, opts.num_holdout, opts.seed)
        if len(cal) < 100 and opts.quantization == "int8":
            log(
                f"warning: calibrating on {len(cal)} images; under 100 the int8 ranges are unreliable",
                opts.progress,
            )
        cal_imgs = list(load_canvases(cal, input_size, "calibration images" if opts.progress else None))
        return cal_imgs, list(load_canvases(hold, input_size)) if hold else []

    if opts.calibration:
        return (*load(find_images(opts.calibration), opts.num_calibration), str(opts.calibration))
    from maskconver.models.synthetic import generate_synthetic_dataset

    log(
        "no --calibration folder: using synthetic images; pass --calibration DIR with images from your domain",
        opts.progress,
    )
    n = min(opts.num_calibration, 300)
    with tempfile.TemporaryDirectory(prefix="maskconver-calib-") as tmp:
        generate_synthetic_dataset(
            Path(tmp), n + opts.num_holdout, seed=opts.seed + 1000, image_size=tuple(input_size)
        )
        cal_imgs, hold_imgs = load(find_images(tmp), n)
    return cal_imgs, hold_imgs, f"synthetic(seed={opts.seed + 1000})"


def _agreement(
    ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """SQNR (dB) and cosine of ``got`` against ``ref`` per output name, over all images."""
    from maskconver.converter.report import cosine, sqnr_db

    out = {}
    for k in ref[0]:
        a = np.stack([r[k] for r in ref])
        b = np.stack([g[k] for g in got])
        out[k] = {"sqnr_db": sqnr_db(a, b), "cosine": cosine(a, b)}
    return out


def convert(
    checkpoint: str | Path, config: MaskConverConfig | str | None, out_dir: str | Path, opts: ConvertOptions
):
    """Convert ``checkpoint`` and write the model file(s) and ``report.{json,md}`` into ``out_dir``.

    Everything is built in a temporary folder beside ``out_dir`` and moved in only after every check passed,
    so a failed conversion never leaves a partial model nor replaces a good one (nor an empty ``out_dir`` it
    created). Inputs that are only read late (the ``val`` dataset) are checked first. Returns the report dict.
    """
    if opts.val:  # read only after the conversion: a typo must not cost its minutes
        from maskconver.runtime.eval_cli import EvalError, find_dataset

        try:
            find_dataset(opts.val, None, None, None, flag="--val")
        except EvalError as e:
            raise ConversionError(str(e)) from e
    out_dir = Path(out_dir)
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    try:
        return _convert(checkpoint, config, out_dir, opts)
    except BaseException:
        for d in created:  # only folders this call made, and only while empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _convert(
    checkpoint: str | Path, config: MaskConverConfig | str | None, out_dir: Path, opts: ConvertOptions
):
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.converter.report import op_table, to_markdown
    from maskconver.converter.tflite_export import convert_tflite, run_tflite
    from maskconver.models.checkpoint import checkpoint_hash, load_checkpoint
    from maskconver.models.config import get_config

    t0 = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise ConversionError(
            f"cannot write to output folder {out_dir}: {e.strerror}; choose another -o"
        ) from e
    cfg = get_config(config) if config is not None else None
    if cfg is not None and not cfg.labels:
        cfg = _with_checkpoint_labels(cfg, Path(checkpoint))
    log(f"loading checkpoint {checkpoint}", opts.progress)
    model = load_checkpoint(checkpoint, cfg)
    cfg = model.config
    size = tuple(opts.input_size or cfg.input_size)
    if size != tuple(cfg.input_size):
        model_sized = load_checkpoint(checkpoint, cfg, input_size=size)
    else:
        model_sized = model
    mode = opts.quantization
    model_info_for(cfg, size, {})  # the labels exist (else ConversionError) before minutes of conversion
    name = f"maskconver_{cfg.name}_{size[0]}x{size[1]}_{mode}"
    timing: dict[str, float] = {}
    report: dict = {"files": {}, "timing_s": timing}

    cal_imgs, hold_imgs, source = ([], [], None)
    if mode != "fp32":  # int8 calibrates; int8 and fp16 are compared with float on held-out images
        t = time.perf_counter()
        cal_imgs, hold_imgs, source = _calibration_images(opts, size, cfg)
        timing["calibration_data"] = time.perf_counter() - t
    rewrites = None
    if opts.lower_depthwise and mode == "int8":
        # int8 ranges of the lowered depthwise convs' bands narrowed by an exact bias split and channel scale
        from maskconver.converter.calibration import lowered_depthwise_ranges
        from maskconver.converter.inference_graph import balanced_rewrites, equalisable_depthwise

        t = time.perf_counter()
        ranges = lowered_depthwise_ranges(model_sized, cal_imgs)
        rewrites = balanced_rewrites(ranges, equalisable_depthwise(model_sized))
        timing["depthwise_ranges"] = time.perf_counter() - t
    fn = build_inference_fn(model_sized, lower_depthwise=opts.lower_depthwise, rewrites=rewrites)
    t = time.perf_counter()
    log(
        f"converting to TFLite ({mode}{', depthwise lowered' if opts.lower_depthwise else ''}"
        f"{' and balanced' if rewrites else ''})",
        opts.progress,
    )
    tfl = convert_tflite(fn, size, mode, cal_imgs if mode == "int8" else None, per_channel=opts.per_channel)
    timing["tflite"] = time.perf_counter() - t
    fitted = None
    if rewrites is not None and opts.refine_lowered_ranges:
        from maskconver.converter.range_refine import refine_lowered_ranges

        tfl, refined, missing = refine_lowered_ranges(tfl, ranges, rewrites)
        narrowed = sum(r.mse_after < r.mse_before for r in refined)
        fitted = {"tensors": len(refined), "narrowed": narrowed, "not_found": missing}
        log(
            f"fitted int8 ranges: {narrowed} of the lowering's {len(refined)} band and partial-sum tensors narrowed",
            opts.progress,
        )
        if missing:
            log(
                f"warning: lowering tensors not found in the int8 model, left at min..max: {', '.join(missing)}",
                opts.progress,
            )
    conversion = {
        "quantization": mode,
        "per_channel": opts.per_channel if mode == "int8" else None,
        "lower_depthwise": opts.lower_depthwise,
        "lowered_ranges_refined": fitted,
        "calibration": {"source": source, "num_images": len(cal_imgs), "seed": opts.seed}
        if mode == "int8"
        else None,
        "source_checkpoint": str(checkpoint),
        "source_checkpoint_sha256": checkpoint_hash(checkpoint),
        "tool_versions": _tool_versions(),
    }
    info = model_info_for(cfg, size, conversion)
    mask_head = model.mask_head_arrays()

    from maskconver.converter.tflite_metadata import populate_metadata

    tfl_meta = populate_metadata(tfl, info, mask_head, info.labels(), {"name": name})
    check_out = run_tflite(tfl, cal_imgs[0] if cal_imgs else np.zeros((*size, 3), np.uint8))
    check_meta = run_tflite(tfl_meta, cal_imgs[0] if cal_imgs else np.zeros((*size, 3), np.uint8))
    if any(not np.array_equal(check_out[k], check_meta[k]) for k in check_out):
        raise ConversionError("adding metadata changed the model outputs (internal error)")

    # ---- delegate checks ----
    from maskconver.converter.delegate_check import check_delegates, count_xnnpack_partitions

    dele = check_delegates(tfl_meta)
    remove_stale_work_dirs(out_dir)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".maskconver-{os.getpid()}-{_host()}-", dir=out_dir))
    try:
        tfl_path = tmp_dir / f"{name}.tflite"
        tfl_path.write_bytes(tfl_meta)
        parts = count_xnnpack_partitions(tfl_path)
        # The model-file contract fixes a uint8 raw-pixel input. Its conversion at the graph input (a uint8 -> int8
        # requantize in int8 models, a CAST in float ones) is the one op a delegate may leave on the CPU. It is an
        # I/O boundary op, reported as a performance note rather than a failure; every other op must be delegable.
        # (It reads the graph input wherever it sits in the op order: fp16 models list their weights' DEQUANTIZEs
        # first.)
        io_ops = [
            f
            for d in dele.delegates
            for f in dele.unsupported(d)
            if f.op_index in dele.input_ops and f.op_name in ("QUANTIZE", "CAST")
        ]
        blocking = {
            d: [str(f) for f in dele.unsupported(d) if f not in io_ops] + [str(f) for f in dele.forbidden]
            for d in dele.delegates
        }
        ok = not any(blocking.values()) and not dele.dynamic_tensors
        report["delegates"] = {
            "xnnpack_partitions": parts.partitions,
            "xnnpack_undelegated_ops": [f"{n} (op {i})" for i, n, _ in parts.undelegated],
            "ok": ok,
            "check": dele.to_dict(),
            "per_delegate": blocking,
            "perf_warnings": {
                d: [str(f) for f in dele.perf_warnings(d)]
                + [str(f) for f in dele.unsupported(d) if f in io_ops]
                for d in dele.delegates
            },
        }
        log(parts.summary().splitlines()[0], opts.progress)
        for d, warnings in report["delegates"]["perf_warnings"].items():
            for w in warnings:
                log(f"performance warning ({d}): {w}", opts.progress)
        if not ok:
            msg = "ops that a mobile delegate will not run:\n" + dele.summary()
            if not opts.allow_cpu_ops:
                raise ConversionError(msg + "\n(pass --allow-cpu-ops to write the model anyway)")
            log("warning: " + msg, opts.progress)

        # ---- int8 vs float agreement on held-out images ----
        float_outputs: list[dict[str, np.ndarray]] = []
        if mode != "fp32" and hold_imgs:
            t = time.perf_counter()
            ref_tfl = convert_tflite(
                build_inference_fn(model_sized, lower_depthwise=opts.lower_depthwise), size, "fp32"
            )
            float_outputs = [run_tflite(ref_tfl, img) for img in hold_imgs]
            report["agreement"] = _agreement(float_outputs, [run_tflite(tfl_meta, img) for img in hold_imgs])
            timing["agreement"] = time.perf_counter() - t
            for k, v in report["agreement"].items():
                log(
                    f"{mode} vs float on {len(hold_imgs)} held-out images: {k} SQNR {v['sqnr_db']:.1f} dB, "
                    f"cosine {v['cosine']:.4f}",
                    opts.progress,
                )

        # ---- ONNX ----
        if opts.onnx:
            from maskconver.converter.onnx_export import export_onnx

            t = time.perf_counter()
            onnx_path = tmp_dir / f"{name}.onnx"
            export_onnx(
                fn,
                size,
                onnx_model_info(info),
                mask_head,
                onnx_path,
                quantize=(mode == "int8"),
                calibration=cal_imgs,
                reference_tflite=tfl if mode == "fp32" else None,
            )
            if mode == "int8" and float_outputs:
                from maskconver.converter.onnx_export import run_onnx

                report["agreement_onnx"] = _agreement(float_outputs, run_onnx(onnx_path, hold_imgs))
                for k, v in report["agreement_onnx"].items():
                    log(f"ONNX int8 vs float: {k} SQNR {v['sqnr_db']:.1f} dB", opts.progress)
            timing["onnx"] = time.perf_counter() - t

        # ---- PQ gate ----
        if opts.val:
            from maskconver.converter.pq_gate import pq_float_vs_quantized

            t = time.perf_counter()
            report["pq"] = pq_float_vs_quantized(checkpoint, cfg, size, tfl_path, opts.val, opts.progress)
            timing["pq"] = time.perf_counter() - t
            if opts.max_pq_drop is not None and report["pq"]["drop"] > opts.max_pq_drop:
                raise ConversionError(
                    f"PQ dropped by {report['pq']['drop']:.2f} (float {report['pq']['float']['pq']:.2f} -> "
                    f"{mode} {report['pq']['quantized']['pq']:.2f}), more than --max-pq-drop {opts.max_pq_drop}"
                )

        timing["total"] = time.perf_counter() - t0
        report["model"] = {
            "name": name,
            "config": cfg.name,
            "input_size": list(size),
            "quantization": mode,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": conversion["source_checkpoint_sha256"],
            "lower_depthwise": opts.lower_depthwise,
            "balanced_depthwise": sorted(rewrites or {}),
        }
        report["calibration"] = (
            {
                "source": source,
                "num_images": len(cal_imgs),
                "seed": opts.seed,
                "per_channel": opts.per_channel,
                "lowered_ranges_refined": fitted,
            }
            if mode == "int8"
            else None
        )
        report["ops"] = op_table(tfl_meta)
        for f in sorted(tmp_dir.iterdir()):
            report["files"][f.name] = f.stat().st_size
        text = json.dumps(_finite(report), indent=1, default=_json_default, allow_nan=False)
        (tmp_dir / "report.json").write_text(text)
        (tmp_dir / "report.md").write_text(to_markdown(report))
        produced = {f.name for f in tmp_dir.iterdir()}
        for suffix in (".tflite", ".onnx"):  # an earlier run's file of this name that this run did not write
            stale = out_dir / f"{name}{suffix}"
            if stale.name not in produced and stale.exists():
                stale.unlink()
        # the models first, the reports last: a complete report.json means complete outputs
        for f in sorted(tmp_dir.iterdir(), key=lambda p: (p.name.startswith("report"), p.name)):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log(
        f"wrote {out_dir / (name + '.tflite')} ({report['files'][name + '.tflite']:,} bytes) in "
        f"{timing['total']:.1f} s",
        opts.progress,
    )
    return report


def _host() -> str:
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def remove_stale_work_dirs(out_dir: Path) -> None:
    """Delete ``.maskconver-PID-HOST-*`` work folders that conversions killed on this host left in ``out_dir``."""
    for d in out_dir.glob(".maskconver-*-*-*"):
        parts = d.name.split("-")
        try:
            pid = int(parts[1])
        except (IndexError, ValueError):
            continue
        if parts[2] != _host():
            continue  # another machine's conversion (a shared folder): not ours to judge
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def _finite(o):
    """The report with non-finite floats (an SQNR of inf for identical outputs) as strings: strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not np.isfinite(o):
        return str(o)
    return o


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return str(o)
    return str(o)


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("maskconver", "tensorflow", "tensorflow-cpu", "ai-edge-litert", "tf2onnx", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
