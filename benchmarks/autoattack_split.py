"""AutoAttack standard completed from APGD's flags vs run on its own, in one evaluation.

A comparison table's headline rows are evaluated with AutoAttack's two APGD attacks (the column
every row has) and with AutoAttack standard. Two paths give both numbers:

* ``separate``: ``attacks=("clean", "autoattack-apgd")`` and then ``("clean", "autoattack")``, two
  evaluations: standard runs APGD-CE and APGD-T a second time;
* ``split``: ``attacks=("clean", "autoattack-apgd", "autoattack")`` in one evaluation: standard
  takes APGD's flags and runs FAB-T and Square on the examples left (binprune's path).

The shipped quickstart model (``models/quickstart.bpk``: Fashion-MNIST, binary, 99% sparse) is
evaluated on ``--n-images`` class-balanced test images at eps = 0.1, the paths interleaved (the
order alternates every repeat) in one process on one thread. The JSON gives each path's median
seconds and images/s, the ratio, and whether both attacks' per-example flags are the same on both
paths.

    python benchmarks/autoattack_split.py [--n-images 100] [--repeats 1]
                                          [--out benchmarks/results/autoattack_split.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

import binprune
from binprune.evaluation.runner import package_versions
from binprune.utils import write_json
from binprune.views import select_examples

ROOT = Path(__file__).resolve().parent.parent
EPS = 0.1


def run_path(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: str) -> dict:
    """One path's time and its per-example flags of both attacks."""
    common = dict(eps=EPS, device="cpu", progress=False)
    started = time.perf_counter()
    if path == "split":
        report = binprune.evaluate(model, (x, y), attacks=("clean", "autoattack-apgd", "autoattack"), **common)
        apgd, standard = report.attacks["autoattack-apgd"], report.attacks["autoattack"]
    else:
        apgd = binprune.evaluate(model, (x, y), attacks=("clean", "autoattack-apgd"), **common)
        standard = binprune.evaluate(model, (x, y), attacks=("clean", "autoattack"), **common)
        apgd, standard = apgd.attacks["autoattack-apgd"], standard.attacks["autoattack"]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "apgd": apgd, "standard": standard}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "autoattack_split.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = binprune.load_model(str(ROOT / "models" / "quickstart.bpk")).eval()
    x, y, selection = select_examples(binprune.load_dataset("fashion-mnist", split="test"), args.n_images,
                                      "balanced", 0)
    runs: dict[str, list[dict]] = {"separate": [], "split": []}
    for repeat in range(args.repeats):
        order = ("separate", "split") if repeat % 2 == 0 else ("split", "separate")
        for path in order:
            runs[path].append(run_path(model, x, y, path))
            print(f"repeat {repeat + 1}, {path}: {runs[path][-1]['seconds']:.1f} s", flush=True)
    first = {path: found[0] for path, found in runs.items()}
    paths = {}
    for path, found in runs.items():
        median = statistics.median(r["seconds"] for r in found)
        paths[path] = {"median_seconds": round(median, 2), "images_per_second": round(args.n_images / median, 3),
                       "seconds": [round(r["seconds"], 2) for r in found],
                       "apgd_accuracy": first[path]["apgd"].accuracy,
                       "autoattack_accuracy": first[path]["standard"].accuracy,
                       "autoattack_per_attack": [
                           {k: step[k] for k in ("attack", "examples_attacked", "examples_broken")}
                           for step in first[path]["standard"].details["per_attack"]]}
    write_json(args.out, {
        "benchmark": "AutoAttack standard completed from APGD-CE + APGD-T's flags vs run on its own",
        "model": "models/quickstart.bpk (Fashion-MNIST, small CNN, binary, 99% sparse, p = 0.1, LBN)",
        "data": {"examples": args.n_images, "selection": selection["selection"], "eps": EPS},
        "repeats": args.repeats,
        "paths": paths,
        "split_over_separate": round(paths["split"]["median_seconds"] / paths["separate"]["median_seconds"], 3),
        "same_flags": {
            "autoattack-apgd": all(torch.equal(r["apgd"].robust, first["separate"]["apgd"].robust)
                                   for found in runs.values() for r in found),
            "autoattack": all(torch.equal(r["standard"].robust, first["separate"]["standard"].robust)
                              for found in runs.values() for r in found)},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "note": "one thread; the machine's other core ran other work"},
        "versions": package_versions(),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
