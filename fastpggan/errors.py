"""The two failures every command reports in one line (:mod:`fastpggan.__main__`).

A base module: every layer may raise these, and it imports no other fastpggan module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


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
