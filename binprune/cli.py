"""The ``binprune`` command. This is the only module that parses arguments.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its arguments and a
``_run_<name>(args)`` function that calls the library. Errors a user can fix (bad values, missing
files, mismatched checkpoints) are printed as one line, ``binprune: error: ...``, with exit
status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .checkpoint import CheckpointError

# --- shared argument types ----------------------------------------------------------------------


def _fraction_below_one(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1)")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


# --- subcommands ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binprune",
        description=(
            "Robust binary subnetworks by pruning randomly-initialized networks: train masks "
            "adversarially, evaluate with PGD/AutoAttack, export kilobyte models, compare baselines."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'binprune COMMAND --help' for the options of each command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"binprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_eval, _add_export, _add_inspect, _add_compare):
        add(sub)
    return parser


# --- train (issue: trainer) -----------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a supermask (or dense) model adversarially")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    raise ValueError("train is not wired yet")


# --- eval ---------------------------------------------------------------------------------------


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: clean, PGD, AutoAttack, sanity checks")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    raise ValueError("eval is not wired yet")


# --- export -------------------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a packed kilobyte-sized model file")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    raise ValueError("export is not wired yet")


# --- inspect ------------------------------------------------------------------------------------


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="analyze mask structure and write plots")
    p.set_defaults(run=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    raise ValueError("inspect is not wired yet")


# --- compare ------------------------------------------------------------------------------------


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train and evaluate binprune and its baselines under one protocol")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    raise ValueError("compare is not wired yet")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        if os.environ.get("BINPRUNE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"binprune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
