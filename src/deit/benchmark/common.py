"""What every benchmark task shares: its settings, building a model by name, FLOPs, and the rows' figures."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from deit.benchmark.gemm import DTYPES, bf16_supported, datasheet_tflops
from deit.benchmark.report import Row
from deit.benchmark.timing import Samples
from deit.models import build_architecture, measure, set_attn_impl
from deit.models.attention import check_attn_impl
from deit.train.compiling import compile_step

TASKS: tuple[str, ...] = ("gemm", "inference", "train", "train+teacher", "train+cache", "data")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure. ``model_overrides`` change the architecture of every model (tests use a tiny one)."""

    models: tuple[str, ...] = ("deit_tiny_patch16_224", "deit_small_patch16_224")
    train_models: tuple[str, ...] = ("deit_tiny_distilled_patch16_224",)
    batch_sizes: tuple[int, ...] = (64,)
    train_batch_size: int = 64
    dtype: str = "fp32"
    device: str = "cpu"
    compile: bool = False
    attn_impl: str = "auto"  # our model's attention kernel (deit.models.attention); HF's twins run both of theirs
    tasks: tuple[str, ...] = TASKS
    repeats: int = 5  # timed rounds per inference figure
    train_repeats: int = 3  # timed rounds per training figure
    warmup: int = 1
    teacher: str | None = None  # None: regnety_002 on CPU (the paper's regnety_160 takes ~10 s a batch there)
    threads: int | None = 2  # CPU threads; None leaves torch's setting alone
    peer: bool = True  # also time HF transformers' twin (when transformers is installed)
    data_images: int = 200
    img_size: int | None = None  # None: each model's own
    gemm_size: int | None = None  # None: 2048 on CPU, 8192 on CUDA
    model_overrides: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            problems.append(f"device {self.device!r} is not cpu or cuda")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            problems.append(f"unknown tasks {unknown}; choose from {list(TASKS)}")
        try:
            check_attn_impl(self.attn_impl)
        except ValueError as exc:
            problems.append(str(exc))
        if any(b < 1 for b in (*self.batch_sizes, self.train_batch_size)):
            problems.append("batch sizes must be positive")
        if min(self.repeats, self.train_repeats) < 1 or self.warmup < 0:
            problems.append("repeats must be >= 1 and warmup >= 0")
        if problems:
            raise ValueError("invalid benchmark settings: " + "; ".join(problems))

    @property
    def teacher_name(self) -> str:
        return self.teacher or ("regnety_160" if self.device.startswith("cuda") else "regnety_002")


def resolve_device(config: BenchmarkConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to this torch build; use --device cpu")
    if config.dtype == "bf16" and not bf16_supported(device):
        raise ValueError(f"bf16 is not supported on {device} by this torch build; use --dtype fp32")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    import platform

    return (platform.processor() or platform.machine()) + f" ({torch.get_num_threads()} threads)"


def model_overrides(config: BenchmarkConfig) -> dict[str, object]:
    overrides = dict(config.model_overrides)
    if config.img_size is not None:
        overrides["img_size"] = config.img_size
    return overrides


def build(name: str, config: BenchmarkConfig, device: torch.device) -> nn.Module:
    """The model exactly as ``build_architecture`` returns it (plus the config's overrides, and its attention kernel set
    to ``config.attn_impl``), on ``device``."""
    model = build_architecture(name, **model_overrides(config)).to(device)
    set_attn_impl(model, config.attn_impl)
    return model


def input_size(model: nn.Module) -> int:
    return model.preprocessing.input_size


def forward_gflop(name: str, size: int, overrides: dict[str, object]) -> float:
    """GFLOP of one image's forward pass: 2 x ``gmacs_total`` (see ``report.FLOPS_CONVENTION``), counted on a
    meta-device copy (no memory, no compute)."""
    with torch.device("meta"):
        model = build_architecture(name, **overrides)
    return 2.0 * measure(model, size).gmacs_total


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


class Compiled:
    """``fn`` for a contender under ``--compile``: called eagerly once (our model probes its attention there, as a
    compiled training run's eager steps do), then compiled exactly as training compiles its step
    (``deit.train.compiling.compile_step``), for ours and HF's alike. Records what the first compiled call cost:
    its seconds, the graphs dynamo made and the graph breaks it hit."""

    def __init__(self, fn: Callable) -> None:
        self.eager, self.compiled, self.calls = fn, compile_step(fn), 0
        self.compile_s: float | None = None
        self.graphs = self.graph_breaks = 0

    def __call__(self, *args: object) -> object:
        self.calls += 1
        if self.calls == 1:
            return self.eager(*args)
        if self.calls > 2:
            return self.compiled(*args)
        graphs, breaks = _dynamo_counts()
        start = time.perf_counter()
        out = self.compiled(*args)
        self.compile_s = time.perf_counter() - start
        after = _dynamo_counts()
        self.graphs, self.graph_breaks = after[0] - graphs, after[1] - breaks
        return out

    def describe(self) -> str:
        return f"first compiled call {self.compile_s:.1f} s, {self.graphs} graph(s), {self.graph_breaks} break(s)"


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled so far, graph breaks so far) in this process."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def maybe_compile(fn: Callable, config: BenchmarkConfig) -> Callable:
    """``fn`` itself, or under ``config.compile`` a :class:`Compiled` of it."""
    return Compiled(fn) if config.compile else fn


def compile_note(compiled: dict[str, object]) -> str:
    """What compiling cost each contender (empty when nothing was compiled)."""
    parts = [f"{label}: {c.describe()}" for label, c in compiled.items() if isinstance(c, Compiled) and c.compile_s]
    return "compile: " + "; ".join(parts) if parts else ""


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Throughput:
    """A contender's samples turned into the row's figures."""

    img_s: float
    latency_ms: float
    spread_pct: float

    @classmethod
    def of(cls, samples: Samples, batch: int) -> Throughput:
        return cls(batch / samples.median, 1000 * samples.median, samples.spread_pct)


def pct(achieved: float | None, reference: float | None) -> float | None:
    return None if achieved is None or not reference else 100.0 * achieved / reference


def mfu_pct(gflops: float, device: torch.device, dtype: str) -> float | None:
    """Achieved FLOP/s over the datasheet peak (accelerators only; a CPU has no single published figure)."""
    if device.type != "cuda":
        return None
    peak = datasheet_tflops(device_name(device), dtype)
    return pct(gflops, peak * 1000 if peak else None)


def fill_figures(
    row: Row, samples: dict[str, Samples], ours: str, peers: list[str], gemm: tuple[str, float], device: torch.device
) -> None:
    """Set ``row``'s throughput, FLOP/s and %-of-GEMM figures from one race (``row.batch``, ``row.dtype`` and
    ``row.gflop_per_image`` already set); the peer is the fastest of ``peers``."""
    gemm_label, gemm_flop = gemm
    row.gemm_gflops = gemm_flop / samples[gemm_label].median / 1e9
    mine = Throughput.of(samples[ours], row.batch)
    row.ours_img_s, row.ours_latency_ms, row.ours_spread_pct = mine.img_s, mine.latency_ms, mine.spread_pct
    row.ours_gflops = mine.img_s * row.gflop_per_image
    row.ours_pct_of_gemm = pct(row.ours_gflops, row.gemm_gflops)
    row.ours_mfu_pct = mfu_pct(row.ours_gflops, device, row.dtype)
    if not peers:
        return
    figures = {label: Throughput.of(samples[label], row.batch) for label in peers}
    best = max(peers, key=lambda label: figures[label].img_s)
    theirs = figures[best]
    row.peer, row.peer_img_s, row.peer_latency_ms = best, theirs.img_s, theirs.latency_ms
    row.peer_spread_pct, row.ratio = theirs.spread_pct, mine.img_s / theirs.img_s
    row.peer_variants_img_s = {label: f.img_s for label, f in figures.items()}
    row.peer_gflops = theirs.img_s * row.gflop_per_image
    row.peer_pct_of_gemm = pct(row.peer_gflops, row.gemm_gflops)


__all__ = [
    "TASKS",
    "BenchmarkConfig",
    "Compiled",
    "Throughput",
    "autocast",
    "build",
    "compile_note",
    "device_name",
    "fill_figures",
    "forward_gflop",
    "input_size",
    "maybe_compile",
    "model_overrides",
    "mfu_pct",
    "pct",
    "resolve_device",
    "threads",
]
