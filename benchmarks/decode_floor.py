"""The cost floor of a NumPy grid decode: an instrument for issue #5's budget, not a decoder.

:func:`minimal_grid_decode` does the NumPy steps that every grid decode of one-byte integer outputs must do
(3x3 peaks, top-K, the mask head, the mask-logit product, sigmoid, the per-cell winner, areas, the keep test,
segment rows, boxes and the two label maps), each as one call, and nothing else: no input checks, no NaN or
overflow proofs, no pruning, no stage clocks, no result objects, no threshold ties, no other dtypes or
resolutions. The peaks and the mask head are the decoder's own functions (``_dense_peaks``,
``_folded_embeddings``: already one call per step). On typical frames it gives the decoder's label maps
(``tests/test_decode_floor.py`` checks it on the demo model's frames), so its time is what the work itself
costs in NumPy calls.

``benchmarks/bench_segmenter.py::test_decode_floor`` times it and ``decode_planned`` right after an
inference, in one run, next to the inference itself: if the floor alone exceeds a budget, no NumPy decoder
can meet it on that machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from maskconver.runtime.decode import DecodePlan, _folded_embeddings
from maskconver.runtime.grid_merge import _cell_weights, _grid_bbox
from maskconver.runtime.peaks import _dense_peaks

FloorDecode = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, list[tuple]]]


def minimal_grid_decode(plan: DecodePlan) -> FloorDecode:
    """The floor decode for ``plan`` (a ``mask_resolution="grid"`` plan of one-byte integer outputs whose
    heatmap uses the padded flat peak layout): a function of the three outputs ``heat [1, h, w, C]``,
    ``center [1, h, w, D]``, ``feats [1, h, w, D]`` -> ``(category_mask, instance_mask, rows)``, the label
    maps at the plan's output size and per segment ``(category, score, area, bbox, instance)``."""
    setup, head = plan.peaks, plan.head
    layout = setup.flat
    if plan.factor != 1 or layout is None or setup.codes is None or plan.dtypes[2].itemsize != 1:
        raise ValueError(
            "minimal_grid_decode needs a grid plan (mask_resolution='grid') of a small one-byte integer "
            "heatmap and one-byte mask features, e.g. the int8 demo model's"
        )
    gy, gx = plan.axes
    cut = setup.floor
    k_max, num_classes = setup.k, setup.shape[2]
    d = plan.shapes[1][2]
    score_of_code = setup.codes[1]
    _, weight_row = _cell_weights(gy, gx)
    weight = weight_row[0].astype(np.float64)
    ids = np.arange(1, k_max + 1, dtype=np.int32)
    rows_of, cols_of = (None, None) if plan.cells is None else plan.cells

    def decode(
        heat: np.ndarray, center: np.ndarray, feats: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        # peaks: the decoder's own window max on the padded flat copy, then the top K codes
        idx = _dense_peaks(heat[0], cut, layout)
        codes = heat.reshape(-1).take(idx)
        order = np.invert(codes).argsort(kind="stable")[:k_max]
        idx = idx.take(order)
        scores = score_of_code.take(codes.take(order))
        pixel, classes = np.divmod(idx, num_classes)
        k = idx.shape[0]
        # mask head: the decoder's own folded MLP (one call per step already)
        emb = _folded_embeddings(head, center.reshape(-1, d).take(pixel, axis=0), classes)
        # merge on the used cells
        cells = feats[0] if rows_of is None else feats[0][rows_of][:, cols_of]
        neg = cells.astype(np.float32).reshape(-1, d) @ emb[:, :d].T
        np.subtract(emb[:, d], neg, out=neg)
        with np.errstate(over="ignore"):
            np.exp(neg, out=neg)
        neg += np.float32(1.0)
        p = np.divide(np.float32(1.0), neg, out=neg)
        positive = np.greater(p, np.float32(0.5), out=np.empty(p.shape, weight_row.dtype))
        p *= scores
        win = p.argmax(axis=-1).reshape(gy.n, gx.n)
        original_area = (weight_row @ positive)[0]
        mask_area = np.bincount(win.reshape(-1), weights=weight, minlength=k)
        kept = (
            (original_area > 0) & (mask_area > plan.small_area) & (mask_area > plan.overlap * original_area)
        )
        category = np.multiply(classes, kept, dtype=np.int32)
        thing = plan.is_thing.take(category)
        thing &= kept
        instance = np.multiply(thing, ids[:k], dtype=np.int32)
        bbox = _grid_bbox(win, k, gy, gx)
        maps = [
            lut.astype(np.uint8).take(win).repeat(gx.count, axis=1).repeat(gy.count, axis=0)
            for lut in (category, instance)
        ]
        # segment rows: the first proposal of each (category, instance) (joined stuff boxes not widened)
        cats, insts, boxes = category.tolist(), instance.tolist(), bbox.tolist()
        areas, best = mask_area.tolist(), scores.tolist()
        seen: set[tuple[int, int]] = set()
        rows = []
        for j in category.nonzero()[0].tolist():
            key = (cats[j], insts[j])
            if key not in seen:
                seen.add(key)
                rows.append((cats[j], best[j], areas[j], boxes[j], insts[j]))
        return maps[0], maps[1], rows

    return decode
