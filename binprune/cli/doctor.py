"""``binprune doctor``: check the environment and print, for each problem, the command that fixes it."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]

_MARK = {"ok": "ok     ", "info": "info   ", "warning": "WARNING", "problem": "PROBLEM"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check the environment: packages, AutoAttack, data sets, devices",
        description="Check binprune's environment: the versions and files of the packages it needs, the optional "
                    "toolkits (robustbench, timm, torchattacks) and whether their files are intact, which AutoAttack "
                    "is in use, the data sets found, devices and threads. Prints one line per finding and, under "
                    "each problem, the command that fixes it. Changes nothing.",
        epilog="Exit status 1 when a problem was found.",
    )
    p.add_argument("--data-dir", metavar="DIR", help="also report which data sets this folder holds")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(run=run)


def render(findings: list[Any]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{_MARK[f.status]}  {f.check}: {f.detail}")
        if f.fix and f.status in ("warning", "problem", "info"):
            lines.append(f"         fix: {f.fix}")
    problems = sum(f.status == "problem" for f in findings)
    warnings = sum(f.status == "warning" for f in findings)
    lines.append(f"{problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..doctor import run_checks

    findings = run_checks(data_dir=args.data_dir)
    if args.json:
        print(json.dumps({"findings": [f.to_dict() for f in findings],
                          "problems": sum(f.status == "problem" for f in findings)}, indent=2))
    else:
        print(render(findings))
    return 1 if any(f.status == "problem" for f in findings) else 0
