"""CPU latency of a 99%-sparse network: dense, compact with dense kernels, compact with sparse kernels.

For each network (the quickstart ``small_cnn`` on 28x28x1 and a CIFAR ResNet-18 on 32x32x3, both
99% sparse with adaptive allocation p = 0.1), in one process:

* **dense**: the finalized network (plain Conv/Linear layers holding ``w * mask``, batch norms as
  separate layers): a sparse network deployed without exploiting its sparsity;
* **compact_dense**: ``binprune.compact(model)`` (dead channels removed, batch norms folded),
  PyTorch's dense kernels;
* **compact_sparse**: ``binprune.compact(model, engine="sparse")``: the direct sparse kernel in the
  layers where the rule (``binprune.deploy.sparse.DEFAULT_RULE``) predicts it to be faster;

at each batch size and thread count: the median (and minimum) of ``--repeats`` forward passes
after a warm-up, the three models interleaved (alternating order) so that load changes on the
machine affect them alike. Next to it, the limit: the kept multiply-accumulates as a fraction of
the dense ones (a kernel doing only the kept work at the dense kernel's speed per MAC).

Per layer (one thread, each batch size): the dense kernel and the sparse kernel on the layer's
real input, against the layer's own kept-MAC fraction; from these rows the rule's constants are
fitted (``calibration``), and the default rule's choices are compared with the measured faster
kernel. Writes ``benchmarks/results/inference.json``.

Without ``--checkpoint``, each network is freshly converted: its masks are random, with exactly the
per-layer keep counts of a trained model (the allocation fixes them), so the kept-MAC work -- what
the sparse kernel's cost follows -- is that of a trained model. Trained masks also empty whole
channels, which ``compact`` removes (the README's trained ResNet-18 loses 468 of 4,810 output
channels); random masks have no empty channels, so compact_dense gains only the batch-norm
folding here.

    python benchmarks/inference.py                                   # both networks, random masks
    python benchmarks/inference.py --checkpoint quickstart=runs/quickstart/best.pt \\
        --checkpoint resnet18=runs/r18/best.pt                       # trained models
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binprune  # noqa: E402
from binprune import load_model  # noqa: E402
from binprune.deploy import DEFAULT_RULE, SparseRule, compact, count_macs, load_sparse_kernels, sparsify  # noqa: E402
from binprune.deploy import sparse_kernels_status, sparse_plan  # noqa: E402
from binprune.deploy.sparse import ALWAYS_SPARSE, LayerShape, sparse_layer_inputs  # noqa: E402
from binprune.utils import write_json  # noqa: E402

NETWORKS = {  # name: (create_model arguments, input shape)
    "quickstart": ({"name": "small_cnn", "in_channels": 1}, (1, 28, 28)),
    "resnet18": ({"name": "resnet18", "in_channels": 3}, (3, 32, 32)),
}
TARGET_RATIO, AIM_RATIO = 0.5, 0.3
# Calibration sweep: layer shapes of the two networks (in, out, kernel, stride, image side) at
# densities from dense to 99% sparse, so the rule is fitted across its decision boundary.
SWEEP_SHAPES = [(3, 64, 3, 1, 32), (64, 64, 3, 1, 32), (64, 128, 3, 2, 32), (64, 128, 1, 2, 32), (128, 128, 3, 1, 16),
                (256, 256, 3, 1, 8), (512, 512, 3, 1, 4), (256, 512, 1, 2, 8), (32, 32, 3, 2, 28), (512, 10, 1, 1, 1)]
SWEEP_DENSITIES = [1.0, 0.5, 0.25, 0.1, 0.03, 0.01]


def _calibrate_bn(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """Batch-norm statistics of random batches (cumulative average), so logits are O(1)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, *shape, generator=gen))
    return model.eval()


def build_network(name: str, checkpoint: str | None, args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    kwargs, shape = NETWORKS[name]
    if checkpoint:
        return load_model(checkpoint).eval(), {"source": "checkpoint", "checkpoint": checkpoint}
    base = binprune.create_model(kwargs["name"], num_classes=10, in_channels=kwargs["in_channels"])
    net = binprune.convert_to_binary_supermask(base, sparsity=args.sparsity, p=args.p, seed=args.seed)
    return _calibrate_bn(net, shape, args.seed), {
        "source": "converted", "arch": kwargs["name"], "sparsity": args.sparsity, "p": args.p, "seed": args.seed,
        "masks": "random, with the per-layer keep counts of a trained model (same kept-MAC work; no empty channels)"}


def time_models(models: dict[str, Callable[[torch.Tensor], Any]], x: torch.Tensor, warmup: int,
                repeats: int) -> dict[str, dict[str, Any]]:
    """Median and minimum wall time of each callable on ``x``, interleaved in alternating order."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for fn in models.values():
            for _ in range(warmup):
                fn(x)
        for r in range(repeats):
            for name in (list(models) if r % 2 == 0 else list(reversed(list(models)))):
                t0 = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "runs_s": t} for name, t in times.items()}


def latency_table(models: dict[str, nn.Module], shape: tuple[int, ...], args: argparse.Namespace,
                  label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(1)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_sizes:
            x = torch.rand(batch, *shape, generator=gen)
            repeats = args.repeats if batch > 1 else args.repeats_batch1
            timed = time_models(models, x, args.warmup, repeats)
            d = timed["dense"]["median_s"]
            ratios = {k: v["median_s"] / d for k, v in timed.items()}
            out[f"threads={threads},batch={batch}"] = {"threads": threads, "batch": batch, **timed,
                                                       "ratio_to_dense": ratios}
            print(f"{label:10s} threads {threads} batch {batch:>3}: " + "  ".join(
                f"{k} {v['median_s'] * 1e3:9.2f} ms ({ratios[k]:.3f})" for k, v in timed.items()), flush=True)
    torch.set_num_threads(args.threads[0])
    return out


def layer_rows(model: nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per sparse layer and batch size: dense and sparse kernel on the layer's real input."""
    rows = []
    gen = torch.Generator().manual_seed(2)
    for batch in args.batch_sizes:
        x = torch.rand(batch, *shape, generator=gen)
        plan = {r["name"]: r for r in sparse_plan(model, x)}
        for name, (m, inp) in sparse_layer_inputs(model, x).items():
            repeats = args.layer_repeats if batch > 1 else 5 * args.layer_repeats
            timed = time_models({"dense": m.run_dense, "sparse": m.run_sparse}, inp, 1, repeats)
            with torch.inference_mode():
                diff = float((m.run_dense(inp) - m.run_sparse(inp)).abs().max())
            p = plan[name]
            rows.append({
                "layer": name, "batch": batch, "input_shape": p["input_shape"], "geometry": list(m.geometry(inp)),
                "kept": p["kept"],
                "weights": p["weights"], "density": p["density"], "dense_macs": p["dense_macs"],
                "sparse_macs": p["sparse_macs"], "packed": p["packed"], "inputs": p["inputs"], "outputs": p["outputs"],
                "kept_mac_fraction": p["kept"] / p["weights"] if p["weights"] else 0.0,
                "predicted_ratio": p["predicted_ratio"],
                "dense_s": timed["dense"]["median_s"], "sparse_s": timed["sparse"]["median_s"],
                "sparse_to_dense": timed["sparse"]["median_s"] / timed["dense"]["median_s"],
                "rule_chooses_sparse": p["sparse"], "max_abs_difference": diff})
    return rows


def sweep_layer(c: int, o: int, k: int, stride: int, density: float, seed: int) -> nn.Module:
    """A layer of the sweep: +-1 weights kept at ``density`` (a Linear for 1x1 images)."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Conv2d(c, o, k, stride=stride, padding=k // 2) if k > 1 or stride > 1 else nn.Linear(c, o)
    with torch.no_grad():
        w = torch.randint(0, 2, layer.weight.shape, generator=gen).float() * 2 - 1
        layer.weight.copy_(w * (torch.rand(w.shape, generator=gen) < density))
    return sparsify(layer.eval(), ALWAYS_SPARSE)


def sweep_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Dense and sparse kernel on the sweep's layers, one thread, each batch size."""
    rows = []
    for (c, o, k, stride, side), density, batch in itertools.product(SWEEP_SHAPES, SWEEP_DENSITIES, args.batch_sizes):
        layer = sweep_layer(c, o, k, stride, density, args.seed)
        x = torch.rand((batch, c) if side == 1 else (batch, c, side, side), generator=torch.Generator().manual_seed(5))
        repeats = max(2, args.layer_repeats // 2) if batch > 1 else 5 * args.layer_repeats
        timed = time_models({"dense": layer.run_dense, "sparse": layer.run_sparse}, x, 1, repeats)
        ls, geometry = layer.layer_shape, layer.geometry(x)
        rows.append({"layer": f"sweep {c}->{o} k{k} s{stride} {side}x{side}", "batch": batch, "sweep": True,
                     "input_shape": list(x.shape), "geometry": list(geometry), "kept": ls.kept, "weights": ls.weights,
                     "density": ls.density, **ls.work(*geometry), "kept_mac_fraction": ls.density,
                     "dense_s": timed["dense"]["median_s"], "sparse_s": timed["sparse"]["median_s"],
                     "sparse_to_dense": timed["sparse"]["median_s"] / timed["dense"]["median_s"],
                     "shape": {f: (list(v) if isinstance(v, tuple) else v) for f, v in ls.__dict__.items()}})
        print(f"  sweep {rows[-1]['layer']:28s} batch {batch:>3} density {density:4.2f}: sparse/dense "
              f"{rows[-1]['sparse_to_dense']:6.3f}", flush=True)
    return rows


def fit_rule(rows: list[dict[str, Any]], margin: float) -> SparseRule:
    """The rule's constants: least squares of the log of the measured sparse/dense time ratio on
    log effective density, log input channels per group and log output positions."""
    features, target = [], []
    for r in rows:
        shape = r["shape"]
        features.append([1.0, math.log(max(r["sparse_macs"] / r["dense_macs"], 1e-6)),
                         math.log(shape["in_channels"] // shape["groups"]), math.log(r["outputs"] / shape["out_channels"])])
        target.append(math.log(r["sparse_s"] / r["dense_s"]))
    x = np.linalg.lstsq(np.asarray(features), np.asarray(target), rcond=None)[0]
    return SparseRule(intercept=float(x[0]), density_exponent=float(x[1]), channels_exponent=float(x[2]),
                      positions_exponent=float(x[3]), margin=margin)


def rule_quality(rule: SparseRule, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often ``rule`` picks the measured faster kernel, and the time its choices cost."""
    agree, chosen, best, dense = 0, 0.0, 0.0, 0.0
    for r in rows:
        pick = rule.use_sparse(LayerShape(**r["shape"]), *r["geometry"])
        agree += pick == (r["sparse_s"] < r["dense_s"])
        chosen += r["sparse_s"] if pick else r["dense_s"]
        best += min(r["sparse_s"], r["dense_s"])
        dense += r["dense_s"]
    return {"layers": len(rows), "agree_with_measured_faster": agree,
            "chosen_to_best": chosen / best if best else math.nan, "chosen_to_dense": chosen / dense if dense else math.nan}


def macs_summary(dense: nn.Module, small: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    probe = torch.rand(1, *shape, generator=torch.Generator().manual_seed(3))
    before, after = count_macs(dense, probe), count_macs(small, probe)
    return {"dense_macs": before["macs"], "compact_macs": after["macs"], "kept_macs": before["nonzero_macs"],
            "kept_mac_fraction": before["nonzero_macs"] / before["macs"],
            "compact_mac_fraction": after["macs"] / before["macs"]}


def run_network(name: str, checkpoint: str | None, args: argparse.Namespace) -> dict[str, Any]:
    model, source = build_network(name, checkpoint, args)
    shape = NETWORKS[name][1]
    dense = binprune.finalize(model).eval()
    compact_dense = compact(model)
    compact_sparse = compact(model, engine="sparse")
    probe = torch.rand(8, *shape, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = model(probe)
        diffs = {k: float((m(probe) - ref).abs().max()) for k, m in
                 (("dense", dense), ("compact_dense", compact_dense), ("compact_sparse", compact_sparse))}
    macs = macs_summary(dense, compact_dense, shape)
    print(f"{name}: kept MACs {macs['kept_macs']:,} of {macs['dense_macs']:,} per example "
          f"({macs['kept_mac_fraction']:.4f}); max |output diff| vs supermask model {diffs}", flush=True)
    models = {"dense": dense, "compact_dense": compact_dense, "compact_sparse": compact_sparse}
    latency = latency_table(models, shape, args, name)
    layers = layer_rows(compact_sparse, shape, args)
    shapes = {n: m.layer_shape for n, m in compact_sparse.named_modules() if hasattr(m, "layer_shape")}
    for r in layers:
        r["shape"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in shapes[r["layer"]].__dict__.items()}
    return {"source": source, "input_shape": list(shape), "macs": macs, "max_abs_output_difference": diffs,
            "max_abs_output": float(ref.abs().max()), "latency": latency, "layers": layers}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for net, res in results.items():
        for key, row in res["latency"].items():
            r = row["ratio_to_dense"]
            out[f"{net} {key}"] = {"compact_sparse_to_dense": r["compact_sparse"],
                                   "compact_dense_to_dense": r["compact_dense"],
                                   "at_most_0.5": r["compact_sparse"] <= TARGET_RATIO,
                                   "at_most_0.3": r["compact_sparse"] <= AIM_RATIO,
                                   "not_slower_than_compact_dense": r["compact_sparse"] <= r["compact_dense"]}
    return out


def print_layers(name: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{name}: per layer, one thread (ratio = sparse kernel / dense kernel; limit = kept-MAC fraction)")
    for r in rows:
        print(f"  batch {r['batch']:>3} {r['layer']:28s} density {r['density']:.4f}  dense {r['dense_s'] * 1e3:8.3f} ms"
              f"  sparse {r['sparse_s'] * 1e3:8.3f} ms  ratio {r['sparse_to_dense']:6.3f}  limit "
              f"{r['kept_mac_fraction']:.3f}  rule: {'sparse' if r['rule_chooses_sparse'] else 'dense'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NETWORK=PATH",
                        help="trained model for a network (quickstart or resnet18), e.g. resnet18=runs/r18/best.pt")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model (batch > 1)")
    parser.add_argument("--repeats-batch1", type=int, default=41, help="timed passes per model at batch 1")
    parser.add_argument("--layer-repeats", type=int, default=5)
    parser.add_argument("--refit", metavar="JSON",
                        help="time nothing: fit the rule on the per-layer rows of an earlier run's JSON and report "
                             "its choices and the default rule's on those rows")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the calibration sweep (layer shapes x densities)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    return parser.parse_args(argv)


def refit(path: str) -> int:
    """The calibration of an earlier run, redone from its stored rows (no timing)."""
    import json

    data = json.loads(Path(path).read_text())
    network_rows = [r for res in data["networks"].values() for r in res["layers"]]
    sweep = data["calibration"]["sweep"]
    fitted = fit_rule(network_rows + sweep, DEFAULT_RULE.margin)
    for name, rule in (("default", DEFAULT_RULE), ("fitted", fitted)):
        print(f"{name} rule {rule.to_dict()}\n  on the networks' layers {rule_quality(rule, network_rows)}\n"
              f"  on the sweep {rule_quality(rule, sweep)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.refit:
        return refit(args.refit)
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads[0])
    kernel = load_sparse_kernels()
    print(f"sparse kernel: {sparse_kernels_status()}", flush=True)
    results = {name: run_network(name, checkpoints.get(name), args) for name in args.networks}
    for name, res in results.items():
        print_layers(name, res["layers"])
    network_rows = [r for res in results.values() for r in res["layers"]]
    sweep = sweep_rows(args) if kernel and args.sweep else []
    fitted = fit_rule(network_rows + sweep, DEFAULT_RULE.margin) if kernel else None
    calibration = {
        "default_rule": DEFAULT_RULE.to_dict(), "fitted_rule": fitted.to_dict() if fitted else None,
        "default_rule_on_network_layers": rule_quality(DEFAULT_RULE, network_rows),
        "default_rule_on_sweep": rule_quality(DEFAULT_RULE, sweep) if sweep else None,
        "fitted_rule_on_network_layers": rule_quality(fitted, network_rows) if fitted else None,
        "fitted_rule_on_sweep": rule_quality(fitted, sweep) if fitted and sweep else None,
        "rows": "every layer of every network and every sweep layer (SWEEP_SHAPES x SWEEP_DENSITIES), at every "
                "batch size, one thread", "sweep": sweep,
        "how": "least squares on the log time ratio (benchmarks/inference.py fit_rule); DEFAULT_RULE in "
               "binprune/deploy/sparse.py holds the constants fitted on the README's machine"}
    result = {
        "benchmark": "inference",
        "units": {"time": "seconds (wall clock)", "macs": "multiply-accumulates per example"},
        "config": {"batch_sizes": args.batch_sizes, "threads": args.threads, "warmup": args.warmup,
                   "repeats": args.repeats, "repeats_batch1": args.repeats_batch1, "layer_repeats": args.layer_repeats,
                   "statistic": "median of interleaved runs", "sparse_kernel": sparse_kernels_status(),
                   "cpu_count": os.cpu_count(), "torch": torch.__version__, "binprune": binprune.__version__,
                   "python": platform.python_version(), "machine": platform.machine(),
                   "load_average_at_end": os.getloadavg()},
        "networks": results, "calibration": calibration, "targets": targets(results),
    }
    write_json(args.out, result)
    print(f"\ncalibration: default rule on the networks' layers {calibration['default_rule_on_network_layers']}, "
          f"on the sweep {calibration['default_rule_on_sweep']}\nfitted: {calibration['fitted_rule']}\n"
          f"fitted rule on the networks' layers {calibration['fitted_rule_on_network_layers']}, on the sweep "
          f"{calibration['fitted_rule_on_sweep']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
