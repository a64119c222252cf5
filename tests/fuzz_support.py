"""What the fuzz tests share: a bound on one example's time, so a hang fails the test instead of stalling CI."""

from __future__ import annotations

import signal
from contextlib import contextmanager

HANG_SECONDS = 30  # an example takes milliseconds; a hang takes forever


class Hang(BaseException):  # not an Exception: nothing in deit may swallow it
    pass


@contextmanager
def no_hang(seconds: float = HANG_SECONDS):
    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
