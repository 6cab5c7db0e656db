"""``maskconver-summary CONFIG``: parameters, multiply-adds per part and output shapes of a config."""

from __future__ import annotations

import argparse
import json
import sys

PAPER = {"mobilenet_mh_256": (3.4e6, 1.5e9), "mobilenet_mh_640": (3.4e6, 9.58e9)}


def _part(layer_name: str) -> str:
    if layer_name.startswith("b") and layer_name[1:2].isdigit():
        return "backbone"
    if layer_name.startswith("aspp"):
        return "decoder (ASPP)"
    for head in ("class_head", "embedding_head", "per_pixel_embeddings_head"):
        if layer_name.startswith(head):
            return head
    return "other"


def model_summary(config, input_size=None) -> dict:
    """Trainable parameters and multiply-adds of the exported graph, per part, plus the mask head after top-K."""
    import keras
    from maskconver.models.architecture import build_model

    model = build_model(config, input_size=input_size)
    macs: dict[str, int] = {}
    params: dict[str, int] = {}
    for layer in model.dense.operations:
        part = _part(layer.name)
        params[part] = params.get(part, 0) + sum(int(w.numpy().size) for w in layer.trainable_weights)
        if isinstance(layer, keras.layers.DepthwiseConv2D | keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            per_pixel = kh * kw * cin * (1 if isinstance(layer, keras.layers.DepthwiseConv2D) else cout)
            macs[part] = macs.get(part, 0) + int(out[1] * out[2] * per_pixel)
    d, k = config.embedding_size, config.num_instances
    params["mask head (class embeddings + MLP)"] = sum(
        int(v.numpy().size)
        for n, v in model.variables_by_name().items()
        if n.startswith(("mlp/", "class_embeddings/"))
    )
    h8, w8 = model.dense.output["mask_features"].shape[1:3]
    mask_head_macs = k * 2 * d * d + h8 * w8 * k * d
    total_params = sum(params.values())
    total_macs = sum(macs.values())
    return {
        "config": config.name,
        "input_size": list(input_size or config.input_size),
        "params": params,
        "total_params": total_params,
        "macs": macs,
        "total_macs": total_macs,
        "mask_head_macs_after_topk": mask_head_macs,
        "outputs": {name: list(t.shape) for name, t in model.dense.output.items()},
        "paper": dict(zip(("params", "macs"), PAPER[config.name], strict=True))
        if config.name in PAPER
        else None,
    }


def format_summary(s: dict) -> str:
    lines = [f"MaskConver {s['config']} at {s['input_size'][0]}x{s['input_size'][1]}", ""]
    lines.append(f"{'part':40s} {'params':>12s} {'MACs':>16s}")
    for part in sorted(set(s["params"]) | set(s["macs"])):
        if not s["params"].get(part) and not s["macs"].get(part):
            continue
        lines.append(f"{part:40s} {s['params'].get(part, 0):>12,d} {s['macs'].get(part, 0):>16,d}")
    lines.append(f"{'total':40s} {s['total_params']:>12,d} {s['total_macs']:>16,d}")
    lines.append(
        f"{'mask head after top-K (MLP + mask product)':40s} {'':>12s} {s['mask_head_macs_after_topk']:>16,d}"
    )
    if s["paper"]:
        p = s["paper"]
        lines.append(
            f"paper: {p['params'] / 1e6:.1f}M params ({100 * (s['total_params'] / p['params'] - 1):+.1f}%), "
            f"{p['macs'] / 1e9:.2f}B MACs ({100 * (s['total_macs'] / p['macs'] - 1):+.1f}%)"
        )
    lines.append("outputs: " + ", ".join(f"{k} {v}" for k, v in s["outputs"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="maskconver-summary",
        description="Parameters, multiply-adds and output shapes of a MaskConver config, per part (backbone, "
        "decoder, heads), next to the paper's numbers.",
    )
    p.add_argument("config", help="mobilenet_mh_256 | mobilenet_mh_640 | nano | a Model Garden YAML")
    p.add_argument("--input-size", type=int, help="square input size (a positive multiple of 16)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    if args.input_size is not None and (args.input_size <= 0 or args.input_size % 16):
        p.error(f"--input-size must be a positive multiple of 16 (e.g. 256 or 640), got {args.input_size}")
    from maskconver.models.config import ConfigError, get_config

    try:
        cfg = get_config(args.config)
        s = model_summary(cfg, (args.input_size, args.input_size) if args.input_size else None)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
