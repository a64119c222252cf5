"""Benchmark rows, the printed table and the JSON form."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

# Achieved FLOP/s count 2 FLOPs per multiply-accumulate of ``deit.models.measure``'s ``gmacs_total`` (timm/fvcore
# convention: Linear and Conv MACs, both attention matmuls, LayerNorm); a training step counts 3x the forward. Both
# models are counted alike, though ours skips most of the last block (``VisionTransformer.head_tokens``): for a
# ViT its FLOP/s and % GEMM are an effective rate, ~1/depth above the work it did.
FLOPS_CONVENTION = ("FLOPs = 2 x gmacs_total (Linear+Conv+attention matmuls+LayerNorm MACs), both models alike (ours "
                    "computes the last block for the class/distillation tokens only: an effective rate); train step = "
                    "3x forward")


@dataclass
class Row:
    """One measured figure: ours against the peer where there is one. Times are medians over alternating rounds."""

    task: str  # gemm | inference | train | train+teacher | train+cache | data
    model: str
    batch: int | None
    dtype: str
    device: str
    compile: bool = False
    ours_img_s: float | None = None
    peer: str | None = None  # the faster of the peer's variants, e.g. "hf-eager"
    peer_img_s: float | None = None
    ratio: float | None = None  # ours_img_s / peer_img_s
    ours_latency_ms: float | None = None  # per batch
    peer_latency_ms: float | None = None
    ours_spread_pct: float | None = None  # interquartile range / median of the per-round times
    peer_spread_pct: float | None = None
    peer_variants_img_s: dict[str, float] = field(default_factory=dict)  # every peer variant measured
    gflop_per_image: float | None = None
    ours_gflops: float | None = None  # achieved GFLOP/s
    peer_gflops: float | None = None
    gemm_gflops: float | None = None  # the reference GEMM, timed in the same rounds
    ours_pct_of_gemm: float | None = None
    peer_pct_of_gemm: float | None = None
    ours_mfu_pct: float | None = None  # against the datasheet peak, accelerators only
    ours_peak_mem_mb: float | None = None
    peer_peak_mem_mb: float | None = None
    memory: str | None = None  # what the peak memory figures measure
    peer_max_abs_diff: float | None = None  # logits of the peer minus ours, same weights, same input
    ours_eager_img_s: float | None = None  # with --compile: our eager model in the same rounds
    note: str = ""

    def to_dict(self) -> dict:
        return {k: _rounded(v) for k, v in asdict(self).items()}


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) and abs(value) >= 1e-3 else value
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def to_json(rows: list[Row], header: dict) -> str:
    return json.dumps({**header, "rows": [r.to_dict() for r in rows]}, indent=2)


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


_COLUMNS: tuple[tuple[str, int], ...] = (
    ("task", 14), ("model", 33), ("batch", 6), ("dtype", 6), ("ours img/s", 17), ("peer", 9), ("peer img/s", 17),
    ("ratio", 7), ("ms/batch", 9), ("GFLOP/s", 9), ("% GEMM", 13), ("peak MB", 13),
)


def _cells(r: Row) -> list[str]:
    ours = _fmt(r.ours_img_s) + (f" ±{r.ours_spread_pct:.0f}%" if r.ours_spread_pct is not None else "")
    peer = _fmt(r.peer_img_s) + (f" ±{r.peer_spread_pct:.0f}%" if r.peer_spread_pct is not None else "")
    gflops = r.ours_gflops if r.task != "gemm" else r.gemm_gflops
    pct = _fmt(r.ours_pct_of_gemm, ".0f", "%")
    if r.peer_pct_of_gemm is not None:
        pct += f" ({r.peer_pct_of_gemm:.0f}%)"
    mem = _fmt(r.ours_peak_mem_mb, ".0f")
    if r.peer_peak_mem_mb is not None:
        mem += f" ({r.peer_peak_mem_mb:.0f})"
    return [
        r.task, r.model + (" +compile" if r.compile else ""), _fmt(r.batch, "d"), r.dtype, ours, r.peer or "-",
        peer, _fmt(r.ratio, ".2f", "x"), _fmt(r.ours_latency_ms, ".0f"), _fmt(gflops, ".0f"), pct, mem,
    ]


def format_table(rows: list[Row], header: dict) -> str:
    lines = [" | ".join(f"{k}: {v}" for k, v in header.items() if not isinstance(v, dict))]
    cells = [_cells(r) for r in rows]
    # each column at least its usual width, and one space wider than its longest cell ("... +compile", a long name)
    widths = [max([w, *(len(row[i]) + 1 for row in cells)]) for i, (_, w) in enumerate(_COLUMNS)]
    head = "".join(f"{c:<{w}}" for (c, _), w in zip(_COLUMNS, widths, strict=True))
    lines += [head, "-" * len(head)]
    for row in cells:
        lines.append("".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append(
        "img/s: median over alternating rounds, ± interquartile spread; ratio = ours / peer (the faster HF attention); "
        "% GEMM: achieved FLOP/s over the GEMM timed in the same rounds, peer in brackets; peak MB: ours (peer)."
    )
    lines.append(FLOPS_CONVENTION)
    lines += [f"note [{r.task} {r.model}]: ours eager {r.ours_eager_img_s:.1f} img/s, compiled/eager "
              f"{r.ours_img_s / r.ours_eager_img_s:.2f}x" for r in rows if r.ours_eager_img_s and r.ours_img_s]
    lines += [f"note [{r.task} {r.model}]: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


__all__ = ["FLOPS_CONVENTION", "Row", "format_table", "to_json"]
