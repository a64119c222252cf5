"""Which attention kernel a ViT runs: ``torch.nn.functional.scaled_dot_product_attention`` (sdpa: flash and
memory-efficient kernels) or plain matmul + softmax + matmul ("math"), chosen by measurement.

Neither is fastest everywhere. In float32 on the CPU, sdpa's flash kernel wins (1.3-1.7x faster at DeiT sizes); in
bfloat16 on a CPU with native bf16 it was measured ~3x slower than matmul + softmax at 197 tokens and head size 64;
on a GPU sdpa's kernels win again. So ``attn_impl="auto"`` (the default) times both once per process for each
:class:`ProbeKey` (device type, dtype, sequence length, head size, with or without gradients) the model meets, on
inputs of that shape (at most ``PROBE_ROWS`` batch x head slices on the CPU), and runs the faster from then on; "sdpa"
or "math" force one. The choice is a runtime setting: it changes no weight and no state-dict key
(``deit.models.vit_blocks.set_attn_impl`` sets it on a built model).

Deterministic where it must be: "math" is chosen only when *every* timed math call beats *every* timed sdpa call
by ``MARGIN`` (a slower machine-wide burst cannot flip it; results within noise keep sdpa), shapes too small to be
worth a probe (fewer than ``MIN_PROBE_WORK`` multiply-adds per slice) keep sdpa without one, and the probe draws
from its own generator, never from the global RNG that dropout and stochastic depth use. Attention dropout (a
non-zero ``attn_drop_rate`` while training) keeps "auto" on sdpa: the two paths draw different dropout masks (on
the GPU sdpa's kernels use their own random stream), so a run's masks would depend on the probe; "math" forced with
dropout uses ``F.dropout`` on the attention weights. Under ``torch.compile`` nothing is timed: the choice already
made eagerly for that key is used, else sdpa (a compiled training step runs eager steps first, which probe).
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

AttnImpl = Literal["auto", "sdpa", "math"]
ATTN_IMPLS: tuple[str, ...] = typing.get_args(AttnImpl)
ATTN_IMPL_HELP = ("attention kernel: auto (default: the faster of sdpa and matmul + softmax, measured once per process "
                  "for this device, dtype and shape), sdpa or math; the same results to rounding")
MARGIN = 0.10  # math must be this much faster than sdpa in every timed call to be chosen
REPEATS = 3  # timed calls per path, after one untimed call each
PROBE_ROWS = 32  # batch x head slices the CPU probe times (the real batch on accelerators)
PROBED_DEVICES = ("cpu", "cuda")  # elsewhere (meta tensors, other backends) sdpa, unmeasured
MIN_PROBE_WORK = 1 << 18  # seq_len^2 x head_dim below which attention is too cheap to be worth a probe

Measure = Callable[[str], float]  # path name -> seconds of one call


class ProbeKey(NamedTuple):
    """What decides which attention path is faster. (A tuple, so that torch.compile reads it without a break.)"""

    device: str  # device type: cpu, cuda
    dtype: str  # e.g. float32, bfloat16
    seq_len: int  # of the keys
    head_dim: int
    grad: bool  # training (forward + backward) or inference


_CHOICES: dict[ProbeKey, str] = {}
_TIMINGS: dict[ProbeKey, dict[str, tuple[float, ...]]] = {}


def check_attn_impl(impl: str) -> str:
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not one of {', '.join(ATTN_IMPLS)} (auto: the faster "
                         "of sdpa and math by a short measurement)")
    return impl


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout on the weights: what sdpa computes, as three plain kernels."""
    weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


PATHS: dict[str, Callable[..., torch.Tensor]] = {"sdpa": sdpa_attention, "math": math_attention}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "auto", dropout_p: float = 0.0
              ) -> torch.Tensor:
    """Attention of (B, H, N, hd) ``q``, ``k``, ``v`` by ``impl`` ("auto": the measured faster path)."""
    return PATHS[resolve(impl, q, dropout_p, k.shape[-2])](q, k, v, dropout_p)


def resolve(impl: str, q: torch.Tensor, dropout_p: float = 0.0, seq_len: int | None = None) -> str:
    """The path ("sdpa" or "math") that ``impl`` means for queries like ``q`` over ``seq_len`` keys (default: as
    many as queries); "auto" probes once per key. Keyed by the keys' length, so that the last block's few queries
    (``Attention.attend(prefix=)``) run the path chosen for the blocks before it, with no probe of their own."""
    if impl != "auto":
        return impl
    if dropout_p > 0.0:
        return "sdpa"
    key = ProbeKey(q.device.type, str(q.dtype).removeprefix("torch."), seq_len or q.shape[-2], q.shape[-1],
                   torch.is_grad_enabled() and q.requires_grad)
    choice = _CHOICES.get(key)
    if choice is not None:
        return choice
    if torch.compiler.is_compiling() or key.device not in PROBED_DEVICES:  # nothing to time (tracing, meta tensors)
        return "sdpa"
    rows = q.shape[0] * q.shape[1]
    rows = rows if q.device.type != "cpu" else min(rows, PROBE_ROWS)
    _CHOICES[key] = choose(key, probe_measure(key, rows, q.shape[1], q.device))
    return _CHOICES[key]


def choose(key: ProbeKey, measure: Measure) -> str:
    """The faster path for ``key``: each path called once untimed, then ``REPEATS`` timed calls of each in turn;
    "math" only if every math call beats every sdpa call by ``MARGIN``. ``measure(path)``: seconds of one call."""
    if key.seq_len**2 * key.head_dim < MIN_PROBE_WORK:
        return "sdpa"
    for name in PATHS:
        measure(name)  # first-call allocations, kernel selection
    seconds: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(REPEATS):
        for name in PATHS:
            seconds[name].append(measure(name))
    _TIMINGS[key] = {name: tuple(s) for name, s in seconds.items()}
    return "math" if max(seconds["math"]) < (1.0 - MARGIN) * min(seconds["sdpa"]) else "sdpa"


def probe_measure(key: ProbeKey, rows: int, heads: int, device: torch.device) -> Measure:
    """``measure(path)`` for :func:`choose`: one call of that path on ``rows`` batch x head slices laid out as the
    model's (q, k, v strided views of one (B, N, 3, H, hd) projection), with its backward when ``key.grad``,
    timed with the device's queued work; inputs from a generator of its own, made once."""
    heads = min(heads, rows)
    generator = torch.Generator(device=device).manual_seed(0)
    qkv = torch.randn(max(1, rows // heads), key.seq_len, 3, heads, key.head_dim, device=device,
                      dtype=getattr(torch, key.dtype), generator=generator).requires_grad_(key.grad)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))

    def call(name: str) -> None:
        with torch.set_grad_enabled(key.grad):
            out = PATHS[name](q, k, v)
            if key.grad:
                out.backward(torch.ones_like(out))
                qkv.grad = None

    return lambda name: time_call(lambda: call(name), device)


def time_call(call: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, the device's queued work included."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start


def probe_results() -> dict[ProbeKey, tuple[str, dict[str, tuple[float, ...]]]]:
    """Every key probed in this process: (the path chosen, the seconds of each timed call per path)."""
    return {key: (choice, _TIMINGS.get(key, {})) for key, choice in _CHOICES.items()}


def describe_choices() -> str:
    """One line of every choice made in this process: key, path, and the median ms of each path's calls."""
    def one(key: ProbeKey, choice: str, seconds: dict[str, tuple[float, ...]]) -> str:
        timed = ", ".join(f"{name} {1000 * sorted(s)[len(s) // 2]:.1f} ms" for name, s in seconds.items())
        kind = "train" if key.grad else "inference"
        return f"{key.device} {key.dtype} {key.seq_len}x{key.head_dim} {kind}: {choice}" + (f" ({timed})" if timed
                                                                                            else " (not timed)")

    return "; ".join(one(key, choice, seconds) for key, (choice, seconds) in probe_results().items()) or "none"


def clear_choices() -> None:
    """Forget every choice (tests; or after the machine's load changed for good)."""
    _CHOICES.clear()
    _TIMINGS.clear()


__all__ = [
    "ATTN_IMPLS", "ATTN_IMPL_HELP", "MARGIN", "PATHS", "AttnImpl", "ProbeKey", "attention", "check_attn_impl", "choose",
    "clear_choices", "describe_choices", "math_attention", "probe_measure", "probe_results", "resolve",
    "sdpa_attention", "time_call",
]
