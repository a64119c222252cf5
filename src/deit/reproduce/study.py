"""The whole study: plan the epochs, then per seed train the teacher and every student from it, then the table.

    DIR/results.json     one row per method (per head for the two-token students) and seed
    DIR/table.md         mean ± std per method, the paper's claims checked against seed noise, budget
    DIR/table.png        bars with error bars
    DIR/study.json       the plan (calibration, predicted time), the actual time, the regime, the command
    DIR/runs/calibration/<kind>/, DIR/runs/seed<S>/<method>/    ordinary `deit train` run directories

results.json and study.json are rewritten after every run, so a stopped study loses at most its unfinished runs'
epochs since their last save: ``resume_study`` (``deit reproduce --resume DIR``) finishes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deit.reproduce.execute import CACHE_JOB, Chain, Job, JobResult, available_cpus, run_chains
from deit.reproduce.methods import METHODS, ROWS
from deit.reproduce.plan import Cost, Plan, calibrate, fixed_plan, plan_epochs
from deit.reproduce.regime import DEFAULT_REGIME, Regime, regime_from_dict
from deit.reproduce.runs import method_config
from deit.reproduce.table import aggregate, plot_table, render_markdown, render_text
from deit.runtime.files import atomic_write_text


@dataclass
class StudyConfig:
    output: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    budget_minutes: float = 30.0
    regime: Regime = DEFAULT_REGIME
    # (teacher, student) epochs given by hand: no calibration; None: planned from the budget.
    epochs: tuple[int, int] | None = None
    command: str = "deit reproduce"
    # Runs at once, each in its own process (one torch thread each by the digits presets); None: one per CPU
    # core the runs' thread setting leaves (default_workers).
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
            self.workers = default_workers(self.regime)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass
class StudyResult:
    rows: list[dict]
    plan: Plan
    seconds: float
    table: str  # the printed table
    files: dict[str, Path] = field(default_factory=dict)


def default_workers(regime: Regime) -> int:
    """One run per CPU core: the CPUs this process may use, divided by the torch threads a run uses (the digits
    presets' ``threads: 1``; a run without a thread setting counts as all of them)."""
    cfg = method_config(METHODS[-1], regime, seed=0, epochs=1, run_dir=Path("unused"), teacher_checkpoint=Path("t"))
    cpus = available_cpus()
    return max(1, cpus // (cfg.threads or cpus))


def _check_output(output: Path) -> None:
    if (output / "study.json").exists():
        raise ValueError(f"{output} already holds a study: finish it with `deit reproduce --resume {output}`, or "
                         "choose another --output")
    if (output / "results.json").exists() or (output / "runs").exists():
        raise ValueError(f"{output} already holds results.json or runs/ (a study stopped before its plan was made "
                         "cannot be resumed): choose another --output or remove it")


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
    meta = {
        "command": cfg.command,
        "dataset": regime.dataset,
        "seeds": list(cfg.seeds),
        "train_per_class": regime.train_per_class,
        "train_images": train_images,
        "val_images": val_images,
        "plan": plan.to_dict(),
        "seconds": 0.0,
        "workers": cfg.workers,
        "overrides": list(regime.common),
        "student_overrides": list(regime.student),
        "regime": asdict(regime),
        "status": "running",
    }
    return _run(out, meta, plan, regime, cfg.workers, {}, started, 0.0, log)


def resume_study(output: str | Path, workers: int | None = None, log: Callable[[str], None] = print) -> StudyResult:
    """Finish an interrupted study in ``output`` with its own plan, regime and seeds (from study.json): runs with
    rows in results.json are kept, an interrupted run continues from its last saved epoch, the rest run."""
    started = time.perf_counter()
    out = Path(output)
    study_path = out / "study.json"
    if not study_path.is_file():
        raise ValueError(f"{out} has no study.json: not a study started by `deit reproduce` (start one with "
                         f"--output {out})")
    meta = json.loads(study_path.read_text())
    regime = regime_from_dict(meta["regime"])
    plan_dict = dict(meta["plan"])
    plan = Plan(**{**plan_dict, "costs": {k: Cost(**c) for k, c in plan_dict.get("costs", {}).items()}})
    done: dict[tuple[int, str], list[dict]] = {}
    if (out / "results.json").is_file():
        for row in load_rows(out / "results.json"):
            method, _head = ROWS[row["method"]]
            done.setdefault((int(row["seed"]), method.name), []).append(row)
    workers = workers or meta.get("workers") or default_workers(regime)
    meta["workers"] = workers
    log(f"resuming {out}: {len(done)} of {len(meta['seeds']) * len(METHODS)} runs already done; teacher "
        f"{plan.teacher_epochs} epochs, students {plan.student_epochs} epochs, {workers} run(s) at once")
    return _run(out, meta, plan, regime, workers, done, started, float(meta.get("seconds", 0.0)), log, resume=True)


def _run(out: Path, meta: dict, plan: Plan, regime: Regime, workers: int, done: dict[tuple[int, str], list[dict]],
         started: float, seconds_before: float, log: Callable[[str], None], resume: bool = False) -> StudyResult:
    """Every run of the study not in ``done``, then the table; study.json and results.json kept up to date."""
    seeds = [int(s) for s in meta["seeds"]]
    files = {"results": out / "results.json", "table": out / "table.md", "plot": out / "table.png",
             "study": out / "study.json"}

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def save_meta() -> None:
        meta["seconds"] = round(elapsed(), 1)
        atomic_write_text(files["study"], json.dumps(meta, indent=1) + "\n")

    save_meta()
    chains = [_chain(out / "runs" / f"seed{seed}", seed, plan, regime, done, resume) for seed in seeds]
    chains = [c for c in chains if c.stages()]
    order = {(seed, m.name): i for i, (seed, m) in enumerate((s, m) for s in seeds for m in METHODS)}

    def all_rows() -> list[dict]:
        return [row for key in sorted(done, key=order.__getitem__) for row in done[key]]

    def record(result: JobResult) -> None:
        if result.job.is_cache:
            log(f"seed {result.job.seed}: teacher-output cache for the students built ({result.seconds:.0f} s)")
            return
        done[(result.job.seed, result.job.method)] = result.rows
        atomic_write_text(files["results"], json.dumps(all_rows(), indent=1) + "\n")  # partial results survive
        save_meta()
        heads = ", ".join(f"{r['method']} {100 * r['top1']:.2f}" for r in result.rows)
        log(f"seed {result.job.seed}: {heads} ({result.seconds:.0f} s) [{len(done)}/{len(order)} runs]")

    run_chains(chains, workers, record)
    rows = all_rows()
    seconds = elapsed()
    meta["status"] = "done"
    save_meta()
    summaries = aggregate(rows)
    atomic_write_text(files["table"], render_markdown(summaries, meta))
    plot_table(summaries, files["plot"], f"{regime.dataset}, {meta['train_images']} training images, "
               f"{len(seeds)} seed(s), students {plan.student_epochs} epochs")
    text = render_text(summaries)
    log(text)
    planned = f"planned {plan.predicted_seconds / 60:.1f} min, " if plan.costs else ""
    log(f"{planned}actual {seconds / 60:.1f} min; files in {out}")
    return StudyResult(rows, plan, seconds, text, files)


def _chain(seed_dir: Path, seed: int, plan: Plan, regime: Regime, done: dict, resume: bool) -> Chain:
    """A seed's jobs not done yet: its teacher, the teacher-output cache of the students' (common) data stream,
    the students, which read the cache instead of running the teacher."""
    teacher = Job("teacher", seed, plan.teacher_epochs, seed_dir / "teacher", regime, resume=resume)
    # The students distil from the last epoch's weights: choosing the best epoch would look at val.
    checkpoint = teacher.run_dir / "last.safetensors"
    cache = Job(CACHE_JOB, seed, plan.student_epochs, seed_dir / "teacher-cache", regime, teacher_checkpoint=checkpoint)
    reads_cache = regime.teacher_cache
    students = [Job(m.name, seed, plan.student_epochs, seed_dir / m.name, regime, resume=resume,
                    teacher_checkpoint=checkpoint, teacher_cache=cache.run_dir if m.token and reads_cache else None)
                for m in METHODS if not m.is_teacher and (seed, m.name) not in done]
    distilled = any(job.teacher_cache for job in students)
    return Chain(None if (seed, "teacher") in done else teacher, students, cache if distilled else None)


def load_rows(path: str | Path) -> list[dict]:
    """results.json as written by :func:`run_study`."""
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of result rows")
    return rows


__all__ = ["StudyConfig", "StudyResult", "load_rows", "resume_study", "run_study"]
