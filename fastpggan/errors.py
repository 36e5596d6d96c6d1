"""The two failures every command reports in one line (:mod:`fastpggan.__main__`).

A base module: every layer may raise these, and it imports no other fastpggan module.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit code 2."""


class RunStopped(RuntimeError):
    """A command stopped on a fault it detected and reported (non-finite losses, a full disk):
    printed as one line, exit code 1."""
