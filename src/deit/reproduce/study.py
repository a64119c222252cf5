"""The whole study: plan the epochs, then per seed train the teacher and every student from it, then the table.

    DIR/results.json     one row per method (per head for the two-token students) and seed
    DIR/table.md         mean ± std per method, the paper's claims checked against seed noise, budget
    DIR/table.png        bars with error bars
    DIR/study.json       the plan (calibration, predicted time), the actual time, the regime, the command
    DIR/runs/calibration/<kind>/, DIR/runs/seed<S>/<method>/    ordinary `deit train` run directories
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deit.reproduce.execute import Chain, Job, JobResult, available_cpus, run_chains
from deit.reproduce.methods import METHODS
from deit.reproduce.plan import Plan, calibrate, fixed_plan, plan_epochs
from deit.reproduce.regime import DEFAULT_REGIME, Regime
from deit.reproduce.runs import method_config
from deit.reproduce.table import aggregate, plot_table, render_markdown, render_text
from deit.train.checkpointing import atomic_write_text


@dataclass
class StudyConfig:
    output: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    budget_minutes: float = 30.0
    regime: Regime = DEFAULT_REGIME
    # (teacher, student) epochs given by hand: no calibration; None: planned from the budget.
    epochs: tuple[int, int] | None = None
    command: str = "deit reproduce"
    # Runs at once, each in its own process (one torch thread each by the digits presets); None: one per CPU.
    workers: int | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if not self.seeds:
            raise ValueError("give at least one seed (e.g. --seeds 0,1,2)")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if self.budget_minutes <= 0:
            raise ValueError(f"the budget must be positive, got {self.budget_minutes} minutes")
        if self.workers is None:
            self.workers = available_cpus()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass
class StudyResult:
    rows: list[dict]
    plan: Plan
    seconds: float
    table: str  # the printed table
    files: dict[str, Path] = field(default_factory=dict)


def _check_output(output: Path) -> None:
    if (output / "results.json").exists() or (output / "runs").exists():
        raise ValueError(f"{output} already holds a study (results.json or runs/): choose another --output "
                              "or remove it")


def _dataset_sizes(regime: Regime) -> tuple[int, int]:
    """(training images, validation images); fails early, naming the fix, when a batch would not fit."""
    from deit.data import build_dataset

    sizes = []
    for method in METHODS:
        cfg = method_config(method, regime, seed=0, epochs=1, run_dir=Path("unused"), teacher_checkpoint=Path("t"))
        n = len(build_dataset(cfg.data, "train"))
        if n < cfg.data.batch_size:
            raise ValueError(f"{n} training images (--train-per-class {regime.train_per_class}) are fewer than the "
                             f"batch size {cfg.data.batch_size} of {method.name}: pass --set "
                             f"data.batch_size={max(1, n // 2)} or a larger --train-per-class")
        sizes = [n, len(build_dataset(cfg.data, "val"))]
    return sizes[0], sizes[1]


def run_study(cfg: StudyConfig, log: Callable[[str], None] = print) -> StudyResult:
    """Run every method for every seed within the budget and write the study's files (see the module doc)."""
    started = time.perf_counter()
    out = cfg.output
    _check_output(out)
    regime = cfg.regime
    train_images, val_images = _dataset_sizes(regime)
    out.mkdir(parents=True, exist_ok=True)
    budget = 60.0 * cfg.budget_minutes
    if cfg.epochs is not None:
        plan = fixed_plan(cfg.epochs[0], cfg.epochs[1], regime, budget, cfg.workers)
    else:
        costs, spent = calibrate(regime, out / "runs" / "calibration", log=log, workers=cfg.workers)
        plan = plan_epochs(costs, regime, len(cfg.seeds), budget, spent, workers=cfg.workers)
    predicted = f"predicted {plan.predicted_seconds / 60:.1f} of {cfg.budget_minutes:g} min; " if plan.costs else ""
    log(f"plan: teacher {plan.teacher_epochs} epochs, students {plan.student_epochs} epochs, {cfg.workers} run(s) at "
        f"once; {predicted}{plan.note}")

    chains = []
    for seed in cfg.seeds:
        seed_dir = out / "runs" / f"seed{seed}"
        teacher = Job("teacher", seed, plan.teacher_epochs, seed_dir / "teacher", regime)
        # The students distil from the last epoch's weights: choosing the best epoch would look at val.
        students = [Job(m.name, seed, plan.student_epochs, seed_dir / m.name, regime,
                        teacher_checkpoint=teacher.run_dir / "last.safetensors") for m in METHODS if not m.is_teacher]
        chains.append(Chain(teacher, students))
    order = {(seed, m.name): i for i, (seed, m) in enumerate((s, m) for s in cfg.seeds for m in METHODS)}
    finished: list[JobResult] = []
    results_path = out / "results.json"

    def record(result: JobResult) -> None:
        finished.append(result)
        finished.sort(key=lambda r: order[(r.job.seed, r.job.method)])  # one order, however the runs interleave
        rows = [row for r in finished for row in r.rows]
        atomic_write_text(results_path, json.dumps(rows, indent=1) + "\n")  # partial results survive a stop
        heads = ", ".join(f"{r['method']} {100 * r['top1']:.2f}" for r in result.rows)
        log(f"seed {result.job.seed}: {heads} ({result.seconds:.0f} s) [{len(finished)}/{len(order)} runs]")

    run_chains(chains, cfg.workers, record)
    rows = [row for r in finished for row in r.rows]

    seconds = time.perf_counter() - started
    summaries = aggregate(rows)
    meta = {
        "command": cfg.command,
        "dataset": regime.dataset,
        "seeds": list(cfg.seeds),
        "train_per_class": regime.train_per_class,
        "train_images": train_images,
        "val_images": val_images,
        "plan": plan.to_dict(),
        "seconds": round(seconds, 1),
        "workers": cfg.workers,
        "overrides": list(regime.common),
        "student_overrides": list(regime.student),
        "regime": asdict(regime),
    }
    files = {"results": results_path, "table": out / "table.md", "plot": out / "table.png",
             "study": out / "study.json"}
    atomic_write_text(files["table"], render_markdown(summaries, meta))
    plot_table(summaries, files["plot"], f"{regime.dataset}, {train_images} training images, "
               f"{len(cfg.seeds)} seed(s), students {plan.student_epochs} epochs")
    atomic_write_text(files["study"], json.dumps(meta, indent=1) + "\n")
    text = render_text(summaries)
    log(text)
    planned = f"planned {plan.predicted_seconds / 60:.1f} min, " if plan.costs else ""
    log(f"{planned}actual {seconds / 60:.1f} min; files in {out}")
    return StudyResult(rows, plan, seconds, text, files)


def load_rows(path: str | Path) -> list[dict]:
    """results.json as written by :func:`run_study`."""
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of result rows")
    return rows


__all__ = ["StudyConfig", "StudyResult", "load_rows", "run_study"]
