"""The quickstart, and dense full-precision adversarial training of the same network beside it.

Runs ``binprune train --preset quickstart`` (binary supermask, 99% sparse, p = 0.1, LBN) and then
the same preset with ``--dense`` (the weights of the same architecture adversarially trained in
full precision, same data, attack, epochs and evaluation), one after the other on this machine,
and writes both metrics with their wall-clock times to ``benchmarks/results/quickstart.json``.

    python benchmarks/quickstart.py [--out-dir runs/quickstart-bench] [--skip-dense]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.utils import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("accuracy", "test_attack", "n_examples", "kept_params", "total_params", "sparsity",
        "epochs", "seconds", "eval_seconds", "selected_epoch", "val_accuracy")


def run(out: Path, *extra: str) -> dict:
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "binprune", "train", "--preset", "quickstart", "--out", str(out),
                    "--no-progress", *extra], check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return {**{k: metrics.get(k) for k in KEYS}, "wall_seconds": wall, "command_options": list(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/quickstart-bench")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "quickstart.json"))
    args = parser.parse_args()
    base = Path(args.out_dir)
    result = {
        "description": "binprune train --preset quickstart, and the same with --dense (full-precision AT)",
        "units": {"accuracy": "fraction in [0, 1]", "seconds": "s"},
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "supermask": run(base / "supermask"),
    }
    if not args.skip_dense:
        result["dense_fp"] = run(base / "dense", "--dense")
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
