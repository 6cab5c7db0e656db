"""The ``maskconver.json`` contract shared by converter, runtime, benchmarks and the Android demo.

The converter writes this JSON into the model file's metadata (see ``shared/reference/model-file.md``);
every reader goes through :class:`ModelInfo` so the field names live in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
PAD_RGB = (124, 116, 104)  # the mean colour, rounded: ~0 after normalisation
OUTPUT_NAMES = ("heatmap", "center_embeddings", "mask_features")


class ModelFileError(ValueError):
    """A model file is not a usable MaskConver model (corrupt, foreign, or metadata missing)."""


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]


@dataclass
class ModelInfo:
    """Everything the runtime needs besides the graph and ``mask_head.npz``."""

    config_name: str
    input_size: tuple[int, int]  # (H, W) of the static model input
    num_classes: int  # heatmap channels C
    embedding_size: int  # D
    categories: list[Category]  # one per id 0..C-1 (id 0 = void)
    stride: int = 8
    num_proposals: int = 50
    peak_kernel: int = 3
    object_mask_threshold: float = 0.01
    overlap_threshold: float = 0.7
    small_area_threshold: float = 256.0  # pixels on the canvas below
    canvas_size: tuple[int, int] = (640, 640)
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    pad_value: tuple[int, int, int] = PAD_RGB
    input_dtype: str = "uint8"  # "uint8" raw RGB, or "float32" already normalised (--float-input)
    conversion: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def thing_ids(self) -> list[int]:
        return [c.id for c in self.categories if c.isthing]

    def is_thing_table(self):
        """Boolean array ``[C]``: True where the category id is a thing class."""
        import numpy as np

        table = np.zeros(self.num_classes, dtype=bool)
        for c in self.categories:
            if c.isthing and 0 <= c.id < self.num_classes:
                table[c.id] = True
        return table

    def decode_settings(self) -> dict[str, Any]:
        """The model's decoding settings as keyword arguments of ``decode_panoptic`` / ``plan_decode``: input
        size, stride, thing ids, number of proposals, thresholds and canvas (see ``ModelFile.decode_settings``
        for the mask head and the outputs' quantisation too)."""
        return {
            "input_size": tuple(self.input_size),
            "stride": self.stride,
            "thing_ids": self.is_thing_table(),
            "num_proposals": self.num_proposals,
            "object_mask_threshold": self.object_mask_threshold,
            "overlap_threshold": self.overlap_threshold,
            "small_area_threshold": self.small_area_threshold,
            "canvas_size": tuple(self.canvas_size),
        }

    def labels(self) -> list[str]:
        names = {c.id: c.name for c in self.categories}
        return [names.get(i, f"class_{i}") for i in range(self.num_classes)]

    def to_json(self) -> str:
        d = asdict(self)
        d["categories"] = [asdict(c) for c in self.categories]
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelInfo:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"maskconver.json is not valid JSON ({e}); re-convert the model") from e
        if not isinstance(d, dict):
            raise ModelFileError("maskconver.json must hold a JSON object; re-convert the model")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                f"maskconver.json format_version {version!r} is not supported (expected {FORMAT_VERSION}); "
                "re-convert the model with this maskconver version"
            )
        required = ("config_name", "input_size", "num_classes", "embedding_size", "categories")
        missing = [k for k in required if k not in d]
        if missing:
            raise ModelFileError(f"maskconver.json lacks {', '.join(missing)}; re-convert the model")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            kwargs["categories"] = [
                Category(int(c["id"]), str(c["name"]), bool(c["isthing"]), tuple(int(v) for v in c["color"]))
                for c in d["categories"]
            ]
            for key in ("input_size", "canvas_size", "mean", "std", "pad_value"):
                if key in kwargs:
                    kwargs[key] = tuple(kwargs[key])
            info = cls(**kwargs)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"maskconver.json has a malformed field ({e}); re-convert the model") from e
        info.validate()
        return info

    def validate(self) -> None:
        """Types and ranges of every field; raises ModelFileError naming the first bad one."""
        import math

        def bad(field_name: str, want: str) -> ModelFileError:
            value = getattr(self, field_name)
            return ModelFileError(
                f"maskconver.json field {field_name}={value!r} is invalid ({want}); re-convert the model"
            )

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return (is_int(v) or isinstance(v, float)) and math.isfinite(v)

        for name in ("input_size", "canvas_size"):
            v = getattr(self, name)
            if len(v) != 2 or not all(is_int(x) and x > 0 for x in v):
                raise bad(name, "two positive integers")
        for name in ("num_classes", "embedding_size", "stride", "num_proposals", "peak_kernel"):
            v = getattr(self, name)
            if not is_int(v) or v <= 0:
                raise bad(name, "a positive integer")
        if self.peak_kernel % 2 == 0:
            raise bad("peak_kernel", "an odd integer")
        if not is_num(self.object_mask_threshold) or not 0.0 <= self.object_mask_threshold < 1.0:
            raise bad("object_mask_threshold", "a number in [0, 1)")
        if not is_num(self.overlap_threshold) or not 0.0 <= self.overlap_threshold <= 1.0:
            raise bad("overlap_threshold", "a number in [0, 1]")
        if not is_num(self.small_area_threshold) or self.small_area_threshold < 0:
            raise bad("small_area_threshold", "a non-negative number")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(is_num(x) for x in v) or (name == "std" and min(v) <= 0):
                raise bad(name, "three finite numbers" + (", all positive" if name == "std" else ""))
        if len(self.pad_value) != 3 or not all(is_int(x) and 0 <= x <= 255 for x in self.pad_value):
            raise bad("pad_value", "three integers in 0..255")
        if self.input_dtype not in ("uint8", "float32"):
            raise bad("input_dtype", "'uint8' or 'float32'")
        if not self.categories:
            raise bad("categories", "a non-empty list")
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.num_classes:
            raise bad("categories", f"unique ids in 0..{self.num_classes - 1}")
