"""Threads: several ``Segmenter``s (one interpreter each) running at once in threads give exactly the results
of one ``Segmenter`` run sequentially on the same images; one ``Segmenter`` shared by threads refuses the
concurrent call with a clear RuntimeError and never returns a wrong result.

The model is the demo MaskConver network converted to int8 (``reliability_helpers.demo_int8_model``).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

NUM_THREADS = 4
IMAGES_PER_THREAD = 12


def images(n: int, seed: int) -> list[np.ndarray]:
    """``n`` RGB uint8 images of varied sizes and content (blocky colours plus bright shapes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(60, 200, 2))
        small = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3), dtype=np.uint8)
        img = np.repeat(np.repeat(small, 12, 0), 12, 1)[:h, :w].copy()
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        img[y : y + h // 3, x : x + w // 3] = rng.integers(150, 256, 3)
        out.append(img)
    return out


def fingerprint(result) -> tuple:
    """Everything a user sees of a result, as comparable values."""
    return (
        result.category_mask.tobytes(),
        result.instance_mask.tobytes(),
        tuple(
            (s.id, s.category_id, s.instance_id, s.area, s.bbox, round(s.score, 6)) for s in result.segments
        ),
    )


@pytest.fixture(scope="module")
def workload(demo_model):
    """Per thread: its images and the reference fingerprints from one Segmenter run sequentially."""
    from maskconver.runtime.segmenter import Segmenter

    ref = Segmenter(demo_model, num_threads=1)
    work = []
    for t in range(NUM_THREADS):
        imgs = images(IMAGES_PER_THREAD, seed=100 + t)
        work.append((imgs, [fingerprint(ref.segment(im)) for im in imgs]))
    assert sum(len(r[2]) for _, refs in work for r in refs) > 0, "the demo model finds no segments at all"
    return work


def test_segmenters_in_threads_match_one_segmenter(demo_model, workload):
    from maskconver.runtime.segmenter import Segmenter

    segs = [Segmenter(demo_model, num_threads=1) for _ in range(NUM_THREADS)]
    start = threading.Barrier(NUM_THREADS)
    got: dict[int, list[tuple]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            imgs, _ = workload[t]
            start.wait(10)
            out = []
            for _ in range(3):  # three passes: results must not drift with repeated use
                out.extend(fingerprint(segs[t].segment(im)) for im in imgs)
            got[t] = out
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(NUM_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    for t in range(NUM_THREADS):
        refs = workload[t][1]
        assert len(got[t]) == 3 * len(refs)
        for i, fp in enumerate(got[t]):
            assert fp == refs[i % len(refs)], f"thread {t}, image {i % len(refs)} (pass {i // len(refs)})"


def test_all_threads_on_the_same_images_agree(demo_model, workload):
    """The same image list in every thread at once (the same memory read concurrently)."""
    from maskconver.runtime.segmenter import Segmenter

    imgs, refs = workload[0]
    segs = [Segmenter(demo_model, num_threads=1) for _ in range(NUM_THREADS)]
    got: list[list[tuple] | None] = [None] * NUM_THREADS

    def worker(t: int) -> None:
        got[t] = [fingerprint(segs[t].segment(im)) for im in imgs]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(NUM_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert all(g == refs for g in got)


def test_one_segmenter_shared_by_threads_is_refused_never_wrong(demo_model, workload):
    """Two threads hammer one Segmenter: overlapping calls raise RuntimeError naming the fix; every call
    that does return gives exactly the reference result."""
    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter(demo_model, num_threads=1)
    imgs, refs = workload[0]
    refusals: list[str] = []
    wrong: list[int] = []
    other: list[BaseException] = []
    ok = [0]
    stop = threading.Event()

    def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            k = i % len(imgs)
            try:
                if fingerprint(seg.segment(imgs[k])) != refs[k]:
                    wrong.append(k)
                ok[0] += 1
            except RuntimeError as e:
                refusals.append(str(e))
            except BaseException as e:  # noqa: BLE001
                other.append(e)
            i += 1

    threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 5)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not (refusals and ok[0] >= 20):
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join(30)
    assert not other and not wrong, (other, wrong)
    assert refusals, "no overlapping call was detected in 10 s"
    assert all("one Segmenter per thread" in r for r in refusals)
    assert ok[0] >= 20  # the refusals did not break the Segmenter
    assert fingerprint(seg.segment(imgs[1])) == refs[1]
