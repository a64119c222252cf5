"""``compile: true``: the training step through ``torch.compile``, with what compiling cost and what it gained,
measured in the run itself.

What is compiled: the task's forward pass and the objective, as one function (``TrainTask`` gives it); AOTAutograd
compiles their backward with them. The optimizer step, EMA, mixup and the teacher stay eager. Inductor's random
numbers come from eager's generator (``fallback_random``), so stochastic depth and dropout draw the masks an eager
step draws and a compiled run follows the eager run's loss trajectory within rounding (and resumes as exactly).
The graph is static (``dynamic=False``): training batches all have one shape (the loader drops the last partial
batch).

The measurement: the first ``EAGER_STEPS`` micro-batches run eager (the first one untimed: it allocates, and the
attention probe of ``deit.models.attention`` runs there, so the compiled graph uses its choice); the next one is
the first compiled step, whose seconds are the compile time (forward and backward are compiled then); the
``TIMED_STEPS`` after it are the steady state. Each timed step is forward + objective + backward of one
micro-batch (the device synchronised around it); two console lines say the compile time and the speed-up
(median compiled step against median eager step). No step after those is synchronised or timed.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Callable, Iterator

import torch

EAGER_STEPS = 3  # the first untimed
TIMED_STEPS = 3  # compiled steps timed after the first compiled one


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (None: it can)."""
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return None
        return None if has_triton() else "torch.compile on CUDA needs triton (pip install triton)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()  # raises when it finds none
    except Exception as exc:  # noqa: BLE001  (whatever the reason, inductor could not build CPU kernels)
        return f"torch.compile on the CPU needs a C++ compiler ({exc}); install g++ or set CXX"
    if shutil.which(compiler) is None:
        return f"torch.compile on the CPU needs a C++ compiler and {compiler!r} is not on PATH; install g++ or set CXX"
    return None


def compile_step(fn: Callable) -> Callable:
    """``fn`` (a forward + objective) through torch.compile as training compiles it: static shapes, inductor's random
    numbers from eager's generator. ``deit benchmark --compile`` compiles every contender's step with this too."""
    return torch.compile(fn, dynamic=False, options={"fallback_random": True})


class CompiledStep:
    """``fn`` eager for the first ``EAGER_STEPS`` calls, compiled after; :meth:`timing` wraps each micro-batch's
    forward + backward so that the first steps are timed, and ``report`` is told the two lines."""

    def __init__(self, fn: Callable, device: torch.device, report: Callable[[str], None] | None = None) -> None:
        self.eager, self.device, self.report = fn, device, report
        self.compiled = compile_step(fn)
        self.calls = 0
        self.seconds: list[float] = []  # forward + backward of each micro-batch, for the measured ones

    def __call__(self, *args):
        self.calls += 1
        return (self.eager if self.calls <= EAGER_STEPS else self.compiled)(*args)

    @property
    def measuring(self) -> bool:
        return len(self.seconds) < EAGER_STEPS + 1 + TIMED_STEPS

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Around one micro-batch's forward and backward: timed while the measurement lasts, a no-op after."""
        if not self.measuring:
            yield
            return
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        _synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        if self.report is not None:
            line = self.line()
            if line:
                self.report(line)

    def line(self) -> str | None:
        """The line due after the step just timed (None between them)."""
        eager, rest = self.seconds[1:EAGER_STEPS], self.seconds[EAGER_STEPS:]
        if len(rest) == 1:
            return (f"compile: the training step (forward, objective, backward) compiled in {rest[0]:.1f} s "
                    f"(its first compiled step; an eager step takes {statistics.median(eager):.3f} s)")
        if len(rest) == 1 + TIMED_STEPS:
            compiled, before = statistics.median(rest[1:]), statistics.median(eager)
            return (f"compile: {compiled:.3f} s per micro-batch compiled against {before:.3f} s eager (median of "
                    f"{TIMED_STEPS} and {len(eager)} steps, forward + objective + backward): {before / compiled:.2f}x")
        return None

    def figures(self) -> dict[str, float] | None:
        """Compile seconds, eager and compiled seconds per step, speed-up: once measured (None before)."""
        if self.measuring:
            return None
        eager, rest = statistics.median(self.seconds[1:EAGER_STEPS]), self.seconds[EAGER_STEPS:]
        compiled = statistics.median(rest[1:])
        return {"compile_s": rest[0], "eager_step_s": eager, "compiled_step_s": compiled,
                "speedup": eager / compiled}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["EAGER_STEPS", "TIMED_STEPS", "CompiledStep", "compile_problem", "compile_step"]
