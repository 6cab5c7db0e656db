"""The exported inference graph: image -> (heatmap, center_embeddings, mask_features), conv-family ops only.

The graph is derived from the trained Keras model by walking its layers, with three deployment rewrites:

* batch norm folded into the preceding convolution (weights and bias), ReLU applied right after;
* normalisation inside the graph: raw RGB pixels in, ``(x - mean) / std`` as a 1x1 depthwise convolution with bias;
* **depthwise lowering**: a ``k x k`` depthwise convolution with more than 25 taps (the heads' 7x7, 49 taps) is
  rewritten exactly as a sum of row bands of at most 25 taps (3x7 + 3x7 + 1x7) over one PAD and one slice per band.
  XNNPACK has no depthwise kernel above 25 taps (its per-channel int8 multipass path is not implemented), so an int8
  7x7 depthwise conv falls back to a grouped GEMM at ~3 GMAC/s; the bands run on the fast unipass kernels
  (``shared/reference/int8-cpu-performance.md``). The sum is exact in real arithmetic (float rounding ~1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from maskconver.runtime.model_info import MEAN_RGB, OUTPUT_NAMES, STD_RGB

MAX_FAST_DEPTHWISE_TAPS = 25


@dataclass
class _Pending:
    """A linear conv whose batch norm may still be folded into it."""

    kind: str  # "conv" or "dw"
    x: object  # tf tensor input
    kernel: np.ndarray
    bias: np.ndarray | None
    strides: int
    dilation: int
    padding: str


def bn_arrays(bn) -> dict[str, np.ndarray]:
    """A Keras BatchNormalization layer's inference parameters as NumPy (``gamma, beta, mean, var, eps``)."""
    return {
        "gamma": bn.gamma.numpy(),
        "beta": bn.beta.numpy(),
        "mean": bn.moving_mean.numpy(),
        "var": bn.moving_variance.numpy(),
        "eps": np.float32(bn.epsilon),
    }


def fold_batch_norm(kernel: np.ndarray, bias: np.ndarray | None, bn: dict[str, np.ndarray], depthwise: bool):
    """Fold inference BN into a conv. kernel ``[kh,kw,Cin,Cout]`` (or ``[kh,kw,C,1]``) -> (kernel', bias')."""
    gamma, beta, mean = bn["gamma"], bn["beta"], bn["mean"]
    scale = gamma / np.sqrt(bn["var"] + bn["eps"])
    k = kernel * (scale[None, None, :, None] if depthwise else scale[None, None, None, :])
    b = beta - mean * scale + (0.0 if bias is None else bias * scale)
    return k.astype(np.float32), b.astype(np.float32)


def depthwise_bands(
    kernel_h: int, kernel_w: int, max_taps: int = MAX_FAST_DEPTHWISE_TAPS
) -> list[tuple[int, int]]:
    """Row bands ``[(r0, r1), ...]`` covering ``kernel_h`` rows with at most ``max_taps`` taps each."""
    rows = max(1, max_taps // kernel_w)
    if kernel_w > max_taps:
        raise ValueError(
            f"a {kernel_h}x{kernel_w} depthwise kernel cannot be lowered to <= {max_taps}-tap row bands"
        )
    return [(r, min(r + rows, kernel_h)) for r in range(0, kernel_h, rows)]


def lowered_depthwise(x, kernel: np.ndarray, bias: np.ndarray, bands: list[tuple[int, int]]):
    """SAME stride-1 depthwise conv as PAD + per-band slice + VALID depthwise conv, summed.

    x ``[1,H,W,C]``, kernel ``[kh,kw,C,1]``, bias ``[C]`` -> ``[1,H,W,C]``.
    """
    import tensorflow as tf

    kh, kw = kernel.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    h = x.shape[1]
    xp = tf.pad(x, [[0, 0], [ph, kh - 1 - ph], [pw, kw - 1 - pw], [0, 0]])
    out = None
    for i, (r0, r1) in enumerate(bands):
        band = xp[:, r0 : r0 + h + (r1 - r0) - 1, :, :]
        y = tf.nn.depthwise_conv2d(band, kernel[r0:r1], [1, 1, 1, 1], "VALID")
        if i == 0:
            y = tf.nn.bias_add(y, bias)
        out = y if out is None else out + y
    return out


def _apply(p: _Pending, kernel: np.ndarray, bias: np.ndarray | None, lower: bool):
    import tensorflow as tf

    if p.kind == "conv":
        y = tf.nn.conv2d(p.x, kernel, p.strides, p.padding.upper(), dilations=p.dilation)
    else:
        taps = kernel.shape[0] * kernel.shape[1]
        if (
            lower
            and taps > MAX_FAST_DEPTHWISE_TAPS
            and p.strides == 1
            and p.dilation == 1
            and p.padding == "same"
        ):
            b = np.zeros(kernel.shape[2], np.float32) if bias is None else bias
            return lowered_depthwise(p.x, kernel, b, depthwise_bands(*kernel.shape[:2]))
        y = tf.nn.depthwise_conv2d(
            p.x, kernel, [1, p.strides, p.strides, 1], p.padding.upper(), dilations=[p.dilation, p.dilation]
        )
    return y if bias is None else tf.nn.bias_add(y, bias)


def build_inference_fn(
    model, *, lower_depthwise: bool = True, raw_input: bool = True, taps: tuple[str, ...] = ()
):
    """A function ``image [1,H,W,3] -> {heatmap, center_embeddings, mask_features}`` using folded weights.

    ``raw_input``: the image is raw RGB pixel values (0..255, any float or uint8 dtype); normalisation runs
    inside the graph. Otherwise the image is already normalised.
    """
    import keras
    import tensorflow as tf

    dense = model.dense
    # Snapshot every weight as NumPy now: the traced function below must not touch variables.
    params: dict[str, dict] = {}
    for layer in dense.operations:
        if isinstance(layer, keras.layers.DepthwiseConv2D | keras.layers.Conv2D):
            params[layer.name] = {
                "kernel": layer.kernel.numpy(),
                "bias": layer.bias.numpy() if layer.use_bias else None,
            }
        elif isinstance(layer, keras.layers.BatchNormalization):
            params[layer.name] = bn_arrays(layer)
    mean = np.asarray(MEAN_RGB, np.float32)
    std = np.asarray(STD_RGB, np.float32)

    def fn(image):
        x = tf.cast(image, tf.float32)
        if raw_input:
            # (x - mean) / std as a 1x1 depthwise conv with bias: a conv-family op every delegate runs.
            k = (1.0 / std).reshape(1, 1, 3, 1).astype(np.float32)
            x = tf.nn.bias_add(tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "VALID"), -mean / std)
        values: dict[int, object] = {}

        def get(t):
            v = values[id(t)]
            if isinstance(v, _Pending):
                v = _apply(v, v.kernel, v.bias, lower_depthwise)
                values[id(t)] = v
            return v

        outputs = {}
        for layer in dense.operations:
            node = layer._inbound_nodes[0]
            out_t = node.output_tensors[0]
            if isinstance(layer, keras.layers.InputLayer):
                values[id(out_t)] = x
                continue
            ins = node.input_tensors
            if isinstance(layer, keras.layers.DepthwiseConv2D | keras.layers.Conv2D):
                dw = isinstance(layer, keras.layers.DepthwiseConv2D)
                w = params[layer.name]
                values[id(out_t)] = _Pending(
                    "dw" if dw else "conv",
                    get(ins[0]),
                    w["kernel"],
                    w["bias"],
                    layer.strides[0],
                    layer.dilation_rate[0],
                    layer.padding,
                )
            elif isinstance(layer, keras.layers.BatchNormalization):
                p, bn = values[id(ins[0])], params[layer.name]
                if isinstance(p, _Pending):
                    k, b = fold_batch_norm(p.kernel, p.bias, bn, p.kind == "dw")
                    values[id(out_t)] = _apply(p, k, b, lower_depthwise)
                else:
                    scale = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
                    values[id(out_t)] = p * scale + (bn["beta"] - bn["mean"] * scale)
            elif isinstance(layer, keras.layers.ReLU):
                values[id(out_t)] = tf.nn.relu(get(ins[0]))
            elif isinstance(layer, keras.layers.Add):
                acc = get(ins[0])
                for t in ins[1:]:
                    acc = acc + get(t)
                values[id(out_t)] = acc
            elif isinstance(layer, keras.layers.Concatenate):
                values[id(out_t)] = tf.concat([get(t) for t in ins], axis=-1)
            elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
                values[id(out_t)] = tf.reduce_mean(get(ins[0]), axis=[1, 2], keepdims=True)
            elif type(layer).__name__ == "BilinearResize":
                values[id(out_t)] = tf.image.resize(
                    get(ins[0]), [layer.height, layer.width], method="bilinear"
                )
            elif isinstance(layer, keras.layers.Identity):
                values[id(out_t)] = get(ins[0])
                if layer.name in OUTPUT_NAMES:
                    outputs[layer.name] = values[id(out_t)]
            else:
                raise NotImplementedError(f"cannot export layer {layer.name} of type {type(layer).__name__}")
            if layer.name in taps:
                outputs[layer.name] = get(out_t)
        missing = set(OUTPUT_NAMES) - set(outputs)
        if missing:
            raise RuntimeError(f"the model lacks outputs {sorted(missing)}")
        return {k: outputs[k] for k in (*OUTPUT_NAMES, *taps)}

    return fn
