"""``maskconver-segment MODEL SOURCE``: panoptic segmentation of an image, folder, video, URL or camera.

Examples::

    maskconver-segment model.tflite photo.jpg --save out/            # overlay PNG(s) into out/
    maskconver-segment model.tflite clip.mp4 --save overlay.mp4 --json clip.json
    maskconver-segment model.tflite 0 --show                         # camera 0 in a window (q quits)

Each frame prints a line with its segments and the pre / inference / post split. Overlays carry the
category colours and names plus FPS and latency text. Every output file is written to a temporary file
and renamed when complete. Exit status: 0 on success, 2 on bad input (message on stderr), 130 on Ctrl-C
(outputs written so far are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from maskconver.runtime.atomic import give_usual_permissions
from maskconver.runtime.decode import MASK_RESOLUTIONS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
IMAGE_SAVE_SUFFIXES = (".png",)  # --save OUT.png: the overlay of a single image
WINDOW = "maskconver"


class CliError(Exception):
    """Bad input: printed as ``maskconver-segment: error: <message>``, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskconver-segment",
        description="Panoptic segmentation with a maskconver .tflite/.onnx model on an image, image folder, "
        "video file, stream URL or camera index.",
    )
    p.add_argument("model", help="maskconver .tflite or .onnx model file")
    p.add_argument(
        "source", help="image file, image folder, video file, stream URL (rtsp://...) or camera index"
    )
    p.add_argument(
        "--show", action="store_true", help="show the overlay in a window (needs a display); q quits"
    )
    p.add_argument(
        "--save",
        metavar="OUT",
        help="write overlays: a video file (.mp4 with the mp4v codec, .avi, ...) or a folder for PNG frames",
    )
    p.add_argument("--json", metavar="OUT", help="write per-frame segments and timings as JSON")
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="inference threads (default: up to 4)"
    )
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument(
        "--vid-stride", type=int, default=1, metavar="K", help="use every K-th frame of the source"
    )
    p.add_argument(
        "--drop-stale",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only the newest frame when the model is slower than the source (default: on for cameras "
        "and URLs, off for files)",
    )
    p.add_argument(
        "--backend", choices=("litert", "onnx"), default=None, help="default: by model file suffix"
    )
    p.add_argument(
        "--delegate",
        default=None,
        help="LiteRT delegate: xnnpack (default), cpu, gpu, nnapi, a delegate .so path, or a comma-separated "
        "fallback chain such as gpu,xnnpack",
    )
    p.add_argument(
        "--canvas",
        action="store_true",
        help="output the 640x640 reference canvas instead of the input resolution",
    )
    p.add_argument(
        "--mask-resolution",
        choices=MASK_RESOLUTIONS,
        default="full",
        help="full (default): bilinear masks, the reference merge; grid: merge on the model's stride-8 grid "
        "(blocky boundaries, several times faster decoding: for live video); grid2x / grid4x: on the grid "
        "bilinearly upsampled 2x / 4x first",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    return p


def check_display() -> None:
    """Raise CliError unless ``cv2.imshow`` can open a window here."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise CliError(
            "--show needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set; use --save instead"
        )
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise CliError(
            "--show needs OpenCV with GUI support (this one is headless: pip install opencv-python instead of "
            f"opencv-python-headless), or use --save ({str(e).strip().splitlines()[-1]})"
        ) from e


def _check_args(args: argparse.Namespace) -> None:
    for name in ("threads", "max_frames"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "threads" else 0):
            raise CliError(
                f"--{name.replace('_', '-')} must be {'>= 1' if name == 'threads' else '>= 0'}, got {v}"
            )
    if args.vid_stride < 1:
        raise CliError(f"--vid-stride must be >= 1, got {args.vid_stride}")
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if Path(args.model).is_dir():
        raise CliError(f"{args.model} is a folder; pass the .tflite or .onnx model file")
    if not Path(args.model).is_file():
        raise CliError(f"model file {args.model} does not exist; pass the .tflite or .onnx file")
    if args.save:
        out = Path(args.save)
        if out.suffix.lower() in IMAGE_SAVE_SUFFIXES:
            if not _single_image(args.source):
                raise CliError(
                    f"--save {out} writes one image, but {args.source} is not a single image file; pass a folder "
                    f"for PNG frames or a {'/'.join(VIDEO_SUFFIXES)} file"
                )
            if out.resolve() == Path(args.source).resolve():
                raise CliError(f"--save {out} is the input image itself; save the overlay under another name")
            if not out.parent.is_dir():
                raise CliError(f"folder {out.parent} for --save {out} does not exist; create it first")
        elif out.suffix.lower() in VIDEO_SUFFIXES:
            if not out.parent.is_dir():
                raise CliError(f"folder {out.parent} for --save {out} does not exist; create it first")
        elif _image_folder_of(args.source) == out.resolve():
            raise CliError(
                f"--save {out} is the folder of the input images; the overlays (named after them) would overwrite "
                "them: pass another folder"
            )
        elif out.exists() and not out.is_dir():
            raise CliError(
                f"--save {out} is an existing file without a video suffix; pass a folder for PNGs or a "
                f"{'/'.join(VIDEO_SUFFIXES)} file"
            )
    if args.json:
        jp = Path(args.json)
        if not jp.parent.is_dir():
            raise CliError(f"folder {jp.parent} for --json {jp} does not exist; create it first")
        if jp.is_dir():
            raise CliError(f"--json {jp} is a folder; pass a file name such as {jp / 'results.json'}")


class VideoSink:
    """Overlay frames -> a video written to a temporary file and renamed by :meth:`finish`."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps if fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self.writer is None:
            fourcc = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            if not self.writer.isOpened():
                raise CliError(f"OpenCV cannot write {self.path.suffix} video ({fourcc}); try --save out.avi")
            self.size = (w, h)
        elif (w, h) != self.size:  # image folders may mix sizes: pad/crop to the first frame's size
            rgb = _fit(rgb, self.size)
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if not self.frames:
            self.abort()
            return
        # OpenCV's writer drops I/O errors (a full disk): read the file back before it gets its final name.
        cap = cv2.VideoCapture(str(self.tmp))
        readable = 0
        while readable < self.frames and cap.read()[0]:
            readable += 1
        cap.release()
        if readable < self.frames:
            self.abort()
            raise CliError(
                f"the video {self.path} could not be written completely ({readable} of {self.frames} frames "
                "readable; is the disk full?); free space or save elsewhere"
            )
        give_usual_permissions(self.tmp)  # mkstemp made it 0600
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.tmp.unlink(missing_ok=True)


def _single_image(source: str) -> bool:
    from maskconver.runtime.preprocess import IMAGE_SUFFIXES

    p = Path(source)
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _image_folder_of(source: str) -> Path | None:
    """The folder whose images ``source`` (an image folder or image file) reads, resolved; else None."""
    p = Path(source)
    if p.is_dir():
        return p.resolve()
    return p.resolve().parent if _single_image(source) else None


def _frame_png_name(path: str | None, index: int, used: set[str]) -> str:
    """``frame_NNNNNN.png``, or for an image file its own stem (``IMG_1.jpg`` -> ``IMG_1.png``; a second file
    with the same stem keeps its suffix: ``IMG_1_png.png``)."""
    if path is None:
        return f"frame_{index:06d}.png"
    p = Path(path)
    name = f"{p.stem}.png"
    if name in used:
        name = f"{p.stem}_{p.suffix.lstrip('.').lower()}.png"
    if name in used:
        name = f"{p.stem}_{index:06d}.png"
    used.add(name)
    return name


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Letterbox ``rgb`` into ``size = (w, h)`` (for mixed-size frames going into one video)."""
    from maskconver.runtime.preprocess import letterbox

    canvas, _, _ = letterbox(rgb, (size[1], size[0]), (0, 0, 0))
    return canvas


def _write_json(path: Path, data: Any) -> None:
    from maskconver.runtime.result import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def _probe_writable(folder: Path, what: str) -> None:
    """Fail before any work when ``folder`` (or the parent it would be created in) cannot take a file."""
    from maskconver.runtime.output_paths import OutputPathError, check_output_dir

    try:
        check_output_dir(folder, what)
    except OutputPathError as e:
        raise CliError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    from maskconver.runtime.model_info import ModelFileError
    from maskconver.runtime.overlay import draw_banner
    from maskconver.runtime.result import write_png_atomic
    from maskconver.runtime.segmenter import DelegateError, Segmenter
    from maskconver.runtime.streams import SourceError

    _check_args(args)
    if args.show:
        check_display()
    if args.save:
        save = Path(args.save)
        one_file = save.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SAVE_SUFFIXES
        _probe_writable(save.parent if one_file else save, "--save")
    if args.json:
        _probe_writable(Path(args.json).parent, "--json")
    delegate = args.delegate.split(",") if args.delegate and "," in args.delegate else args.delegate
    try:
        seg = Segmenter(
            args.model,
            backend=args.backend,
            num_threads=args.threads,
            delegate=delegate,
            output="canvas" if args.canvas else "original",
            mask_resolution=args.mask_resolution,
        )
    except (ModelFileError, DelegateError, ValueError) as e:
        raise CliError(str(e)) from e
    for note in seg.delegate_notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        frames = seg.stream(
            args.source,
            drop_stale=args.drop_stale,
            vid_stride=args.vid_stride,
            max_frames=args.max_frames,
            skip_unreadable=True,  # one corrupt photo must not end a folder's run: warned and listed
        )
    except (SourceError, ValueError) as e:
        raise CliError(str(e)) from e

    print(f"{seg!r} on {frames.source_name}", file=sys.stderr)
    video: VideoSink | None = None
    png_dir: Path | None = None
    png_file: Path | None = None
    if args.save:
        out = Path(args.save)
        if out.suffix.lower() in VIDEO_SUFFIXES:
            video = VideoSink(out, (frames.fps or 30.0) / frames.vid_stride)
        elif out.suffix.lower() in IMAGE_SAVE_SUFFIXES:
            png_file = out
        else:
            png_dir = out
            png_dir.mkdir(parents=True, exist_ok=True)
    png_names: set[str] = set()
    warned = 0
    records: list[dict] = []
    totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    count, fps, last_t, t_start = 0, 0.0, None, time.monotonic()
    status = 0
    try:
        for index, ts, _frame, result in frames:
            now = time.monotonic()
            if last_t is not None:
                inst = 1.0 / max(now - last_t, 1e-6)
                fps = inst if fps == 0.0 else 0.9 * fps + 0.1 * inst
            last_t = now
            count += 1
            for k in totals:
                totals[k] += result.speed[k]
            if not args.quiet:
                print(f"frame {index}: {result.summary()}", flush=True)
            for path, reason in frames.skipped[warned:]:
                print(f"warning: skipped {path}: {reason}", file=sys.stderr)
                warned += 1
            if args.json:
                source = {"source_file": frames.frame_path} if frames.frame_path else {}
                records.append(
                    {"frame_index": index, "timestamp_ms": round(ts, 3), **source, **result.to_dict()}
                )
            if video is None and png_dir is None and png_file is None and not args.show:
                continue
            over = result.plot(alpha=args.alpha)
            sp = result.speed
            latency = sp["preprocess"] + sp["inference"] + sp["postprocess"]
            draw_banner(
                over,
                [
                    f"{fps:.1f} FPS" if fps else "FPS --",
                    f"{latency:.1f} ms (pre {sp['preprocess']:.1f} / inf {sp['inference']:.1f} / "
                    f"post {sp['postprocess']:.1f})",
                ],
            )
            if video is not None:
                video.write(over)
            if png_dir is not None:
                write_png_atomic(png_dir / _frame_png_name(frames.frame_path, index, png_names), over)
            if png_file is not None:
                write_png_atomic(png_file, over)
            if args.show:
                cv2.imshow(WINDOW, over[:, :, ::-1])
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    except KeyboardInterrupt:
        status = 130
        print("interrupted; keeping the outputs written so far", file=sys.stderr)
    except SourceError as e:
        frames.close()
        if video is not None:
            video.finish()
        raise CliError(str(e)) from e
    except BaseException:
        frames.close()
        if video is not None:
            video.abort()
        raise
    finally:
        frames.close()
        if args.show:
            cv2.destroyAllWindows()
    if video is not None:
        video.finish()
    elapsed = time.monotonic() - t_start
    mean = {k: (v / count if count else 0.0) for k, v in totals.items()}
    summary = {
        "model": seg.config,
        "source": frames.source_name,
        "frames": count,
        "dropped_frames": frames.dropped,
        "wall_time_s": round(elapsed, 3),
        "fps": round(count / elapsed, 2) if elapsed > 0 else None,
        "mean_speed_ms": {k: round(v, 3) for k, v in mean.items()},
    }
    skipped = frames.skipped
    for path, reason in skipped[warned:]:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        summary["skipped_files"] = [{"path": p, "reason": r} for p, r in skipped]
    if args.json:
        _write_json(Path(args.json), {"summary": summary, "frames": records})
    print(
        f"{count} frames in {elapsed:.2f} s ({summary['fps']} FPS); mean ms: pre {mean['preprocess']:.1f}, "
        f"inference {mean['inference']:.1f}, post {mean['postprocess']:.1f}"
        + (f"; {frames.dropped} stale frames dropped" if frames.dropped else ""),
        file=sys.stderr,
    )
    if args.save:
        print(f"saved {args.save}", file=sys.stderr)
    if skipped and status == 0:
        print(
            f"maskconver-segment: error: {len(skipped)} unreadable image file(s) skipped (listed above"
            f"{' and in --json' if args.json else ''}); re-save or remove them",
            file=sys.stderr,
        )
        status = 2
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CliError as e:
        print(f"maskconver-segment: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output write failed mid-run (e.g. disk full); finished files are complete
        where = f" {e.filename}" if e.filename else ""
        print(
            f"maskconver-segment: error: cannot write{where}: {e.strerror or e}; free space or save elsewhere",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
