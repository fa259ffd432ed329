"""The ``binprune`` command. This package is the only place that parses arguments.

One module per verb (``train``, ``eval``, ``export``, ``inspect``, ``compare``, ``doctor``), each with
``add_parser(subparsers)`` and ``run(args)``. Flags of settings are generated from the config
dataclasses (:mod:`binprune.config`). Nothing here imports torch before a verb runs, so ``--help``
and argument errors answer at once. Errors a user can fix (bad values, missing files, mismatched
checkpoints) are printed as one line, ``binprune: error: ...``, with exit status 2 and no
traceback (``--debug`` or ``BINPRUNE_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import compare as compare_verb
from . import doctor as doctor_verb
from . import eval as eval_verb
from . import export as export_verb
from . import inspect as inspect_verb
from . import train as train_verb
from .common import Parser

__all__ = ["build_parser", "main"]

_VERBS = (train_verb, eval_verb, export_verb, inspect_verb, compare_verb, doctor_verb)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="binprune",
        description=(
            "Robust binary subnetworks by pruning randomly-initialized networks: train masks "
            "adversarially, evaluate with PGD/AutoAttack, export kilobyte models, compare baselines."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'binprune COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"binprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in _VERBS:
        verb.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input was wrong" (imported only once a verb has run)."""
    # OSError covers what the user's environment must fix: a full disk, a read-only folder, a
    # missing permission (FileNotFoundError is one too).
    errors: list[type[BaseException]] = [ValueError, OSError, ImportError]
    checkpoint = sys.modules.get("binprune.checkpoint")
    if checkpoint is not None:
        errors.append(checkpoint.CheckpointError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..logs import console_messages

    try:
        with console_messages():
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("binprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or os.environ.get("BINPRUNE_DEBUG") or not isinstance(exc, _user_errors()):
            raise
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"binprune: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
