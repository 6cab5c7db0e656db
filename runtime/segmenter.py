"""``Segmenter``: run a maskconver model file (``.tflite`` on LiteRT, ``.onnx`` on ONNX Runtime) on images.

    from maskconver.runtime.segmenter import Segmenter

    seg = Segmenter("maskconver_mobilenet_mh_256_int8.tflite")
    result = seg.segment(rgb_image)          # PanopticResult, masks at the image's resolution
    print(result.summary(), result.speed)    # {"preprocess": ms, "inference": ms, "postprocess": ms}
    for frame_index, t_ms, frame, result in seg.stream(0):   # camera 0, see runtime/streams.py
        ...

Everything the model needs (input size, categories, thresholds, mask head) comes from the model file's
metadata (:func:`maskconver.runtime.model_file.read_model_file`). One ``Segmenter`` owns one interpreter:
it is **not thread-safe**; use one ``Segmenter`` per thread (a second one costs another interpreter).

Pipeline of :meth:`Segmenter.segment` (timed separately, in milliseconds):

* preprocess: :func:`maskconver.runtime.preprocess.as_rgb_uint8` and the reference letterbox;
* inference: set input, invoke, read the three outputs (int8 outputs stay int8);
* postprocess: :func:`maskconver.runtime.decode.decode_planned` with a plan made once per output geometry by
  :func:`maskconver.runtime.decode.plan_decode` (each output's quantisation ``(scale, zero_point)``; together
  they are :func:`~maskconver.runtime.decode.decode_panoptic`), then the :class:`PanopticResult`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from maskconver.runtime.decode import (
    MASK_RESOLUTIONS,
    DecodePlan,
    PanopticDecoding,
    decode_planned,
    mask_dtype_for,
    plan_decode,
)
from maskconver.runtime.model_file import ModelFile, read_model_file
from maskconver.runtime.model_info import OUTPUT_NAMES, ModelFileError, ModelInfo
from maskconver.runtime.preprocess import as_rgb_uint8, letterbox, model_input, read_image
from maskconver.runtime.result import PanopticResult, Segment

if TYPE_CHECKING:
    from maskconver.runtime.streams import SegmentStream

log = logging.getLogger("maskconver")

BACKENDS = ("litert", "onnx")
OUTPUT_MODES = ("original", "canvas")
# delegate name -> shared libraries tried in order (an environment variable can name another file)
DELEGATE_LIBRARIES = {
    "gpu": ("libtensorflowlite_gpu_delegate.so", "libLiteRtGpuAccelerator.so"),
    "nnapi": ("libtensorflowlite_nnapi_delegate.so", "libnnapi_delegate.so"),
}
DELEGATE_ENV = {"gpu": "MASKCONVER_GPU_DELEGATE", "nnapi": "MASKCONVER_NNAPI_DELEGATE"}
BUILTIN_DELEGATES = ("xnnpack", "cpu")


class DelegateError(RuntimeError):
    """A requested hardware delegate cannot be loaded (message says why and what to do)."""


def default_threads() -> int:
    """Threads used when ``num_threads`` is None: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def backend_for(path: Path, backend: str | None) -> str:
    """``"litert"`` or ``"onnx"``: explicit, or from the file suffix."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None (by file suffix), got {backend!r}")
        return backend
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return "litert"
    if suffix == ".onnx":
        return "onnx"
    raise ValueError(f"cannot tell the backend from {path.name!r}; pass backend='litert' or backend='onnx'")


class _LiteRTRunner:
    """One LiteRT interpreter; ``run(x) -> {name: (array, quant or None)}``."""

    def __init__(self, path: Path, num_threads: int, delegate: str | Sequence[str] | None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        chain = [delegate] if isinstance(delegate, str) or delegate is None else list(delegate)
        chain = [d if d is not None else "xnnpack" for d in chain]
        if not chain:
            raise ValueError("delegate chain is empty; pass e.g. 'xnnpack' or ('gpu', 'xnnpack')")
        for name in chain:
            check_delegate_name(name)
        self.notes: list[str] = []
        last_error: Exception | None = None
        for i, name in enumerate(chain):
            try:
                kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": num_threads}
                if name == "cpu":
                    kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                elif name != "xnnpack":
                    kwargs["experimental_delegates"] = [load_external_delegate(name)]
                self.interpreter = Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
                self.delegate = name
                break
            except (DelegateError, ValueError, RuntimeError) as e:
                last_error = e
                if i + 1 < len(chain):
                    note = f"delegate {name!r} unavailable ({e}); falling back to {chain[i + 1]!r}"
                    self.notes.append(note)
                    log.warning(note)
        else:
            if isinstance(last_error, DelegateError):
                raise last_error
            raise DelegateError(
                f"cannot create a LiteRT interpreter for {path} with delegate {chain[-1]!r}: {last_error}"
            ) from last_error
        it = self.interpreter
        inp = it.get_input_details()
        if len(inp) != 1:
            raise ModelFileError(f"{path}: expected one input, found {len(inp)}")
        self.input_index = inp[0]["index"]
        self.input_dtype = np.dtype(inp[0]["dtype"])
        scale, zp = inp[0]["quantization"]
        self.input_quant = (float(scale), int(zp)) if scale and (scale != 1.0 or zp != 0) else None
        self.outputs = {
            name: (d["index"], _quant(d)) for name, d in _output_details_by_name(it, path).items()
        }

    def run(self, x: np.ndarray) -> dict[str, tuple[np.ndarray, tuple[float, float] | None]]:
        if self.input_quant is not None:
            scale, zp = self.input_quant
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.rint(x / scale + zp), info.min, info.max)
        self.interpreter.set_tensor(self.input_index, x.astype(self.input_dtype, copy=False))
        self.interpreter.invoke()
        return {name: (self.interpreter.get_tensor(idx), q) for name, (idx, q) in self.outputs.items()}


def _quant(detail: dict) -> tuple[float, float] | None:
    """``(scale, zero_point)`` of an integer output, None for float outputs."""
    if np.dtype(detail["dtype"]).kind == "f":
        return None
    scale, zp = detail["quantization"]
    if not scale:
        raise ModelFileError(
            f"output {detail['name']} is {np.dtype(detail['dtype'])} without quantisation parameters; "
            "re-convert the model"
        )
    return float(scale), float(zp)


def _output_details_by_name(interpreter, path: Path) -> dict[str, dict]:
    """Map ``heatmap`` / ``center_embeddings`` / ``mask_features`` to output details: by the
    ``serving_default`` signature's output names, else by tensor names containing those words."""
    details = interpreter.get_output_details()
    by_index = {d["index"]: d for d in details}
    try:
        sigs = interpreter.get_signature_list()
    except (AttributeError, ValueError):
        sigs = {}
    for key, sig in sigs.items():
        if sorted(sig.get("outputs", [])) == sorted(OUTPUT_NAMES):
            runner = interpreter.get_signature_runner(key).get_output_details()
            return {name: by_index[runner[name]["index"]] for name in OUTPUT_NAMES}
    out = {}
    for name in OUTPUT_NAMES:
        hits = [d for d in details if name in d["name"]]
        if len(hits) != 1:
            raise ModelFileError(
                f"{path}: cannot find the output {name!r} among {[d['name'] for d in details]}; re-convert the "
                "model with maskconver-convert"
            )
        out[name] = hits[0]
    return out


def check_delegate_name(name: object) -> None:
    """Raise ValueError unless ``name`` is a known delegate name or a delegate library path."""
    ok = isinstance(name, str) and (
        name in BUILTIN_DELEGATES or name in DELEGATE_LIBRARIES or name.endswith(".so") or os.sep in name
    )
    if not ok:
        raise ValueError(
            f"unknown delegate {name!r}; use 'xnnpack' (default), 'cpu' (no delegate), 'gpu', 'nnapi' or the path "
            "of a delegate .so (or a sequence of these, tried in order)"
        )


def load_external_delegate(name: str):
    """Load the ``"gpu"`` or ``"nnapi"`` delegate (or a delegate ``.so`` path) with ``load_delegate``.

    Raises:
        DelegateError: naming every library tried and why each failed.
    """
    from ai_edge_litert.interpreter import load_delegate

    check_delegate_name(name)
    if name in DELEGATE_LIBRARIES:
        env = os.environ.get(DELEGATE_ENV[name])
        candidates = ([env] if env else []) + list(DELEGATE_LIBRARIES[name])
    else:
        candidates = [name]
    reasons = []
    for lib in candidates:
        try:
            ctypes.CDLL(lib)  # probe first: a failed load_delegate leaves a noisy half-built Delegate behind
        except OSError as e:
            reasons.append(str(e) if lib in str(e) else f"{lib}: {e}")
            continue
        try:
            return load_delegate(lib)
        except (ValueError, RuntimeError, OSError) as e:
            reasons.append(f"{lib}: {str(e).splitlines()[-1] if str(e) else type(e).__name__}")
    hint = (
        f"set {DELEGATE_ENV[name]} to the delegate library's path, "
        if name in DELEGATE_ENV
        else "check the path, "
    )
    raise DelegateError(
        f"cannot load the {name} delegate ({'; '.join(reasons)}). On a desktop there usually is none: {hint}"
        "or pass delegate=('" + name + "', 'xnnpack') (on the command line: --delegate " + name + ",xnnpack) "
        "to fall back to the CPU"
    )


class _OnnxRunner:
    """One ONNX Runtime session (CPU); outputs are float (QDQ models dequantise inside)."""

    def __init__(self, path: Path, num_threads: int, delegate: str | Sequence[str] | None):
        import onnxruntime as ort

        if delegate not in (None, "cpu", "xnnpack"):
            raise ValueError(
                f"delegate {delegate!r} applies to LiteRT only; the ONNX backend runs on the CPU execution provider"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # ORT's pool otherwise busy-waits after each run, stealing the cores the NumPy decoding needs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelFileError(f"{path}: ONNX Runtime cannot load the model ({e}); re-convert it") from e
        self.delegate = "onnxruntime-cpu"
        self.notes: list[str] = []
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{path}: expected one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ModelFileError(f"{path}: ONNX outputs {names} lack {missing}; re-convert the model")

    def run(self, x: np.ndarray) -> dict[str, tuple[np.ndarray, tuple[float, float] | None]]:
        arrays = self.session.run(list(OUTPUT_NAMES), {self.input_name: x})
        return {name: (a, None) for name, a in zip(OUTPUT_NAMES, arrays, strict=True)}


@dataclass
class _Started:
    """A frame after preprocessing and inference, waiting to be decoded."""

    rgb: np.ndarray
    canvas: np.ndarray
    valid: tuple[int, int]
    outputs: dict[str, tuple[np.ndarray, tuple[float, float] | None]]
    preprocess_ms: float
    inference_ms: float


class Segmenter:
    """Panoptic segmentation with a maskconver model file.

    Args:
        model_path: ``.tflite`` or ``.onnx`` written by ``maskconver-convert``.
        backend: ``"litert"``, ``"onnx"`` or None (by file suffix).
        num_threads: CPU threads for inference; None = CPU count, at most 4.
        delegate: LiteRT only. ``"xnnpack"`` (default, LiteRT's default CPU delegate), ``"cpu"`` (no
            delegate: built-in kernels), ``"gpu"`` / ``"nnapi"`` (external delegates loaded with
            ``ai_edge_litert.interpreter.load_delegate``; set ``MASKCONVER_GPU_DELEGATE`` /
            ``MASKCONVER_NNAPI_DELEGATE`` to the library path if it has another name), a delegate ``.so``
            path, or a sequence such as ``("gpu", "nnapi", "xnnpack")`` tried in order. Each fallback is
            logged and kept in :attr:`delegate_notes`; a single unavailable delegate raises
            :class:`DelegateError`.
        output: ``"original"`` (default; masks at the input image's resolution) or ``"canvas"`` (the
            reference mode: masks on the ``info.canvas_size`` (640x640) canvas of the letterboxed input).
        mask_resolution: ``"full"`` (default): mask logits bilinearly resized to the output, the reference
            merge. ``"grid"``: the real-time path: the merge runs on the model's stride-8 feature grid and
            every output pixel takes its cell's labels (Model Garden's hardware-optimised path; blocky
            boundaries, decoding several times cheaper; :mod:`maskconver.runtime.grid_merge`).
            ``"grid2x"`` / ``"grid4x"``: the grid bilinearly upsampled 2x / 4x before that merge.
        mask_dtype: dtype of the result's ``category_mask`` / ``instance_mask``. ``"auto"`` (default): the
            smallest unsigned type that holds every id, uint8 for COCO (201 category slots, 50 proposals) as
            MediaPipe's category masks; a quarter of int32's bytes to write every frame. ``"int32"`` gives
            Model Garden's dtype; ``"uint8"`` / ``"uint16"`` are checked against the model's ids. Cast
            before arithmetic that can leave the type's range (``cat * 1000 + inst``).

    Not thread-safe: one interpreter per ``Segmenter``; use one ``Segmenter`` per thread.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | Sequence[str] | None = None,
        output: str = "original",
        mask_resolution: str = "full",
        mask_dtype: str | np.dtype | type = "auto",
    ):
        path = Path(model_path)
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
        self.backend = backend_for(path, backend)
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        self.model_file: ModelFile = read_model_file(path)
        if self.model_file.format != ("tflite" if self.backend == "litert" else "onnx"):
            raise ValueError(
                f"{path.name} is a {self.model_file.format} model; backend {self.backend!r} cannot run it "
                "(omit backend to choose by file type)"
            )
        self.model_path = path
        self.num_threads = num_threads or default_threads()
        runner_cls = _LiteRTRunner if self.backend == "litert" else _OnnxRunner
        self._runner = runner_cls(path, self.num_threads, delegate)
        self._delegate, self._notes = self._runner.delegate, list(self._runner.notes)
        self._busy = threading.Lock()  # detects concurrent use (the interpreter is not thread-safe)
        self._shared_users = 0  # pipelined streams running: their worker and the caller wait for each other
        self.output = output
        self.mask_resolution = mask_resolution
        info = self.info
        self._thing_table = info.is_thing_table()
        self._thing_list: list[bool] = self._thing_table.tolist()
        self._decode_kwargs = {
            **info.decode_settings(),
            "thing_ids": self._thing_table,
            "mask_dtype": mask_dtype_for(mask_dtype, info.num_classes, info.num_proposals),
        }
        self._plans: dict[tuple, DecodePlan] = {}  # (mode, mask resolution, image size, valid) -> plan
        self._names = info.labels()

    # -- properties -----------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """The model's ``maskconver.json`` (:class:`ModelInfo`)."""
        return self.model_file.info

    @property
    def labels(self) -> list[str]:
        """Category names by id (0..C-1)."""
        return list(self._names)

    @property
    def delegate(self) -> str:
        """The delegate in use (after any fallback)."""
        return self._delegate

    @property
    def delegate_notes(self) -> list[str]:
        """Why requested delegates were skipped, in order (empty when the first choice loaded)."""
        return list(self._notes)

    @property
    def mask_dtype(self) -> np.dtype:
        """The dtype of the results' label maps (fixed at construction: make another Segmenter to change it)."""
        return self._decode_kwargs["mask_dtype"]

    @property
    def config(self) -> dict[str, Any]:
        """The effective settings: model, backend, delegate, threads, sizes, decoding thresholds."""
        info = self.info
        return {
            "model_path": str(self.model_path),
            "config_name": info.config_name,
            "backend": self.backend,
            "delegate": self.delegate,
            "num_threads": self.num_threads,
            "output": self.output,
            "mask_resolution": self.mask_resolution,
            "mask_dtype": str(self.mask_dtype),
            "input_size": tuple(info.input_size),
            "input_dtype": info.input_dtype,
            "canvas_size": tuple(info.canvas_size),
            "num_classes": info.num_classes,
            "num_proposals": info.num_proposals,
            "object_mask_threshold": info.object_mask_threshold,
            "overlap_threshold": info.overlap_threshold,
            "small_area_threshold": info.small_area_threshold,
            "quantization": info.conversion.get("quantization"),
        }

    def __repr__(self) -> str:
        h, w = self.info.input_size
        return f"Segmenter({self.model_path.name!r}, {self.backend}/{self.delegate}, {h}x{w}, {self.num_threads} threads)"

    # -- running ---------------------------------------------------------------------------------------
    def infer(
        self, model_input_tensor: np.ndarray
    ) -> dict[str, tuple[np.ndarray, tuple[float, float] | None]]:
        """Raw model run: ``[1, h, w, 3]`` input -> ``{output name: (array, (scale, zero_point) or None)}``."""
        return self._run(model_input_tensor)

    def _run(self, x: np.ndarray) -> dict[str, tuple[np.ndarray, tuple[float, float] | None]]:
        runner = self._runner
        if runner is None:
            raise RuntimeError("this Segmenter is closed; create a new one")
        if not self._busy.acquire(blocking=self._shared_users > 0):
            raise RuntimeError(
                "Segmenter used from two threads at once; its interpreter is not thread-safe: create one "
                "Segmenter per thread"
            )
        try:
            return runner.run(x)
        finally:
            self._busy.release()

    def segment(
        self, image: Any, color: str = "rgb", output: str | None = None, mask_resolution: str | None = None
    ) -> PanopticResult:
        """Panoptic segmentation of one image.

        Args:
            image: RGB uint8 ``[H, W, 3]`` (see :func:`maskconver.runtime.preprocess.as_rgb_uint8` for the
                other accepted formats: gray, RGBA, uint16, float [0, 1]), or an image file path.
            color: ``"rgb"`` or ``"bgr"`` (OpenCV frames) channel order of ``image``.
            output: override the constructor's ``output`` mode for this call.
            mask_resolution: override the constructor's ``mask_resolution`` for this call.
        Returns:
            :class:`PanopticResult` with ``speed`` in ms for preprocess / inference / postprocess.
        """
        mode, masks = self._modes(output, mask_resolution)
        return self._finish(self._start(image, color), mode, masks)

    def _modes(self, output: str | None, mask_resolution: str | None) -> tuple[str, str]:
        mode = self.output if output is None else output
        if mode not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {mode!r}")
        masks = self.mask_resolution if mask_resolution is None else mask_resolution
        if masks not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {masks!r}")
        return mode, masks

    def _start(self, image: Any, color: str = "rgb") -> _Started:
        """The model half of :meth:`segment`: preprocessing and inference (the only part that touches the
        interpreter; its outputs are copies, so :meth:`_finish` may run in another thread meanwhile)."""
        t0 = time.perf_counter()
        rgb = read_image(image) if isinstance(image, str | os.PathLike) else as_rgb_uint8(image, color)
        info = self.info
        canvas, _scale, valid = letterbox(rgb, tuple(info.input_size), tuple(info.pad_value))
        x = model_input(canvas, info)
        t1 = time.perf_counter()
        outs = self._run(x)
        t2 = time.perf_counter()
        return _Started(rgb, canvas, tuple(valid), outs, 1000.0 * (t1 - t0), 1000.0 * (t2 - t1))

    def _finish(self, started: _Started, mode: str, masks: str) -> PanopticResult:
        """The decoding half of :meth:`segment` (NumPy only)."""
        t2 = time.perf_counter()
        rgb = started.rgb
        dec = self._decode(started.outputs, rgb.shape[:2], started.valid, mode, masks)
        if mode == "original":
            image_fn = _ConstantImage(rgb)
        else:
            image_fn = _ResizedCanvas(started.canvas, tuple(self.info.canvas_size))
        t3 = time.perf_counter()
        result = self._result(dec, rgb.shape[:2], mode, image_fn)
        result.decode_stages = {**dec.timings, "result": 1000.0 * (time.perf_counter() - t3)}
        result.speed.update(
            preprocess=started.preprocess_ms,
            inference=started.inference_ms,
            postprocess=1000.0 * (time.perf_counter() - t2),
        )
        return result

    __call__ = segment

    def _decode(self, outs, image_size, valid, mode: str, mask_resolution: str) -> PanopticDecoding:
        (heat, hq), (center, cq), (feats, mq) = (outs[n] for n in OUTPUT_NAMES)
        # canvas mode: the same output whatever the image, so one plan
        key = (mode, mask_resolution, image_size, valid) if mode == "original" else (mode, mask_resolution)
        plan = self._plans.get(key)
        if plan is None:  # checks and constants once per output geometry (a video has one)
            if mode == "original":
                sizes = {"output_size": tuple(image_size), "valid_size": tuple(valid)}
            else:
                sizes = {"output_size": tuple(self.info.canvas_size), "valid_size": None}
            plan = plan_decode(
                heat,
                center,
                feats,
                self.model_file.mask_head,
                heatmap_quant=hq,
                center_quant=cq,
                mask_quant=mq,
                **sizes,
                **self._decode_kwargs,
                mask_resolution=mask_resolution,
            )
            if len(self._plans) >= 32:  # many image sizes (a folder of photos): start over
                self._plans.clear()
            self._plans[key] = plan
        return decode_planned(plan, heat, center, feats)

    def _result(self, dec: PanopticDecoding, image_size, mode: str, image_fn) -> PanopticResult:
        names, things = self._names, self._thing_list
        nn, nt = len(names), len(things)
        make = Segment._from_values
        segments = [
            make(
                sid,
                cid,
                names[cid] if 0 <= cid < nn else f"class_{cid}",
                things[cid] if 0 <= cid < nt else False,
                score,
                area,
                box,
                iid,
            )
            for sid, cid, score, area, box, iid in dec.segment_rows
        ]
        return PanopticResult(
            category_mask=dec.category_mask,
            instance_mask=dec.instance_mask,
            segments=segments,
            speed={},
            categories=self.info.categories,
            image_size=(int(image_size[0]), int(image_size[1])),
            mode=mode,
            _image_fn=image_fn,
        )

    def warmup(self, runs: int = 1) -> None:
        """Run the model ``runs`` times on a mean-colour image (first invokes are slower)."""
        h, w = self.info.input_size
        img = np.empty((h, w, 3), np.uint8)
        img[:] = self.info.pad_value
        for _ in range(runs):
            self.segment(img)

    def stream(
        self,
        source: int | str | os.PathLike,
        *,
        drop_stale: bool | None = None,
        vid_stride: int = 1,
        max_frames: int | None = None,
        pipeline: bool | None = None,
        skip_unreadable: bool = False,
    ) -> SegmentStream:
        """Segment a camera / video / URL / image folder: an iterator of ``(frame_index, timestamp_ms,
        frame, result)``; ``pipeline`` runs the model on the next frame while this one is decoded (None:
        when the model is slow enough for that to pay off); ``skip_unreadable``: a folder skips (and lists)
        files it cannot read instead of raising. See :func:`maskconver.runtime.streams.stream`."""
        from maskconver.runtime.streams import stream

        return stream(
            self,
            source,
            drop_stale=drop_stale,
            vid_stride=vid_stride,
            max_frames=max_frames,
            pipeline=pipeline,
            skip_unreadable=skip_unreadable,
        )

    def close(self) -> None:
        """Release the interpreter (the object is unusable afterwards)."""
        self._runner = None  # type: ignore[assignment]

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ConstantImage:
    """The result's image: the input itself (a plain class, not a closure, so results pickle)."""

    def __init__(self, img: np.ndarray):
        self.img = img

    def __call__(self) -> np.ndarray:
        return self.img


class _ResizedCanvas:
    """The result's image in canvas mode: the model's canvas resized to ``size`` on first use."""

    def __init__(self, canvas: np.ndarray, size: tuple[int, int]):
        self.canvas, self.size = canvas, size
        self.resized: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self.resized is None:
            self.resized = cv2.resize(
                self.canvas, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR
            )
        return self.resized
