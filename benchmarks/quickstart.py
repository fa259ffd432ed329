"""The quickstart, and dense full-precision adversarial training of the same network beside it.

Runs ``binprune train --preset quickstart`` (binary supermask, 99% sparse, p = 0.1, LBN) and then
the same preset with ``--dense`` (the weights of the same architecture adversarially trained in
full precision, same data, attack, epochs and evaluation), one after the other on this machine,
and writes both metrics with their wall-clock times to ``benchmarks/results/quickstart.json``.

    python benchmarks/quickstart.py [--out-dir runs/quickstart-bench] [--skip-dense] [--resume]
                                    [--train-args "--epochs 6 --channels-last"]

``--train-args`` are passed to both ``binprune train`` runs (a variant of the preset, recorded
in each run's ``command_options``).

``--resume`` continues an interrupted benchmark: a run whose folder holds ``metrics.json`` is
read back, one with only ``last.pt`` resumes from it (its ``seconds`` then add up the parts,
``wall_seconds`` is that of the last part only; a finished run keeps its earlier record). Images/s per epoch and the load average are
recorded, so timings can be scaled to another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.doctor import cpu_features  # noqa: E402
from binprune.utils import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("accuracy", "test_attack", "n_examples", "kept_params", "total_params", "sparsity",
        "epochs", "seconds", "eval_seconds", "selected_epoch", "val_accuracy")


def run(out: Path, *extra: str, resume: bool = False, previous: dict | None = None) -> dict:
    """Train (or, with ``resume``, continue or read back) one run; a run read back keeps the
    record ``previous`` (from the earlier JSON) when there is one, with its timings."""
    if resume and (out / "metrics.json").is_file() and previous:
        return previous
    load_before = os.getloadavg()
    resumed = resume and (out / "last.pt").is_file()
    start = time.perf_counter()
    if not (resume and (out / "metrics.json").is_file()):
        if out.exists() and not resumed:
            shutil.rmtree(out)
        subprocess.run([sys.executable, "-m", "binprune", "train", "--preset", "quickstart", "--out", str(out),
                        "--no-progress", *extra, *(["--resume"] if resumed else [])], check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {**{k: metrics.get(k) for k in KEYS}, "wall_seconds": wall, "resumed": resumed,
            "images_per_second_per_epoch": [h.get("images_per_second") for h in history],
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "command_options": list(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/quickstart-bench")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted benchmark (see above)")
    parser.add_argument("--out", default=str(RESULTS / "quickstart.json"))
    parser.add_argument("--train-args", default="", help="options for both `binprune train` runs, e.g. '--epochs 6'")
    args = parser.parse_args()
    train_args = shlex.split(args.train_args)
    base = Path(args.out_dir)
    earlier = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).is_file() else {}
    result = {
        "description": "binprune train --preset quickstart" + (f" {args.train_args}" if train_args else "")
                       + ("" if args.skip_dense else ", and the same with --dense (full-precision AT)"),
        "units": {"accuracy": "fraction in [0, 1]", "seconds": "s"},
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), **cpu_features()},
        "supermask": run(base / "supermask", *train_args, resume=args.resume, previous=earlier.get("supermask")),
        "complete": args.skip_dense,
    }
    write_json(args.out, result)  # the supermask's figures survive an interrupted dense run
    if not args.skip_dense:
        result["dense_fp"] = run(base / "dense", "--dense", *train_args, resume=args.resume,
                                 previous=earlier.get("dense_fp"))
        result["complete"] = True
        write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
