"""Parse the text output of TFLite / LiteRT ``benchmark_model`` (shell stdout or Android logcat).

One entry point, :func:`parse_benchmark_output`, reads every format seen from 2019 to 2026:

* the 2019 summary ``Average inference timings in us: Warmup: W, Init: I, no stats: S`` (or ``Inference: S``);
* the classic ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): S``;
* the LiteRT CompiledModel ``========== BENCHMARK RESULTS ==========`` block (values in ms);
* ``count=.. first=.. curr=.. min=.. max=.. avg=.. std=..`` statistics lines, with or without
  ``p5= median= p95=``, including the bare ``count=1 curr=X`` of a single warm-up run;
* memory lines (``Peak memory footprint``, ``Memory footprint delta``, LiteRT ``Init/Overall footprint``,
  ``Overall peak memory footprint (MB) via periodic monitoring``);
* the op-profiling tables ("Run Order", "Top by Computation Time", "Summary by node type") for the
  initialization and the regular runs, tab separated with or without a ``[start]`` column, or space aligned;
* delegation lines ("Replacing X out of Y node(s) with delegate (D) node, yielding N partitions", "Explicitly
  applied D delegate ...", the GPU delegate's "N operations will run on the GPU ...");
* failures ("Failed to apply D delegate.", "Benchmarking failed.", ``ERROR:`` lines, missing binary ...).

Line prefixes are stripped first: ``INFO:``/``VERBOSE:``/``WARNING:``/``ERROR:`` levels, LiteRT's
``[file.h:NN]`` source tags, and logcat's brief (``I/tflite  ( 6071): ``), time and threadtime
(``07-14 13:18:38.406 23449 23449 I tflite  : ``) prefixes.

Units follow the tool: every ``*_us`` field and every :class:`CountStats` value is in microseconds, op-table
times are in milliseconds, memory in MB. ``None`` means the value is absent from the text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BenchmarkOutput",
    "CountStats",
    "DelegationLine",
    "OpRow",
    "OpSummaryRow",
    "Profile",
    "parse_benchmark_output",
    "parse_count_line",
    "strip_prefix",
]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

# --- line prefixes -----------------------------------------------------------------------------------------
_LOGCAT_THREADTIME = re.compile(
    r"^(?:\d{4}-)?\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\d+\s+(?P<lvl>[VDIWEFA])\s+.*?: ?"
)
_LOGCAT_TIME_BRIEF = re.compile(
    r"^(?:(?:\d{4}-)?\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+)?(?P<lvl>[VDIWEFA])/[^(\n]*\(\s*\d+\): ?"
)
_LEVEL = re.compile(r"^(?P<lvl>INFO|VERBOSE|WARNING|WARN|ERROR|DEBUG|FATAL): ?")
_SOURCE_TAG = re.compile(r"^\[[^\]\s]+:\d+\] ?")


def strip_prefix(line: str) -> tuple[str, bool]:
    """Remove logcat, log-level and LiteRT source-tag prefixes from one line.

    Returns ``(text, is_error)``; ``is_error`` is True for ``ERROR:``/``FATAL:`` lines and logcat E/F lines.
    Leading tabs (the op tables' first column) are kept.
    """
    is_error = False
    line = line.rstrip("\r\n")
    m = _LOGCAT_THREADTIME.match(line) or _LOGCAT_TIME_BRIEF.match(line)
    if m:
        is_error = m.group("lvl") in ("E", "F")
        line = line[m.end() :]
    m = _LEVEL.match(line)
    if m:
        is_error = is_error or m.group("lvl") in ("ERROR", "FATAL")
        line = line[m.end() :]
    m = _SOURCE_TAG.match(line)
    if m:
        line = line[m.end() :]
    return line.rstrip(), is_error


# --- statistics lines --------------------------------------------------------------------------------------
@dataclass
class CountStats:
    """One ``count=...`` statistics line, in microseconds (``None`` where the line lacks the field)."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None

    def to_ms(self) -> dict[str, float | int | None]:
        """The same statistics in milliseconds (``count`` unchanged)."""
        out: dict[str, float | int | None] = {"count": self.count}
        for k, v in asdict(self).items():
            if k != "count":
                out[k] = None if v is None else v / 1000.0
        return out


_COUNT_LINE = re.compile(r"^count=(\d+)((?:\s+\w+=" + _NUM + r")*)\s*$")
_KV = re.compile(r"(\w+)=(" + _NUM + r")")
_COUNT_KEYS = ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")


def parse_count_line(text: str) -> CountStats | None:
    """Parse ``count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]``.

    A single warm-up run prints only ``count=1 curr=X``; then ``first``/``min``/``max``/``avg`` are all X.
    Returns None when ``text`` is not a count line.
    """
    m = _COUNT_LINE.match(text.strip())
    if not m:
        return None
    values = {k: float(v) for k, v in _KV.findall(m.group(2)) if k in _COUNT_KEYS}
    stats = CountStats(count=int(m.group(1)), **values)
    if stats.count == 1 and stats.curr is not None:
        for k in ("first", "min", "max", "avg", "median", "p5", "p95"):
            if getattr(stats, k) is None:
                setattr(stats, k, stats.curr)
        if stats.std is None:
            stats.std = 0.0
    return stats


# --- op tables ---------------------------------------------------------------------------------------------
@dataclass
class OpRow:
    """One row of a "Run Order" or "Top by Computation Time" table (times in ms)."""

    node_type: str
    first_ms: float
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int
    name: str
    start_ms: float | None = None


@dataclass
class OpSummaryRow:
    """One row of a "Summary by node type" table (times in ms)."""

    node_type: str
    count: int
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int


@dataclass
class Profile:
    """The three profiler tables of one phase (``init`` or ``regular``) and the profiler's own totals."""

    run_order: list[OpRow] = field(default_factory=list)
    top: list[OpRow] = field(default_factory=list)
    summary: list[OpSummaryRow] = field(default_factory=list)
    timings: CountStats | None = None
    nodes_executed: int | None = None
    nodes_observed: int | None = None


_TABLE_TITLE = re.compile(r"^=+ (Run Order|Top by Computation Time|Summary by node type) =+$")
_TABLE_KEYS = {"Run Order": "run_order", "Top by Computation Time": "top", "Summary by node type": "summary"}


def _num(token: str) -> float:
    return float(token.strip().rstrip("%"))


def _header_columns(text: str) -> list[str] | None:
    cols = re.findall(r"\[([^\]]+)\]", text)
    if cols and cols[0].lower() == "node type":
        return [c.lower() for c in cols]
    return None


def _split_row(text: str, columns: list[str]) -> list[str] | None:
    """Split a table row into ``len(columns)`` fields: by tabs when present, else by its numeric middle."""
    n_numeric = len(columns) - 1 - (1 if columns[-1] == "name" else 0)
    if "\t" in text:
        parts = [p.strip() for p in text.lstrip("\t").split("\t")]
        if len(parts) >= len(columns):
            # A name holding tabs keeps them; the numeric columns never do.
            return parts[: len(columns) - 1] + ["\t".join(parts[len(columns) - 1 :])]
    # Space-aligned tables: the node type is free text, then exactly n_numeric numbers, then the name.
    numeric = (r"\s+(" + _NUM + r"%?)") * n_numeric
    tail = r"\s+(.*)$" if columns[-1] == "name" else r"\s*$"
    pattern = r"^\s*(.+?)" + numeric + tail
    m = re.match(pattern, text)
    if not m:
        return None
    return [g.strip() for g in m.groups()]


def _parse_op_row(text: str, columns: list[str], summary: bool) -> OpRow | OpSummaryRow | None:
    parts = _split_row(text, columns)
    if parts is None:
        return None
    row = dict(zip(columns, parts, strict=True))
    try:
        if summary:
            return OpSummaryRow(
                node_type=row["node type"],
                count=int(_num(row["count"])),
                avg_ms=_num(row["avg ms"]),
                percent=_num(row["avg %"]),
                cdf_percent=_num(row["cdf %"]),
                mem_kb=_num(row["mem kb"]),
                times_called=int(_num(row["times called"])),
            )
        return OpRow(
            node_type=row["node type"],
            start_ms=_num(row["start"]) if "start" in row else None,
            first_ms=_num(row["first"]),
            avg_ms=_num(row["avg ms"]),
            percent=_num(row["%"]),
            cdf_percent=_num(row["cdf%"]),
            mem_kb=_num(row["mem kb"]),
            times_called=int(_num(row["times called"])),
            name=row["name"],
        )
    except (KeyError, ValueError):
        return None


# --- delegation --------------------------------------------------------------------------------------------
@dataclass
class DelegationLine:
    """One ``Replacing X out of Y node(s) with delegate (D) node, yielding N partitions`` line."""

    delegate: str
    replaced_nodes: int
    total_nodes: int
    partitions: int
    subgraph: int | None = None


_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((.+?)\) node, yielding (\d+) partitions?"
    r"(?: for (?:the )?subgraph (\d+))?"
)
_EXPLICIT = re.compile(
    r"^(?:Explicitly )?[Aa]pplied (.+?) delegate, and the model graph will be (completely|partially) executed"
    r"(?: by the delegate| w/ the delegate)?(?: w/ (\d+) delegate kernels)?"
)
_NOT_EXECUTED = re.compile(
    r"^Though (.+?) delegate is explicitly applied, the model graph will not be executed"
)
_GPU_SPLIT = re.compile(
    r"^(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU"
)
_CREATED = re.compile(
    r"^(?:(\w+) delegate created\.|Created TensorFlow Lite (?:(\w+) )?delegate for (\w+)\.)"
)
_FAILED_APPLY = re.compile(r"^Failed to apply (.+?) delegate\.?")

_BENCHMARK_FAILED = "benchmark_model reported 'Benchmarking failed.'"
_GPU_KERNELS = re.compile(r"^Created (\d+) GPU delegate kernels")

# Lines that mean the run did not produce valid numbers, with a short reason for each.
_FATAL_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^Benchmarking failed"), _BENCHMARK_FAILED),
    (
        re.compile(
            r"Failed to (?:mmap|load) model|Could not open '.*'|Please specify the name of your TF Lite input"
        ),
        "model not loaded",
    ),
    (re.compile(r"Failed to allocate tensors"), "tensor allocation failed"),
    (re.compile(r"Failed to invoke"), "inference (Invoke) failed"),
    (re.compile(r"Failed to parse flag"), "benchmark_model could not parse a command-line flag"),
    (re.compile(r"CANNOT LINK EXECUTABLE"), "the benchmark_model binary cannot be linked on this device"),
    (re.compile(r"(?:inaccessible or not found|: not found$|No such file or directory)"), "file not found"),
    (re.compile(r"Permission denied"), "permission denied"),
    (re.compile(r"Segmentation fault|SIGSEGV|Aborted|Illegal instruction"), "benchmark_model crashed"),
]


# --- the parsed output -------------------------------------------------------------------------------------
@dataclass
class BenchmarkOutput:
    """Everything read from one benchmark_model output.

    ``status`` is ``"ok"`` when steady-state inference statistics were found and nothing failed,
    ``"failed"`` when the tool reported a failure (``failures`` says which) and ``"no_results"`` when the text
    holds no benchmark numbers at all. ``delegate_failed`` is True when a delegate could not be applied, which
    makes any timings CPU-fallback numbers. ``fmt`` is ``"old"`` (2019 ``Average inference timings``),
    ``"classic"`` (``Inference timings in us``), ``"litert"`` (``BENCHMARK RESULTS``) or ``"unknown"``.
    """

    status: str = "no_results"
    fmt: str = "unknown"
    params: dict[str, str] = field(default_factory=dict)
    model_path: str | None = None
    model_size_mb: float | None = None
    session_init_ms: float | None = None  # "Initialized session in X ms"
    init_us: float | None = None  # summary line "Init:" (LiteRT: "Model initialization" x 1000)
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup: CountStats | None = None
    inference: CountStats | None = None
    memory_kind: str | None = None  # "peak" | "delta" | "litert"
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_rss_mb: float | None = None  # periodic monitoring / LiteRT "Peak memory usage"
    throughput_mb_s: float | None = None
    delegates_created: list[str] = field(default_factory=list)
    delegation_lines: list[DelegationLine] = field(default_factory=list)
    delegate_statements: list[dict[str, Any]] = field(default_factory=list)
    gpu_unsupported_ops: list[str] = field(default_factory=list)
    gpu_ops_split: tuple[int, int] | None = None  # (on GPU, on CPU)
    gpu_delegate_kernels: int | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    delegate_failed: bool = False
    warnings: list[str] = field(default_factory=list)

    # -- derived values in ms, the units of the reports --
    @property
    def init_ms(self) -> float | None:
        """Initialisation time in ms: the session-init line when present (most precise), else ``Init:``."""
        if self.session_init_ms is not None:
            return self.session_init_ms
        return None if self.init_us is None else self.init_us / 1000.0

    @property
    def first_inference_ms(self) -> float | None:
        return None if self.first_inference_us is None else self.first_inference_us / 1000.0

    def delegation_summary(self) -> dict[str, Any]:
        """How much of the graph a delegate took, from the log lines and (when profiled) the op table.

        Keys: ``delegate`` (name or None), ``full`` (True/False/None when unknown), ``delegated_nodes``,
        ``total_nodes``, ``partitions``, ``delegate_kernels``, ``failed``, ``statement`` (the tool's words),
        ``profile_delegate_nodes`` / ``profile_cpu_nodes`` (node counts in the regular-run op table),
        ``gpu_ops_on_gpu`` / ``gpu_ops_on_cpu`` and ``gpu_unsupported_ops``.
        """
        out: dict[str, Any] = {
            "delegate": None,
            "full": None,
            "delegated_nodes": None,
            "total_nodes": None,
            "partitions": None,
            "delegate_kernels": None,
            "failed": self.delegate_failed,
            "statement": None,
            "profile_delegate_nodes": None,
            "profile_cpu_nodes": None,
            "gpu_ops_on_gpu": None,
            "gpu_ops_on_cpu": None,
            "gpu_unsupported_ops": list(self.gpu_unsupported_ops),
            "delegates_created": list(self.delegates_created),
        }
        if self.delegation_lines:
            main = [d for d in self.delegation_lines if d.subgraph in (None, 0)] or self.delegation_lines
            out["delegate"] = main[-1].delegate
            out["delegated_nodes"] = sum(d.replaced_nodes for d in main)
            out["total_nodes"] = max(d.total_nodes for d in main)
            out["partitions"] = sum(d.partitions for d in main)
            out["full"] = out["delegated_nodes"] == out["total_nodes"] and out["partitions"] == 1
        if self.delegate_statements:
            st = self.delegate_statements[-1]
            out["statement"] = st["text"]
            if out["delegate"] is None:
                out["delegate"] = st["delegate"]
            if out["full"] is None:
                out["full"] = st["mode"] == "completely"
            if st.get("kernels") is not None:
                out["delegate_kernels"] = st["kernels"]
        if out["delegate_kernels"] is None and self.gpu_delegate_kernels is not None:
            out["delegate_kernels"] = self.gpu_delegate_kernels
        if self.gpu_ops_split is not None:
            out["gpu_ops_on_gpu"], out["gpu_ops_on_cpu"] = self.gpu_ops_split
            if out["full"] is None:
                out["full"] = self.gpu_ops_split[1] == 0
        reg = self.profiles.get("regular")
        if reg is not None and reg.run_order:
            # Delegate kernels show as one node ("TfLiteXNNPackDelegate", "Vx Delegate"); LiteRT lists the
            # delegate's inner ops with a "Delegate/" name prefix.
            deleg = [
                r
                for r in reg.run_order
                if "delegate" in r.node_type.lower() or r.name.startswith("Delegate/")
            ]
            real = [r for r in reg.run_order if not _is_pseudo_node(r.node_type)]
            out["profile_delegate_nodes"] = len(deleg)
            out["profile_cpu_nodes"] = len(real) - len(deleg)
        if out["delegate"] is None and self.delegates_created:
            out["delegate"] = self.delegates_created[-1]  # created, but its coverage was not printed
        if self.delegate_failed:
            out["full"] = False
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything (``*_us`` in microseconds, op tables in ms)."""
        d = asdict(self)
        d["init_ms"] = self.init_ms
        d["first_inference_ms"] = self.first_inference_ms
        d["delegation"] = self.delegation_summary()
        return d


def _is_pseudo_node(node_type: str) -> bool:
    return node_type in ("AllocateTensors", "ModifyGraphWithDelegate") or node_type.startswith("LiteRT::")


_SUMMARY_CLASSIC = re.compile(r"^Inference timings in us: (.*)$")
_SUMMARY_OLD = re.compile(r"^Average inference timings in us: (.*)$")
_SESSION = re.compile(r"^Initialized session in (" + _NUM + r")\s*ms\.?$")
_RUNNING = re.compile(r"^Running benchmark for at least (\d+) iterations")
_PARAM = re.compile(r"^([A-Za-z#][^:\[\]\t]*?)\s*: \[(.*)\]$")
_MEM_PEAK = re.compile(r"^Peak memory footprint \(MB\): init=(" + _NUM + r") overall=(" + _NUM + r")")
_MEM_DELTA = re.compile(
    r"^Memory footprint delta from the start of the tool \(MB\): init=(" + _NUM + r") overall=(" + _NUM + r")"
)
_MEM_PERIODIC = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: (" + _NUM + r")")
_LITERT_ROW = re.compile(
    r"^(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \((?:avg|min|max|std)\)|"
    r"Throughput|Init footprint|Overall footprint|Peak memory usage):\s*(" + _NUM + r")"
)


def _summary_pairs(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in body.split(","):
        key, sep, value = part.rpartition(":")
        if sep:
            try:
                out[key.strip()] = float(value.strip())
            except ValueError:
                continue
    return out


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse benchmark_model output (stdout+stderr, or logcat in brief/time/threadtime form).

    Never raises on odd input: unknown lines are ignored and missing values stay ``None``.
    """
    out = BenchmarkOutput()
    raw_counts: list[tuple[int, CountStats]] = []  # (phase index from "Running benchmark" lines, stats)
    phase = -1
    profile_key: str | None = None
    table_key: str | None = None
    columns: list[str] | None = None
    litert: dict[str, float] = {}
    in_gpu_unsupported = False

    for raw in text.splitlines():
        line, is_error = strip_prefix(raw)
        stripped = line.strip()
        if not stripped:
            table_key = None
            in_gpu_unsupported = False
            continue

        # -- profiler tables --
        if stripped == "Profiling Info for Benchmark Initialization:":
            profile_key, table_key = "init", None
            continue
        if stripped.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            profile_key, table_key = "regular", None
            continue
        m = _TABLE_TITLE.match(stripped)
        if m:
            key = _TABLE_KEYS[m.group(1)]
            if profile_key is None or (
                key == "run_order" and out.profiles.get(profile_key, Profile()).summary
            ):
                profile_key = "regular"
            if key == "run_order" and out.profiles.get(profile_key, Profile()).run_order:
                out.profiles[profile_key] = Profile()  # a repeated profile: the last one wins
            out.profiles.setdefault(profile_key, Profile())
            table_key, columns = key, None
            continue
        if table_key is not None and profile_key is not None:
            prof = out.profiles[profile_key]
            if columns is None:
                columns = _header_columns(stripped)
                if columns is not None:
                    continue
            elif line.startswith(("\t", " ")) or "\t" in line:
                row = _parse_op_row(line, columns, summary=table_key == "summary")
                if row is not None:
                    getattr(prof, table_key).append(row)
                    continue
        if profile_key is not None:
            prof = out.profiles.setdefault(profile_key, Profile())
            m = re.match(r"^Number of nodes executed: (\d+)", stripped)
            if m:
                prof.nodes_executed = int(m.group(1))
                table_key = None
                continue
            m = re.match(r"^Timings \(microseconds\): (count=.*)$", stripped)
            if m:
                prof.timings = parse_count_line(m.group(1))
                table_key = None
                continue
            if stripped.startswith("Memory (bytes):"):
                continue
            m = re.match(r"^(\d+) nodes observed$", stripped)
            if m:
                prof.nodes_observed = int(m.group(1))
                profile_key = None if profile_key == "regular" else profile_key
                table_key = None
                continue

        # -- statistics --
        stats = parse_count_line(stripped)
        if stats is not None:
            raw_counts.append((phase, stats))
            continue
        m = _RUNNING.match(stripped)
        if m:
            phase += 1
            continue
        m = _SESSION.match(stripped)
        if m:
            out.session_init_ms = float(m.group(1))
            continue
        m = _SUMMARY_CLASSIC.match(stripped)
        if m:
            pairs = _summary_pairs(m.group(1))
            out.fmt = "classic"
            out.init_us = pairs.get("Init")
            out.first_inference_us = pairs.get("First inference")
            out.warmup_avg_us = pairs.get("Warmup (avg)")
            out.inference_avg_us = pairs.get("Inference (avg)")
            continue
        m = _SUMMARY_OLD.match(stripped)
        if m:
            pairs = _summary_pairs(m.group(1))
            out.fmt = "old"
            out.init_us = pairs.get("Init")
            out.warmup_avg_us = pairs.get("Warmup")
            out.inference_avg_us = pairs.get("Inference", pairs.get("no stats"))
            continue
        if stripped.startswith("=") and "BENCHMARK RESULTS" in stripped:
            out.fmt = "litert"
            continue
        m = _LITERT_ROW.match(stripped)
        if m:
            litert[m.group(1)] = float(m.group(2))
            continue

        # -- memory --
        m = _MEM_PEAK.match(stripped)
        if m:
            out.memory_kind, out.memory_init_mb, out.memory_overall_mb = "peak", float(m[1]), float(m[2])
            continue
        m = _MEM_DELTA.match(stripped)
        if m:
            out.memory_kind, out.memory_init_mb, out.memory_overall_mb = "delta", float(m[1]), float(m[2])
            continue
        m = _MEM_PERIODIC.match(stripped)
        if m:
            out.peak_rss_mb = float(m.group(1))
            continue

        # -- model and parameters --
        m = re.match(r"^The input model file size \(MB\): (" + _NUM + r")", stripped)
        if m:
            out.model_size_mb = float(m.group(1))
            continue
        if stripped.startswith("Loaded model "):
            out.model_path = stripped[len("Loaded model ") :]
            continue
        m = _PARAM.match(stripped)
        if m and not is_error:
            out.params[m.group(1).strip()] = m.group(2)
            continue

        # -- delegation --
        m = _REPLACING.search(stripped)
        if m:
            out.delegation_lines.append(
                DelegationLine(
                    delegate=m.group(3),
                    replaced_nodes=int(m.group(1)),
                    total_nodes=int(m.group(2)),
                    partitions=int(m.group(4)),
                    subgraph=None if m.group(5) is None else int(m.group(5)),
                )
            )
            continue
        m = _EXPLICIT.match(stripped)
        if m:
            out.delegate_statements.append(
                {
                    "delegate": m.group(1),
                    "mode": m.group(2),
                    "kernels": None if m.group(3) is None else int(m.group(3)),
                    "text": stripped,
                }
            )
            continue
        m = _NOT_EXECUTED.match(stripped)
        if m:
            out.delegate_statements.append(
                {"delegate": m.group(1), "mode": "not", "kernels": 0, "text": stripped}
            )
            continue
        m = _GPU_SPLIT.match(stripped)
        if m:
            out.gpu_ops_split = (int(m.group(1)), int(m.group(2)))
            continue
        if stripped.startswith("Following operations are not supported by GPU delegate"):
            in_gpu_unsupported = True
            continue
        if in_gpu_unsupported and re.match(r"^[A-Z0-9_]+: ", stripped):
            out.gpu_unsupported_ops.append(stripped)
            continue
        m = _GPU_KERNELS.match(stripped)
        if m:
            out.gpu_delegate_kernels = int(m.group(1))
            continue
        m = _CREATED.match(stripped)
        if m:
            name = m.group(1) or m.group(2) or m.group(3)
            if name and name not in out.delegates_created:
                out.delegates_created.append(name)
            continue
        m = _FAILED_APPLY.match(stripped)
        if m:
            out.delegate_failed = True
            out.failures.append(f"{m.group(1)} delegate could not be applied")
            continue

        if stripped.startswith("Unconsumed cmdline flags:"):
            # A warning: the tool ignores flags it does not know and goes on.
            out.warnings.append(
                "benchmark_model ignored flags it does not know: " + stripped.split(":", 1)[1].strip()
            )
            continue

        # -- errors and fatal lines --
        if is_error:
            out.errors.append(stripped)
        for pattern, reason in _FATAL_PATTERNS:
            if pattern.search(stripped):
                if reason not in out.failures:
                    out.failures.append(reason)
                if not is_error:
                    out.errors.append(stripped)
                break

    _assign_counts(out, raw_counts)
    _apply_litert(out, litert)
    _finish(out)
    return out


def _assign_counts(out: BenchmarkOutput, raw_counts: list[tuple[int, CountStats]]) -> None:
    """Give the warm-up and steady-state count lines their roles."""
    if not raw_counts:
        return
    if any(ph >= 0 for ph, _ in raw_counts):
        for ph, stats in raw_counts:
            if ph == 0:
                out.warmup = stats
            elif ph >= 1:
                out.inference = stats
        return
    # No "Running benchmark" lines (a trimmed paste): the last line is the steady state, unless its average
    # is the summary's warm-up average and not the inference average.
    last = raw_counts[-1][1]
    if (
        len(raw_counts) == 1
        and out.warmup_avg_us is not None
        and _close(last.avg, out.warmup_avg_us)
        and not _close(last.avg, out.inference_avg_us)
    ):
        out.warmup = last
        return
    out.inference = last
    if len(raw_counts) >= 2:
        out.warmup = raw_counts[-2][1]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= 1e-5 * max(abs(a), abs(b), 1.0)


def _apply_litert(out: BenchmarkOutput, litert: dict[str, float]) -> None:
    """Fill the fields the LiteRT ``BENCHMARK RESULTS`` block (ms) gives and the count lines do not."""
    if not litert:
        return
    if out.fmt == "unknown":
        out.fmt = "litert"
    if "Model initialization" in litert:
        out.init_us = litert["Model initialization"] * 1000.0
    if out.first_inference_us is None:
        if out.warmup is not None and out.warmup.first is not None:
            out.first_inference_us = out.warmup.first
        elif "Warmup (first)" in litert:
            out.first_inference_us = litert["Warmup (first)"] * 1000.0
    if out.warmup_avg_us is None:
        out.warmup_avg_us = out.warmup.avg if out.warmup and out.warmup.avg is not None else None
        if out.warmup_avg_us is None and "Warmup (avg)" in litert:
            out.warmup_avg_us = litert["Warmup (avg)"] * 1000.0
    if out.inference_avg_us is None:
        if out.inference is not None and out.inference.avg is not None:
            out.inference_avg_us = out.inference.avg
        elif "Inference (avg)" in litert:
            out.inference_avg_us = litert["Inference (avg)"] * 1000.0
    if "Init footprint" in litert or "Overall footprint" in litert:
        out.memory_kind = "litert"
        out.memory_init_mb = litert.get("Init footprint")
        out.memory_overall_mb = litert.get("Overall footprint")
    if "Peak memory usage" in litert:
        out.peak_rss_mb = litert["Peak memory usage"]
    if "Throughput" in litert:
        out.throughput_mb_s = litert["Throughput"]


def _finish(out: BenchmarkOutput) -> None:
    """Derive the missing pieces and the status."""
    if out.first_inference_us is None and out.fmt != "old" and out.warmup is not None:
        out.first_inference_us = out.warmup.first
    if out.inference is not None and out.inference_avg_us is None:
        out.inference_avg_us = out.inference.avg
    if out.warmup is not None and out.warmup_avg_us is None:
        out.warmup_avg_us = out.warmup.avg
    if out.inference is None and out.inference_avg_us is not None:
        out.warnings.append("only the average inference time was printed; no count/min/max/std line")
    has_numbers = out.inference is not None or out.inference_avg_us is not None
    if _BENCHMARK_FAILED in out.failures:
        out.status = "failed"
    elif not has_numbers:
        if out.errors and not out.failures:
            out.failures.append("errors and no benchmark numbers")
        out.status = "failed" if out.failures else "no_results"
    else:
        out.status = "ok"
        if out.delegate_failed:
            out.warnings.append("a delegate failed to apply: the timings are for the CPU fallback")
        elif out.failures:
            out.warnings.append(
                "error lines were printed although the benchmark finished: " + "; ".join(out.failures)
            )
