"""The exported inference graph: image -> (heatmap, center_embeddings, mask_features), conv-family ops only.

The graph is derived from the trained Keras model by walking its layers, with three deployment rewrites:

* batch norm folded into the preceding convolution (weights and bias), ReLU applied right after;
* normalisation inside the graph: raw RGB pixels in, ``(x - mean) / std`` as a 1x1 depthwise convolution with bias;
* **depthwise lowering**: a ``k x k`` depthwise convolution with more than 25 taps (the heads' 7x7, 49 taps) is
  rewritten exactly as a sum of row bands of at most 25 taps (3x7 + 3x7 + 1x7) over one PAD and one slice per band.
  XNNPACK has no depthwise kernel above 25 taps (its per-channel int8 multipass path is not implemented), so an int8
  7x7 depthwise conv falls back to a grouped GEMM at ~3 GMAC/s; the bands run on the fast unipass kernels
  (``shared/reference/int8-cpu-performance.md``). The sum is exact in real arithmetic (float rounding ~1e-6).
  The band holding the kernel's centre row is summed last (7x7: rows 0-2, 4-6, then 3).

**int8 balancing of the lowering.** Full-int8 TFLite requantises every band and partial sum to int8 with one
per-tensor range, and they are signed (no ReLU yet), so the lowered model loses SQNR against the unlowered one.
``convert`` measures each band's per-channel range on the calibration images
(``calibration.lowered_depthwise_ranges``) and applies two exact per-channel rewrites (:func:`balanced_rewrites`):

* the bias is split over the bands so that every band but the last is centred (the total bias is unchanged);
* where the conv feeds a plain ReLU and then a single 1x1 conv (:func:`equalisable_depthwise`, true for the heads),
  its output channel ``c`` is multiplied by ``s_c > 0`` (kernel and bias) and the 1x1 conv's input channel ``c``
  divided by ``s_c``; ``relu(s y) = s relu(y)`` keeps it exact. ``s_c`` equalises the channels' widest ranges.

On the demo model this wins back about half of the lowering's int8 loss (not all: the three bands and the partial
sum are four extra int8 roundings that no exact rewrite removes). The unlowered graph gains nothing from the
channel scale, so it is applied with the lowering only. The bands and partial sums are named
(:func:`lowering_op_name`) so that, after conversion, :mod:`maskconver.converter.range_refine` can give exactly
those tensors int8 ranges fitted to their values, which wins back most of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from maskconver.runtime.model_info import MEAN_RGB, OUTPUT_NAMES, STD_RGB

MAX_FAST_DEPTHWISE_TAPS = 25


@dataclass
class _Pending:
    """A linear conv whose batch norm may still be folded into it."""

    kind: str  # "conv" or "dw"
    name: str  # the Keras layer name
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
    """Row bands ``[(r0, r1), ...]`` of at most ``max_taps`` taps covering ``kernel_h`` rows, in summation order.

    Full bands of ``max_taps // kernel_w`` rows with the short one in the middle; the band holding the kernel's
    centre row (the largest weights) is summed last, so the int8 partial sum before it stays narrow.
    7x7 -> ``[(0, 3), (4, 7), (3, 4)]``.
    """
    rows = max(1, max_taps // kernel_w)
    if kernel_w > max_taps:
        raise ValueError(
            f"a {kernel_h}x{kernel_w} depthwise kernel cannot be lowered to <= {max_taps}-tap row bands"
        )
    n = -(-kernel_h // rows)
    sizes = [rows] * n
    sizes[n // 2] = kernel_h - rows * (n - 1)
    ends = np.cumsum(sizes).tolist()
    bands = [(int(e - z), int(e)) for e, z in zip(ends, sizes, strict=True)]
    centre = next(i for i, (r0, r1) in enumerate(bands) if r0 <= (kernel_h - 1) // 2 < r1)
    return bands[:centre] + bands[centre + 1 :] + [bands[centre]]


def lowered_depthwise_bands(
    x, kernel: np.ndarray, bands: list[tuple[int, int]], layer: str | None = None
) -> list:
    """The per-band outputs (no bias) of a SAME stride-1 depthwise conv: PAD, slice, VALID depthwise conv.

    x ``[1,H,W,C]``, kernel ``[kh,kw,C,1]`` -> one ``[1,H,W,C]`` tensor per band; their sum is the conv. With
    ``layer`` each conv is named after its band (:func:`lowering_op_name` + ``"_conv"``).
    """
    import tensorflow as tf

    kh, kw = kernel.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    h = x.shape[1]
    xp = tf.pad(x, [[0, 0], [ph, kh - 1 - ph], [pw, kw - 1 - pw], [0, 0]])
    return [
        tf.nn.depthwise_conv2d(
            xp[:, r0 : r1 - 1 + h, :, :],
            kernel[r0:r1],
            [1, 1, 1, 1],
            "VALID",
            name=f"{lowering_op_name(layer, 'band', i)}_conv" if layer else None,
        )
        for i, (r0, r1) in enumerate(bands)
    ]


def lowering_op_name(layer: str, kind: str, i: int) -> str:
    """The graph name of a lowered conv's band ``i`` (``kind="band"``) or partial sum of bands ``0..i`` ("sum").

    The TFLite tensors keep it (before the first ``;`` of a fused op's name), so the int8 ranges of exactly these
    tensors can be refined after conversion (:mod:`maskconver.converter.range_refine`).
    """
    return f"mclowered_{layer}_{kind}{i}"


def lowered_depthwise(
    x, kernel: np.ndarray, band_bias: np.ndarray, bands: list[tuple[int, int]], layer: str | None = None
):
    """SAME stride-1 depthwise conv as PAD + per-band slice + VALID depthwise conv with bias, summed in order.

    x ``[1,H,W,C]``, kernel ``[kh,kw,C,1]``, band_bias ``[len(bands),C]`` (its column sums are the conv's bias)
    -> ``[1,H,W,C]``. With ``layer`` the bands and partial sums are named by :func:`lowering_op_name`.
    """
    import tensorflow as tf

    out = None
    for i, (y, b) in enumerate(zip(lowered_depthwise_bands(x, kernel, bands, layer), band_bias, strict=True)):
        y = tf.nn.bias_add(y, b, name=lowering_op_name(layer, "band", i) if layer else None)
        out = y if out is None else tf.add(out, y, name=lowering_op_name(layer, "sum", i) if layer else None)
    return out


@dataclass(frozen=True)
class DepthwiseRewrite:
    """Exact per-channel changes to one depthwise conv (BN folded) with ``C`` channels; float outputs unchanged.

    ``scale`` ``[C]`` > 0 multiplies the conv's output (kernel and bias) and divides the input channels of the
    single 1x1 conv that consumes it through a ReLU (``relu(s*y) = s*relu(y)`` for ``s > 0``).
    ``band_offsets`` ``[n_bands,C]``, each column summing to 0, is added to the lowered bands' biases (in
    units before ``scale``); by default band 0 carries the whole bias.
    """

    scale: np.ndarray | None = None
    band_offsets: np.ndarray | None = None


@dataclass
class BandRanges:
    """Per-channel ranges of a lowered depthwise conv's bias-free bands (summation order) over calibration images.

    ``lo``/``hi`` ``[n_bands,C]``: band ``i``; ``partial_lo``/``partial_hi`` ``[n_bands,C]``: bands ``0..i``
    summed (the last row is the whole conv without bias); ``bias`` ``[C]``: the folded bias.
    """

    lo: np.ndarray
    hi: np.ndarray
    partial_lo: np.ndarray
    partial_hi: np.ndarray
    bias: np.ndarray
    samples: list[np.ndarray] = field(default_factory=list)  # per image: bands at some pixels [n_bands,P,C]

    def update(self, bands: list[np.ndarray], sample_pixels: np.ndarray | None = None) -> None:
        """Widen the ranges by one image's bands (each ``[..., C]``); keep the bands at ``sample_pixels``.

        ``sample_pixels`` ``[P]``: indices into the bands' flattened pixels (all channels of each are kept).
        """
        if sample_pixels is not None:
            c = bands[0].shape[-1]
            self.samples.append(np.stack([y.reshape(-1, c)[sample_pixels] for y in bands]).astype(np.float32))
        acc = np.zeros_like(bands[0])
        for i, y in enumerate(bands):
            acc = acc + y
            flat, part = y.reshape(-1, y.shape[-1]), acc.reshape(-1, y.shape[-1])
            self.lo[i] = np.minimum(self.lo[i], flat.min(0))
            self.hi[i] = np.maximum(self.hi[i], flat.max(0))
            self.partial_lo[i] = np.minimum(self.partial_lo[i], part.min(0))
            self.partial_hi[i] = np.maximum(self.partial_hi[i], part.max(0))

    @classmethod
    def empty(cls, n_bands: int, bias: np.ndarray) -> BandRanges:
        c = len(bias)
        inf = np.full((n_bands, c), np.inf)
        return cls(inf.copy(), -inf, inf.copy(), -inf, np.asarray(bias, np.float64))


def balanced_rewrite(r: BandRanges, share: float = 0.25, max_scale: float = 16.0) -> DepthwiseRewrite:
    """Bias split and channel scale that narrow the int8 ranges of a lowered conv's bands and partial sums.

    Bias: band ``i`` (all but the last) is centred per channel at ``share * m``, ``m`` the centre of the whole
    pre-activation range; the last band carries the rest, so the total bias is unchanged. Scale: each channel's
    widest range (any band, partial sum or ReLU output) is stretched towards the widest channel's, at most by
    ``max_scale`` (a channel idle on the calibration images must not clip when it wakes up).
    """
    n, c = r.lo.shape
    centre = (r.partial_lo[-1] + r.partial_hi[-1]) / 2 + r.bias
    beta = -(r.lo + r.hi) / 2 + share * centre
    beta[-1] = r.bias - beta[:-1].sum(0)
    default = np.zeros((n, c))
    default[0] = r.bias
    widths = np.concatenate(
        [r.hi - r.lo, (r.partial_hi - r.partial_lo)[1:-1], np.maximum(r.partial_hi[-1:] + r.bias, 0.0)]
    ).max(0)
    widths = np.maximum(widths, widths.max() / max_scale)
    scale = widths.max() / widths if widths.max() > 0 else np.ones(c)
    return DepthwiseRewrite(scale=scale.astype(np.float32), band_offsets=(beta - default).astype(np.float32))


def balanced_rewrites(
    ranges: dict[str, BandRanges], equalisable: dict[str, str], share: float = 0.25, max_scale: float = 16.0
) -> dict[str, DepthwiseRewrite]:
    """:func:`balanced_rewrite` for every lowered conv; the scale only where :func:`equalisable_depthwise` allows."""
    out = {}
    for name, r in ranges.items():
        rw = balanced_rewrite(r, share, max_scale)
        out[name] = rw if name in equalisable else DepthwiseRewrite(band_offsets=rw.band_offsets)
    return out


def _lowerable(p: _Pending, kernel: np.ndarray) -> bool:
    taps = kernel.shape[0] * kernel.shape[1]
    return (
        p.kind == "dw"
        and kernel.shape[3] == 1  # depth multiplier 1 (the MaskConver heads); others run unlowered
        and taps > MAX_FAST_DEPTHWISE_TAPS
        and p.strides == 1
        and p.dilation == 1
        and p.padding == "same"
    )


def _apply(
    p: _Pending,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    lower: bool,
    rewrites: dict[str, DepthwiseRewrite],
    probes: dict[str, object] | None,
):
    import tensorflow as tf

    if p.kind == "conv":
        y = tf.nn.conv2d(p.x, kernel, p.strides, p.padding.upper(), dilations=p.dilation)
        return y if bias is None else tf.nn.bias_add(y, bias)
    rw = rewrites.get(p.name, DepthwiseRewrite())
    c = kernel.shape[2] * kernel.shape[3]  # output channels (depth multiplier > 1: never rewritten)
    b = np.zeros(c, np.float32) if bias is None else bias
    s = np.ones(c, np.float32) if rw.scale is None else np.asarray(rw.scale, np.float32)
    if rw.scale is not None:
        kernel = (kernel * s[None, None, :, None]).astype(np.float32)
    if lower and _lowerable(p, kernel):
        bands = depthwise_bands(*kernel.shape[:2])
        band_bias = np.zeros((len(bands), c), np.float32)
        band_bias[0] = b
        if rw.band_offsets is not None:
            band_bias += rw.band_offsets
        if probes is not None:
            for i, y in enumerate(lowered_depthwise_bands(p.x, kernel, bands)):
                probes[f"{p.name}/band{i}"] = y
            probes[f"{p.name}/bias"] = tf.constant(b)
        return lowered_depthwise(p.x, kernel, (band_bias * s).astype(np.float32), bands, layer=p.name)
    y = tf.nn.depthwise_conv2d(
        p.x, kernel, [1, p.strides, p.strides, 1], p.padding.upper(), dilations=[p.dilation, p.dilation]
    )
    if bias is None and rw.scale is None:
        return y
    return tf.nn.bias_add(y, (b * s).astype(np.float32))


def equalisable_depthwise(model) -> dict[str, str]:
    """Depthwise layers whose output may be rescaled per channel: DW -> [BN] -> ReLU -> one 1x1 conv.

    Every link must be the only consumer of the previous one, the ReLU a plain one (no cap, slope or threshold),
    and the conv 1x1, stride 1, undilated. Returns ``{depthwise layer name: 1x1 conv layer name}``.
    """
    import keras

    dense = model.dense
    consumers: dict[str, list] = {}
    for layer in dense.operations:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                producer = t._keras_history.operation
                consumers.setdefault(producer.name, []).append(layer)
    output_producers = {t._keras_history.operation.name for t in dense.outputs}

    def only_consumer(layer):
        nxt = consumers.get(layer.name, [])
        return nxt[0] if len(nxt) == 1 and layer.name not in output_producers else None

    out = {}
    for layer in dense.operations:
        if not isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        nxt = only_consumer(layer)
        if isinstance(nxt, keras.layers.BatchNormalization):
            nxt = only_consumer(nxt)
        if not (
            isinstance(nxt, keras.layers.ReLU)
            and nxt.max_value is None
            and float(nxt.negative_slope) == 0.0
            and float(nxt.threshold) == 0.0
        ):
            continue
        conv = only_consumer(nxt)
        if (
            type(conv) is keras.layers.Conv2D
            and tuple(conv.kernel_size) == (1, 1)
            and tuple(conv.strides) == (1, 1)
            and tuple(conv.dilation_rate) == (1, 1)
            and conv.groups == 1
        ):
            out[layer.name] = conv.name
    return out


def build_inference_fn(
    model,
    *,
    lower_depthwise: bool = True,
    raw_input: bool = True,
    taps: tuple[str, ...] = (),
    rewrites: dict[str, DepthwiseRewrite] | None = None,
    probe_bands: bool = False,
):
    """A function ``image [1,H,W,3] -> {heatmap, center_embeddings, mask_features}`` using folded weights.

    ``raw_input``: the image is raw RGB pixel values (0..255, any float or uint8 dtype); normalisation runs
    inside the graph. Otherwise the image is already normalised. ``rewrites``: exact per-channel changes of
    depthwise layers by name (see :class:`DepthwiseRewrite`). ``probe_bands``: also output every lowered
    depthwise conv's bias-free bands as ``"{layer}/band{i}"`` (for calibration statistics).
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
    rewrites = dict(rewrites or {})
    pairs = equalisable_depthwise(model) if any(r.scale is not None for r in rewrites.values()) else {}
    input_scale: dict[str, np.ndarray] = {}
    for name, rw in rewrites.items():
        if rw.scale is None:
            continue
        if name not in pairs:
            raise ValueError(f"depthwise layer {name} is not followed by ReLU and a single 1x1 conv")
        if not np.all(np.asarray(rw.scale) > 0):
            raise ValueError(f"the scale of {name} must be positive")
        input_scale[pairs[name]] = np.asarray(rw.scale, np.float32)

    def fn(image):
        x = tf.cast(image, tf.float32)
        if raw_input:
            # (x - mean) / std as a 1x1 depthwise conv with bias: a conv-family op every delegate runs.
            k = (1.0 / std).reshape(1, 1, 3, 1).astype(np.float32)
            x = tf.nn.bias_add(tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "VALID"), -mean / std)
        values: dict[int, object] = {}
        probes: dict[str, object] | None = {} if probe_bands else None

        def get(t):
            v = values[id(t)]
            if isinstance(v, _Pending):
                v = _apply(v, v.kernel, v.bias, lower_depthwise, rewrites, probes)
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
                kernel = w["kernel"]
                if layer.name in input_scale:
                    kernel = (kernel / input_scale[layer.name][None, None, :, None]).astype(np.float32)
                values[id(out_t)] = _Pending(
                    "dw" if dw else "conv",
                    layer.name,
                    get(ins[0]),
                    kernel,
                    w["bias"],
                    layer.strides[0],
                    layer.dilation_rate[0],
                    layer.padding,
                )
            elif isinstance(layer, keras.layers.BatchNormalization):
                p, bn = values[id(ins[0])], params[layer.name]
                if isinstance(p, _Pending):
                    k, b = fold_batch_norm(p.kernel, p.bias, bn, p.kind == "dw")
                    values[id(out_t)] = _apply(p, k, b, lower_depthwise, rewrites, probes)
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
        result = {k: outputs[k] for k in (*OUTPUT_NAMES, *taps)}
        if probes is not None:
            result.update(probes)
        return result

    return fn
