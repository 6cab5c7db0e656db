"""The COCO panoptic category table on raw ids 0..200."""

from __future__ import annotations

import pytest
from maskconver.runtime.coco_categories import coco_panoptic_categories, coco_panoptic_json_categories
from maskconver.runtime.model_info import ModelInfo


def test_table_shape_and_counts():
    cats = coco_panoptic_categories()
    assert len(cats) == 201 and [c.id for c in cats] == list(range(201))
    real = [c for c in cats if c.id and not c.name.startswith("unused_")]
    things = [c for c in real if c.isthing]
    stuff = [c for c in real if not c.isthing]
    assert len(things) == 80 and len(stuff) == 53
    assert all(1 <= c.id <= 90 for c in things) and all(92 <= c.id <= 200 for c in stuff)
    assert len({c.color for c in cats}) == 201
    assert len({c.name for c in cats}) == 201


def test_known_entries():
    cats = coco_panoptic_categories()
    assert (cats[0].name, cats[0].isthing) == ("void", False)
    assert (cats[1].name, cats[1].isthing, cats[1].color) == ("person", True, (220, 20, 60))
    assert cats[90].name == "toothbrush" and cats[92].name == "banner"
    assert (cats[187].name, cats[187].isthing) == ("sky-other-merged", False)
    assert cats[200].name == "rug-merged"
    # unused ids follow Model Garden's thing test (1 <= id <= 90)
    assert (cats[12].name, cats[12].isthing) == ("unused_12", True)
    assert (cats[91].name, cats[91].isthing) == ("unused_91", False)
    missing = [i for i in range(1, 91) if cats[i].name.startswith("unused_")]
    assert missing == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_matches_model_garden_thing_table_and_model_info():
    cats = coco_panoptic_categories()
    info = ModelInfo("x", (256, 256), 201, 256, cats)
    table = info.is_thing_table()
    assert table.tolist() == [False] + [True] * 90 + [False] * 110
    again = ModelInfo.from_json(info.to_json())
    assert again.categories == cats


def test_json_categories_and_errors():
    js = coco_panoptic_json_categories()
    assert len(js) == 133 and js[0] == {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]}
    assert coco_panoptic_categories(256)[255].name == "unused_255"
    with pytest.raises(ValueError, match="201"):
        coco_panoptic_categories(100)
