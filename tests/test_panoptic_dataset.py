"""Reading COCO panoptic datasets and plain image folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from maskconver.models.panoptic_dataset import (
    PanopticDataset,
    PanopticDatasetError,
    iter_images,
    list_images,
    read_segment_ids,
)

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 187, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
]


def _write_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def _example_ids() -> tuple[np.ndarray, list[dict]]:
    ids = np.zeros((20, 30), np.int64)
    ids[:10, :] = 0x3A2B1C  # sky, an id that uses all three channels
    ids[12:18, 2:8] = 5  # person
    ids[12:18, 10:16] = 7  # car
    ids[2:6, 20:25] = 9  # crowd of persons
    segments = [
        {"id": 0x3A2B1C, "category_id": 187, "iscrowd": 0},
        {"id": 7, "category_id": 3, "iscrowd": 0},
        {"id": 5, "category_id": 1, "iscrowd": 0},
        {"id": 9, "category_id": 1, "iscrowd": 1},
    ]
    return ids, segments


def _make_dataset(root: Path, ids=None, segments=None, categories=None, image_hw=None, json_hw=None) -> Path:
    if ids is None:
        ids, segments = _example_ids()
    h, w = image_hw or ids.shape
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    (root / "images").mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / "images" / "a.png"), image[:, :, ::-1])
    _write_png(root / "panoptic" / "a.png", ids)
    jh, jw = json_hw or ids.shape
    data = {
        "images": [{"id": 42, "file_name": "a.png", "height": jh, "width": jw}],
        "annotations": [{"image_id": 42, "file_name": "a.png", "segments_info": segments}],
        "categories": categories or CATEGORIES,
    }
    (root / "panoptic.json").write_text(json.dumps(data))
    return root


def test_reads_masks_with_void_and_instances(tmp_path):
    ds = PanopticDataset(_make_dataset(tmp_path))
    assert len(ds) == 1
    s = ds[0]
    ids, _ = _example_ids()
    assert s.image.shape == (20, 30, 3) and s.image.dtype == np.uint8
    assert (s.image[..., 0] == 200).all() and (s.image[..., 2] == 0).all()  # RGB order
    assert s.category_mask.dtype == np.int32 and s.instance_mask.dtype == np.int32
    expected_cat = np.zeros((20, 30), np.int32)
    expected_cat[ids == 0x3A2B1C] = 187
    expected_cat[ids == 5] = 1
    expected_cat[ids == 7] = 3
    expected_cat[ids == 9] = 1
    np.testing.assert_array_equal(s.category_mask, expected_cat)
    assert (s.category_mask[ids == 0] == 0).all()  # void: no segment
    # things numbered 1..n in JSON order (car, person, crowd); stuff and void 0
    expected_inst = np.zeros((20, 30), np.int32)
    expected_inst[ids == 7] = 1
    expected_inst[ids == 5] = 2
    expected_inst[ids == 9] = 3
    np.testing.assert_array_equal(s.instance_mask, expected_inst)
    assert [seg["instance_id"] for seg in s.segments] == [0, 1, 2, 3]
    assert s.image_id == 42
    assert s.image_file == tmp_path / "images" / "a.png"
    assert s.panoptic_file == tmp_path / "panoptic" / "a.png"
    assert ds[-1].image_id == 42
    with pytest.raises(IndexError):
        ds[1]


def test_skip_crowd_makes_crowd_void(tmp_path):
    ds = PanopticDataset(_make_dataset(tmp_path), skip_crowd=True)
    s = ds[0]
    ids, _ = _example_ids()
    assert (s.category_mask[ids == 9] == 0).all() and (s.instance_mask[ids == 9] == 0).all()
    assert s.instance_mask.max() == 2


def test_categories_and_tables(tmp_path):
    ds = PanopticDataset(_make_dataset(tmp_path))
    assert ds.num_classes == 188
    assert [(c.id, c.name, c.isthing) for c in ds.categories] == [
        (1, "person", True),
        (3, "car", True),
        (187, "sky", False),
    ]
    table = ds.category_table()
    assert len(table) == 188 and [c.id for c in table] == list(range(188))
    assert table[0].name == "void" and table[2].name == "unused_2" and table[187].color == (70, 130, 180)
    assert len({c.color for c in table}) == 188
    isthing = ds.isthing_table(201)
    assert isthing.shape == (201,) and np.flatnonzero(isthing).tolist() == [1, 3]
    with pytest.raises(ValueError, match="num_classes"):
        ds.category_table(100)


def test_coco_folder_layout(tmp_path):
    ids, segments = _example_ids()
    _write_png(tmp_path / "annotations" / "panoptic_val2017" / "000000000042.png", ids)
    (tmp_path / "val2017").mkdir()
    cv2.imwrite(str(tmp_path / "val2017" / "000000000042.jpg"), np.full((20, 30, 3), 90, np.uint8))
    data = {
        "images": [{"id": 42, "file_name": "000000000042.jpg", "height": 20, "width": 30}],
        "annotations": [{"image_id": 42, "file_name": "000000000042.png", "segments_info": segments}],
        "categories": CATEGORIES,
    }
    json_path = tmp_path / "annotations" / "panoptic_val2017.json"
    json_path.write_text(json.dumps(data))
    ds = PanopticDataset(json_path)
    assert ds.images_dir == tmp_path / "val2017"
    assert ds.panoptic_dir == tmp_path / "annotations" / "panoptic_val2017"
    assert ds[0].category_mask[0, 0] == 187


def test_missing_png_names_the_file(tmp_path):
    root = _make_dataset(tmp_path)
    (root / "panoptic" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"panoptic PNG .*a\.png"):
        PanopticDataset(root)[0]


def test_segment_in_png_not_in_json(tmp_path):
    ids, segments = _example_ids()
    root = _make_dataset(tmp_path, ids, [s for s in segments if s["id"] != 7])
    with pytest.raises(PanopticDatasetError, match=r"a\.png.*\[7\] are in the PNG but not in"):
        PanopticDataset(root)[0]


def test_segment_in_json_not_in_png(tmp_path):
    ids, segments = _example_ids()
    root = _make_dataset(tmp_path, ids, [*segments, {"id": 77, "category_id": 1, "iscrowd": 0}])
    with pytest.raises(PanopticDatasetError, match=r"a\.png.*\[77\] are listed in .*no pixels"):
        PanopticDataset(root)[0]


def test_unknown_category(tmp_path):
    ids, segments = _example_ids()
    segments[1] = {"id": 7, "category_id": 44, "iscrowd": 0}
    root = _make_dataset(tmp_path, ids, segments)
    with pytest.raises(PanopticDatasetError, match=r"a\.png: segment 7 has category_id 44"):
        PanopticDataset(root)[0]


def test_size_mismatch_image_vs_png(tmp_path):
    root = _make_dataset(tmp_path, image_hw=(21, 30), json_hw=(20, 30))
    with pytest.raises(PanopticDatasetError, match=r"size mismatch: image .*a\.png is 30x21 .* is 30x20"):
        PanopticDataset(root)[0]


def test_size_mismatch_json_vs_png(tmp_path):
    root = _make_dataset(tmp_path, json_hw=(20, 31))
    with pytest.raises(PanopticDatasetError, match="size mismatch: .*says image 42 is 31x20"):
        PanopticDataset(root)[0]


def test_bad_json(tmp_path):
    root = _make_dataset(tmp_path, categories=[*CATEGORIES, {"id": 0, "name": "x", "isthing": 0}])
    with pytest.raises(PanopticDatasetError, match="reserved for void"):
        PanopticDataset(root)
    (tmp_path / "panoptic.json").write_text("{not json")
    with pytest.raises(PanopticDatasetError, match="not valid JSON"):
        PanopticDataset(tmp_path)
    (tmp_path / "panoptic.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(PanopticDatasetError, match="categories"):
        PanopticDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        PanopticDataset(tmp_path / "nope")


def test_duplicate_segment_id(tmp_path):
    ids, segments = _example_ids()
    root = _make_dataset(tmp_path, ids, [*segments, {"id": 5, "category_id": 1, "iscrowd": 0}])
    with pytest.raises(PanopticDatasetError, match=r"segment ids \[5\] appear twice"):
        PanopticDataset(root)[0]


def test_read_segment_ids_decodes_all_channels(tmp_path):
    ids = np.arange(12, dtype=np.int64).reshape(3, 4) * 1_000_003
    _write_png(tmp_path / "p.png", ids)
    np.testing.assert_array_equal(read_segment_ids(tmp_path / "p.png"), ids)


def test_iter_images(tmp_path):
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((8, 9, 3), np.uint8))
    blue = np.zeros((5, 6, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue
    cv2.imwrite(str(tmp_path / "a.PNG"), blue)
    cv2.imwrite(str(tmp_path / "sub" / "c.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "gray.png"), np.zeros((3, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg", "gray.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.PNG", "b.jpg", "gray.png", "c.png"]
    items = list(iter_images(tmp_path))
    assert items[0][1].shape == (5, 6, 3) and (items[0][1][..., 2] == 255).all()  # RGB: blue last
    assert items[2][1].shape == (3, 3, 3)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(PanopticDatasetError, match=r"broken\.jpg could not be decoded"):
        list(iter_images(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")
