"""Size of a binprune model under each encoding, in bytes and bits per original parameter.

Measures the packed ``.bpk`` file, the coded masks alone, the ``log2 C(n, k)`` bound, the
paper's bitmap + sign bits, the ``state_dict`` and the dense float32 model; checks that the packed
file round-trips to bit-identical eval outputs; writes JSON to ``benchmarks/results/``.

    # a trained model (the README's numbers):
    python benchmarks/footprint.py --checkpoint runs/cifar10/best.pt
    # without one: a freshly converted CIFAR ResNet-18 at 99% sparsity, p = 0.1, random masks
    python benchmarks/footprint.py

Targets (issue "kilobyte models"): masks within 1.10x of the bound, packed file under 0.12 bit per
original parameter for a 99%-sparse ResNet-18 (p = 0.1).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binprune  # noqa: E402
from binprune.analysis import randomize_scores  # noqa: E402
from binprune import load_model, model_spec  # noqa: E402
from binprune.export import footprint, pack_model, unpack_model  # noqa: E402
from binprune.utils import write_json  # noqa: E402

MASKS_TO_BOUND_TARGET = 1.10
PACKED_BITS_PER_PARAM_TARGET = 0.12


def _model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model, or a freshly converted one (random or synthetic structured masks)."""
    if args.checkpoint:
        return load_model(args.checkpoint), {"source": "checkpoint", "checkpoint": args.checkpoint}
    base = binprune.create_model(args.arch, num_classes=args.num_classes, width_factor=args.width_factor)
    model = binprune.convert_to_binary_supermask(base, sparsity=args.sparsity, p=args.p, seed=args.seed)
    randomize_scores(model, channel_structure=args.channel_structure, seed=args.seed)
    with torch.no_grad():  # some batch-norm statistics, so the stored statistics are not all 0/1
        model.train()
        model(torch.rand(8, 3, args.input_size, args.input_size, generator=torch.Generator().manual_seed(args.seed)))
    model.eval()
    masks = "random (untrained)" if args.channel_structure == 0 else f"synthetic structured (channel_structure={args.channel_structure})"
    return model, {"source": "converted", "arch": args.arch, "width_factor": args.width_factor,
                   "sparsity": args.sparsity, "p": args.p, "seed": args.seed, "masks": masks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint or .bpk file of a trained model (default: convert a fresh one)")
    parser.add_argument("--arch", default="resnet18", help="architecture without --checkpoint (default: resnet18)")
    parser.add_argument("--width-factor", type=float, default=1.0)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channel-structure", type=float, default=0.0,
                        help="without --checkpoint: 0 = uniformly random masks; > 0 = synthetic channel structure")
    parser.add_argument("--input-size", type=int, default=32, help="image side for the round-trip check (default: 32)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "footprint.json"))
    args = parser.parse_args(argv)

    model, source = _model(args)
    t0 = time.perf_counter()
    fp = footprint(model)
    footprint_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = pack_model(model)
    pack_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = unpack_model(data)
    unpack_s = time.perf_counter() - t0
    recipe = model_spec(model).get("recipe") or {}
    x = torch.rand(4, int(recipe.get("in_channels", 3)), args.input_size, args.input_size,
                   generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        identical = bool(torch.equal(model(x), loaded(x)))

    result = {
        "benchmark": "footprint",
        "units": {"bytes": "bytes", "bits_per_param": "bits per original parameter", "time": "seconds"},
        "config": {**source, "torch": torch.__version__, "binprune": binprune.__version__,
                   "python": platform.python_version(), "machine": platform.machine()},
        **fp,
        "round_trip_bit_identical": identical,
        "timing_seconds": {"footprint": footprint_s, "pack": pack_s, "unpack": unpack_s},
        "targets": {
            "masks_to_bound_max": MASKS_TO_BOUND_TARGET,
            "packed_bits_per_param_max": PACKED_BITS_PER_PARAM_TARGET,
            "masks_to_bound_met": fp["masks_to_bound"] is not None and fp["masks_to_bound"] <= MASKS_TO_BOUND_TARGET,
            "packed_bits_per_param_met": fp["bits_per_param"]["packed_file"] < PACKED_BITS_PER_PARAM_TARGET,
        },
    }
    write_json(args.out, result)
    print(f"{'encoding':<22} {'bytes':>13} {'bits/param':>11}")
    for key in ("packed_file", "masks", "bound", "paper_bitmap_sign", "state_dict", "dense_fp32"):
        print(f"{key:<22} {fp['bytes'][key]:>13,.0f} {fp['bits_per_param'][key]:>11.4f}")
    ratio = f"{fp['masks_to_bound']:.4f}" if fp["masks_to_bound"] is not None else "n/a (bound 0)"
    print(f"masks / bound = {ratio}; round trip bit-identical: {identical}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
