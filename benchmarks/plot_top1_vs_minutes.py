"""One PNG of held-out top-1 against wall-clock minutes for several training runs (e.g. the CIFAR-10 teacher and the
two DeiT students), read from each run's ``metrics.jsonl`` epoch rows (cumulative ``seconds``, ``top1``).

Run: python benchmarks/plot_top1_vs_minutes.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --output FILE.png
     [--title TEXT] [--goal 0.9]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(run_dir: str) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") == "epoch" and r.get("top1") is not None]
    return [r["seconds"] / 60 for r in rows], [100 * r["top1"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    p.add_argument("--output", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--goal", type=float, action="append", default=[], help="a horizontal line at this top-1 (%%)")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for spec in args.runs:
        label, _, run_dir = spec.partition("=")
        minutes, top1 = curve(run_dir)
        ax.plot(minutes, top1, marker="o", label=f"{label} ({top1[-1]:.2f}% at {minutes[-1]:.0f} min)")
    for goal in args.goal:
        ax.axhline(goal, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("wall-clock minutes (2 CPU cores)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
