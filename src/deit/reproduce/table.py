"""From results.json rows to the paper-style table: mean ± std over seeds per method, the paper's claims checked
against seed noise, table.md, table.png and the printed table.

Statistics: the mean and the sample standard deviation (n - 1 in the denominator) over seeds; with one seed the
std is unknown and shown as "n/a". A difference between two rows counts as *beyond noise* only when it is larger
than the larger of their two stds; otherwise the table marks it as within noise (≈). The claims table also
shows the difference seed by seed (runs of one seed share the teacher and the training subset): an effect that is
"within noise" by the 1-std rule yet has the same sign in every seed is a hint, not a finding, at three seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deit.reproduce.methods import ROWS

METRICS: tuple[str, ...] = ("top1", "top5", "agreement", "seconds")
HEAD_TITLES = {"cls": "class head", "dist": "distillation head", "avg": "class + distillation (average)"}
REFERENCE = "deit-none"
# (claim, row A, row B): the paper says A > B.
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("a convnet beats a DeiT trained on the same data", "teacher", "deit-none"),
    ("distillation (distillation token, hard) beats no distillation", "deit-dist-hard-avg", "deit-none"),
    ("hard beats soft distillation (distillation token)", "deit-dist-hard-avg", "deit-dist-soft-avg"),
    ("hard beats soft distillation (class token)", "deit-cls-hard", "deit-cls-soft"),
    ("the distillation token beats distilling into the class token (hard)", "deit-dist-hard-avg", "deit-cls-hard"),
    ("the average of the two heads beats the class head", "deit-dist-hard-avg", "deit-dist-hard-cls"),
    ("the average of the two heads beats the distillation head", "deit-dist-hard-avg", "deit-dist-hard-dist"),
)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample std; None with one value
    n: int


def mean_std(values: Sequence[float]) -> Stat:
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return Stat(mean, None, 1)
    return Stat(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), n)


@dataclass(frozen=True)
class RowSummary:
    method: str
    title: str
    label: str  # ✓: trained on the labels
    teacher: str  # the teacher's supervision: – (none), soft or hard
    token: str  # which token(s) the student has
    stats: dict[str, Stat]  # METRICS -> Stat
    top1_by_seed: dict[int, float]  # for the claims' per-seed (paired) differences

    @property
    def seeds(self) -> int:
        return self.stats["top1"].n


def row_title(method: str) -> str:
    m, head = ROWS[method]
    return f"{m.title}: {HEAD_TITLES[head]}" if head else m.title


def aggregate(rows: Sequence[dict]) -> list[RowSummary]:
    """One summary per method present in ``rows``, in the table's order."""
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] not in ROWS:
            raise ValueError(f"results row with unknown method {r['method']!r}; known: {', '.join(ROWS)}")
        by_method.setdefault(r["method"], []).append(r)
    out = []
    for name, (m, _head) in ROWS.items():
        group = by_method.get(name)
        if not group:
            continue
        seeds = [r["seed"] for r in group]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"results for {name!r} repeat a seed: {sorted(seeds)}")
        stats = {k: mean_std([float(r[k]) for r in group]) for k in METRICS}
        token = "–" if m.is_teacher else ("class + distillation" if m.two_tokens else "class")
        teacher = "–" if m.distillation == "none" else m.distillation
        out.append(RowSummary(name, row_title(name), "✓", teacher, token, stats,
                              {int(r["seed"]): float(r["top1"]) for r in group}))
    return out


def compare(a: Stat, b: Stat) -> tuple[float, str]:
    """(mean of a - mean of b, verdict on "a > b") with the 1-std noise rule of the module docstring."""
    diff = a.mean - b.mean
    if a.std is None or b.std is None:
        return diff, "one seed: no noise estimate"
    noise = max(a.std, b.std)
    if abs(diff) <= noise:
        return diff, "within noise (Δ ≤ 1 std)"
    return diff, "holds, beyond noise" if diff > 0 else "reversed, beyond noise"


def _pct(s: Stat) -> str:
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}" if s.std is not None else f"{100 * s.mean:.2f} ± n/a"


def table_rows(summaries: Sequence[RowSummary]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the main table."""
    ref = next((s for s in summaries if s.method == REFERENCE), None)
    header = ["method", "row in results.json", "label", "teacher", "token(s)", "top-1 (%)", "top-5 (%)",
              "agreement with teacher (%)", f"Δ top-1 vs {REFERENCE} (points)", "seconds / run"]
    cells = []
    for s in summaries:
        delta = ""
        if ref is not None and s.method != REFERENCE:
            diff, verdict = compare(s.stats["top1"], ref.stats["top1"])
            mark = " ≈" if verdict.startswith("within") else ""
            delta = f"{100 * diff:+.2f}{mark}"
        agreement = "–" if s.method == "teacher" else _pct(s.stats["agreement"])
        cells.append([s.title, f"`{s.method}`", s.label, s.teacher, s.token, _pct(s.stats["top1"]),
                      _pct(s.stats["top5"]), agreement, delta, f"{s.stats['seconds'].mean:.0f}"])
    return header, cells


def claim_rows(summaries: Sequence[RowSummary]) -> tuple[list[str], list[list[str]]]:
    by = {s.method: s for s in summaries}
    header = ["the paper's claim (A > B)", "A", "B", "A top-1 (%)", "B top-1 (%)", "Δ (points)",
              "Δ per seed (points)", "here"]
    cells = []
    for claim, a, b in CLAIMS:
        if a not in by or b not in by:
            continue
        diff, verdict = compare(by[a].stats["top1"], by[b].stats["top1"])
        cells.append([claim, f"`{a}`", f"`{b}`", _pct(by[a].stats["top1"]), _pct(by[b].stats["top1"]),
                      f"{100 * diff:+.2f}", _per_seed(by[a], by[b]), verdict])
    return header, cells


def paired_deltas(a: RowSummary, b: RowSummary) -> dict[int, float]:
    """top-1 of A minus B for each seed both rows have. Runs of one seed share the teacher and the training
    subset, so these differences vary less than the rows' own means do."""
    return {seed: a.top1_by_seed[seed] - b.top1_by_seed[seed] for seed in sorted(a.top1_by_seed)
            if seed in b.top1_by_seed}


def _per_seed(a: RowSummary, b: RowSummary) -> str:
    deltas = paired_deltas(a, b)
    ahead = sum(d > 0 for d in deltas.values())
    values = ", ".join(f"{100 * d:+.2f}" for d in deltas.values())
    return f"{values} (A ahead in {ahead} of {len(deltas)})"


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def text_table(header: list[str], cells: list[list[str]], skip: Sequence[int] = ()) -> str:
    """Aligned plain text for the console (columns in ``skip`` left out)."""
    keep = [i for i in range(len(header)) if i not in skip]
    rows = [[header[i] for i in keep]] + [[r[i].replace("`", "") for i in keep] for r in cells]
    widths = [max(len(r[j]) for r in rows) for j in range(len(keep))]
    out = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def render_markdown(summaries: Sequence[RowSummary], meta: dict) -> str:
    """table.md: the setup, the main table, the claims, planned vs actual time."""
    seeds = meta.get("seeds", [])
    header, cells = table_rows(summaries)
    c_header, c_cells = claim_rows(summaries)
    plan = meta.get("plan", {})
    parts = [
        f"# DeiT distillation study on {meta.get('dataset', 'digits')}",
        "",
        f"Command: `{meta.get('command', 'deit reproduce')}`",
        "",
        f"{len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}); "
        f"{meta.get('train_images', '?')} training images ({meta.get('train_per_class', 'all')} per class), "
        f"{meta.get('val_images', '?')} validation images (1 image = {100 / max(1, meta.get('val_images', 1)):.2f} "
        f"points); teacher {plan.get('teacher_epochs', '?')} epochs, students {plan.get('student_epochs', '?')} "
        "epochs; top-1 of the last epoch, mean ± sample std over seeds. Every student sees the same split and the "
        "same teacher (trained once per seed).",
        "",
        *_override_lines(meta),
        markdown_table(header, cells),
        "",
        "≈: the difference to DeiT without distillation is within the larger of the two stds (seed noise).",
        "",
        "## The paper's claims, here",
        "",
        markdown_table(c_header, c_cells),
        "",
        "## Budget",
        "",
        _budget_line(plan, meta.get("seconds", 0.0)),
        "",
    ]
    return "\n".join(parts)


def _budget_line(plan: dict, seconds: float) -> str:
    note = f" {plan['note'][0].upper()}{plan['note'][1:]}." if plan.get("note") else ""
    workers = plan.get("workers", 1)
    at_once = f" {workers} runs at once (one process each)." if workers > 1 else " One run at a time."
    if not plan.get("costs"):  # epochs given by hand: nothing was planned
        return f"Actual {seconds / 60:.1f} min.{at_once}{note}"
    return (f"Budget {plan['budget_seconds'] / 60:.1f} min; planned {plan['predicted_seconds'] / 60:.1f} min "
            f"(calibration {plan['calibration_seconds']:.0f} s included); actual {seconds / 60:.1f} min."
            f"{at_once}{note}")


def _override_lines(meta: dict) -> list[str]:
    """The regime's config overrides on top of the digits presets, for table.md's setup paragraph."""
    lines = []
    for key, who in (("overrides", "every run"), ("student_overrides", "the students")):
        if meta.get(key):
            lines += [f"Config overrides for {who}: " + " ".join(f"`{o}`" for o in meta[key]), ""]
    return lines


def render_text(summaries: Sequence[RowSummary]) -> str:
    header, cells = table_rows(summaries)
    c_header, c_cells = claim_rows(summaries)
    return (text_table(header, cells, skip=(0, 2))
            + "\n\n" + text_table(c_header, c_cells, skip=(1, 2)))


def plot_table(summaries: Sequence[RowSummary], path: Path, title: str = "") -> None:
    """table.png: top-1 per row with ±1 std error bars; the no-distillation mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = [100 * s.stats["top1"].mean for s in summaries]
    stds = [100 * (s.stats["top1"].std or 0.0) for s in summaries]
    colours = ["tab:gray" if s.method == "teacher" else "tab:orange" if s.method == REFERENCE
               else "tab:blue" if s.teacher == "hard" else "tab:green" for s in summaries]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(summaries) + 2), 4.5))
    x = range(len(summaries))
    ax.bar(x, means, yerr=stds, color=colours, capsize=4)
    low = min(m - s for m, s in zip(means, stds, strict=True))
    high = max(m + s for m, s in zip(means, stds, strict=True))
    pad = max(1.0, 0.15 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    ref = next((s for s in summaries if s.method == REFERENCE), None)
    if ref is not None:
        ax.axhline(100 * ref.stats["top1"].mean, color="tab:orange", linestyle="--", linewidth=1)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=n) for c, n in (("tab:gray", "convnet teacher"),
                                                              ("tab:orange", "no distillation"),
                                                              ("tab:green", "soft distillation"),
                                                              ("tab:blue", "hard distillation"))],
              fontsize=8, loc="best")
    bottom = ax.get_ylim()[0]
    for i, m in enumerate(means):  # inside the bar's foot, clear of the error bars
        ax.text(i, bottom + 0.02 * (ax.get_ylim()[1] - bottom), f"{m:.1f}", ha="center", va="bottom", fontsize=8,
                color="white", fontweight="bold")
    ax.set_xticks(list(x))
    ax.set_xticklabels([s.method for s in summaries], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("validation top-1 (%), mean ± std over seeds")
    ax.set_title(title or "DeiT distillation study", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["CLAIMS", "RowSummary", "Stat", "aggregate", "compare", "mean_std", "paired_deltas", "plot_table",
           "render_markdown", "render_text"]
