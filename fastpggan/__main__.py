"""Command line: ``python -m fastpggan {train,generate,evaluate,export} [options]`` (``train.py`` = ``train``).

Bad input gets one line on stderr naming the problem and exit code 2, before anything is written.
A run that stops on a fault it detects (losses no longer finite, a full disk: nothing partial is
left) gets one line and exit code 1. Messages print on any terminal: what its encoding cannot
show is escaped.
"""

from __future__ import annotations

import argparse
import sys

from fastpggan.atomic import DiskFullError
from fastpggan.commands.evaluate import add_evaluate_arguments, run_evaluate
from fastpggan.commands.export import add_export_arguments, run_export
from fastpggan.commands.generate import add_generate_arguments, run_generate
from fastpggan.commands.train import add_train_arguments, run_train
from fastpggan.console import printable, safe_streams
from fastpggan.data import DataError
from fastpggan.errors import Interrupted, RunStopped, UsageError
from fastpggan.training.checkpoint import CheckpointError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), still exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each subcommand's ``func`` runs it."""
    parser = _Parser(prog="fastpggan", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train a PGGAN progressively from 4x4 up to --res",
                           description="Train a PGGAN progressively from 4x4 up to --res.")
    add_train_arguments(train)
    train.set_defaults(func=run_train)
    gen = sub.add_parser("generate", help="sample grid (PNG) or latent walk (GIF) from a checkpoint",
                         description="Write a sample grid (PNG) or a latent walk (GIF) from a checkpoint's G_ema.")
    add_generate_arguments(gen)
    gen.set_defaults(func=run_generate)
    ev = sub.add_parser("evaluate", help="SWD and/or FID of a checkpoint's G_ema against real images (JSON)",
                        description="Measure a checkpoint's G_ema (SWD, FID) against reals; print and write JSON.")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=run_evaluate)
    ex = sub.add_parser("export", help="a checkpoint's G_ema as ONNX (.onnx) or a torch.export program (.pt2)",
                        description="Export a checkpoint's G_ema to ONNX or torch.export, checked against it in PyTorch.")
    add_export_arguments(ex)
    ex.set_defaults(func=run_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DataError, CheckpointError) as e:
        print(f"fastpggan {args.command}: error: {printable(str(e))}", file=sys.stderr)
        return 2
    except (DiskFullError, RunStopped) as e:
        print(f"fastpggan {args.command}: error: {printable(str(e))}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"fastpggan {args.command}: {printable(str(e))}", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
