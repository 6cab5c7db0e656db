"""Soak test: thousands of frames through one ``Segmenter``, memory (RSS) sampled every N frames.

    /work/venv/bin/python -m maskconver.benchmarks.soak --model model.tflite --frames 3000 \\
        --plot soak_memory.png --json soak_memory.json

Without ``--model`` the first ``models/demo/*.tflite`` is used. The frames cycle through a fixed set of
images of five sizes (96x128 up to 720x1280, so the decoder allocates masks of many shapes); each
result is hashed and must equal the hash of the same image's first result (no drift). After the warm-up,
memory must stay flat: the report gives the RSS growth from the end of the warm-up to the end, the
least-squares slope in MB per 1000 frames, the live Python object count and the latency per window.
The PNG shows RSS and median latency against frames.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Five sizes: with sample_every a multiple of 5 every sample follows the same image, so the allocator's
# per-size caching does not show up as noise between samples.
SOAK_SIZES = ((96, 128), (240, 320), (480, 640), (720, 1280), (300, 200))


def rss_mb() -> float:
    """This process's resident set size in MiB (``/proc/self/status`` VmRSS; ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # pragma: no cover - not Linux


def soak_images(seed: int = 0, sizes=SOAK_SIZES) -> list[np.ndarray]:
    """RGB uint8 images ``[h, w, 3]`` of the given sizes: blocky colours plus a bright rectangle and disc."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        cell = max(8, min(h, w) // 10)
        small = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3), dtype=np.uint8)
        img = np.repeat(np.repeat(small, cell, 0), cell, 1)[:h, :w].copy()
        cv2.rectangle(img, (w // 8, h // 6), (w // 2, h // 2), (240, 40, 40), -1)
        cv2.circle(img, (3 * w // 4, 2 * h // 3), min(h, w) // 6, (40, 200, 240), -1)
        out.append(img)
    return out


@dataclass
class SoakResult:
    model: str
    frames: int
    sample_every: int
    warmup_frames: int
    sample_frames: list[int] = field(default_factory=list)  # frame count at each sample (0 = before any)
    rss_mb: list[float] = field(default_factory=list)
    python_objects: list[int] = field(default_factory=list)
    window_p50_ms: list[float] = field(
        default_factory=list
    )  # median latency of the frames before each sample
    mismatched_results: int = 0
    wall_s: float = 0.0

    def _after_warmup(self) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(self.sample_frames, dtype=np.float64)
        r = np.asarray(self.rss_mb, dtype=np.float64)
        keep = f >= self.warmup_frames
        return f[keep], r[keep]

    def _first_after(self) -> int:
        """Index of the first sample at or after the end of the warm-up."""
        return next(i for i, f in enumerate(self.sample_frames) if f >= self.warmup_frames)

    @property
    def growth_mb(self) -> float:
        """RSS at the end minus RSS at the end of the warm-up."""
        _, r = self._after_warmup()
        return float(r[-1] - r[0]) if r.size else float("nan")

    @property
    def spread_mb(self) -> float:
        """max - min RSS after the warm-up."""
        _, r = self._after_warmup()
        return float(r.max() - r.min()) if r.size else float("nan")

    @property
    def slope_mb_per_1000(self) -> float:
        """Least-squares slope of RSS after the warm-up, MB per 1000 frames."""
        f, r = self._after_warmup()
        if f.size < 2:
            return float("nan")
        return float(np.polyfit(f, r, 1)[0] * 1000.0)

    def summary(self) -> dict:
        d = asdict(self)
        d.update(
            growth_after_warmup_mb=round(self.growth_mb, 3),
            spread_after_warmup_mb=round(self.spread_mb, 3),
            slope_mb_per_1000_frames=round(self.slope_mb_per_1000, 4),
            rss_start_mb=round(self.rss_mb[0], 1),
            rss_end_mb=round(self.rss_mb[-1], 1),
            python_objects_growth_after_warmup=self.python_objects[-1]
            - self.python_objects[self._first_after()],
            p50_ms=round(statistics.median(self.window_p50_ms), 2) if self.window_p50_ms else None,
        )
        return d


def _digest(result) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(result.category_mask.tobytes())
    h.update(result.instance_mask.tobytes())
    h.update(repr([(s.category_id, s.instance_id, s.area, s.bbox) for s in result.segments]).encode())
    return h.digest()


def run_soak(
    model: str | os.PathLike,
    frames: int = 3000,
    sample_every: int = 100,
    warmup_frames: int = 300,
    num_threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SoakResult:
    """Segment ``frames`` frames with one Segmenter, sampling RSS every ``sample_every`` frames."""
    from maskconver.runtime.segmenter import Segmenter

    if frames < 1 or sample_every < 1 or warmup_frames < 0 or warmup_frames >= frames:
        raise ValueError(
            f"need frames >= 1, sample_every >= 1 and 0 <= warmup < frames; got frames {frames}, sample_every "
            f"{sample_every}, warmup {warmup_frames} (--warmup defaults to 300: lower it for short runs)"
        )
    seg = Segmenter(model, num_threads=num_threads)
    images = soak_images(seed)
    if sample_every % len(images):
        raise ValueError(f"sample_every must be a multiple of {len(images)} (the image cycle)")
    first: list[bytes | None] = [None] * len(images)
    res = SoakResult(str(model), frames, sample_every, warmup_frames)

    def sample(n: int, window: list[float]) -> None:
        res.sample_frames.append(n)
        res.rss_mb.append(rss_mb())
        res.python_objects.append(len(gc.get_objects()))
        if window:
            res.window_p50_ms.append(float(statistics.median(window)))

    t0 = time.perf_counter()
    sample(0, [])
    window: list[float] = []
    for n in range(1, frames + 1):
        k = (n - 1) % len(images)
        t = time.perf_counter()
        result = seg.segment(images[k])
        window.append(1000.0 * (time.perf_counter() - t))
        d = _digest(result)
        if first[k] is None:
            first[k] = d
        elif d != first[k]:
            res.mismatched_results += 1
        del result
        if n % sample_every == 0 or n == frames:
            sample(n, window)
            window = []
            if progress:
                print(
                    f"[soak] {n}/{frames} frames  RSS {res.rss_mb[-1]:.1f} MB  objects {res.python_objects[-1]}  "
                    f"p50 {res.window_p50_ms[-1]:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    res.wall_s = time.perf_counter() - t0
    return res


def plot(res: SoakResult, path: str | os.PathLike) -> Path:
    """PNG: RSS (MB) and window median latency (ms) against frames; the warm-up is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    ax.axvspan(0, res.warmup_frames, color="0.9", label="warm-up")
    ax.plot(res.sample_frames, res.rss_mb, "o-", ms=3, color="tab:blue", label="RSS")
    ax.set_xlabel("frames segmented")
    ax.set_ylabel("RSS (MB)", color="tab:blue")
    lo, hi = min(res.rss_mb), max(res.rss_mb)
    ax.set_ylim(lo - 5, hi + 5)
    ax2 = ax.twinx()
    ax2.plot(res.sample_frames[1:], res.window_p50_ms, "-", color="tab:orange", lw=1, label="p50 latency")
    ax2.set_ylabel("median latency per window (ms)", color="tab:orange")
    ax2.set_ylim(0, max(res.window_p50_ms) * 1.5 if res.window_p50_ms else 1)
    ax.set_title(
        f"{Path(res.model).name}: {res.frames} frames, growth after warm-up {res.growth_mb:+.2f} MB, "
        f"slope {res.slope_mb_per_1000:+.3f} MB/1000 frames",
        fontsize=8,
    )
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def default_model() -> Path | None:
    found = sorted((REPO / "models" / "demo").glob("*.tflite"))
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m maskconver.benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", help="maskconver .tflite/.onnx (default: the first models/demo/*.tflite)")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--warmup", type=int, default=300, help="frames before the flat-memory window starts")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plot", default="soak_memory.png", help="PNG to write (default soak_memory.png)")
    p.add_argument("--json", default=None, help="also write the samples and summary as JSON")
    args = p.parse_args(argv)
    model = Path(args.model) if args.model else default_model()
    if model is None:
        print(
            "error: no --model and no models/demo/*.tflite; convert one first: maskconver-convert "
            "models/demo/maskconver_nano_demo.npz --int8 -o models/demo",
            file=sys.stderr,
        )
        return 2
    try:
        res = run_soak(model, args.frames, args.sample_every, args.warmup, args.threads)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = res.summary()
    for k in (
        "frames",
        "wall_s",
        "rss_start_mb",
        "rss_end_mb",
        "growth_after_warmup_mb",
        "spread_after_warmup_mb",
        "slope_mb_per_1000_frames",
        "python_objects_growth_after_warmup",
        "p50_ms",
        "mismatched_results",
    ):
        print(f"{k}: {summary[k]}")
    print(f"plot: {plot(res, args.plot)}")
    if args.json:
        from maskconver.runtime.result import write_bytes_atomic

        write_bytes_atomic(args.json, (json.dumps(summary, indent=1) + "\n").encode())
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
