"""Streaming segmentation: cameras, video files, stream URLs and image folders, plus MediaPipe-style VIDEO
and LIVE_STREAM modes.

* :func:`stream` (also ``Segmenter.stream``) yields ``(frame_index, timestamp_ms, frame, result)``. A
  capture thread reads frames while the model runs on the previous one.

  - ``drop_stale=True`` (default for cameras and URLs): the capture thread keeps only the newest frame,
    so a slow model skips frames instead of falling behind (latency stays under one model run plus one
    frame). A video file read this way is played in real time at its own frame rate.
  - ``drop_stale=False`` (default for video files and image folders): every frame, in order; the capture
    thread reads at most a few frames ahead.

  - ``pipeline=True``: the model runs on frame N+1 in a worker thread while frame N is decoded in the
    calling thread (the interpreter releases the GIL), so a frame costs about ``max(inference, decoding)``
    instead of their sum when the CPU has a core to spare. Results keep the source order; the interpreter
    is used from the worker thread only. ``pipeline=None`` (default) decides after the first
    ``PIPELINE_PROBE_FRAMES`` frames: pipelined if their median inference takes at least
    ``PIPELINE_MIN_INFERENCE_MS``. Measured on 2 cores (``benchmarks/bench_segmenter.py -k stream``, a
    480x640 video, sequential / pipelined): the 256 mobile model (9 ms inference) 1.20x (full merge) and
    1.16x (grid merge) faster, the 0.9 ms demo model 1.10x and 1.13x, a designed 0.08 ms test model 5% slower
    (thread hand-offs then cost more than the overlap gains).

  ``frame_index`` counts the source's frames from 0 (gaps show skipped frames); ``timestamp_ms`` is the
  capture time on the monotonic clock, in ms since the stream started, strictly increasing; ``frame`` is
  RGB uint8. A video that ends or breaks mid-stream ends the iteration cleanly; a source that cannot be
  opened raises :class:`SourceError` when :func:`stream` is called.
* :class:`VideoSegmenter`: ``segment_for_video(frame, timestamp_ms)``, synchronous, timestamps must increase.
* :class:`LiveSegmenter`: ``segment_async(frame, timestamp_ms)`` returns at once; results go to
  ``result_callback(result, frame, timestamp_ms)`` from a worker thread; frames arriving while the model
  is busy are dropped.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import cv2
import numpy as np
from maskconver.runtime.preprocess import IMAGE_SUFFIXES, as_rgb_uint8, check_image_layout, read_image

if TYPE_CHECKING:
    from maskconver.runtime.result import PanopticResult
    from maskconver.runtime.segmenter import Segmenter

PIPELINE_PROBE_FRAMES = 3  # frames timed sequentially before pipeline=None decides
PIPELINE_MIN_INFERENCE_MS = 0.5  # median inference from which pipelining pays off (see the module doc)
CAMERA_READ_RETRIES = 20  # consecutive failed camera reads (10 ms apart) before the stream ends
READ_AHEAD = 4  # frames decoded ahead in drop_stale=False mode


class SourceError(ValueError):
    """A stream source that cannot be opened or read (the message names the source and the fix)."""


@dataclass
class Frame:
    """One captured frame: source index, monotonic capture time (ms since stream start), RGB pixels, the
    image file it came from (image folders and files; None for cameras, videos and URLs), and the unreadable
    files a folder skipped just before it (``(path, reason)``)."""

    index: int
    timestamp_ms: float
    image: np.ndarray
    path: str | None = None
    skipped: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------------------------
# sources


class _Source:
    """A frame source: ``read() -> BGR/RGB uint8 array or None at the end``; ``skip()`` drops one frame."""

    live = False  # frames arrive in real time (camera, URL)
    fps = 0.0
    name = ""

    def read(self) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def skip(self) -> bool:
        return self.read() is not None

    def close(self) -> None:
        pass


class _CaptureSource(_Source):
    """cv2.VideoCapture over a camera, a video file or a URL; frames converted to RGB."""

    def __init__(self, target: int | str, name: str, live: bool):
        self.name = name
        self.live = live
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(_open_hint(target, name))
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps <= 1000.0 else 0.0
        self._first: np.ndarray | None = None
        if not live:  # a file that opens but yields nothing is unreadable, not empty
            ok, frame = self.cap.read()
            if not ok or frame is None:
                self.cap.release()
                raise SourceError(
                    f"cannot decode any frame of {name} (corrupt, truncated or an unsupported codec); "
                    "re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4)"
                )
            self._first = frame

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
        else:
            tries = CAMERA_READ_RETRIES if self.live else 1
            frame = None
            for attempt in range(tries):
                ok, frame = self.cap.read()
                if ok and frame is not None:
                    break
                frame = None
                if attempt + 1 < tries:
                    time.sleep(0.01)
            if frame is None:
                return None
        return as_rgb_uint8(frame, color="bgr")

    def skip(self) -> bool:
        if self._first is not None:
            self._first = None
            return True
        return bool(self.cap.grab())

    def close(self) -> None:
        self.cap.release()


class _FolderSource(_Source):
    """Image files of a folder in name order (or one image file).

    An unreadable file is a :class:`SourceError`, or with ``skip_unreadable`` (folders only) skipped and
    collected in :attr:`skipped` (``(path, reason)``; :meth:`take_skipped` hands them over), so one corrupt
    photo does not end the run."""

    def __init__(self, files: list[Path], name: str, folder: bool = True, skip_unreadable: bool = False):
        self.files = files
        self.name = name
        self.folder = folder
        self.skip_unreadable = skip_unreadable and folder
        self.skipped: list[tuple[str, str]] = []
        self.path: str | None = None  # the file of the last frame read
        self._i = 0

    def take_skipped(self) -> tuple[tuple[str, str], ...]:
        """The files skipped since the last call."""
        out, self.skipped = tuple(self.skipped), []
        return out

    def read(self) -> np.ndarray | None:
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            try:
                image = read_image(path)
            except (ValueError, OSError) as e:
                if not self.skip_unreadable:
                    where = f"image folder {self.name}: {e}" if self.folder else f"image {path}: {e}"
                    raise SourceError(where) from e
                self.skipped.append((str(path), str(e)))
                continue
            self.path = str(path)
            return image
        return None

    def skip(self) -> bool:
        self._i += 1
        return self._i <= len(self.files)


def _open_hint(target: int | str, name: str) -> str:
    if isinstance(target, int):
        return (
            f"cannot open camera {target}: no such device, or it is in use / not permitted; list cameras "
            "with 'ls /dev/video*' (Linux) and pass the right index"
        )
    if "://" in str(target):
        return f"cannot open stream {name}; check the URL, the network and that OpenCV was built with FFmpeg"
    return f"cannot open video {name}: not a video OpenCV can read; pass a video file, an image folder or a camera index"


def open_source(source: int | str | os.PathLike, skip_unreadable: bool = False) -> _Source:
    """Open a camera index (``0`` or ``"0"``), a stream URL (``rtsp://``, ``http://``...), a video file,
    an image file or a folder of images (``skip_unreadable``: a folder skips files it cannot read).

    Raises:
        SourceError: the source does not exist or cannot be read.
    """
    if isinstance(source, bool) or source is None:
        raise SourceError(f"source must be a camera index, URL, video file or image folder, got {source!r}")
    if isinstance(source, int | np.integer) or (isinstance(source, str) and source.strip().isdigit()):
        index = int(source)
        if index < 0:  # OpenCV's "any camera" (-1) crashes some builds when there is none
            raise SourceError(
                f"camera index {index} is negative; pass 0 for the first camera (ls /dev/video*)"
            )
        return _CaptureSource(index, f"camera {index}", live=True)
    text = os.fspath(source)
    if "://" in text:
        return _CaptureSource(text, text, live=True)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the path")
        return _FolderSource(files, str(path), skip_unreadable=skip_unreadable)
    if not path.exists():
        raise SourceError(
            f"{path} does not exist; pass a camera index, a URL, a video file or an image folder"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _FolderSource([path], str(path), folder=False)
    return _CaptureSource(str(path), str(path), live=False)


# ---------------------------------------------------------------------------------------------------------
# capture thread


class FrameReader:
    """Reads a source on a background thread.

    ``drop_stale=True``: a one-frame slot holding the newest frame (older unconsumed frames are dropped,
    counted in :attr:`dropped`). ``drop_stale=False``: a bounded FIFO, every frame in order. Non-live
    sources read with ``drop_stale=True`` are paced at their frame rate (real-time playback).
    """

    def __init__(self, source: _Source, drop_stale: bool, vid_stride: int = 1):
        self.source = source
        self.drop_stale = drop_stale
        self.vid_stride = vid_stride
        self.dropped = 0
        self.trailing_skipped: tuple[tuple[str, str], ...] = ()  # set once the source has ended
        self._t0 = time.monotonic()
        self._last_ts = -1.0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._error: BaseException | None = None
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=READ_AHEAD)
        self._thread = threading.Thread(
            target=self._run, name=f"maskconver-capture {source.name}", daemon=True
        )
        self._thread.start()

    def _timestamp(self) -> float:
        ts = (time.monotonic() - self._t0) * 1000.0
        ts = max(ts, self._last_ts + 1e-3)  # strictly increasing even within one clock tick
        self._last_ts = ts
        return ts

    def _run(self) -> None:
        pace = self.drop_stale and not self.source.live and self.source.fps > 0
        index = 0
        try:
            while not self._stop.is_set():
                if index % self.vid_stride:
                    if not self.source.skip():
                        break
                    index += 1
                    continue
                if pace:
                    delay = self._t0 + index / self.source.fps - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                image = self.source.read()
                if image is None:
                    break
                src = self.source
                skipped = src.take_skipped() if isinstance(src, _FolderSource) else ()
                self._publish(Frame(index, self._timestamp(), image, getattr(src, "path", None), skipped))
                index += 1
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            # the capture thread owns the source: releasing it here never races a read in progress
            if isinstance(self.source, _FolderSource):  # unreadable files after the last frame
                self.trailing_skipped = self.source.take_skipped()
            self.source.close()
            self._finish()

    def _publish(self, frame: Frame) -> None:
        if self.drop_stale:
            with self._cond:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = frame
                self._cond.notify_all()
            return
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=0.05)
                return
            except queue.Full:
                continue

    def _finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()
        if not self.drop_stale:
            while not self._stop.is_set():
                try:
                    self._queue.put(None, timeout=0.05)
                    return
                except queue.Full:
                    continue

    def get(self) -> Frame | None:
        """The next frame (newest one with ``drop_stale``), or None when the source has ended.

        Raises whatever the capture thread raised (e.g. :class:`SourceError` for an unreadable image).
        """
        if self.drop_stale:
            with self._cond:
                while self._latest is None and not self._done and not self._stop.is_set():
                    self._cond.wait()
                frame, self._latest = self._latest, None
        else:
            while True:  # wakes up on close() too (the capture thread then posts no end marker)
                try:
                    frame = self._queue.get(timeout=0.05)
                    break
                except queue.Empty:
                    if self._stop.is_set():
                        return None
        if frame is None and self._error is not None:
            raise self._error
        return frame

    def close(self) -> None:
        """Stop the capture thread; it releases the source as it exits (a read blocked on a dead network
        stream finishes in the background)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


# ---------------------------------------------------------------------------------------------------------
# stream()


def stream(
    segmenter: Segmenter,
    source: int | str | os.PathLike,
    *,
    drop_stale: bool | None = None,
    vid_stride: int = 1,
    max_frames: int | None = None,
    pipeline: bool | None = None,
    skip_unreadable: bool = False,
) -> SegmentStream:
    """Segment every frame of ``source`` (see the module doc): an iterator (:class:`SegmentStream`) of
    ``(frame_index, timestamp_ms, frame RGB uint8, PanopticResult)``.

    Args:
        segmenter: the :class:`Segmenter` to run (do not use it elsewhere while the stream is open).
        source: camera index (``0`` / ``"0"``), stream URL, video file, image file or image folder.
        drop_stale: keep only the newest frame (bounded latency) or read every frame in order; None
            chooses True for cameras and URLs, False for files and folders.
        vid_stride: use every ``vid_stride``-th source frame (indices 0, k, 2k, ...).
        max_frames: stop after this many results.
        pipeline: overlap the model run of the next frame with the decoding of the current one (True),
            never (False), or decide from the first frames' inference time (None, the default).
        skip_unreadable: an image folder skips files it cannot read (listed in ``SegmentStream.skipped``
            once the frames after them are handed out; frame indices then count the readable images) instead
            of raising :class:`SourceError` on the frame that would have been that file.
    Raises:
        SourceError: at call time, if the source cannot be opened; while iterating, if it cannot be read.
        ValueError: bad arguments.
    """
    if not isinstance(vid_stride, int) or vid_stride < 1:
        raise ValueError(f"vid_stride must be a positive integer, got {vid_stride!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 0):
        raise ValueError(f"max_frames must be a non-negative integer or None, got {max_frames!r}")
    src = open_source(source, skip_unreadable=skip_unreadable)
    if drop_stale is None:
        drop_stale = src.live
    if drop_stale and isinstance(src, _FolderSource):
        src.close()
        raise ValueError("drop_stale=True needs a camera, URL or video; image folders are read in order")
    if drop_stale and not src.live and src.fps <= 0:
        src.close()
        raise ValueError(
            f"{src.name} reports no frame rate, so it cannot be played in real time; use drop_stale=False"
        )
    return SegmentStream(segmenter, FrameReader(src, drop_stale, vid_stride), max_frames, pipeline=pipeline)


class SegmentStream:
    """Iterator returned by :func:`stream`: yields ``(frame_index, timestamp_ms, frame, result)``.

    Attributes: ``source_name``, ``live``, ``fps`` (the source's frame rate, 0 if unknown), ``drop_stale``,
    ``dropped`` (frames the capture thread discarded so far), ``frame_path`` (the image file of the frame
    just yielded; None for cameras, videos and URLs) and ``skipped`` (``(path, reason)`` of unreadable files an
    image folder skipped so far). Closing (or leaving a ``with`` block, or exhausting it) stops the capture
    thread and releases the source.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        reader: FrameReader,
        max_frames: int | None,
        pipeline: bool | None = None,
    ):
        self.segmenter = segmenter
        self._reader = reader
        self._max = max_frames
        self._count = 0  # frames handed to the model
        self._closed = False
        self._ended = False
        self.source_name = reader.source.name
        self.live = reader.source.live
        self.fps = reader.source.fps
        self.drop_stale = reader.drop_stale
        self.vid_stride = reader.vid_stride
        self.frame_path: str | None = None
        self._skipped: list[tuple[str, str]] = []  # of the frames handed out (and, at the end, after them)
        self._trailing_added = False
        self._probe: list[float] | None = [] if pipeline is None else None  # inference ms while deciding
        self._pool = self._new_pool() if pipeline else None
        self._pending: Future | None = None

    def _new_pool(self) -> ThreadPoolExecutor:
        """The model worker. While it exists the segmenter waits for its interpreter instead of refusing a
        second thread, so ``segmenter.segment()`` may still be called inside the stream loop."""
        self.segmenter._shared_users += 1
        return ThreadPoolExecutor(1, thread_name_prefix="maskconver-model")

    @property
    def pipeline(self) -> bool:
        """Whether frames are pipelined now (with ``pipeline=None``: False until decided)."""
        return self._pool is not None

    @property
    def dropped(self) -> int:
        return self._reader.dropped

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return list(self._skipped)

    def __iter__(self) -> SegmentStream:
        return self

    def _next_frame(self) -> Frame | None:
        """The next frame to segment, or None at the end (source exhausted or ``max_frames`` reached)."""
        if self._ended or self._closed or (self._max is not None and self._count >= self._max):
            return None
        frame = self._reader.get()
        if frame is None:
            self._ended = True  # the reader's end marker is read only once
        else:
            self._count += 1
        return frame

    def _fetch_and_run(self) -> tuple[Frame, Any] | None:
        """Worker task: the next frame and its model run (``Segmenter._start``), or None at the end. Source
        errors and model errors are raised from the future, i.e. on the call that would yield that frame."""
        frame = self._next_frame()
        if frame is None or self._closed:
            return None
        return frame, self.segmenter._start(frame.image)

    def _stop(self) -> NoReturn:
        """End the iteration; a source read to its end adds the unreadable files after its last frame (here,
        after every frame's own, so the order is the folder's whether or not frames are pipelined)."""
        if self._ended and not self._trailing_added:
            self._trailing_added = True
            self._skipped.extend(self._reader.trailing_skipped)
        raise StopIteration

    def __next__(self) -> tuple[int, float, np.ndarray, PanopticResult]:
        try:
            if self._pool is None:
                frame = self._next_frame()
                if frame is None:
                    self._stop()
                result = self.segmenter.segment(frame.image)
                self._decide(result.speed["inference"])
                self.frame_path = frame.path
                self._skipped.extend(frame.skipped)
                return frame.index, frame.timestamp_ms, frame.image, result
            pending = self._pending or self._pool.submit(self._fetch_and_run)
            self._pending = None
            got = pending.result()  # blocks only on the worker, never on the source
            if got is None:
                self._stop()
            frame, started = got
            # the worker takes the next frame (the newest one with drop_stale) and runs the model on it
            # while this one is decoded here
            self._pending = self._pool.submit(self._fetch_and_run)
            result = self.segmenter._finish(started, *self.segmenter._modes(None, None))
            self.frame_path = frame.path
            self._skipped.extend(frame.skipped)
            return frame.index, frame.timestamp_ms, frame.image, result
        except BaseException:
            self.close()
            raise

    def _decide(self, inference_ms: float) -> None:
        """``pipeline=None``: after the probe frames, pipeline if their median inference is long enough."""
        if self._probe is None or self._closed:
            return
        self._probe.append(inference_ms)
        if len(self._probe) >= PIPELINE_PROBE_FRAMES:
            if float(np.median(self._probe)) >= PIPELINE_MIN_INFERENCE_MS:
                self._pool = self._new_pool()
            self._probe = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.close()  # first: a worker waiting for a frame wakes up with none
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)  # the interpreter is idle afterwards
                self.segmenter._shared_users -= 1
            self._pending = None

    def __enter__(self) -> SegmentStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


# ---------------------------------------------------------------------------------------------------------
# VIDEO and LIVE_STREAM modes


def _make_segmenter(model: Any, kwargs: dict) -> tuple[Segmenter, bool]:
    """``(segmenter, owned)``: the given Segmenter, or a new one (owned: closed with the mode object)."""
    from maskconver.runtime.segmenter import Segmenter

    if isinstance(model, Segmenter):
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply when a model path is given, not a Segmenter")
        return model, False
    return Segmenter(model, **kwargs), True


class _Timestamps:
    def __init__(self) -> None:
        self.last: float | None = None

    def check(self, timestamp_ms: float, commit: bool = True) -> None:
        """Raise unless ``timestamp_ms`` is a finite number above the last recorded one; ``commit`` records it."""
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int | float | np.number):
            raise TypeError(
                f"timestamp_ms must be a number of milliseconds, got {type(timestamp_ms).__name__}"
            )
        if not np.isfinite(timestamp_ms):
            raise ValueError(f"timestamp_ms must be finite, got {timestamp_ms}")
        if self.last is not None and timestamp_ms <= self.last:
            raise ValueError(
                f"timestamp_ms must increase monotonically: got {timestamp_ms} after {self.last}; pass the "
                "frame's capture time (e.g. time.monotonic() * 1000)"
            )
        if commit:
            self.last = float(timestamp_ms)


class VideoSegmenter:
    """MediaPipe VIDEO mode: ``segment_for_video(frame, timestamp_ms)`` with increasing timestamps.

    ``model``: a model path (``segmenter_kwargs`` go to :class:`Segmenter`) or a Segmenter.
    """

    def __init__(self, model: Any, *, color: str = "rgb", **segmenter_kwargs: Any):
        self.segmenter, self._owned = _make_segmenter(model, segmenter_kwargs)
        self.color = color
        self._ts = _Timestamps()

    def segment_for_video(self, frame: Any, timestamp_ms: float) -> PanopticResult:
        """Segment one frame; raises ValueError if ``timestamp_ms`` does not exceed the previous one (a frame that
        is refused, e.g. an empty image, does not use up its timestamp)."""
        self._ts.check(timestamp_ms, commit=False)
        result = self.segmenter.segment(frame, color=self.color)
        self._ts.last = float(timestamp_ms)  # checked above; recorded once the frame was taken
        return result

    def close(self) -> None:
        """Close the Segmenter if this object created it."""
        if self._owned:
            self.segmenter.close()

    def __enter__(self) -> VideoSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_LIVE_POLL_S = 0.5  # how often an idle LiveSegmenter worker checks that its owner still exists


def _live_worker(ref: weakref.ref, keep: list, lock: threading.Lock, wake: threading.Condition) -> None:
    """The worker of a :class:`LiveSegmenter` (``ref``: a weak reference to it; ``keep``: a one-item list holding
    it strongly from an accepted frame until that frame's callback has run, so no accepted frame is lost):
    segments each accepted frame and runs the callback; ends when the owner is closed or has been collected."""
    while True:
        with lock:
            while True:
                owner = keep[0] or ref()
                if owner is None:
                    return
                if owner._pending is not None or owner._closed:
                    break
                del owner  # not held while waiting (an unreferenced owner is collected meanwhile)
                wake.wait(timeout=_LIVE_POLL_S)
            if owner._pending is None:
                return
            frame, ts = owner._pending
            owner._pending = None
        try:
            result = owner.segmenter.segment(frame, color=owner.color)
            owner.callback(result, frame, ts)
            owner.processed += 1
        except BaseException as e:
            owner._error = e
        finally:
            with lock:
                owner._busy = False
                owner._idle.set()
                keep[0] = None
        del owner  # (the result and frame hold no reference to it)


class LiveSegmenter:
    """MediaPipe LIVE_STREAM mode: ``segment_async`` hands a frame to a worker thread and returns at once.

    ``result_callback(result, frame, timestamp_ms)`` runs on the worker thread for each processed frame.
    A frame that arrives while the worker is busy is dropped (``segment_async`` returns False and
    :attr:`dropped` grows), so latency never builds up. Accepted frames are copied, so the caller may
    reuse its buffer. An exception in the model or the callback is raised by the next ``segment_async``
    or by :meth:`close`. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        model: Any,
        result_callback: Callable[[PanopticResult, np.ndarray, float], None],
        *,
        color: str = "rgb",
        **segmenter_kwargs: Any,
    ):
        if not callable(result_callback):
            raise TypeError("LiveSegmenter needs result_callback(result, frame, timestamp_ms)")
        self.segmenter, self._owned = _make_segmenter(model, segmenter_kwargs)
        self.callback = result_callback
        self.color = color
        self.processed = 0
        self.dropped = 0
        self._ts = _Timestamps()
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._pending: tuple[np.ndarray, float] | None = None
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Event()
        self._idle.set()
        # self, from an accepted frame until its callback has run (see _live_worker)
        self._keep: list = [None]
        # the worker holds this object only while it handles a frame: one nobody references any more is
        # collected even if it was never closed, and its worker then ends (within _LIVE_POLL_S)
        self._thread = threading.Thread(
            target=_live_worker,
            args=(weakref.ref(self), self._keep, self._lock, self._wake),
            name="maskconver-live",
            daemon=True,
        )
        self._thread.start()

    def segment_async(self, frame: Any, timestamp_ms: float) -> bool:
        """Queue ``frame`` unless the worker is busy. Returns True if accepted, False if dropped.

        Raises:
            ValueError: ``frame`` is no image of a usable shape and dtype (values, e.g. NaN, are checked on
                the worker: :func:`maskconver.runtime.preprocess.as_rgb_uint8`), or the timestamp does not
                increase.
        """
        self._raise_pending_error()
        if self._closed:
            raise RuntimeError("LiveSegmenter is closed")
        # a bad frame is this call's error (no pass over the pixels); a PIL image becomes its array here
        arr = check_image_layout(frame, self.color)
        self._ts.check(timestamp_ms)
        with self._lock:
            if self._busy:
                self.dropped += 1
                return False
            self._busy = True
            self._idle.clear()
            self._pending = (np.array(arr, copy=True), float(timestamp_ms))
            self._keep[0] = self
            self._wake.notify()
        return True

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"the live segmentation worker failed: {err}") from err

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is idle (the last accepted frame's callback has returned)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Finish the frame in flight, stop the worker, and raise any error it hit."""
        if not self._closed:
            self._idle.wait()
            with self._lock:
                self._closed = True
                self._wake.notify_all()
            self._thread.join(timeout=10.0)
            if self._owned:
                self.segmenter.close()
        self._raise_pending_error()

    def __enter__(self) -> LiveSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
