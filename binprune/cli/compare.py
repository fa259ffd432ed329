"""``binprune compare``: binprune and its baselines under one protocol, in one table."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from ..config import CompareConfig, list_presets
from .common import add_config_flags, given_values

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    presets = ", ".join(list_presets("compare"))
    p = sub.add_parser(
        "compare", help="train and evaluate binprune and its baselines under one protocol",
        description="Train and evaluate binprune and its baselines (the rows of the paper's table: dense AT in full "
                    "precision and BinaryConnect, with and without LBN, full size and small; Flying Bird; RST; HYDRA; "
                    "Sehwag et al. 2019; ATMC; binprune with PGD-10 and fast) with the same data, architecture, "
                    "attack budget, seed and number of optimizer steps, each method with its own loss, optimizer and "
                    "schedule, then write DIR/table.json, DIR/table.md and DIR/table.png. Re-running with the same "
                    "--out skips finished methods and resumes unfinished ones.",
        epilog=f"Presets: {presets} (binprune/presets/compare/*.yaml). See docs/BASELINES.md.",
    )
    p.add_argument("--preset", required=True, metavar="NAME", help=f"one of: {presets}")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="methods to run, in table order (default: the preset's)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (re-use it to resume)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g = p.add_argument_group("shorter runs (recorded in the table; every method gets the same), parallel workers")
    names = add_config_flags(g, CompareConfig)
    g.add_argument("--eval-examples", dest="test_examples_deprecated", type=int, help=argparse.SUPPRESS)
    p.add_argument("--reuse-from", metavar="DIR",
                   help="copy the finished methods of comparison folder DIR instead of re-running them, where DIR's "
                        "settings give the same numbers (e.g. the width sweep's x1 column from the fmnist-cpu table)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(run=run, override_names=names)


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare import compare

    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist or is not a folder")
    from ..utils import check_output_path

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder")
    check_output_path(os.path.join(args.out, "table.json"))
    if args.reuse_from is not None and not os.path.isfile(os.path.join(args.reuse_from, "compare.json")):
        raise FileNotFoundError(f"--reuse-from {args.reuse_from}: no compare.json there (not a comparison folder)")
    overrides = given_values(args, args.override_names)
    workers = overrides.pop("workers", None)  # how to run, not what: not an override of the protocol
    if args.test_examples_deprecated is not None:
        logging.getLogger("binprune").warning("--eval-examples is deprecated, use --test-examples")
        overrides.setdefault("test_examples", args.test_examples_deprecated)
    table = compare(args.preset, args.out, methods=args.methods, data_dir=args.data_dir, device=args.device,
                    overrides=overrides, progress=not args.no_progress, log=lambda line: print(line, flush=True),
                    workers=workers, reuse_from=args.reuse_from)
    if "width_factors" in table:
        print(f"{len(table['rows'])} (method, width) result(s) in {os.path.join(args.out, 'widths.md')}, widths.png")
        return 0
    pending = table.get("pending_methods") or []
    print(f"{len(table['rows'])} method(s) in {os.path.join(args.out, 'table.md')}"
          + (f"; not finished: {', '.join(pending)}" if pending else ""))
    return 0
