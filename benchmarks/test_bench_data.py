"""Speed of the training-data pipeline: synthetic rendering, targets, batches.

Run: ``/work/venv/bin/pytest benchmarks/test_bench_data.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest
from maskconver.models.augment import random_augment
from maskconver.models.panoptic_dataset import PanopticDataset
from maskconver.models.synthetic import (
    SYNTHETIC_NUM_CLASSES,
    generate_synthetic_dataset,
    render_synthetic_image,
)
from maskconver.models.targets import build_targets, make_batch

ISTHING = np.array([False] + [True] * 6 + [False] * 4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_synthetic")
    generate_synthetic_dataset(root, 32, seed=0)
    return PanopticDataset(root)


def test_render_synthetic_128(benchmark):
    counter = iter(range(10**9))
    benchmark(lambda: render_synthetic_image(0, next(counter)))


def test_generate_100_images_to_disk(benchmark, tmp_path):
    benchmark.pedantic(lambda: generate_synthetic_dataset(tmp_path, 100, seed=1), rounds=3, iterations=1)


@pytest.mark.parametrize("size", [128, 256])
def test_build_targets(benchmark, dataset, size):
    s = dataset[0]
    a = random_augment(s.image, s.category_mask, s.instance_mask, size, np.random.default_rng(0), 1.0, 1.0)
    benchmark(
        build_targets, a.category_mask, a.instance_mask, ISTHING, SYNTHETIC_NUM_CLASSES, min_stuff_area=256
    )


@pytest.mark.parametrize(("size", "dense"), [(128, True), (256, True), (256, False)])
def test_make_batch_16(benchmark, dataset, size, dense):
    rng = np.random.default_rng(0)
    benchmark.pedantic(
        lambda: make_batch(dataset, range(16), rng, size, min_stuff_area=256, dense_masks=dense),
        rounds=5,
        iterations=1,
    )
