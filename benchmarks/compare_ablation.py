"""Variations of a `binprune compare` preset, to find out why an expected ordering does not hold.

Each named ablation changes one thing of a preset (epochs, widths, evaluated images, ATMC's penalty) and runs a few methods
with ``binprune.experiments.compare.compare``, so the protocol (data, attack, seed, evaluation) is
the preset's in every other respect. Tables go to ``benchmarks/results/ablation-NAME/``.

    python benchmarks/compare_ablation.py cifar-wide cifar-e15 cifar-eval500 fmnist-atmc-penalty [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.experiments.compare import compare, resolve_preset  # noqa: E402

ABLATIONS = {
    # Three times the epochs per phase: is the 5-epoch budget too short for score training?
    "cifar-e15": (dataclasses.replace(resolve_preset("cifar10-cpu"), epochs=15, test_examples=200),
                  ["at-binary-small", "binprune-p0.1"]),
    # Twice the widths (4x the weights, so 4x the kept weights at 99% sparsity, and a small
    # network at 1% of the wider one): is the 288k-weight network too small to hold a good mask?
    "cifar-wide": (dataclasses.replace(resolve_preset("cifar10-cpu"), arch_kwargs={"widths": [64, 128, 256]},
                                       test_examples=200),
                   ["at-fp", "at-binary-small", "binprune-p0.1"]),
    # The preset itself, evaluated on 500 instead of 100 test images (training is deterministic,
    # so the models are the table's): is binprune's gap to small binary AT larger than the noise?
    # Also binprune without the last batch norm.
    "cifar-eval500": (dataclasses.replace(resolve_preset("cifar10-cpu"), test_examples=500),
                      ["at-binary-small", "binprune-p0.1", "binprune-p0.1-nolbn"]),
    # ATMC's ADMM penalty 10x higher: with 0.01 per step, does a 5-epoch ADMM phase leave the
    # weights too far from their quantized targets, so that the final projection breaks the network?
    "fmnist-atmc-penalty": (dataclasses.replace(resolve_preset("fmnist-cpu"), atmc_penalty=0.1),
                            ["atmc-binary", "atmc-binary-p0.1"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(ABLATIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (default: the preset's; the CIFAR-10 ablations need one, e.g. "
                             "../shared/data/cifar10-jpeg)")
    args = parser.parse_args(argv)
    for name in args.names:
        preset, methods = ABLATIONS[name]
        preset = dataclasses.replace(preset, name=f"{preset.name}/{name}",
                                     description=f"{preset.description}; ablation {name}")
        compare(preset, ROOT / "benchmarks" / "results" / f"ablation-{name}", methods=methods,
                data_dir=args.data_dir, device=args.device, progress=False, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
