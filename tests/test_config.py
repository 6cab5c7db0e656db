from pathlib import Path

import pytest
from maskconver.models.config import ConfigError, get_config

YAML_256 = """
task:
  model:
    input_size: [256, 256, 3]
    level: 3
    embedding_size: 256
    padded_output_size: [640, 640]
    num_instances: 50
    backbone:
      type: mobilenet
      mobilenet: {filter_size_scale: 1.0, model_id: MobileNetMultiAVGSeg, output_stride: 16}
    decoder:
      type: aspp
      aspp: {dilation_rates: [6, 12, 18], level: 4, num_filters: 256, use_depthwise_convolution: true}
    class_head: {feature_fusion: deeplabv3plus_sum_to_merge, low_level: 3, low_level_num_filters: 256, num_convs: 2}
    panoptic_generator: {object_mask_threshold: 0.01, overlap_threshold: 0.7, small_area_threshold: 256}
  train_data:
    parser: {gaussaian_iou: 0.7, aug_scale_min: 0.1, aug_scale_max: 1.9}
trainer:
  train_steps: 10
"""


def test_named_configs_match_model_garden():
    c256, c640 = get_config("mobilenet_mh_256"), get_config("mobilenet_mh_640")
    assert c256.input_size == (256, 256) and c640.input_size == (640, 640)
    for c in (c256, c640):
        assert c.num_classes == 201 and c.embedding_size == 256 and c.num_instances == 50
        assert c.thing_ids == tuple(range(1, 91))
        assert c.aspp_rates == (6, 12, 18) and c.head_kernel_size == 7
        assert (c.object_mask_threshold, c.overlap_threshold, c.small_area_threshold) == (0.01, 0.7, 256.0)
        assert c.canvas_size == (640, 640) and c.stride == 8


def test_nano_config_uses_synthetic_taxonomy():
    c = get_config("nano")
    from maskconver.models.synthetic import SYNTHETIC_CATEGORIES

    assert c.num_classes == max(x.id for x in SYNTHETIC_CATEGORIES) + 1
    assert set(c.thing_ids) == {x.id for x in SYNTHETIC_CATEGORIES if x.isthing}


def test_yaml_file_is_read(tmp_path: Path):
    p = tmp_path / "exp.yaml"
    p.write_text(YAML_256)
    c = get_config(str(p))
    assert c.input_size == (256, 256) and c.num_classes == 201 and c.overlap_threshold == 0.7
    assert c.aug_scale_min == 0.1 and c.name == "exp"


@pytest.mark.parametrize(
    "edit, message",
    [
        (("num_instances: 50", "num_instances: 50\n    bogus_field: 1"), "bogus_field"),
        (("embedding_size: 256", "embedding_size: '256'"), "embedding_size must be int"),
        (("type: aspp", "type: fpn"), "decoder type 'fpn' is not supported"),
        (("input_size: [256, 256, 3]", "input_size: [250, 250, 3]"), "multiples of 16"),
        (("dilation_rates: [6, 12, 18]", "dilation_rates: six"), "list of integers"),
    ],
)
def test_yaml_errors_name_the_field(tmp_path: Path, edit, message):
    p = tmp_path / "bad.yaml"
    p.write_text(YAML_256.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        get_config(str(p))


def test_unknown_name_and_missing_file():
    with pytest.raises(ConfigError, match="unknown config 'resnet50'"):
        get_config("resnet50")
    with pytest.raises(ConfigError, match="does not exist"):
        get_config("/nonexistent/exp.yaml")


def test_labels_round_trip_and_are_checked():
    import dataclasses

    from maskconver.models.config import ConfigError, MaskConverConfig, get_config

    cfg = get_config("nano")
    rows = tuple((i, f"name {i}", i in cfg.thing_ids, (i, 2 * i, 3 * i)) for i in range(cfg.num_classes))
    labelled = dataclasses.replace(cfg, labels=rows)
    import json

    assert MaskConverConfig.from_dict(json.loads(labelled.to_json())) == labelled
    bad = json.loads(labelled.to_json())
    bad["labels"][3][3] = [0, 0]
    with pytest.raises(ConfigError, match="label 3 .* three values"):
        MaskConverConfig.from_dict(bad)
    bad = json.loads(labelled.to_json())
    bad["labels"] = bad["labels"][1:]
    with pytest.raises(ConfigError, match="one row per category id"):
        MaskConverConfig.from_dict(bad)
