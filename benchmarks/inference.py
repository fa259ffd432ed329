"""CPU latency of the compact model (binprune.compact) against the dense model it came from.

"Dense" is the finalized network (plain Conv/Linear layers holding ``w * mask``, batch norms as
separate layers): what runs when a sparse network is deployed without exploiting its sparsity.
"Compact" folds batch norms and removes the channels no layer needs. Both run in the same process
on the same inputs; latency is the median of ``--repeats`` timed forward passes after
``--warmup`` untimed ones, per batch size. Also reports parameters, MACs and the largest output
difference. Writes JSON to ``benchmarks/results/``.

    # a trained model (the README's numbers):
    python benchmarks/inference.py --checkpoint runs/cifar10/best.pt
    # without one: a freshly converted CIFAR ResNet-18; random masks have no empty channels, so
    # --channel-structure 3 gives masks with the channel structure of trained ones
    python benchmarks/inference.py --channel-structure 3

Target (issue "kilobyte models"): compact latency <= 0.5x the dense model's at batch 256.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binprune  # noqa: E402
from binprune.analysis import randomize_scores  # noqa: E402
from binprune import load_model, model_spec  # noqa: E402
from binprune.deploy import compact, compact_report  # noqa: E402
from binprune.utils import write_json  # noqa: E402

LATENCY_RATIO_TARGET = 0.5


def _model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    if args.checkpoint:
        return load_model(args.checkpoint), {"source": "checkpoint", "checkpoint": args.checkpoint}
    base = binprune.create_model(args.arch, num_classes=args.num_classes, width_factor=args.width_factor)
    model = binprune.convert_to_binary_supermask(base, sparsity=args.sparsity, p=args.p, seed=args.seed)
    randomize_scores(model, channel_structure=args.channel_structure, seed=args.seed)
    for m in model.modules():  # calibrate batch norms (cumulative average) so logits are O(1)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        model.train()
        for _ in range(4):
            model(torch.rand(32, 3, args.input_size, args.input_size, generator=gen))
    model.eval()
    masks = "random (untrained)" if args.channel_structure == 0 else f"synthetic structured (channel_structure={args.channel_structure})"
    return model, {"source": "converted", "arch": args.arch, "width_factor": args.width_factor,
                   "sparsity": args.sparsity, "p": args.p, "seed": args.seed, "masks": masks}


def _latency(models: dict[str, torch.nn.Module], x: torch.Tensor, warmup: int, repeats: int) -> dict:
    """Median time of a forward pass of each model; runs are interleaved (alternating order) so
    that a load change on the machine affects all models alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for r in range(repeats):
            order = list(models) if r % 2 == 0 else list(reversed(list(models)))
            for name in order:
                t0 = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "runs_s": t} for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint or .bpk file of a trained model (default: convert a fresh one)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width-factor", type=float, default=1.0)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channel-structure", type=float, default=0.0,
                        help="without --checkpoint: 0 = uniformly random masks; > 0 = synthetic channel structure")
    parser.add_argument("--input-size", type=int, default=32, help="image side (default: 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, source = _model(args)
    dense = binprune.finalize(model).eval()
    t0 = time.perf_counter()
    small = compact(model)
    compact_s = time.perf_counter() - t0
    in_channels = int((model_spec(model).get("recipe") or {}).get("in_channels", 3))
    gen = torch.Generator().manual_seed(1)
    probe = torch.rand(16, in_channels, args.input_size, args.input_size, generator=gen)
    report = compact_report(dense, small, probe)

    latency = {}
    for batch in args.batch_sizes:
        x = torch.rand(batch, in_channels, args.input_size, args.input_size, generator=gen)
        timed = _latency({"dense": dense, "compact": small}, x, args.warmup, args.repeats)
        d, c = timed["dense"], timed["compact"]
        latency[str(batch)] = {"dense": d, "compact": c, "ratio_compact_to_dense": c["median_s"] / d["median_s"]}
        print(f"batch {batch:>4}: dense {d['median_s'] * 1e3:9.2f} ms   compact {c['median_s'] * 1e3:9.2f} ms   "
              f"ratio {c['median_s'] / d['median_s']:.3f}")

    result = {
        "benchmark": "inference",
        "units": {"time": "seconds", "macs": "multiply-accumulates per example", "params": "count"},
        "config": {**source, "input_shape": [in_channels, args.input_size, args.input_size],
                   "batch_sizes": args.batch_sizes, "warmup": args.warmup, "repeats": args.repeats,
                   "statistic": "median", "torch_num_threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(), "device": "cpu", "torch": torch.__version__,
                   "binprune": binprune.__version__, "python": platform.python_version(),
                   "machine": platform.machine(), "processor": platform.processor()},
        "compact_seconds": compact_s,
        "params_and_macs": {k: v for k, v in report.items() if k != "layers"},
        "layers": report["layers"],
        "latency": latency,
        "target": {"ratio_at_batch_256_max": LATENCY_RATIO_TARGET,
                   "met": latency["256"]["ratio_compact_to_dense"] <= LATENCY_RATIO_TARGET if "256" in latency else None},
    }
    write_json(args.out, result)
    r = report
    print(f"MACs/example {r['before']['macs']:,} -> {r['after']['macs']:,} ({r['mac_ratio']:.3f}x); params "
          f"{r['before']['params']:,} -> {r['after']['params']:,}; max |output diff| {r['max_abs_output_difference']:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
