"""Speed of the PQ evaluator (images / second) on generated COCO panoptic data.

Run under pytest-benchmark::

    /work/venv/bin/pytest benchmarks/bench_pq.py --benchmark-only

or as a script for an images/second table (also timing the cityscapesscripts port of panopticapi)::

    /work/venv/bin/python benchmarks/bench_pq.py --images 2000 --size 96 128
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import pytest
from maskconver.benchmarks.pq_synthetic import write_synthetic_dataset
from maskconver.runtime.coco_panoptic_io import read_panoptic_png
from maskconver.runtime.panoptic_quality import PQAccumulator, pq_compute

NUM_IMAGES = 2000
SIZE = (96, 128)  # images are drawn between half and full size


def load_in_memory(paths: dict) -> tuple[list, list]:
    """Decoded ``(gt_ids, gt_segments, pred_ids, pred_segments)`` per image, and the categories."""
    gt = json.loads(Path(paths["gt_json"]).read_text())
    pred = {a["image_id"]: a for a in json.loads(Path(paths["pred_json"]).read_text())["annotations"]}
    items = []
    for g in gt["annotations"]:
        p = pred[g["image_id"]]
        items.append(
            (
                read_panoptic_png(Path(paths["gt_dir"]) / g["file_name"]),
                g["segments_info"],
                read_panoptic_png(Path(paths["pred_dir"]) / p["file_name"]),
                p["segments_info"],
            )
        )
    return items, gt["categories"]


def score_in_memory(items: list, categories: list):
    acc = PQAccumulator(categories)
    for item in items:
        acc.add(*item)
    return acc.result()


def reference_pq(paths: dict) -> dict:
    """The cityscapesscripts port of panopticapi, one process (for comparison only)."""
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ref

    gt = json.loads(Path(paths["gt_json"]).read_text())
    pred = {a["image_id"]: a for a in json.loads(Path(paths["pred_json"]).read_text())["annotations"]}
    cats = {c["id"]: c for c in gt["categories"]}
    pairs = [(g, pred[g["image_id"]]) for g in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(paths["gt_dir"]), str(paths["pred_dir"]), cats)
    return ref.average_pq(stat, cats)


# ---------------------------------------------------------------------------------------------------------
# pytest-benchmark
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("bench_pq"), NUM_IMAGES, seed=0, size=SIZE)


def _images_per_second(benchmark) -> None:
    """Record images/s in the benchmark's extra info (nothing to record with ``--benchmark-disable``)."""
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_second"] = NUM_IMAGES / benchmark.stats.stats.mean


@pytest.mark.parametrize(
    "workers,pool", [(1, "threads"), (2, "threads"), (2, "processes"), (None, "threads"), (None, "processes")]
)
def test_pq_compute_files(benchmark, data, workers, pool):
    result = benchmark.pedantic(
        lambda: pq_compute(**data, workers=workers, progress=False, pool=pool), rounds=3, iterations=1
    )
    benchmark.extra_info["images"] = NUM_IMAGES
    _images_per_second(benchmark)
    assert result.num_images == NUM_IMAGES


def test_pq_accumulator_in_memory(benchmark, data):
    items, categories = load_in_memory(data)
    result = benchmark.pedantic(lambda: score_in_memory(items, categories), rounds=3, iterations=1)
    _images_per_second(benchmark)
    assert result.num_images == NUM_IMAGES


def test_reference_panopticapi_port(benchmark, data):
    pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
    benchmark.pedantic(lambda: reference_pq(data), rounds=3, iterations=1)
    _images_per_second(benchmark)


# ---------------------------------------------------------------------------------------------------------
# script
# ---------------------------------------------------------------------------------------------------------


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=NUM_IMAGES)
    ap.add_argument("--size", type=int, nargs=2, default=list(SIZE), metavar=("H", "W"))
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    ap.add_argument("--no-reference", action="store_true", help="skip timing the cityscapesscripts port")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_pq_") as tmp:
        t = time.perf_counter()
        paths = write_synthetic_dataset(tmp, args.images, seed=0, size=tuple(args.size))
        print(
            f"generated {args.images} images of up to {args.size[0]}x{args.size[1]} in {time.perf_counter() - t:.1f} s"
        )
        rows = []
        for workers, pool in (
            (1, "threads"),
            (2, "threads"),
            (2, "processes"),
            (None, "threads"),
            (None, "processes"),
        ):
            s = _best_of(
                lambda w=workers, p=pool: pq_compute(**paths, workers=w, progress=False, pool=p), args.repeats
            )
            rows.append((f"pq_compute files, workers={workers or 'auto'}, {pool}", s))  # fmt: skip
        items, categories = load_in_memory(paths)
        rows.append(("PQAccumulator in memory (no PNG decode)", _best_of(lambda: score_in_memory(items, categories), args.repeats)))  # fmt: skip
        if not args.no_reference:
            rows.append(("cityscapesscripts panopticapi port, 1 process", _best_of(lambda: reference_pq(paths), args.repeats)))  # fmt: skip
    print(f"{'':48s} {'seconds':>8s} {'images/s':>9s}")
    for name, s in rows:
        print(f"{name:48s} {s:8.3f} {args.images / s:9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
