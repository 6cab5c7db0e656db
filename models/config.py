"""MaskConver model configurations: the two Model Garden mobile configs, ``nano``, and MG YAML files.

``get_config`` accepts a named config (``mobilenet_mh_256``, ``mobilenet_mh_640``, ``nano``), a path to a
Model Garden experiment YAML, or a ``MaskConverConfig``. Only the fields that shape the model, its targets and
its post-processing are read; an unknown field under ``task.model`` (or an unsupported value) is an error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
NAMED_YAMLS = {"mobilenet_mh_256": "mobilenet_mh_256.yaml", "mobilenet_mh_640": "mobilenet_mh_640.yaml"}


class ConfigError(ValueError):
    """A config name, file or field that maskconver cannot use."""


@dataclass(frozen=True)
class MaskConverConfig:
    name: str
    input_size: tuple[int, int] = (256, 256)
    num_classes: int = 201
    thing_ids: tuple[int, ...] = tuple(range(1, 91))
    embedding_size: int = 256
    num_instances: int = 50
    level: int = 3
    # backbone (MobileNetMultiAVGSeg)
    backbone_id: str = "MobileNetMultiAVGSeg"
    filter_size_scale: float = 1.0
    output_stride: int = 16
    # decoder (ASPP)
    aspp_filters: int = 256
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_depthwise: bool = True
    # heads (DeepLabv3+ sum-to-merge)
    head_filters: int = 256
    head_low_level_filters: int = 256
    head_num_convs: int = 2
    head_kernel_size: int = 7
    # normalisation
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    # post-processing (panoptic generator)
    object_mask_threshold: float = 0.01
    overlap_threshold: float = 0.7
    small_area_threshold: float = 256.0
    canvas_size: tuple[int, int] = (640, 640)
    # training-side facts
    gaussian_iou: float = 0.7
    max_num_stuff_centers: int = 1
    min_stuff_area: float = 1024.0
    mask_weight: float = 5.0
    aug_scale_min: float = 0.1
    aug_scale_max: float = 1.9
    l2_weight_decay: float = 1e-5
    categories: str = "coco"  # "coco" (COCO panoptic ids) or "synthetic" (the demo dataset)
    # the training dataset's categories, one ``(id, name, isthing, (r, g, b))`` per id 0..num_classes-1 (void
    # and unused ids included), recorded by the trainer; empty: the named set above
    labels: tuple = ()

    @property
    def stride(self) -> int:
        return 2**self.level

    def is_thing_table(self):
        import numpy as np

        table = np.zeros(self.num_classes, dtype=bool)
        table[[t for t in self.thing_ids if 0 <= t < self.num_classes]] = True
        return table

    def with_input_size(self, size: tuple[int, int]) -> MaskConverConfig:
        return dataclasses.replace(self, input_size=tuple(int(s) for s in size))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskConverConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields are {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        if kw.get("labels"):
            try:
                kw["labels"] = tuple(
                    (int(i), str(name), bool(thing), tuple(int(v) for v in colour))
                    for i, name, thing, colour in kw["labels"]
                )
            except (TypeError, ValueError) as e:
                raise ConfigError(f"labels must be (id, name, isthing, [r, g, b]) rows: {e}") from None
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        h, w = self.input_size
        if h % 16 or w % 16 or h <= 0 or w <= 0:
            raise ConfigError(
                f"input_size {self.input_size} must be positive multiples of 16 (e.g. 256 or 640)"
            )
        if self.level != 3:
            raise ConfigError(f"level {self.level} is not supported: the MobileNet heads predict at stride 8")
        if self.output_stride != 16:
            raise ConfigError(f"backbone output_stride {self.output_stride} is not supported (only 16)")
        if self.backbone_id != "MobileNetMultiAVGSeg":
            raise ConfigError(f"backbone {self.backbone_id!r} is not supported (only MobileNetMultiAVGSeg)")
        if self.num_classes < 2 or self.embedding_size < 1 or self.num_instances < 1:
            raise ConfigError("num_classes must be >= 2, embedding_size and num_instances >= 1")
        if any(not 0 < t < self.num_classes for t in self.thing_ids):
            raise ConfigError(f"thing ids must lie in 1..{self.num_classes - 1}")
        if self.labels and [row[0] for row in self.labels] != list(range(self.num_classes)):
            raise ConfigError(f"labels must hold one row per category id 0..{self.num_classes - 1}, in order")
        for row in self.labels:
            if len(row[3]) != 3 or not all(0 <= v <= 255 for v in row[3]):
                raise ConfigError(f"label {row[0]} ({row[1]!r}): the colour must be three values in 0..255")
        for k, v in (
            ("filter_size_scale", self.filter_size_scale),
            ("head_kernel_size", self.head_kernel_size),
        ):
            if not v > 0:
                raise ConfigError(f"{k} must be positive, got {v!r}")


def nano_config() -> MaskConverConfig:
    """A small MaskConver for tests and the bundled demo model (synthetic shapes dataset)."""
    from maskconver.models.synthetic import SYNTHETIC_CATEGORIES

    things = tuple(c.id for c in SYNTHETIC_CATEGORIES if c.isthing)
    return MaskConverConfig(
        name="nano",
        input_size=(128, 128),
        num_classes=max(c.id for c in SYNTHETIC_CATEGORIES) + 1,
        thing_ids=things,
        embedding_size=32,
        num_instances=50,
        filter_size_scale=0.35,
        aspp_filters=64,
        aspp_rates=(2, 4, 6),
        head_filters=64,
        head_low_level_filters=64,
        small_area_threshold=256.0,
        min_stuff_area=64.0,
        aug_scale_min=0.75,
        aug_scale_max=1.25,
        categories="synthetic",
    )


# ----------------------------------------------------------------------------------------------------------
# Model Garden YAML


_MODEL_KEYS_IGNORED = {
    # accepted and irrelevant to an exported float/int8 graph
    "min_level",
    "max_level",
    "score_threshold",
    "num_proposals",
}
_HEAD_KEYS = {
    "feature_fusion",
    "level",
    "low_level",
    "low_level_num_filters",
    "num_filters",
    "prediction_kernel_size",
    "upsample_factor",
    "use_depthwise_convolution",
    "num_convs",
    "depthwise_kernel_size",
    "use_layer_norm",
    "kernel_size",
    "activation",
}
_TOP_SECTIONS = {"runtime", "task", "trainer"}
_TASK_KEYS = {
    "model",
    "losses",
    "train_data",
    "validation_data",
    "init_checkpoint",
    "init_checkpoint_modules",
    "annotation_file",
    "per_category_metrics",
    "panoptic_quality_evaluator",
    "segmentation_evaluation",
    "use_coco_metrics",
    "use_wod_metrics",
}


def _expect(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    return d


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unsupported field(s) {unknown}; supported: {sorted(allowed)}")


def _num(d: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in d:
        if default is None:
            raise ConfigError(f"{where}.{key} is required")
        return default
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key} must be {kind.__name__}, got {v!r}")
    return v


def _int_list(d: dict[str, Any], key: str, where: str, n: int | None = None) -> tuple[int, ...]:
    v = d.get(key)
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{where}.{key} must be a list of integers, got {v!r}")
    if n is not None and len(v) != n:
        raise ConfigError(f"{where}.{key} must have {n} entries, got {v!r}")
    return tuple(v)


def config_from_yaml(path: str | Path, name: str | None = None) -> MaskConverConfig:
    """Read a Model Garden MaskConver experiment YAML (the fields that shape the model)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e}); pass the experiment YAML") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    doc = _expect(doc, f"{path}")
    _check_keys(doc, _TOP_SECTIONS, f"{path}")
    task = _expect(doc.get("task", {}), "task")
    _check_keys(task, _TASK_KEYS, "task")
    m = _expect(task.get("model"), "task.model")
    model_keys = {
        "input_size",
        "num_classes",
        "num_thing_classes",
        "level",
        "embedding_size",
        "padded_output_size",
        "num_instances",
        "norm_activation",
        "backbone",
        "decoder",
        "class_head",
        "per_pixel_embedding_head",
        "mask_embedding_head",
        "panoptic_generator",
    } | _MODEL_KEYS_IGNORED
    _check_keys(m, model_keys, "task.model")
    size = _int_list(m, "input_size", "task.model", 3)
    if size[2] != 3:
        raise ConfigError(f"task.model.input_size must end in 3 channels, got {list(size)}")
    num_classes = _num(m, "num_classes", int, "task.model", 201)
    num_things = _num(m, "num_thing_classes", int, "task.model", 91)
    kw: dict[str, Any] = {
        "name": name or path.stem,
        "input_size": size[:2],
        "num_classes": num_classes,
        "thing_ids": tuple(range(1, num_things)),
        "embedding_size": _num(m, "embedding_size", int, "task.model", 512),
        "num_instances": _num(m, "num_instances", int, "task.model", 100),
        "level": _num(m, "level", int, "task.model", 3),
    }
    if "padded_output_size" in m:
        kw["canvas_size"] = _int_list(m, "padded_output_size", "task.model", 2)
    na = _expect(m.get("norm_activation", {}), "task.model.norm_activation")
    _check_keys(
        na, {"activation", "norm_epsilon", "norm_momentum", "use_sync_bn"}, "task.model.norm_activation"
    )
    if na.get("activation", "relu") != "relu":
        raise ConfigError(f"activation {na['activation']!r} is not supported (only relu)")
    kw["bn_epsilon"] = _num(na, "norm_epsilon", float, "task.model.norm_activation", 1e-3)
    kw["bn_momentum"] = _num(na, "norm_momentum", float, "task.model.norm_activation", 0.99)

    bb = _expect(m.get("backbone", {}), "task.model.backbone")
    if bb.get("type") != "mobilenet":
        raise ConfigError(f"backbone type {bb.get('type')!r} is not supported (only mobilenet)")
    mb = _expect(bb.get("mobilenet", {}), "task.model.backbone.mobilenet")
    _check_keys(
        mb,
        {"filter_size_scale", "model_id", "stochastic_depth_drop_rate", "output_stride", "use_sync_bn"},
        "task.model.backbone.mobilenet",
    )
    kw["backbone_id"] = mb.get("model_id", "MobileNetMultiAVGSeg")
    kw["filter_size_scale"] = _num(mb, "filter_size_scale", float, "task.model.backbone.mobilenet", 1.0)
    kw["output_stride"] = _num(mb, "output_stride", int, "task.model.backbone.mobilenet", 16)

    dec = _expect(m.get("decoder", {}), "task.model.decoder")
    if dec.get("type") != "aspp":
        raise ConfigError(f"decoder type {dec.get('type')!r} is not supported (only aspp)")
    aspp = _expect(dec.get("aspp", {}), "task.model.decoder.aspp")
    _check_keys(
        aspp,
        {
            "dilation_rates",
            "dropout_rate",
            "level",
            "num_filters",
            "spp_layer_version",
            "use_depthwise_convolution",
            "pool_kernel_size",
            "output_tensor",
        },
        "task.model.decoder.aspp",
    )
    if aspp.get("level", 4) != 4 or aspp.get("spp_layer_version", "v1") != "v1":
        raise ConfigError("only ASPP at level 4 with spp_layer_version v1 is supported")
    if aspp.get("pool_kernel_size") not in (None, []):
        raise ConfigError("ASPP pool_kernel_size is not supported (global pooling only)")
    kw["aspp_rates"] = _int_list(aspp, "dilation_rates", "task.model.decoder.aspp")
    kw["aspp_filters"] = _num(aspp, "num_filters", int, "task.model.decoder.aspp", 256)
    kw["aspp_depthwise"] = _num(aspp, "use_depthwise_convolution", bool, "task.model.decoder.aspp", False)

    heads = [h for h in ("class_head", "per_pixel_embedding_head", "mask_embedding_head") if h in m]
    settings = []
    for h in heads:
        hd = _expect(m[h], f"task.model.{h}")
        _check_keys(hd, _HEAD_KEYS, f"task.model.{h}")
        if hd.get("feature_fusion", "deeplabv3plus_sum_to_merge") != "deeplabv3plus_sum_to_merge":
            raise ConfigError(f"task.model.{h}.feature_fusion must be deeplabv3plus_sum_to_merge")
        if hd.get("level", 4) != 4 or hd.get("low_level", 3) != 3 or hd.get("upsample_factor", 1) != 1:
            raise ConfigError(f"task.model.{h}: only level 4, low_level 3, upsample_factor 1 are supported")
        if hd.get("prediction_kernel_size", 1) != 1 or hd.get("use_layer_norm", False):
            raise ConfigError(f"task.model.{h}: only prediction_kernel_size 1 with batch norm is supported")
        if not hd.get("use_depthwise_convolution", True):
            raise ConfigError(f"task.model.{h}: only depthwise head convolutions are supported")
        settings.append(
            (
                _num(hd, "num_filters", int, f"task.model.{h}", 256),
                _num(hd, "low_level_num_filters", int, f"task.model.{h}", 256),
                _num(hd, "num_convs", int, f"task.model.{h}", 2),
                _num(hd, "depthwise_kernel_size", int, f"task.model.{h}", 7),
            )
        )
    if len(set(settings)) > 1:
        raise ConfigError(
            "the three heads must share num_filters/low_level_num_filters/num_convs/kernel size"
        )
    if settings:
        kw["head_filters"], kw["head_low_level_filters"], kw["head_num_convs"], kw["head_kernel_size"] = (
            settings[0]
        )

    pg = _expect(m.get("panoptic_generator", {}), "task.model.panoptic_generator")
    _check_keys(
        pg,
        {
            "object_mask_threshold",
            "overlap_threshold",
            "rescale_predictions",
            "small_area_threshold",
            "use_hardware_optimization",
            "output_size",
        },
        "task.model.panoptic_generator",
    )
    if pg.get("use_hardware_optimization", False):
        raise ConfigError(
            "panoptic_generator.use_hardware_optimization is not supported (the runtime decodes)"
        )
    kw["object_mask_threshold"] = _num(pg, "object_mask_threshold", float, "panoptic_generator", 0.001)
    kw["overlap_threshold"] = _num(pg, "overlap_threshold", float, "panoptic_generator", 0.5)
    kw["small_area_threshold"] = _num(pg, "small_area_threshold", float, "panoptic_generator", 0.0)

    losses = _expect(task.get("losses", {}), "task.losses")
    if "mask_weight" in losses:
        kw["mask_weight"] = _num(losses, "mask_weight", float, "task.losses")
    if "l2_weight_decay" in losses:
        kw["l2_weight_decay"] = _num(losses, "l2_weight_decay", float, "task.losses")
    parser = _expect(_expect(task.get("train_data", {}), "task.train_data").get("parser", {}), "parser")
    if "gaussaian_iou" in parser:
        kw["gaussian_iou"] = _num(parser, "gaussaian_iou", float, "task.train_data.parser")
    if "aug_scale_min" in parser:
        kw["aug_scale_min"] = _num(parser, "aug_scale_min", float, "task.train_data.parser")
    if "aug_scale_max" in parser:
        kw["aug_scale_max"] = _num(parser, "aug_scale_max", float, "task.train_data.parser")
    if "max_num_stuff_centers" in parser:
        kw["max_num_stuff_centers"] = _num(parser, "max_num_stuff_centers", int, "task.train_data.parser")
    cfg = MaskConverConfig(**kw)
    cfg.validate()
    return cfg


def get_config(name_or_yaml: str | Path | MaskConverConfig) -> MaskConverConfig:
    """A named config, a Model Garden YAML path, a project JSON config, or a config passed through."""
    if isinstance(name_or_yaml, MaskConverConfig):
        name_or_yaml.validate()
        return name_or_yaml
    key = str(name_or_yaml)
    if key == "nano":
        return nano_config()
    if key in NAMED_YAMLS:
        return config_from_yaml(CONFIG_DIR / NAMED_YAMLS[key], name=key)
    p = Path(key)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        return config_from_yaml(p)
    if p.suffix == ".json" and p.exists():
        try:
            d = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file {p} is not readable JSON ({e}); fix or regenerate it") from e
        if not isinstance(d, dict):
            raise ConfigError(f"config file {p} must hold a JSON object of config fields")
        return MaskConverConfig.from_dict(d)
    raise ConfigError(
        f"unknown config {key!r}: use one of {sorted([*NAMED_YAMLS, 'nano'])} or a Model Garden YAML file path"
    )


__all__ = ["ConfigError", "MaskConverConfig", "get_config", "config_from_yaml", "nano_config"]
