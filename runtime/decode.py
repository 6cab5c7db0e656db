"""MaskConver post-processing in NumPy: proposals, mask head, panoptic merge.

:func:`decode_panoptic` turns the three model outputs (center heatmap logits, center embeddings, mask
features; float or int8/uint8 with their quantisation) into a :class:`PanopticDecoding`, reproducing Model
Garden's ``MaskConverProposalGenerator`` + mask-embedding MLP + ``MaskConverPanopticGenerator``
(``shared/reference/modelgarden-maskconver.md`` sections 3.1-3.3).

Steps (K = number of valid proposals, at most ``num_proposals``):

1. Peaks and top-K (:mod:`maskconver.runtime.peaks`). Only proposals with score > object_mask_threshold
   are returned; the reference's invalid proposals get score 0 and can never win a pixel or be kept, so
   dropping them changes nothing in the output.
2. Mask embeddings ``[K, D]``: gathered center embedding * class-embedding row -> Dense -> LayerNorm
   (eps 1e-6) -> ReLU -> Dense. Mask logits ``[h, w, K]`` = embeddings . mask features.
3. Merge: bilinear half-pixel resize of the logits to the output, sigmoid ``p``, winner
   ``argmax_q p_q * score_q`` (first on ties), ``original_area = count(p > 0.5)``, ``mask_area`` = pixels
   won; a proposal is kept if ``mask_area > small_area_threshold (scaled)``, ``original_area > 0`` and
   ``mask_area > overlap_threshold * original_area``. Pixels of dropped winners are void (category 0);
   thing winners get instance id rank + 1, stuff/void 0.

``method="fast"`` (default) computes the merge coarse to fine with the *same result, bit for bit*, as
``method="dense"`` (see :mod:`maskconver.runtime.merge`): every output pixel of a resize cell is a convex
combination of the same four low-resolution logits, so per cell and proposal ``[min, max]`` of those four
(widened by a float-rounding margin) bounds the pixel logits; where one proposal's lower bound of
``p * score`` beats every other proposal's upper bound the whole cell is decided (likewise ``p > 0.5`` when
the bounds agree in sign). Undecided cells are split into quadrants (bounded by their corner pixels)
with only the proposals that can still win, and tiles of at most 5 x 5 pixels (or whole small cells) are
evaluated pixel by pixel with the very float32 operations of the dense path. The fast path pays off when
masks are decisive (trained models); with weak, nearly tied masks everywhere (e.g. the random-weight
goldens) most pixels stay undecided and it is only 1.2-3x faster than dense.

During a decode the calling thread uses one BLAS thread (``BLAS_THREADS``): OpenBLAS worker threads woken
by the mask-logit product kept spinning next to the interpreter's threads and slowed both.

Quantised outputs: peaks and top-K run on the integer codes (exact, dequantisation is monotonic), only
the gathered center embeddings are dequantised, and mask logits are ``s * (q @ E^T - zp * sum(E))``.

Output resolution:

* reference mode: ``valid_size=None`` -> logits are resized straight to ``output_size`` (default
  ``canvas_size`` = 640x640, the exported-model behaviour the goldens were made with).
* original-resolution mode: the model input (``input_size``, default ``stride * (h, w)``) held the
  original ``output_size = (H0, W0)`` image resized to ``valid_size`` at its top-left (letterbox). As in Model
  Garden's ``_resize_and_pad_masks``, logits are resized to the input canvas in original pixels,
  ``ceil(input_size * output_size / valid_size)`` (per axis, exact integer arithmetic), and cropped to
  ``(H0, W0)``. Areas are counted on the crop only (Model Garden also counts the padding of its 640 canvas,
  where p = 0.5, into the top proposal's area).

``small_area_threshold`` is in pixels of a ``canvas_size`` canvas; it is scaled by (area of the resized
canvas in output pixels) / (canvas area).
"""

from __future__ import annotations

import ctypes
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ContextDecorator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from time import perf_counter

import numpy as np
from maskconver.runtime.grid_merge import FIRST_PROPOSALS, GridAxis, grid_axis, merge_grid, merge_grid_pruned
from maskconver.runtime.mask_resize import AxisPlan, axis_plan, resize_bilinear
from maskconver.runtime.merge import MergeResult, merge_dense, merge_fast
from maskconver.runtime.peaks import PeakSetup, Proposals, _find_proposals, peak_setup

MASK_RESOLUTIONS = ("full", "grid", "grid2x", "grid4x")
STAGES = ("peaks", "mask_head", "mask_logits", "merge", "segments", "label_maps")  # PanopticDecoding.timings
GRID_FACTORS = {"grid": 1, "grid2x": 2, "grid4x": 4}
MASK_HEAD_KEYS = (
    "class_embeddings",
    "mlp_dense0_kernel",
    "mlp_dense0_bias",
    "mlp_norm_gamma",
    "mlp_norm_beta",
    "mlp_dense1_kernel",
    "mlp_dense1_bias",
)
LAYER_NORM_EPSILON = 1e-6
MASK_DTYPES = ("auto", "uint8", "uint16", "int32")
COCO_THING_IDS = tuple(range(1, 91))
# BLAS threads of the calling thread during a decode (None: leave them). The decoder's matrix products are
# small; waking (and leaving spinning) OpenBLAS worker threads next to the interpreter's own threads made
# them 4x slower on 2 cores, and the whole post-processing 3x slower.
BLAS_THREADS: int | None = 1
# The grid merge scores the first FIRST_PROPOSALS proposals, then only the later ones that can still win a
# cell (merge_grid_pruned), for mask heads with fewer first-layer weights than this. With larger heads (the
# mobile models' 256 x 256) it scores every proposal in one block: on the only trained 256 model here (600
# steps on synthetic data) the second block pruned nothing and the split cost 0.02-0.07 ms of a 1.3 ms decode;
# on the trained demo model (32 x 32) it prunes 90% of the tail and saves ~15 us.
SPLIT_HEAD_WEIGHTS = 1 << 14


@dataclass
class PanopticDecoding:
    """Result of :func:`decode_panoptic` (pure data: no names or colours).

    Masks: ``category_mask``, ``instance_mask`` ``[H, W]``, int32 unless another ``mask_dtype`` was asked
    for (category 0 = void; instance = proposal rank + 1 for things, 0 for stuff/void).

    Segments (distinct ``(category, instance)`` pairs with category != 0, ordered by best proposal rank;
    stuff proposals of one category merge into one segment), arrays of length N:
    ``segment_ids`` int32 (1..N), ``segment_category_ids`` int32, ``segment_instance_ids`` int32,
    ``segment_scores`` float32 (best proposal score), ``segment_areas`` int64 (pixels),
    ``segment_bboxes`` int32 ``[N, 4]`` as ``(x0, y0, x1, y1)``, x0/y0 inclusive, x1/y1 exclusive.

    Valid proposals (score > object_mask_threshold), best first, arrays of length K:
    ``proposal_classes`` int32, ``proposal_scores`` float32, ``proposal_yx`` int32 ``[K, 2]`` (feature grid),
    ``proposal_areas`` int64 (pixels won in the argmax), ``proposal_segment`` int32 (segment id, 0 = dropped),
    and ``mask_logits`` float32 ``[h, w, K]`` (low-resolution mask logits; with a grid ``mask_resolution``
    only the (upsampled) grid cells the output covers; with ``"grid"`` made on first use, see
    :attr:`mask_logits`).

    ``timings``: wall-clock ms of the decode's stages, in pipeline order: ``peaks`` (peaks and top-K),
    ``mask_head`` (gather and MLP), ``mask_logits`` (the mask-logit product and the logits' finite check,
    which a plan skips when it proves the logits finite, see :func:`logits_proven_finite`;
    with ``grid2x``/``grid4x`` also their bilinear upsampling; with ``grid`` only the float32 copy of the used
    cells' features, as the merge computes the logits of the proposals it scores), ``merge``, ``segments``
    (also leaving the BLAS thread setting), ``label_maps`` (the two masks). Input checks are not in any
    stage.
    """

    category_mask: np.ndarray
    instance_mask: np.ndarray
    # the segments as Python rows ``(id, category id, score, area, (x0, y0, x1, y1), instance id)``; the
    # segment arrays are made from them on first use (a Segmenter builds its Segment objects from the rows),
    # and again whenever ``segment_rows`` is given another tuple
    segment_rows: tuple[tuple, ...]
    proposal_classes: np.ndarray
    proposal_scores: np.ndarray
    proposal_yx: np.ndarray
    proposal_areas: np.ndarray
    proposal_segment: np.ndarray
    # the low-resolution mask logits, or (the pruned grid merge, which computes only the logits of the
    # proposals that can win a cell) a function that makes them on first use, see :attr:`mask_logits`
    mask_logit_source: np.ndarray | Callable[[], np.ndarray] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mask_logits(self) -> np.ndarray:
        """float32 ``[h, w, K]`` low-resolution mask logits (with ``mask_resolution="grid"`` made on first use
        and remembered; threads reading it at once each get the same values). The grid merge computes the
        logits it needs in blocks of proposals: these may differ from them in the last bit (BLAS picks its
        summation order by the matrices' shapes)."""
        source = self.mask_logit_source
        if isinstance(source, np.ndarray):
            return source
        made = self.__dict__.get("_mask_logits_made")
        if made is None or made[0] is not source:
            made = self.__dict__["_mask_logits_made"] = (source, source())
        return made[1]

    @property
    def num_segments(self) -> int:
        return len(self.segment_rows)

    @property
    def _segment_arrays(self) -> dict[str, np.ndarray]:
        made = self.__dict__.get("_made_from")
        if made is None or made[0] is not self.segment_rows:
            made = self.__dict__["_made_from"] = (self.segment_rows, segment_arrays(self.segment_rows))
        return made[1]

    @property
    def segment_ids(self) -> np.ndarray:
        return self._segment_arrays["segment_ids"]

    @property
    def segment_category_ids(self) -> np.ndarray:
        return self._segment_arrays["segment_category_ids"]

    @property
    def segment_instance_ids(self) -> np.ndarray:
        return self._segment_arrays["segment_instance_ids"]

    @property
    def segment_scores(self) -> np.ndarray:
        return self._segment_arrays["segment_scores"]

    @property
    def segment_areas(self) -> np.ndarray:
        return self._segment_arrays["segment_areas"]

    @property
    def segment_bboxes(self) -> np.ndarray:
        return self._segment_arrays["segment_bboxes"]


def segment_arrays(rows: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Segment rows ``(id, category id, score, area, bbox, instance id)`` -> the arrays of
    :class:`PanopticDecoding`: ids / category ids / instance ids int32 ``[N]``, scores float32, areas int64,
    bboxes int32 ``[N, 4]``."""
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if n else [()] * 6
    return {
        "segment_ids": np.array(cols[0], dtype=np.int32).reshape(n),
        "segment_category_ids": np.array(cols[1], dtype=np.int32).reshape(n),
        "segment_scores": np.array(cols[2], dtype=np.float32).reshape(n),
        "segment_areas": np.array(cols[3], dtype=np.int64).reshape(n),
        "segment_bboxes": np.array(cols[4], dtype=np.int32).reshape(n, 4),
        "segment_instance_ids": np.array(cols[5], dtype=np.int32).reshape(n),
    }


# ---------------------------------------------------------------------------------------------------------
# BLAS threads


@lru_cache(maxsize=1)
def _openblas_set_local():
    """``openblas_set_num_threads_local`` of the OpenBLAS bundled with NumPy (sets the calling thread's
    BLAS thread count, returns the previous one), or None (another BLAS, or an OpenBLAS without it)."""
    root = Path(np.__file__).resolve().parent
    for path in sorted([*root.parent.glob("numpy.libs/*openblas*"), *root.glob(".dylibs/*openblas*")]):
        try:
            fn = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    return None


class _BlasThreads(ContextDecorator):
    """The context manager of :func:`blas_threads` (a plain class: entered once per decode, it costs less
    than a generator-based one). Also a decorator: each decorated call gets its own instance."""

    def __init__(self, n: int | None):
        self._fn = _openblas_set_local() if n is not None else None
        self._n = n
        self._old = 0

    def _recreate_cm(self) -> _BlasThreads:
        return _BlasThreads(self._n)  # nested or recursive decorated calls must not share ``_old``

    def __enter__(self) -> None:
        if self._fn is not None:
            self._old = self._fn(int(self._n))  # type: ignore[arg-type]

    def __exit__(self, *exc) -> None:
        if self._fn is not None:
            self._fn(self._old)


def blas_threads(n: int | None) -> AbstractContextManager[None]:
    """Run the block with ``n`` BLAS threads in the calling thread only (NumPy's bundled OpenBLAS; a no-op
    for other BLAS builds or ``n=None``); the previous count is restored afterwards."""
    return _BlasThreads(n)


# ---------------------------------------------------------------------------------------------------------
# input handling


def _unbatch(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name} has batch size {x.shape[0]}; decode one image at a time ([1, h, w, C])")
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be [1, h, w, C] or [h, w, C], got shape {x.shape}")
    return x


def _check_quant(x: np.ndarray, quant, name: str, arg: str) -> tuple[float, float] | None:
    if x.dtype.kind == "f":  # np.issubdtype(x.dtype, np.floating), without its per-call cost
        if quant is not None:
            raise ValueError(
                f"{name} is {x.dtype} but {arg} was given; pass the int8/uint8 codes or drop {arg}"
            )
        return None
    if x.dtype not in (np.int8, np.uint8):
        raise ValueError(f"{name} has dtype {x.dtype}; expected float, int8 or uint8")
    if quant is None:
        raise ValueError(f"{name} is {x.dtype}: pass its (scale, zero_point) as {arg}")
    scale, zero_point = float(quant[0]), float(quant[1])
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{arg}: the scale must be a positive number, got {quant[0]!r}")
    if not abs(zero_point) <= 1e6:  # TFLite's are codes of the dtype; NaN fails too
        raise ValueError(f"{arg}: the zero point must be a finite number of code steps, got {quant[1]!r}")
    return scale, zero_point


def _check_finite(x: np.ndarray, name: str) -> None:
    """Raise ValueError if the float array ``x`` (any shape) holds NaN or +-inf (integer codes always pass).

    Non-finite outputs would otherwise crash the peak gather or silently decode garbage."""
    if x.dtype.kind != "f":
        return
    if type(x) is np.ndarray and x.size >= 1 << 17 and x.dtype.itemsize >= 4 and x.flags.c_contiguous:
        # x . x is finite only if every value is (NaN and inf propagate through the BLAS dot, which reads x
        # once: 1.5x faster than isfinite + all on the large float outputs; slower on small arrays such as the
        # mask logits, right after an inference); an overflow of finite values only sends us to the exact test
        flat = x.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            square_sum = np.dot(flat, flat)
        if math.isfinite(square_sum):
            return
    if np.logical_and.reduce(np.isfinite(x), axis=None):
        return
    bad = ~np.isfinite(x)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} infinite values (first at "
        f"index {first}); the model produced non-finite outputs (a broken or float16-overflowing model, or "
        "uninitialised buffers): check the model file and re-convert it"
    )


_MASK_HEADS: dict[tuple, tuple[tuple, dict[str, np.ndarray]]] = {}


def _checked_mask_head(
    mask_head: Mapping[str, np.ndarray], num_classes: int, dim: int
) -> dict[str, np.ndarray]:
    """:func:`_check_mask_head`, remembered for the same array objects (a Segmenter passes the same
    mask head every frame; the cache holds references, so the ids stay unique). Mask heads are treated as
    immutable: arrays changed in place after a first decode are neither checked nor folded again (a
    ModelFile's are read-only); pass new arrays instead."""
    arrays = tuple(map(mask_head.get, MASK_HEAD_KEYS)) if isinstance(mask_head, Mapping) else ()
    key = (tuple(map(id, arrays)), num_classes, dim)
    hit = _MASK_HEADS.get(key)
    if hit is not None and all(map(operator.is_, hit[0], arrays)):
        return hit[1]
    mh = _check_mask_head(mask_head, num_classes, dim)
    if len(_MASK_HEADS) >= 8:
        _MASK_HEADS.clear()
    _MASK_HEADS[key] = (arrays, mh)
    return mh


def _check_mask_head(
    mask_head: Mapping[str, np.ndarray], num_classes: int, dim: int
) -> dict[str, np.ndarray]:
    missing = [k for k in MASK_HEAD_KEYS if k not in mask_head]
    if missing:
        raise ValueError(
            f"mask_head lacks {', '.join(missing)}; pass the arrays of the model's mask_head.npz"
        )
    mh = {k: np.asarray(mask_head[k], dtype=np.float32) for k in MASK_HEAD_KEYS}
    expect = {
        "class_embeddings": (num_classes, dim),
        "mlp_dense0_bias": (dim,),
        "mlp_norm_gamma": (dim,),
        "mlp_norm_beta": (dim,),
        "mlp_dense1_bias": (dim,),
    }
    for k, shape in expect.items():
        if mh[k].shape != shape:
            raise ValueError(
                f"mask_head[{k!r}] has shape {mh[k].shape}, expected {shape} (C={num_classes}, D={dim})"
            )
    hidden = mh["mlp_dense0_kernel"].shape
    if len(hidden) != 2 or hidden[0] != dim or mh["mlp_dense1_kernel"].shape != (hidden[1], dim):
        raise ValueError(
            f"mask_head MLP kernels have shapes {hidden} and {mh['mlp_dense1_kernel'].shape}; "
            f"expected [{dim}, H] and [H, {dim}]"
        )
    if mh["mlp_dense0_bias"].shape != (hidden[1],) or mh["mlp_norm_gamma"].shape != (hidden[1],):
        raise ValueError("mask_head dense0 bias / LayerNorm sizes do not match mlp_dense0_kernel")
    for k in MASK_HEAD_KEYS:
        _check_finite(mh[k], f"mask_head[{k!r}]")
    return mh


@lru_cache(maxsize=16)
def _thing_table_of(thing_ids: tuple | None, num_classes: int) -> np.ndarray:
    table = thing_table(thing_ids, num_classes)
    table.flags.writeable = False
    return table


def thing_table(thing_ids: Iterable[int] | np.ndarray | None, num_classes: int) -> np.ndarray:
    """Bool ``[num_classes]``: True for thing categories (default COCO ids 1..90). Accepts ids or a table."""
    if thing_ids is None:
        thing_ids = COCO_THING_IDS
    arr = np.asarray(list(thing_ids) if not isinstance(thing_ids, np.ndarray) else thing_ids)
    if arr.dtype == bool:
        if arr.shape != (num_classes,):
            raise ValueError(f"thing table has shape {arr.shape}, expected ({num_classes},)")
        return arr.copy()
    table = np.zeros(num_classes, dtype=bool)
    ids = arr.astype(np.int64).reshape(-1)
    table[ids[(ids >= 0) & (ids < num_classes)]] = True
    return table


def mask_dtype_for(mask_dtype: str | np.dtype | type, num_classes: int, num_proposals: int) -> np.dtype:
    """The integer dtype of the two label maps: ``"auto"`` the smallest of uint8 / uint16 / int32 that holds
    every category id (``< num_classes``) and instance id (``<= num_proposals``), else the one named, checked
    to hold them (uint8 for COCO's 201 ids and K = 50: a quarter of int32's bytes to write and keep)."""
    need = max(int(num_classes) - 1, int(num_proposals), 0)
    if isinstance(mask_dtype, str) and mask_dtype == "auto":
        return np.dtype(np.uint8 if need <= 255 else np.uint16 if need <= 65535 else np.int32)
    try:
        dt = np.dtype(mask_dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "iu" or dt.itemsize > 8:
        raise ValueError(f"mask_dtype must be one of {MASK_DTYPES} or an integer dtype, got {mask_dtype!r}")
    if need > np.iinfo(dt).max:
        raise ValueError(
            f"mask_dtype {dt} cannot hold ids up to {need} ({num_classes} classes, {num_proposals} "
            "proposals); use mask_dtype='auto' or 'int32'"
        )
    return dt


# ---------------------------------------------------------------------------------------------------------
# mask head


def _row_mean(x: np.ndarray) -> np.ndarray:
    """``x.mean(axis=-1, keepdims=True)`` for float32 ``[K, H]``, the same float32 values, without the
    Python overhead of ``ndarray.mean`` (sum, then divide by the count as an intp, like NumPy does)."""
    total = np.add.reduce(x, axis=-1, keepdims=True)
    return np.true_divide(total, np.intp(x.shape[-1]), out=total, casting="unsafe")


def mask_embeddings(
    center: np.ndarray, classes: np.ndarray, mask_head: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``center [K, D]`` gathered center embeddings, ``classes [K]`` -> mask embeddings ``[K, D]`` float32.

    ``mlp(center * class_embeddings[max(classes, 0)])`` with MLP = Dense -> LayerNorm -> ReLU -> Dense.
    """
    x = center.astype(np.float32, copy=False) * mask_head["class_embeddings"].take(
        np.maximum(classes, 0), axis=0
    )
    x = x @ mask_head["mlp_dense0_kernel"]
    x += mask_head["mlp_dense0_bias"]
    x -= _row_mean(x)
    var = _row_mean(np.square(x))
    var += np.float32(LAYER_NORM_EPSILON)
    x /= np.sqrt(var, out=var)
    x *= mask_head["mlp_norm_gamma"]
    x += mask_head["mlp_norm_beta"]
    np.maximum(x, np.float32(0.0), out=x)
    out = x @ mask_head["mlp_dense1_kernel"]
    out += mask_head["mlp_dense1_bias"]
    return out.astype(np.float32, copy=False)  # float32 also for a float64 mask head given directly


@dataclass(frozen=True, eq=False)
class FoldedHead:
    """The mask head with the per-model constants folded in (see :func:`fold_mask_head`): the centre
    embeddings' scale in the first Dense, LayerNorm's mean in its columns, ``sqrt(H)`` in gamma, the mask
    features' scale in the second Dense."""

    class_embeddings: np.ndarray  # [C, D]
    center_zero_point: float
    w0: np.ndarray  # [D, H] s_c * (W0 - row mean of W0)
    b0: np.ndarray  # [H] b0 - mean(b0)
    eps: float  # H * epsilon
    gamma: np.ndarray  # [H] sqrt(H) * gamma
    beta: np.ndarray  # [H]
    # [H, D + 1] s_m * W1, and a last column zp_m * s_m * W1 summed over D: minus the zero-point term (so
    # the merge can take ``n - q.emb``, the negated logit its sigmoid needs, in one subtraction)
    w1: np.ndarray
    b1: np.ndarray  # [D + 1] s_m * b1, and zp_m * s_m * sum(b1)
    mask_zero_point: bool  # zp_m != 0: the last column is not all zeros


_FOLDED: dict[tuple, tuple[tuple, FoldedHead]] = {}


def fold_mask_head(
    mh: dict[str, np.ndarray],
    center_quant: tuple[float, float] | None,
    mask_quant: tuple[float, float] | None,
) -> FoldedHead:
    """:class:`FoldedHead` of a checked mask head for outputs with these quantisations (remembered per
    array objects and quantisation; mask heads are treated as immutable, see :func:`_checked_mask_head`).
    Equal to :func:`mask_embeddings` up to float32 rounding (relative 1e-6 for trained heads; the folded
    LayerNorm mean loses digits only when the first Dense's columns share an offset much larger than their
    spread):

    * ``x = s_c (q - zp_c) * e`` -> the scale ``s_c`` moves into ``W0``;
    * LayerNorm subtracts the row mean of ``y = x W0 + b0``; ``mean(y) = x mean_cols(W0) + mean(b0)``, so
      ``W0`` and ``b0`` minus their means over the hidden units give the centred ``y`` directly;
    * ``y / sqrt(mean(y^2) + eps) = sqrt(H) y / sqrt(sum(y^2) + H eps)``: ``sqrt(H)`` moves into gamma;
    * the mask logits are ``s_m (q_m - zp_m) . emb = q_m . (s_m emb) - zp_m sum_d (s_m emb)``: ``s_m`` moves
      into the second Dense, and the zero-point term, linear in the hidden units, becomes one more output
      column of it (``-zp_m s_m`` times the row sums of ``W1`` and the sum of ``b1``).
    """
    arrays = tuple(mh[k] for k in MASK_HEAD_KEYS)
    key = (tuple(map(id, arrays)), center_quant, mask_quant)
    hit = _FOLDED.get(key)
    if hit is not None and all(map(operator.is_, hit[0], arrays)):  # the cache holds them: ids stay unique
        return hit[1]
    f64 = {k: v.astype(np.float64) for k, v in mh.items()}
    s_c, zp_c = center_quant if center_quant is not None else (1.0, 0.0)
    s_m, zp_m = mask_quant if mask_quant is not None else (1.0, 0.0)
    w0, b0 = f64["mlp_dense0_kernel"], f64["mlp_dense0_bias"]
    w1, b1 = s_m * f64["mlp_dense1_kernel"], s_m * f64["mlp_dense1_bias"]
    hidden = w0.shape[1]
    folded = FoldedHead(
        class_embeddings=mh["class_embeddings"],
        center_zero_point=float(zp_c),
        w0=(s_c * (w0 - w0.mean(axis=1, keepdims=True))).astype(np.float32),
        b0=(b0 - b0.mean()).astype(np.float32),
        eps=float(hidden * LAYER_NORM_EPSILON),
        gamma=(np.sqrt(hidden) * f64["mlp_norm_gamma"]).astype(np.float32),
        beta=mh["mlp_norm_beta"],
        w1=np.concatenate([w1, zp_m * w1.sum(axis=1, keepdims=True)], axis=1).astype(np.float32),
        b1=np.append(b1, zp_m * b1.sum()).astype(np.float32),
        mask_zero_point=bool(zp_m),
    )
    if len(_FOLDED) >= 16:
        _FOLDED.clear()
    _FOLDED[key] = (arrays, folded)
    return folded


def _folded_embeddings(head: FoldedHead, center: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Gathered centre embeddings ``center [K, D]`` (codes or floats, as the plan's outputs), ``classes [K]``
    -> ``[K, D + 1]`` float32: ``s_m * mask embeddings`` and, last, minus the zero-point term: ``zp_m * s_m * sum_d
    emb`` (:class:`FoldedHead`; ``s_m`` = 1, ``zp_m`` = 0 for float features)."""
    x = np.subtract(center, np.float32(head.center_zero_point), dtype=np.float32, casting="unsafe")
    x *= head.class_embeddings.take(classes, axis=0)
    y = x @ head.w0  # [K, H], already centred
    y += head.b0
    ss = np.add.reduce(np.square(y), axis=-1, keepdims=True)
    ss += np.float32(head.eps)
    y /= np.sqrt(ss, out=ss)
    y *= head.gamma
    y += head.beta
    np.maximum(y, np.float32(0.0), out=y)
    out = y @ head.w1
    out += head.b1
    return out


def _scaled_mask_logits(features: np.ndarray, emb: np.ndarray, zero_point: bool = True) -> np.ndarray:
    """``features [h, w, D]`` (codes or floats), ``emb [K, D + 1]`` of :func:`_folded_embeddings` -> logits
    ``[h, w, K]`` = ``q @ emb[:, :D]^T - emb[:, D]`` (the zero-point term; skipped when ``zero_point`` is
    False, i.e. the features have none and the column is zeros)."""
    h, w, d = features.shape
    out = features.astype(np.float32, copy=False).reshape(h * w, d) @ emb[:, :d].T
    if zero_point:
        out -= emb[:, d]  # exactly ``+ (-emb[:, d])``: the same floats as adding the term itself
    return out.reshape(h, w, -1)


def _check_mask_logits(logits: np.ndarray) -> None:
    """Refuse NaN / inf in mask logits (or their negation) of any shape."""
    _check_finite(logits, "mask logits (mask_features . mask embeddings; finite inputs overflowed float32)")


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_grid_logits(
    emb: np.ndarray, features: np.ndarray, feature_bound: float | None, logits: Callable[[], np.ndarray]
) -> None:
    """Refuse NaN / inf in any proposal's grid mask logits, also of proposals the pruned merge never scores
    (``emb [K, D + 1]``, ``features [cells, D]`` float32; ``feature_bound``: the largest ``|feature|`` the
    features' dtype holds, None for float features).

    ``|logit| <= max|emb| * (max|feature| * D + 1)``, so when twice that is below float32's largest value
    every logit is finite (float32 rounding of the sums adds far less than the factor 2); one pass over the
    small embedding matrix proves it (NaN or inf embeddings fail it too). Otherwise the embeddings are
    checked, then every logit, with the errors of the other paths."""
    top = float(np.maximum.reduce(np.abs(emb), axis=None, initial=0.0))  # NaN stays NaN; no proposal: 0
    if feature_bound is None:
        feature_bound = float(np.maximum.reduce(np.abs(features), axis=None, initial=0.0))
    if 2.0 * top * (feature_bound * features.shape[1] + 1.0) < _FLOAT32_MAX:
        return
    _check_finite(emb, "mask embeddings (finite centre embeddings overflowed the mask head)")
    _check_mask_logits(logits())


def mask_embedding_bound(head: FoldedHead, center_dtype: np.dtype) -> float:
    """An upper bound on ``|emb|`` of :func:`_folded_embeddings` for any codes of integer centre embeddings of
    ``center_dtype`` (``inf`` for float ones, or when the bound is not far below float32's range). In float64
    through the folded head: ``|x| <= max|q - zp| * max|class embedding|``, ``|y| <= |x| @ |W0| + |b0|``;
    LayerNorm leaves ``|y / sqrt(sum y^2 + eps)| <= 1`` (plus float32 rounding, taken as 0.1%), so ``|emb| <=
    (|gamma| + |beta|) @ |W1| + |b1|``, with 1% more for the rounding of the float32 sums and 1e-30 for
    subnormal products (which round up by more). Every intermediate bound must stay far below float32's
    largest value too: ``x`` itself (a zero row of the folded ``W0`` would hide an infinite ``x`` from the
    bound of ``y``: ``inf * 0`` is NaN), ``y`` and its sum of squares. A NaN or inf weight gives ``inf``."""
    if center_dtype.kind not in "iu":
        return math.inf
    info = np.iinfo(center_dtype)
    with np.errstate(all="ignore"):
        zp = float(np.float32(head.center_zero_point))  # as _folded_embeddings subtracts it (inf if huge)
        q = max(abs(info.min - zp), abs(info.max - zp))
        x = q * np.abs(head.class_embeddings.astype(np.float64)).max(axis=0, initial=0.0)  # [D]
        y = x @ np.abs(head.w0.astype(np.float64)) + np.abs(head.b0)  # [H]
        z = 1.001 * np.abs(head.gamma.astype(np.float64)) + np.abs(head.beta)  # [H]
        emb = z @ np.abs(head.w1.astype(np.float64)) + np.abs(head.b1)  # [D + 1]
        x_top = float(x.max(initial=0.0))
        y_top = float(y.max(initial=0.0))
        top = 1.01 * float(emb.max(initial=0.0)) + 1e-30
    # NaN fails every comparison
    return top if x_top < 1e30 and y_top * y_top * y.shape[0] < 1e30 and top < 1e30 else math.inf


def logits_proven_finite(head: FoldedHead, center_dtype: np.dtype, feature_bound: float | None) -> bool:
    """Whether every mask logit is finite for any codes of integer centre embeddings of ``center_dtype`` and
    integer mask features with ``|code| <= feature_bound`` (None: float features, never proven): the bound
    of :func:`_check_grid_logits` holds for :func:`mask_embedding_bound`. A plan that proves it skips the
    per-frame overflow checks of the mask logits."""
    if feature_bound is None:
        return False
    top = mask_embedding_bound(head, center_dtype)
    return 2.0 * top * (feature_bound * (head.w1.shape[1] - 1) + 1.0) < _FLOAT32_MAX


class _LazyLogits:
    """The grid's mask logits ``[ny, nx, K]`` = ``features @ emb[:, :D]^T - offset`` (as the full path's
    :func:`_scaled_mask_logits`), computed when called: ``features [ny * nx, D]`` float32, ``emb [K, D + 1]``,
    ``offset [K]`` or None (no zero-point term)."""

    __slots__ = ("emb", "features", "offset", "shape")

    def __init__(
        self, features: np.ndarray, emb: np.ndarray, offset: np.ndarray | None, shape: tuple[int, int]
    ):
        self.features, self.emb, self.offset, self.shape = features, emb, offset, shape

    def __call__(self) -> np.ndarray:
        out = self.features @ self.emb[:, : self.features.shape[1]].T
        if self.offset is not None:
            out -= self.offset
        return out.reshape(*self.shape, -1)


def mask_logits(
    features: np.ndarray, embeddings: np.ndarray, quant: tuple[float, float] | None = None
) -> np.ndarray:
    """``features [h, w, D]`` (float, or codes with ``quant``), ``embeddings [K, D]`` -> logits ``[h, w, K]``.

    For codes: ``scale * (q @ E^T - zero_point * sum_d E)``, so the feature map is never dequantised (a
    plain int8 -> float32 cast is twice as fast as one that subtracts the zero point on the way).
    """
    h, w, d = features.shape
    if quant is None:
        emb_t = np.array(embeddings.T, dtype=np.float32, order="C")
        out = features.astype(np.float32, copy=False).reshape(h * w, d) @ emb_t
    else:
        scale, zero_point = quant
        # s * (q @ E^T - zp * sum E) = q @ (s E)^T - zp * sum(s E); (s E)^T as a C-ordered float32 array,
        # scaled in the same pass that lays it out (E cast to float32 first, as a copy would)
        emb_t = np.empty((d, embeddings.shape[0]), np.float32)
        np.multiply(embeddings.T, np.float32(scale), out=emb_t, dtype=np.float32)
        # cast, then flatten: one copy also for a sliced (non-contiguous) feature map. [h*w, D] @ [D, K]:
        # OpenBLAS runs this orientation 1.4x faster than [K, D] @ [D, h*w]
        out = features.astype(np.float32).reshape(h * w, d) @ emb_t
        out -= np.float32(zero_point) * np.add.reduce(emb_t, axis=0)  # emb_t.sum(axis=0), one frame less
    return out.reshape(h, w, -1)


# ---------------------------------------------------------------------------------------------------------
# top level


def _segments(
    classes: np.ndarray, scores: np.ndarray, merge: MergeResult, is_thing: np.ndarray
) -> tuple[tuple[tuple, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Group kept proposals into segments: the segment rows ``(id, category id, score, area, bbox tuple,
    instance id)`` (see :func:`segment_arrays`), ``proposal_segment [K]`` int32 (segment id, 0 = dropped) and
    the category / instance lookup tables ``[K]`` int32.

    ``classes [K]`` int32, ``scores [K]`` float32 (best first); a segment is a distinct ``(category,
    instance)`` pair: each kept thing proposal is one, kept stuff proposals of one category share one."""
    k = classes.shape[0]
    kept = merge.kept
    cat_lut = np.multiply(classes, kept, dtype=np.int32)  # the class where kept, else 0
    thing = is_thing.take(cat_lut)
    thing &= kept
    inst_lut = np.multiply(thing, np.arange(1, k + 1, dtype=np.int32), dtype=np.int32)
    # kept proposals, best first; a kept proposal of the void class 0 paints void pixels and is no segment
    kq = cat_lut.nonzero()[0]
    # Segments in order of first (best) appearance, grouped with a dict in plain Python on lists of all K
    # proposals (at most K kept, and only stuff proposals of one category ever share a segment). A joining
    # proposal widens the box (min / max), adds its area (exact integers) and keeps the higher score.
    cats, insts = cat_lut.tolist(), inst_lut.tolist()
    boxes, areas, best = merge.bbox.tolist(), merge.mask_area.tolist(), scores.tolist()
    ids: dict[tuple[int, int], int] = {}
    heads: list[int] = []  # per segment: its first proposal
    seg_of: list[int] = []  # per kept proposal: segment id (1..N)
    for j in kq.tolist():
        key = (cats[j], insts[j])
        sid = ids.get(key)
        if sid is None:
            sid = ids[key] = len(heads)
            heads.append(j)
        else:
            h = heads[sid]
            box, add = boxes[h], boxes[j]
            boxes[h] = [min(box[0], add[0]), min(box[1], add[1]), max(box[2], add[2]), max(box[3], add[3])]
            areas[h] += areas[j]
            if best[j] > best[h]:
                best[h] = best[j]
        seg_of.append(sid + 1)
    proposal_segment = np.zeros(k, dtype=np.int32)
    proposal_segment[kq] = seg_of
    # scores as float32 values (what the float32 score array holds; they came from one)
    rows = tuple((i, cats[j], best[j], areas[j], tuple(boxes[j]), insts[j]) for i, j in enumerate(heads, 1))
    return rows, proposal_segment, cat_lut, inst_lut


def output_plans(
    feature_size: tuple[int, int],
    output_size: tuple[int, int],
    valid_size: tuple[int, int] | None,
    input_size: tuple[int, int],
) -> tuple[AxisPlan, AxisPlan, int]:
    """Resize plans (y, x) and the area of the resized canvas in output pixels."""
    h, w = feature_size
    cy, cx = output_canvas(output_size, valid_size, input_size)
    return axis_plan(h, cy, output_size[0]), axis_plan(w, cx, output_size[1]), cy * cx


def output_canvas(
    output_size: tuple[int, int], valid_size: tuple[int, int] | None, input_size: tuple[int, int]
) -> tuple[int, int]:
    """The model input canvas in output pixels, ``(Hc, Wc)``: ``output_size`` without a letterbox, else
    ``ceil(input_size * output_size / valid_size)`` per axis (exact integer arithmetic), as in Model
    Garden's ``_resize_and_pad_masks``; the output is its top-left ``output_size`` crop."""
    if valid_size is None:
        return int(output_size[0]), int(output_size[1])
    canvas = []
    for ax in range(2):
        vs, out, inp = int(valid_size[ax]), int(output_size[ax]), int(input_size[ax])
        if not 1 <= vs <= inp:
            raise ValueError(
                f"valid_size {tuple(valid_size)} must lie within the model input {tuple(input_size)}"
            )
        canvas.append(-(-inp * out // vs))  # ceil(input * original / valid)
    return canvas[0], canvas[1]


def grid_axes(
    feature_size: tuple[int, int],
    output_size: tuple[int, int],
    valid_size: tuple[int, int] | None,
    input_size: tuple[int, int],
) -> tuple[GridAxis, GridAxis, int]:
    """Nearest-cell maps (y, x) of the output pixels for ``mask_resolution="grid"`` and the area of the
    canvas in output pixels (remembered: the same sizes come every frame)."""
    try:
        pairs = [
            None if v is None else (int(v[0]), int(v[1]))
            for v in (feature_size, output_size, valid_size, input_size)
        ]
        return _grid_axes(*pairs)
    except (ValueError, IndexError):
        # bad sizes: the error of the sizes as given (output_canvas names valid_size as the caller wrote it)
        output_canvas(output_size, valid_size, input_size)
        raise


@lru_cache(maxsize=64)
def _grid_axes(feature_size, output_size, valid_size, input_size) -> tuple[GridAxis, GridAxis, int]:
    cy, cx = output_canvas(output_size, valid_size, input_size)
    gy = grid_axis(feature_size[0], cy, int(output_size[0]))
    gx = grid_axis(feature_size[1], cx, int(output_size[1]))
    return gy, gx, cy * cx


_OUTPUT_ARGUMENTS = ("heatmap", "center_embeddings", "mask_features", "mask_head")


def decode_panoptic(
    heatmap: np.ndarray,
    center_embeddings: np.ndarray,
    mask_features: np.ndarray,
    mask_head: Mapping[str, np.ndarray],
    *,
    output_size: tuple[int, int] | None = None,
    valid_size: tuple[int, int] | None = None,
    input_size: tuple[int, int] | None = None,
    stride: int = 8,
    thing_ids: Iterable[int] | np.ndarray | None = None,
    num_proposals: int = 50,
    object_mask_threshold: float = 0.01,
    overlap_threshold: float = 0.7,
    small_area_threshold: float = 256.0,
    canvas_size: tuple[int, int] = (640, 640),
    heatmap_quant: tuple[float, float] | None = None,
    center_quant: tuple[float, float] | None = None,
    mask_quant: tuple[float, float] | None = None,
    method: str = "fast",
    mask_resolution: str = "full",
    mask_dtype: str | np.dtype | type = "int32",
) -> PanopticDecoding:
    """Panoptic decoding of one image's model outputs.

    Args:
        heatmap: ``[1, h, w, C]`` (or ``[h, w, C]``) center-heatmap logits; float, or int8/uint8 codes
            with ``heatmap_quant=(scale, zero_point)``.
        center_embeddings: ``[1, h, w, D]``, float or codes with ``center_quant``.
        mask_features: ``[1, h, w, D]``, float or codes with ``mask_quant``.
        mask_head: the arrays of ``mask_head.npz`` (see ``MASK_HEAD_KEYS``).
        output_size: ``(H, W)`` of the masks; default ``canvas_size``. With ``valid_size`` it is the
            original image size ``(H0, W0)``.
        valid_size: ``(round(H0*s), round(W0*s))``, the letterboxed image inside the model input, or None.
        input_size: model input ``(H_in, W_in)``; default ``stride * (h, w)``.
        thing_ids: thing category ids (or a bool table ``[C]``); default COCO 1..90.
        method: ``"fast"`` (coarse-to-fine) or ``"dense"`` (full resolution); identical results.
        mask_resolution: ``"full"`` (default): logits bilinearly resized to the output, the reference
            merge. ``"grid"``: the real-time path (Model Garden's hardware-optimised one, see
            :mod:`maskconver.runtime.grid_merge`): the merge runs on the model's feature grid and every
            output pixel takes its cell's labels (blocky boundaries, a fraction of the cost).
            ``"grid2x"`` / ``"grid4x"``: the same on the grid bilinearly upsampled 2x / 4x first (finer
            boundaries for 4x / 16x the merge work). With a grid, ``method`` is unused and ``mask_logits``
            holds the (upsampled) grid cells the output covers.
        mask_dtype: dtype of ``category_mask`` / ``instance_mask``: ``"int32"`` (default, Model Garden's),
            ``"uint8"``, ``"uint16"``, or ``"auto"`` (the smallest that holds every id; see
            :func:`mask_dtype_for`). Segments and areas are the same for every dtype.

    Raises:
        ValueError: bad shapes, dtypes or quantisation, or NaN/inf in a float output or the mask head
            (the message names the array), or mask logits that overflow float32 (never for int8 / uint8
            outputs whose mask head the plan proves small enough, see :func:`logits_proven_finite`).
    """
    # every keyword argument as given (locals() holds exactly the parameters here), to plan_decode
    settings = {k: v for k, v in locals().items() if k not in _OUTPUT_ARGUMENTS}
    plan = plan_decode(heatmap, center_embeddings, mask_features, mask_head, **settings)
    return decode_planned(plan, heatmap, center_embeddings, mask_features)


@dataclass(frozen=True, eq=False)
class DecodePlan:
    """Everything of a decode but the three outputs, checked once by :func:`plan_decode`: the outputs'
    unbatched shapes and dtypes it was made for, the peak setup (quantisation, thresholds, tables), the
    folded mask head, the thing table, the merge thresholds and the output geometry (grid axes or resize
    plans). A :class:`Segmenter <maskconver.runtime.segmenter.Segmenter>` keeps one per output geometry, so a
    frame pays only for the checks that depend on the outputs' values (NaN/inf in float outputs)."""

    peaks: PeakSetup
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    dtypes: tuple[np.dtype, np.dtype, np.dtype]
    head: FoldedHead
    is_thing: np.ndarray
    overlap: float
    small_area: float
    output_size: tuple[int, int]
    factor: int  # 0: full resolution; else the grid factor
    axes: tuple  # (gy, gx) GridAxis for a grid, else (py, px) AxisPlan
    # "grid": the used cells' index per axis (GridAxis.take), or None when every cell is used
    cells: tuple | None
    # the largest |value| of the mask features' integer dtype (None for float features)
    feature_bound: float | None
    method: str
    mask_dtype: np.dtype
    # logits_proven_finite for these dtypes and this head: no per-frame overflow check of the mask logits
    finite_logits: bool = False
    # proposals merge_grid_pruned scores before it prunes (SPLIT_HEAD_WEIGHTS): FIRST_PROPOSALS, or K (one block)
    grid_first: int = FIRST_PROPOSALS


def plan_decode(
    heatmap: np.ndarray,
    center_embeddings: np.ndarray,
    mask_features: np.ndarray,
    mask_head: Mapping[str, np.ndarray],
    *,
    output_size: tuple[int, int] | None = None,
    valid_size: tuple[int, int] | None = None,
    input_size: tuple[int, int] | None = None,
    stride: int = 8,
    thing_ids: Iterable[int] | np.ndarray | None = None,
    num_proposals: int = 50,
    object_mask_threshold: float = 0.01,
    overlap_threshold: float = 0.7,
    small_area_threshold: float = 256.0,
    canvas_size: tuple[int, int] = (640, 640),
    heatmap_quant: tuple[float, float] | None = None,
    center_quant: tuple[float, float] | None = None,
    mask_quant: tuple[float, float] | None = None,
    method: str = "fast",
    mask_resolution: str = "full",
    mask_dtype: str | np.dtype | type = "int32",
) -> DecodePlan:
    """The checks and constants of :func:`decode_panoptic` (same arguments; of the outputs only their
    shapes and dtypes are used) as a :class:`DecodePlan` for :func:`decode_planned`, which checks the values
    (NaN/inf) every frame. The plan is tied to ``output_size`` / ``valid_size``: its masks always have that
    geometry, so make one plan per image size."""
    if method not in ("fast", "dense"):
        raise ValueError(f"method must be 'fast' or 'dense', got {method!r}")
    if mask_resolution not in MASK_RESOLUTIONS:
        raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
    heat = _unbatch(heatmap, "heatmap")
    center = _unbatch(center_embeddings, "center_embeddings")
    feats = _unbatch(mask_features, "mask_features")
    hq = _check_quant(heat, heatmap_quant, "heatmap", "heatmap_quant")
    cq = _check_quant(center, center_quant, "center_embeddings", "center_quant")
    mq = _check_quant(feats, mask_quant, "mask_features", "mask_quant")
    h, w, c = heat.shape
    if center.shape[:2] != (h, w) or feats.shape[:2] != (h, w) or center.shape[2] != feats.shape[2]:
        raise ValueError(
            f"output shapes disagree: heatmap {heat.shape}, center_embeddings {center.shape}, "
            f"mask_features {feats.shape}; expected [h, w, C], [h, w, D], [h, w, D]"
        )
    d = center.shape[2]
    mh = _checked_mask_head(mask_head, c, d)
    if output_size is None:
        if valid_size is not None:
            raise ValueError("valid_size needs output_size = the original image size (H0, W0)")
        output_size = tuple(canvas_size)
    output_size = (int(output_size[0]), int(output_size[1]))
    input_size = (stride * h, stride * w) if input_size is None else (int(input_size[0]), int(input_size[1]))
    factor = GRID_FACTORS.get(mask_resolution, 0)
    grid = factor > 0
    if grid:
        gy, gx, canvas_area = grid_axes((h * factor, w * factor), output_size, valid_size, input_size)
    else:
        py, px, canvas_area = output_plans((h, w), output_size, valid_size, input_size)
    small_area = float(small_area_threshold) * canvas_area / float(canvas_size[0] * canvas_size[1])
    if type(thing_ids) is np.ndarray and thing_ids.dtype == bool and thing_ids.shape == (c,):
        is_thing = thing_ids  # a plain table (as a Segmenter passes; no subclass): only read, so no copy
    else:
        try:  # ids given as a tuple (or None): the table is cached
            is_thing = _thing_table_of(thing_ids, c)  # type: ignore[arg-type]
        except TypeError:  # unhashable (list, array)
            is_thing = thing_table(thing_ids, c)

    k = int(num_proposals)
    if k < 1:
        raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
    head = fold_mask_head(mh, cq, mq)
    feature_bound = (
        None if feats.dtype.kind == "f" else float(max(-np.iinfo(feats.dtype).min, np.iinfo(feats.dtype).max))
    )
    return DecodePlan(
        peaks=peak_setup(heat.shape, heat.dtype.str, k, float(object_mask_threshold), hq),
        shapes=(heat.shape, center.shape, feats.shape),
        dtypes=(heat.dtype, center.dtype, feats.dtype),
        head=head,
        is_thing=is_thing,
        overlap=float(overlap_threshold),
        small_area=small_area,
        output_size=output_size,
        factor=factor,
        axes=(gy, gx) if grid else (py, px),
        cells=None if not grid or (gy.n, gx.n) == (h, w) else (gy.take(), gx.take()),
        feature_bound=feature_bound,
        finite_logits=logits_proven_finite(head, center.dtype, feature_bound),
        grid_first=FIRST_PROPOSALS if head.w0.size < SPLIT_HEAD_WEIGHTS else k,
        method=method,
        mask_dtype=mask_dtype_for(mask_dtype, c, k),
    )


def _planned_output(x: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` ``[1, h, w, C]`` or ``[h, w, C]`` (any array-like) as the plan's unbatched ``shape`` and ``dtype``,
    else an error."""
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name} has batch size {x.shape[0]}; decode one image at a time ([1, h, w, C])")
        x = x[0]
    if x.shape != shape or x.dtype != dtype:
        raise ValueError(
            f"{name} is {x.dtype} {x.shape} but the decode plan was made for {dtype} {shape}; "
            "make a new plan with plan_decode for these outputs"
        )
    return x


def decode_planned(
    plan: DecodePlan, heatmap: np.ndarray, center_embeddings: np.ndarray, mask_features: np.ndarray
) -> PanopticDecoding:
    """:func:`decode_panoptic` of outputs of the shapes and dtypes ``plan`` was made for (else ValueError)."""
    heat = _planned_output(heatmap, plan.shapes[0], plan.dtypes[0], "heatmap")
    center = _planned_output(center_embeddings, plan.shapes[1], plan.dtypes[1], "center_embeddings")
    feats = _planned_output(mask_features, plan.shapes[2], plan.dtypes[2], "mask_features")
    if heat.dtype.kind == "f" or center.dtype.kind == "f" or feats.dtype.kind == "f":
        for x, name in ((heat, "heatmap"), (center, "center_embeddings"), (feats, "mask_features")):
            _check_finite(x, name)
    h, w, _ = heat.shape
    d = center.shape[2]
    factor = plan.factor
    small_area, overlap = plan.small_area, plan.overlap
    if factor:
        gy, gx = plan.axes
    else:
        py, px = plan.axes

    clock = [perf_counter()]  # stage boundaries (a handful of clock reads: ~0.5 us in all)
    with blas_threads(BLAS_THREADS):
        props: Proposals = _find_proposals(heat, plan.peaks)  # heat is of the plan's shape and dtype
        clock.append(perf_counter())
        centers = center.reshape(h * w, d).take(props.pixel, axis=0)  # [K, D] the proposals' embeddings
        emb = _folded_embeddings(plan.head, centers, props.classes)  # scaled by the features' scale
        clock.append(perf_counter())
        if factor == 1:
            # the cells some output pixel falls into, as float32 rows; the merge computes only the logits of
            # the proposals that can win a cell (mask_logits makes all of them on first use), taking the
            # zero-point term as a per-proposal offset (contiguous: its broadcast subtraction is faster)
            cells = feats if plan.cells is None else feats[plan.cells[0]][:, plan.cells[1]]
            features = cells.astype(np.float32).reshape(-1, d)
            offset = emb[:, d].copy() if plan.head.mask_zero_point else None
            logits = _LazyLogits(features, emb, offset, (gy.n, gx.n))
            if not plan.finite_logits:
                _check_grid_logits(emb, features, plan.feature_bound, logits)
            clock.append(perf_counter())
            merge = merge_grid_pruned(
                features, emb, offset, props.scores, gy, gx, small_area, overlap, first=plan.grid_first
            )
        else:
            logits = _scaled_mask_logits(feats, emb, plan.head.mask_zero_point)
            if factor > 1:  # the upsampled grid, up to the last cell the output uses
                py_g = axis_plan(h, h * factor, int(gy.cells[-1]) + 1)
                px_g = axis_plan(w, w * factor, int(gx.cells[-1]) + 1)
                logits = resize_bilinear(logits, py_g, px_g)[gy.take()][:, gx.take()]
            if not plan.finite_logits:
                _check_mask_logits(logits)
            clock.append(perf_counter())
            if factor:
                merge = merge_grid(logits, props.scores, gy, gx, small_area, overlap)
            else:
                merge = (merge_fast if plan.method == "fast" else merge_dense)(
                    logits, props.scores, py, px, small_area, overlap
                )
        clock.append(perf_counter())
    rows, proposal_segment, cat_lut, inst_lut = _segments(props.classes, props.scores, merge, plan.is_thing)
    clock.append(perf_counter())
    if len(props):  # the maps take the luts' dtype (K ids: a negligible cast)
        category_mask = merge.paint(cat_lut.astype(plan.mask_dtype, copy=False))
        instance_mask = merge.paint(inst_lut.astype(plan.mask_dtype, copy=False))
    else:
        category_mask = np.zeros(plan.output_size, dtype=plan.mask_dtype)
        instance_mask = np.zeros(plan.output_size, dtype=plan.mask_dtype)
    clock.append(perf_counter())
    return PanopticDecoding(
        category_mask=category_mask,
        instance_mask=instance_mask,
        proposal_classes=props.classes,
        proposal_scores=props.scores,
        proposal_yx=props.yx,
        proposal_areas=merge.mask_area,
        mask_logit_source=logits,
        timings={name: 1000.0 * (b - a) for name, a, b in zip(STAGES, clock[:-1], clock[1:], strict=True)},
        segment_rows=rows,
        proposal_segment=proposal_segment,
    )
