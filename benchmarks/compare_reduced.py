"""Every row of a `binprune compare` preset, reduced so that it fits a shared 2-core CPU: few
training images, about 100 test images, a cheap AutoAttack. It shows that every row trains and
evaluates under the preset's protocol (equal step budget, each method's own loss, optimizer and
schedule); at this size the accuracies are not a comparison of the methods.

    python benchmarks/compare_reduced.py fmnist-cpu [--data-dir DIR] [--device cpu]

Writes ``benchmarks/results/compare-PRESET-reduced/`` (resumable: re-run the same command).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.experiments.compare import DEFAULT_METHODS, compare, resolve_preset  # noqa: E402

#: what the reduction changes; everything else is the preset's
REDUCTION = {"train_examples": 1000, "test_examples": 100, "epochs": 3,
             "autoattack_options": {"iterations": 10, "square_queries": 100}}
#: per preset (CIFAR-10's images cost about 3x Fashion-MNIST's per step): fewer training images
PER_PRESET = {"fmnist-cpu": {}, "cifar10-cpu": {"train_examples": 500}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=["fmnist-cpu", "cifar10-cpu"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="dataset folder (CIFAR-10: e.g. ../shared/data/cifar10-jpeg)")
    args = parser.parse_args(argv)
    base = resolve_preset(args.preset)
    reduction = {**REDUCTION, **PER_PRESET[args.preset]}
    preset = dataclasses.replace(
        base, name=f"{base.name}/reduced", **reduction,
        description=f"{base.description}; REDUCED to {reduction['train_examples']} training images, "
                    f"{reduction['epochs']} epochs per method, {reduction['test_examples']} test images and a cheap "
                    f"AutoAttack ({reduction['autoattack_options']}): a check that every row runs, not a comparison")
    compare(preset, ROOT / "benchmarks" / "results" / f"compare-{args.preset}-reduced", methods=list(DEFAULT_METHODS),
            data_dir=args.data_dir, device=args.device, progress=False, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
