"""The panoptic quality gate: PQ of the float and the converted model through the real runtime."""

from __future__ import annotations

import tempfile
from pathlib import Path


def evaluate_model_file(
    model_path: str | Path, data_dir: str | Path, progress: bool = True, limit: int | None = None
):
    """PQ of a model file over a COCO panoptic dataset, through ``maskconver-eval``'s model path."""
    from maskconver.runtime.eval_cli import _eval_model, build_parser

    argv = [str(model_path), "--data", str(data_dir)] + ([] if progress else ["--quiet"])
    if limit:
        argv += ["--limit", str(limit)]
    result, _ = _eval_model(build_parser().parse_args(argv))
    return result


def _score(result) -> dict:
    d = result.to_dict()
    out = {}
    for key in ("All", "Things", "Stuff"):
        v = d.get(key) or d.get(key.lower()) or {}
        out[key.lower()] = {k: float(v[k]) * 100 for k in ("pq", "sq", "rq") if k in v}
    out.update(out["all"])
    return out


def pq_float_vs_quantized(checkpoint, config, size, quantized_path: Path, val_dir, progress=True):
    """``{"float": {...}, "quantized": {...}, "drop": PQ points}`` on ``val_dir`` (PQ in percent)."""
    from maskconver.converter.convert import log, model_info_for
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.converter.tflite_export import convert_tflite
    from maskconver.converter.tflite_metadata import populate_metadata
    from maskconver.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, config, input_size=size)
    fp32 = convert_tflite(build_inference_fn(model), size, "fp32")
    info = model_info_for(model.config, size, {"quantization": "fp32", "purpose": "PQ reference"})
    with tempfile.TemporaryDirectory(prefix="maskconver-pq-") as td:
        float_path = Path(td) / "float_reference.tflite"
        float_path.write_bytes(populate_metadata(fp32, info, model.mask_head_arrays(), info.labels()))
        log(f"PQ of the float model on {val_dir}", progress)
        f = _score(evaluate_model_file(float_path, val_dir, progress))
    log(f"PQ of the converted model on {val_dir}", progress)
    q = _score(evaluate_model_file(quantized_path, val_dir, progress))
    log(f"PQ float {f['pq']:.2f} -> converted {q['pq']:.2f} (drop {f['pq'] - q['pq']:.2f})", progress)
    return {"float": f, "quantized": q, "drop": f["pq"] - q["pq"]}
