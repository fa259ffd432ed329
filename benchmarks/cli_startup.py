"""How fast the command line says no: ``binprune --help``, a verb's ``--help`` and an argument
error, each the median of repeated runs in fresh processes, beside ``import torch`` for scale.

    python benchmarks/cli_startup.py [--repeats 5] [--out benchmarks/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.utils import write_json  # noqa: E402

COMMANDS = {
    "binprune --help": ["-m", "binprune", "--help"],
    "binprune train --help": ["-m", "binprune", "train", "--help"],
    "binprune eval --help": ["-m", "binprune", "eval", "--help"],
    "argument error (train --sparsity 2)": ["-m", "binprune", "train", "--sparsity", "2"],
    "python -c 'import torch' (for scale)": ["-c", "import torch"],
}


def seconds(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_startup.json"))
    args = parser.parse_args()
    rows = {}
    for label, argv in COMMANDS.items():
        times = seconds(argv, args.repeats)
        rows[label] = {"median_seconds": statistics.median(times), "all_seconds": times}
        print(f"{label:<40} {statistics.median(times):6.3f} s")
    write_json(args.out, {"description": __doc__.splitlines()[0], "units": {"seconds": "s"},
                          "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                      "python": platform.python_version()},
                          "repeats": args.repeats, "commands": rows})


if __name__ == "__main__":
    main()
