"""The MaskConver mobile architecture (MobileNetMultiAVGSeg + ASPP + three sum-to-merge heads) in Keras 3.

``build_model(config)`` returns a :class:`MaskConverModel`: ``model.dense`` is the functional Keras model from a
normalised float image ``[1,H,W,3]`` to ``{"heatmap", "center_embeddings", "mask_features"}`` (all at stride 8),
and ``model.class_embeddings`` / ``model.mlp_*`` are the mask-embedding generator that runs after top-K.
Every variable is registered under its canonical name: the Model Garden checkpoint key without the ``model/``
prefix and the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix (see ``shared/reference/modelgarden-maskconver.md`` 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from maskconver.models.config import MaskConverConfig

# (block_fn, kernel, nominal stride, expand ratio, filters); block 17 is the 448-channel 1x1 conv.
MNV_MULTI_AVG_SEG_BLOCKS: tuple[tuple[str, int, int, int, int], ...] = (
    ("convbn", 3, 2, 0, 32),
    ("ib", 3, 2, 3, 32),
    ("ib", 3, 1, 2, 32),
    ("ib", 5, 2, 5, 64),
    ("ib", 3, 1, 3, 64),
    ("ib", 3, 1, 2, 64),
    ("ib", 3, 1, 3, 64),  # endpoint '3' (stride 8): the heads' low-level feature
    ("ib", 5, 2, 6, 128),
    ("ib", 3, 1, 3, 128),
    ("ib", 3, 1, 3, 128),
    ("ib", 3, 1, 3, 128),
    ("ib", 3, 1, 6, 160),
    ("ib", 3, 1, 4, 160),
    ("ib", 3, 2, 6, 192),  # stride 2 -> 1 at output stride 16, dilation 2
    ("ib", 5, 1, 2, 96),
    ("ib", 5, 1, 4, 96),
    ("ib", 5, 1, 4, 96),
    ("convbn", 1, 1, 0, 448),  # endpoint '4' (stride 16), fed to ASPP
)
LOW_LEVEL_BLOCK = 6
HEAD_NAMES = {
    "heatmap": "class_head",
    "center_embeddings": "embedding_head",
    "mask_features": "per_pixel_embeddings_head",
}
BN_ATTRS = ("gamma", "beta", "moving_mean", "moving_variance")


# mask_head.npz array name -> canonical weight name
MASK_HEAD_WEIGHTS = {
    "class_embeddings": "class_embeddings/embeddings",
    "mlp_dense0_kernel": "mlp/dense/0/kernel",
    "mlp_dense0_bias": "mlp/dense/0/bias",
    "mlp_norm_gamma": "mlp/norms/0/gamma",
    "mlp_norm_beta": "mlp/norms/0/beta",
    "mlp_dense1_kernel": "mlp/dense/1/kernel",
    "mlp_dense1_bias": "mlp/dense/1/bias",
}


def mask_head_from_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``mask_head.npz`` arrays from canonically named weights (a model's or a checkpoint's)."""
    return {k: np.asarray(weights[v], dtype=np.float32) for k, v in MASK_HEAD_WEIGHTS.items()}


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: nearest multiple of ``divisor``, never more than 10% below ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def bilinear_resize_layer(height: int, width: int, name: str):
    """A bilinear resize (TF2 semantics: half-pixel centres, no antialias) to a static size.

    Keras 3's ``Resizing`` preprocessing layer is not used: inside a functional model it switches the layers after
    it into training mode (batch statistics in BatchNormalization), which silently breaks inference.
    """
    import keras

    class BilinearResize(keras.layers.Layer):
        def __init__(self, height: int, width: int, **kw):
            super().__init__(**kw)
            self.height, self.width = int(height), int(width)

        def call(self, x):
            return keras.ops.image.resize(
                x, (self.height, self.width), interpolation="bilinear", antialias=False
            )

        def compute_output_shape(self, shape):
            return (shape[0], self.height, self.width, shape[-1])

    return BilinearResize(height, width, name=name)


@dataclass
class WeightSlot:
    layer: object
    attr: str


class MaskConverModel:
    """Container of the dense Keras graph and the mask-embedding generator, with canonical weight names."""

    def __init__(
        self, config: MaskConverConfig, dense, class_embeddings, mlp_layers, slots: dict[str, WeightSlot]
    ):
        self.config = config
        self.dense = dense
        self.class_embeddings = class_embeddings
        self.mlp_dense0, self.mlp_norm, self.mlp_dense1 = mlp_layers
        self._slots = slots

    def __call__(self, images, training: bool = False):
        return self.dense(images, training=training)

    def variables_by_name(self) -> dict[str, object]:
        """Canonical name -> Keras variable, for every weight of the model."""
        return {k: getattr(s.layer, s.attr) for k, s in self._slots.items()}

    def get_weights_dict(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.numpy()) for k, v in self.variables_by_name().items()}

    def set_weights_dict(self, weights: dict[str, np.ndarray]) -> None:
        """Assign every variable; ``weights`` must be complete and well-shaped (see checkpoint.load_checkpoint)."""
        for k, var in self.variables_by_name().items():
            var.assign(np.asarray(weights[k], dtype=np.float32))

    @property
    def trainable_variables(self) -> list:
        return [v for v in self.variables_by_name().values() if v.trainable]

    def mask_head_arrays(self) -> dict[str, np.ndarray]:
        """The float32 arrays of ``mask_head.npz`` (model-file.md)."""
        return mask_head_from_weights(self.get_weights_dict())

    def mask_embeddings(self, center_embeddings, classes):
        """``[B,K,D]`` gathered centre embeddings and ``[B,K]`` classes -> ``[B,K,D]`` (product, then MLP)."""
        import tensorflow as tf

        x = center_embeddings * self.class_embeddings(tf.maximum(classes, 0))
        x = tf.nn.relu(self.mlp_norm(self.mlp_dense0(x)))
        return self.mlp_dense1(x)


def build_model(
    config: MaskConverConfig, input_size: tuple[int, int] | None = None, seed: int = 0
) -> MaskConverModel:
    """Build MaskConver for ``config`` (optionally at another static ``input_size``)."""
    import keras
    from keras import layers

    config.validate()
    keras.utils.set_random_seed(seed)
    h, w = input_size or config.input_size
    if h % 16 or w % 16:
        raise ValueError(f"input size {(h, w)} must be multiples of 16")
    slots: dict[str, WeightSlot] = {}
    eps, mom = config.bn_epsilon, config.bn_momentum

    def bn(prefix: str, name: str):
        layer = layers.BatchNormalization(epsilon=eps, momentum=mom, name=name)
        for a in BN_ATTRS:
            slots[f"{prefix}/{a}"] = WeightSlot(layer, a)
        return layer

    def conv(prefix: str, name: str, filters: int, k: int = 1, stride: int = 1, bias: bool = False, **kw):
        layer = layers.Conv2D(filters, k, strides=stride, padding="same", use_bias=bias, name=name, **kw)
        slots[f"{prefix}/kernel"] = WeightSlot(layer, "kernel")
        if bias:
            slots[f"{prefix}/bias"] = WeightSlot(layer, "bias")
        return layer

    def dwconv(prefix: str, name: str, k: int, stride: int = 1, dilation: int = 1, **kw):
        layer = layers.DepthwiseConv2D(
            k, strides=stride, dilation_rate=dilation, padding="same", use_bias=False, name=name, **kw
        )
        slots[f"{prefix}/depthwise_kernel"] = WeightSlot(layer, "kernel")
        return layer

    relu = layers.ReLU
    image = keras.Input((h, w, 3), batch_size=1, name="image", dtype="float32")

    # ---- backbone: MobileNetMultiAVGSeg, output stride 16 ----
    x = image
    scale = config.filter_size_scale
    current_stride, rate = 1, 1
    low_level = None
    for i, (fn, k, s, ratio, filters) in enumerate(MNV_MULTI_AVG_SEG_BLOCKS):
        if current_stride == config.output_stride:
            stride, dilation = 1, rate * s
            rate *= s
        else:
            stride, dilation = s, 1
            current_stride *= s
        out = make_divisible(filters * scale)
        p = f"backbone/layer_with_weights-{i}"
        n = f"b{i}"
        if fn == "convbn":
            x = conv(f"{p}/_conv0", f"{n}_conv", out, k, stride)(x)
            x = relu(name=f"{n}_relu")(bn(f"{p}/_norm0", f"{n}_bn")(x))
        else:
            cin = x.shape[-1]
            shortcut = x
            y = conv(f"{p}/_conv0", f"{n}_expand", make_divisible(cin * ratio))(x)
            y = relu(name=f"{n}_expand_relu")(bn(f"{p}/_norm0", f"{n}_expand_bn")(y))
            y = dwconv(f"{p}/_conv1", f"{n}_dw", k, stride, dilation)(y)
            y = relu(name=f"{n}_dw_relu")(bn(f"{p}/_norm1", f"{n}_dw_bn")(y))
            y = conv(f"{p}/_conv2", f"{n}_project", out)(y)
            y = bn(f"{p}/_norm2", f"{n}_project_bn")(y)
            x = layers.Add(name=f"{n}_add")([y, shortcut]) if stride == 1 and cin == out else y
        if i == LOW_LEVEL_BLOCK:
            low_level = x
    features = x
    h16, w16 = features.shape[1], features.shape[2]

    # ---- decoder: ASPP (depthwise, rates, image pooling) ----
    a = "decoder/aspp/aspp_layers"
    nf = config.aspp_filters
    branches = [
        relu(name="aspp0_relu")(
            bn(f"{a}/0/layer_with_weights-1", "aspp0_bn")(
                conv(f"{a}/0/layer_with_weights-0", "aspp0_conv", nf)(features)
            )
        )
    ]
    for j, r in enumerate(config.aspp_rates, start=1):
        y = dwconv(f"{a}/{j}/layer_with_weights-0", f"aspp{j}_dw", 3, dilation=r)(features)
        y = conv(f"{a}/{j}/layer_with_weights-1", f"aspp{j}_conv", nf)(y)
        branches.append(relu(name=f"aspp{j}_relu")(bn(f"{a}/{j}/layer_with_weights-2", f"aspp{j}_bn")(y)))
    jp = len(config.aspp_rates) + 1
    y = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(features)
    y = conv(f"{a}/{jp}/layer_with_weights-0/layer_with_weights-0", "aspp_pool_conv", nf)(y)
    y = relu(name="aspp_pool_relu")(
        bn(f"{a}/{jp}/layer_with_weights-0/layer_with_weights-1", "aspp_pool_bn")(y)
    )
    branches.append(bilinear_resize_layer(h16, w16, name="aspp_pool_resize")(y))
    y = layers.Concatenate(name="aspp_concat")(branches)
    y = conv("decoder/aspp/projection/layer_with_weights-0", "aspp_proj_conv", nf)(y)
    decoder = relu(name="aspp_proj_relu")(
        bn("decoder/aspp/projection/layer_with_weights-1", "aspp_proj_bn")(y)
    )

    # ---- three DeepLabv3+ sum-to-merge heads ----
    h8, w8 = low_level.shape[1], low_level.shape[2]
    if config.head_low_level_filters != nf:
        raise ValueError("head_low_level_filters must equal the ASPP filters (the heads add the two)")
    outputs = {}
    head_init = keras.initializers.HeNormal()
    for out_name, head in HEAD_NAMES.items():
        y = conv(
            f"{head}/_dlv3p_conv",
            f"{head}_dlv3p_conv",
            config.head_low_level_filters,
            kernel_initializer=head_init,
        )(low_level)
        y = relu(name=f"{head}_dlv3p_relu")(bn(f"{head}/_dlv3p_norm", f"{head}_dlv3p_bn")(y))
        x = bilinear_resize_layer(h8, w8, name=f"{head}_upsample")(decoder)
        x = layers.Add(name=f"{head}_merge")([x, y])
        for c in range(config.head_num_convs):
            x = dwconv(
                f"{head}/_convs/{2 * c}",
                f"{head}_dw{c}",
                config.head_kernel_size,
                depthwise_initializer=head_init,
            )(x)
            x = relu(name=f"{head}_dw{c}_relu")(bn(f"{head}/_norms/{2 * c}", f"{head}_dw{c}_bn")(x))
            x = conv(
                f"{head}/_convs/{2 * c + 1}",
                f"{head}_pw{c}",
                config.head_filters,
                kernel_initializer=head_init,
            )(x)
            x = relu(name=f"{head}_pw{c}_relu")(bn(f"{head}/_norms/{2 * c + 1}", f"{head}_pw{c}_bn")(x))
        cout = config.num_classes if out_name == "heatmap" else config.embedding_size
        bias_init = keras.initializers.Constant(-2.19 if out_name == "heatmap" else 0.0)
        cls = conv(
            f"{head}/_classifier",
            f"{head}_classifier",
            cout,
            bias=True,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            bias_initializer=bias_init,
        )
        outputs[out_name] = layers.Identity(name=out_name)(cls(x))
    dense = keras.Model(image, outputs, name=f"maskconver_{config.name}")

    # ---- mask-embedding generator (runs after top-K, outside the exported graph) ----
    d = config.embedding_size
    emb = layers.Embedding(config.num_classes, d, name="class_embeddings")
    emb.build((None,))
    slots["class_embeddings/embeddings"] = WeightSlot(emb, "embeddings")
    dense0 = layers.Dense(d, name="mlp_dense0")
    norm = layers.LayerNormalization(epsilon=1e-6, name="mlp_norm")
    dense1 = layers.Dense(d, name="mlp_dense1")
    dense0.build((None, d))
    norm.build((None, d))
    dense1.build((None, d))
    for key, layer in (("mlp/dense/0", dense0), ("mlp/dense/1", dense1)):
        slots[f"{key}/kernel"] = WeightSlot(layer, "kernel")
        slots[f"{key}/bias"] = WeightSlot(layer, "bias")
    slots["mlp/norms/0/gamma"] = WeightSlot(norm, "gamma")
    slots["mlp/norms/0/beta"] = WeightSlot(norm, "beta")
    return MaskConverModel(config, dense, emb, (dense0, norm, dense1), slots)
