"""The deterministic synthetic COCO panoptic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from maskconver.models.panoptic_dataset import PanopticDataset, read_segment_ids
from maskconver.models.synthetic import (
    SEGMENT_ID_FACTOR,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_NUM_CLASSES,
    SYNTHETIC_STUFF_IDS,
    SYNTHETIC_THING_IDS,
    generate_synthetic_dataset,
    main,
    render_synthetic_image,
)


def _all_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_taxonomy():
    assert SYNTHETIC_NUM_CLASSES == 11
    assert [c.id for c in SYNTHETIC_CATEGORIES] == list(range(11))
    assert SYNTHETIC_THING_IDS == (1, 2, 3, 4, 5, 6)
    assert SYNTHETIC_STUFF_IDS == (7, 8, 9, 10)
    assert SYNTHETIC_CATEGORIES[0].name == "void" and not SYNTHETIC_CATEGORIES[0].isthing
    assert len({c.color for c in SYNTHETIC_CATEGORIES}) == 11
    assert len({c.name for c in SYNTHETIC_CATEGORIES}) == 11


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic_dataset(a, 5, seed=11)
    generate_synthetic_dataset(b, 5, seed=11)
    generate_synthetic_dataset(c, 5, seed=12)
    files_a, files_b, files_c = _all_bytes(a), _all_bytes(b), _all_bytes(c)
    assert sorted(files_a) == [
        *[f"images/000{i}.jpg" for i in range(5)],
        "panoptic.json",
        *[f"panoptic/000{i}.png" for i in range(5)],
    ]
    assert files_a == files_b
    assert files_a["images/0000.jpg"] != files_c["images/0000.jpg"]
    assert not list(a.rglob("*.tmp"))


def test_image_depends_only_on_seed_and_index():
    one = render_synthetic_image(4, 7)
    two = render_synthetic_image(4, 7)
    np.testing.assert_array_equal(one.image, two.image)
    np.testing.assert_array_equal(one.ids, two.ids)
    assert one.segments == two.segments
    other = render_synthetic_image(4, 8)
    assert not np.array_equal(one.image, other.image)


def test_files_match_rendering_and_json_is_consistent(tmp_path):
    json_path = generate_synthetic_dataset(tmp_path, 4, seed=2, image_size=(96, 80), image_format="png")
    data = json.loads(json_path.read_text())
    assert [c["id"] for c in data["categories"]] == list(range(1, 11))
    assert [c["isthing"] for c in data["categories"]] == [1] * 6 + [0] * 4
    assert [im["file_name"] for im in data["images"]] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert all((im["height"], im["width"]) == (96, 80) for im in data["images"])
    ds = PanopticDataset(tmp_path)
    for i, ann in enumerate(data["annotations"]):
        assert ann["image_id"] == i and ann["file_name"] == f"{i:04d}.png"
        ref = render_synthetic_image(2, i, (96, 80))
        s = ds[i]
        np.testing.assert_array_equal(s.image, ref.image)  # PNG is lossless
        ids = read_segment_ids(tmp_path / "panoptic" / ann["file_name"])
        np.testing.assert_array_equal(ids, ref.ids)
        for seg in ann["segments_info"]:
            m = ids == seg["id"]
            ys, xs = np.nonzero(m)
            assert seg["area"] == m.sum()
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert seg["category_id"] == seg["id"] // SEGMENT_ID_FACTOR
            assert seg["iscrowd"] in (0, 1)


def test_variety_over_many_images():
    things, stuff, crowd, void_images, n_stuff_per_image = set(), set(), 0, 0, set()
    small_things = 0
    for i in range(60):
        r = render_synthetic_image(0, i)
        cats = [s["category_id"] for s in r.segments]
        things |= {c for c in cats if c in SYNTHETIC_THING_IDS}
        stuff |= {c for c in cats if c in SYNTHETIC_STUFF_IDS}
        n_stuff_per_image.add(sum(c in SYNTHETIC_STUFF_IDS for c in cats))
        crowd += sum(s["iscrowd"] for s in r.segments)
        void_images += bool((r.ids == 0).any())
        small_things += sum(s["area"] < 100 for s in r.segments if s["category_id"] in SYNTHETIC_THING_IDS)
        # a stuff class appears at most once per image (one segment per class, as in COCO)
        stuff_ids = [c for c in cats if c in SYNTHETIC_STUFF_IDS]
        assert len(stuff_ids) == len(set(stuff_ids))
    assert things == set(SYNTHETIC_THING_IDS)
    assert stuff == set(SYNTHETIC_STUFF_IDS)
    assert {1, 2, 3} <= n_stuff_per_image
    assert crowd >= 1
    assert 10 <= void_images < 60
    assert small_things >= 5


def test_things_have_class_typical_colours():
    # mean colour inside each thing class sits near its nominal colour, clearly apart from the others
    sums = {c: np.zeros(3) for c in SYNTHETIC_THING_IDS}
    counts = dict.fromkeys(SYNTHETIC_THING_IDS, 0)
    for i in range(30):
        r = render_synthetic_image(1, i)
        for s in r.segments:
            if s["category_id"] in sums:
                m = r.ids == s["id"]
                sums[s["category_id"]] += r.image[m].sum(axis=0)
                counts[s["category_id"]] += int(m.sum())
    for c in SYNTHETIC_THING_IDS:
        mean = sums[c] / counts[c]
        nominal = np.asarray(SYNTHETIC_CATEGORIES[c].color, float)
        assert np.abs(mean - nominal).max() < 45, (c, mean, nominal)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        generate_synthetic_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="image_format"):
        generate_synthetic_dataset(tmp_path, 1, image_format="gif")
    with pytest.raises(ValueError, match="too small"):
        render_synthetic_image(0, 0, (8, 8))


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--num-images", "3", "--seed", "1", "--size", "64", "80"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().endswith("panoptic.json")
    assert "3/3 images" in out.err
    ds = PanopticDataset(tmp_path / "cli")
    assert len(ds) == 3 and ds[2].image.shape == (64, 80, 3)
