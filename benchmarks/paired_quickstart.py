"""Paired test of two trained Fashion-MNIST models on all 10,000 test images: clean and PGD-20
per-example flags of each, their 95% Wilson intervals and the exact McNemar test.

``benchmarks/quickstart.py`` keeps only accuracies, so its supermask-vs-dense comparison has no
paired test; this script re-evaluates the two ``best.pt`` files it left with the trainer's own
test settings (PGD-20, eps = 0.1, step 2.5 * eps / 20, random start seeded as the trainer seeds
its test, batch 256, the model itself attacked), so the accuracies should repeat the trainer's for
the same thread count (the JSON records whether they do).

    python benchmarks/quickstart.py --out-dir runs/q8 --train-args "--sparsity 0.97 --batch-size 64 --epochs 8"
    python benchmarks/paired_quickstart.py runs/q8/supermask runs/q8/dense --out benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import binprune  # noqa: E402
from binprune.doctor import cpu_features  # noqa: E402
from binprune.stats import exact_mcnemar, wilson_interval  # noqa: E402
from binprune.utils import stable_seed, write_json  # noqa: E402


def check_run(run: Path) -> None:
    if not (run / "best.pt").is_file() or not (run / "metrics.json").is_file():
        raise FileNotFoundError(f"{run} holds no finished training run (best.pt and metrics.json): train it first")


def evaluate_run(run: Path, test_set) -> dict:
    """Clean and PGD-20 flags of ``run/best.pt``, evaluated as the trainer evaluated it."""
    metrics = json.loads((run / "metrics.json").read_text())
    config = metrics["config"]
    model = binprune.load_model(run / "best.pt")
    start = time.perf_counter()
    report = binprune.evaluate(model, test_set, eps=config["eps"], attacks=("clean", "pgd"),
                               pgd_steps=config["test_pgd_steps"], seed=stable_seed(config["seed"], "test"),
                               device="cpu", fast=False, progress=False)
    flags = {name: report.attacks[name].robust for name in ("clean", "pgd")}
    correct = {name: int(f.sum()) for name, f in flags.items()}
    n = len(flags["clean"])
    # The trainer writes accuracies rounded to 4 digits: compare counts of correct examples.
    repeats = all(round(metrics["accuracy"][name] * n) == correct[name] for name in correct)
    return {"run": str(run), "kept_params": metrics.get("kept_params"), "n_examples": n, "correct": correct,
            "accuracy": {name: c / n for name, c in correct.items()},
            "interval95": {name: list(wilson_interval(c, n)) for name, c in correct.items()},
            "trainer_accuracy": metrics["accuracy"], "repeats_trainer": repeats,
            "eval_seconds": time.perf_counter() - start, "flags": flags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="folder of a finished `binprune train` run (e.g. the supermask)")
    parser.add_argument("run_b", type=Path, help="folder of the run to compare it with (e.g. dense AT)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write (an existing one is refused)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists (an earlier result): name a new file")
    if args.threads:
        torch.set_num_threads(args.threads)
    for run in (args.run_a, args.run_b):  # both, before the first long evaluation
        check_run(run)
    test_set = binprune.load_dataset("fashion-mnist", split="test")
    a, b = evaluate_run(args.run_a, test_set), evaluate_run(args.run_b, test_set)
    tests = {name: exact_mcnemar(a["flags"][name], b["flags"][name]) for name in ("clean", "pgd")}
    for side in (a, b):
        side.pop("flags")
    result = {
        "description": "paired test of two trained models on the Fashion-MNIST test set (exact McNemar; b: "
                       "examples only run_a gets right, c: only run_b)",
        "run_a": a, "run_b": b, "mcnemar": tests,
        "difference_a_minus_b": {name: (a["correct"][name] - b["correct"][name]) / a["n_examples"]
                                 for name in ("clean", "pgd")},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    **cpu_features()},
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("difference_a_minus_b", "mcnemar")}, indent=2))


if __name__ == "__main__":
    main()
