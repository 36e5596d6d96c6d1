"""Command line: ``python -m fastpggan {train,generate,...} [options]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="fastpggan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a PGGAN (not built yet)")
    args = parser.parse_args(argv)
    parser.error(f"the {args.command!r} command is not built yet")
    return 2


if __name__ == "__main__":
    sys.exit(main())
