"""The failures every command reports in one line (:mod:`fastpggan.__main__`), and the
signals that stop a command.

A base module: every layer may raise these, and it imports no other fastpggan module.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# What users and schedulers send to end a job: Ctrl-C, kill, a closed terminal or SSH session
# (SIGHUP), Ctrl-\ (SIGQUIT), and the warnings some cluster schedulers send before a job's time
# limit (SIGUSR1/SIGUSR2). Each stops training with a checkpoint; none may end a run silently.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


class Interrupted(BaseException):
    """A stop signal arrived before training started (while the images are decoded, say):
    nothing of the run was kept; printed as one line, exit code ``128 + signum``. A
    ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} before training started (while reading the checkpoint "
                         "or decoding the images); no checkpoint was written: run the same command "
                         "again to start")


class RunStopped(RuntimeError):
    """A command stopped on a fault it detected and reported (non-finite losses, a full disk):
    printed as one line, exit code 1."""


@contextmanager
def usage_errors(*kinds: type[Exception], prefix: str = "") -> Iterator[None]:
    """Report ``kinds`` (default: ``ValueError``) raised in the block as a :class:`UsageError`
    with the same one line, after ``prefix``: how a command turns a library's refusal of its
    input into exit code 2. A :class:`UsageError` passes through as it is."""
    try:
        yield
    except UsageError:
        raise
    except kinds or (ValueError,) as e:
        raise UsageError(prefix + str(e)) from None


@contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Run the block with ``handler(signum, frame)`` for every one of :data:`STOP_SIGNALS`, then
    restore the previous handlers. Outside the main thread (where Python cannot install
    handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def ignore_stop_signals(*_: object) -> None:
    """A helper process's (DataLoader worker's) ``worker_init_fn``: the stop signals are the
    main process's to act on. A signal sent to the whole process group (Ctrl-C, a closed
    terminal, a scheduler ending the job) then stops the run once, with its one line, instead
    of also killing each worker (which the main process reports with a traceback of its own);
    the main process shuts the workers down as it stops. Start the workers under
    :func:`stop_signals_blocked`, so that none arrives before this has run."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold the stop signals back while the block runs (they are delivered when it ends): for
    starting helper processes, which inherit the mask and so cannot be killed by one before
    :func:`ignore_stop_signals` runs in them."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
