"""Running the study's training runs, one after another or several at once in worker processes.

A study is a set of chains: a teacher run, then the teacher-output cache of the students' data stream (built from
that teacher), then the student runs that distil from it (they may start once the cache is built). With one
worker the runs go in order, in this process. With several, each run is a job in a pool of spawned processes:
teachers first, each chain's next stage queued the moment its previous one finishes. A run is
fully determined by its config (seeded data order, initial weights and augmentation; one torch thread per run by
the digits presets), so the results do not depend on the number of workers or on which run finishes first.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from deit.reproduce.methods import get_method
from deit.reproduce.regime import Regime
from deit.runtime.allocator import keep_freed_memory, keeping_freed_memory


@dataclass(frozen=True)
class Job:
    method: str  # a name from methods.METHODS
    seed: int
    epochs: int
    run_dir: Path
    regime: Regime
    teacher_checkpoint: Path | None = None  # the students': their teacher's last.safetensors
    resume: bool = False  # continue the run directory's saved training state, if it has one
    teacher_cache: Path | None = None  # the students' teacher-output cache (the cache job: what it builds)

    @property
    def is_cache(self) -> bool:
        return self.method == CACHE_JOB


CACHE_JOB = "teacher-cache"  # a Job's method for building a chain's teacher-output cache


@dataclass
class Chain:
    teacher: Job | None  # None: already trained (a resumed study)
    students: Sequence[Job] = field(default_factory=tuple)
    cache: Job | None = None  # built after the teacher, before the students; None: none (or already built)

    def stages(self) -> list[list[Job]]:
        """The chain's jobs in the order they may run: each stage starts when the previous one has finished."""
        stages = [[self.teacher]] if self.teacher else []
        stages += [[self.cache]] if self.cache else []
        return stages + ([list(self.students)] if self.students else [])


@dataclass
class JobResult:
    job: Job
    rows: list[dict]  # one per reported head (runs.RunOutcome.rows)
    seconds: float
    epoch_seconds: list[float]


def run_job(job: Job) -> JobResult:
    """Train and evaluate one run (in this process or in a worker); the teacher for the students' agreement is
    read from its checkpoint."""
    from deit.reproduce.runs import build_teacher_cache, run_method

    if job.is_cache:
        seconds, marks = build_teacher_cache(job.regime, seed=job.seed, epochs=job.epochs, output=job.run_dir,
                                             teacher_checkpoint=job.teacher_checkpoint)
        return JobResult(job, [], seconds, marks)
    outcome = run_method(get_method(job.method), job.regime, seed=job.seed, epochs=job.epochs, run_dir=job.run_dir,
                         teacher_checkpoint=job.teacher_checkpoint, teacher_cache=job.teacher_cache,
                         resume=job.resume)
    return JobResult(job, outcome.rows, outcome.seconds, outcome.epoch_seconds)


def start_worker(parent: int, keep_memory: bool) -> None:
    """Pool initializer: the worker keeps freed memory when its parent does (``deit.runtime.allocator``), and stops
    with its parent (:func:`stop_with_parent`)."""
    if keep_memory:
        keep_freed_memory()
    stop_with_parent(parent)


def stop_with_parent(parent: int, poll_seconds: float = 1.0, grace_seconds: float = 30.0) -> None:
    """When the study process is gone (killed, crashed) the worker stops its run as a SIGTERM
    would (a training run saves its state at the next step and exits; ``deit reproduce --resume`` continues it)
    instead of working on as an orphan that holds the CPUs. Whatever is still running ``grace_seconds`` later (an
    evaluation, a cache build, a handler that ignores the signal) ends there: its result has nowhere to go."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="deit-study-watch", daemon=True).start()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_chains(chains: Sequence[Chain], workers: int, on_result: Callable[[JobResult], None]) -> list[JobResult]:
    """Run every job of ``chains`` on ``workers`` processes (1: here, in order); ``on_result`` sees each result as
    it comes. Returns the results in completion order. A failing run stops the study: queued runs are cancelled and
    the error is raised, naming the run."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[JobResult] = []

    def done(result: JobResult) -> None:
        results.append(result)
        on_result(result)

    if workers == 1:
        for chain in chains:
            for stage in chain.stages():
                for job in stage:
                    done(run_job(job))
        return results

    # spawn, not fork: forking a process whose torch thread pools are already running can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=start_worker, initargs=(os.getpid(), keeping_freed_memory())) as pool:
        pending: dict[Future, Job] = {}
        stages = {id(chain): chain.stages() for chain in chains}
        left: dict[int, int] = {}  # chain -> jobs of its current stage still running
        owner: dict[int, Chain] = {}

        def submit_stage(chain: Chain) -> None:
            stage = stages[id(chain)].pop(0)
            left[id(chain)] = len(stage)
            for job in stage:
                owner[id(job)] = chain
                pending[pool.submit(run_job, job)] = job

        # Teachers (first stages) before anything else: they gate everything in their chains.
        for chain in sorted((c for c in chains if stages[id(c)]), key=lambda c: c.teacher is None):
            submit_stage(chain)
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:
                        raise RuntimeError(f"run {job.run_dir} failed ({exc}); its train.log has the details") from exc
                    done(result)
                    chain = owner[id(job)]
                    left[id(chain)] -= 1
                    if not left[id(chain)] and stages[id(chain)]:
                        submit_stage(chain)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


__all__ = ["CACHE_JOB", "Chain", "Job", "JobResult", "available_cpus", "run_chains", "run_job",
           "start_worker", "stop_with_parent"]
