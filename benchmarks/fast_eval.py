"""Evaluation time: attacking the model itself vs attacking its compact copy and confirming.

The quickstart network (Fashion-MNIST, ``small_cnn``, binary supermask at 99% sparsity, p = 0.1,
last batch norm), briefly adversarially trained (``--epochs`` on ``--train-examples``), is evaluated
on ``--n-images`` class-balanced test images at eps = 0.1 with PGD-20 and with AutoAttack's two
APGD attacks (APGD-CE, APGD-T; standard budgets), along three paths:

* ``model``: the attacks run on the evaluated model (``attack_compact=False``: binprune's path
  before the compact copy, the finalized model when it is bit-identical);
* ``compact``: the attacks run on ``binprune.compact(model)`` and every adversarial example is
  confirmed on the model (``attack_compact=True``, the default);
* ``compact-sparse``: the same with ``compact_engine="sparse"``.

Paths are interleaved (the order rotates every repeat) in one process on one thread; the JSON
gives each path's median seconds and images/s per attack, the speedup over ``model``, the
counts of the confirmation step, and whether the per-example robust flags equal the ``model``
path's.

    python benchmarks/fast_eval.py [--n-images 200] [--repeats 2] [--out benchmarks/results/fast_eval.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

import binprune
from binprune.checkpoint import load_checkpoint, save_checkpoint
from binprune.evaluation.runner import package_versions
from binprune.results import git_commit
from binprune.utils import write_json
from binprune.views import select_examples

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = {"model": {"attack_compact": False}, "compact": {"attack_compact": True, "compact_engine": "dense"},
         "compact-sparse": {"attack_compact": True, "compact_engine": "sparse"}}
ATTACKS = ("pgd", "autoattack-apgd")


def trained_model(train_examples: int, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    train = binprune.load_dataset("fashion-mnist", split="train")
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:train_examples]
    train = train.subset(subset)
    net = binprune.create_model("small_cnn", num_classes=10, in_channels=1, mean=list(train.mean), std=list(train.std))
    net = binprune.convert_to_binary_supermask(net, sparsity=0.99, p=0.1, seed=seed, last_bn=True)
    started = time.perf_counter()
    result = binprune.train(net, train, eps=0.1, epochs=epochs, attack="fast", carry_perturbation=True,
                            batch_size=128, lr=0.1, seed=seed, progress=False, device="cpu")
    return result.model, {"train_examples": train_examples, "epochs": epochs, "train_seconds": time.perf_counter() - started}


def run_path(model, x, y, attack: str, path: str, seed: int) -> dict:
    report = binprune.evaluate(model, (x, y), eps=0.1, attacks=("clean", attack), seed=seed, device="cpu",
                               progress=False, **PATHS[path])
    result = report.attacks[attack]
    return {"seconds": result.seconds, "accuracy": result.accuracy, "flags": [int(v) for v in result.robust.tolist()],
            "attack_form": result.details.get("attack_form"), "clean": report.accuracy["clean"],
            "per_attack": [{k: p[k] for k in ("attack", "examples_attacked", "examples_broken", "elapsed_s")}
                           for p in result.details.get("per_attack", [])],
            "model_form": report.model.get("form"), "form_check": report.model.get("attack_form")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--train-examples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--out", type=Path, default=RESULTS / "fast_eval.json")
    parser.add_argument("--model-cache", type=Path, help="reuse (or write) the trained model here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = args.paths.split(",")
    if args.model_cache is not None and args.model_cache.is_file():
        model = binprune.load_model(args.model_cache)
        training = load_checkpoint(args.model_cache)["training"]
    else:
        model, training = trained_model(args.train_examples, args.epochs, args.seed)
        if args.model_cache is not None:
            save_checkpoint(args.model_cache, model, training=training)
    test = binprune.load_dataset("fashion-mnist", split="test")
    x, y, selection = select_examples(test, args.n_images, "balanced", args.seed)
    runs: dict = {a: {p: [] for p in paths} for a in ATTACKS}
    for rep in range(args.repeats):
        order = paths[rep % len(paths):] + paths[:rep % len(paths)]
        for attack in ATTACKS:
            for path in order:
                runs[attack][path].append(run_path(model, x, y, attack, path, args.seed))
                print(f"repeat {rep} {attack} {path}: {runs[attack][path][-1]['seconds']:.1f} s, "
                      f"accuracy {runs[attack][path][-1]['accuracy']:.3f}", flush=True)
    summary = {}
    for attack in ATTACKS:
        base = statistics.median(r["seconds"] for r in runs[attack]["model"]) if "model" in paths else None
        reference_flags = runs[attack]["model"][0]["flags"] if "model" in paths else None
        summary[attack] = {}
        for path in paths:
            seconds = [r["seconds"] for r in runs[attack][path]]
            median = statistics.median(seconds)
            first = runs[attack][path][0]
            differing = None if reference_flags is None else sum(a != b for a, b in zip(first["flags"], reference_flags))
            summary[attack][path] = {
                "seconds": seconds, "median_s": median, "images_per_s": args.n_images / median,
                "speedup_vs_model": None if base is None else base / median, "accuracy": first["accuracy"],
                "flags_equal_model_path": None if differing is None else differing == 0,
                "examples_with_different_flags": differing,
                "repeats_identical": all(r["flags"] == first["flags"] for r in runs[attack][path]),
                "attack_form": first["attack_form"], "per_attack": first["per_attack"],
                "model_form": first["model_form"], "form_check": first["form_check"]}
    write_json(args.out, {
        "description": "evaluation time: attacks on the model vs on its compact copy with every adversarial example "
                       "confirmed on the model (interleaved, one process, one thread)",
        "model": {"dataset": "fashion-mnist", "arch": "small_cnn", "sparsity": 0.99, "p": 0.1, "last_bn": True,
                  **training},
        "eval": {"n_images": args.n_images, "eps": 0.1, "selection": selection["selection"], "pgd_steps": 20,
                 "autoattack-apgd": "APGD-CE + APGD-T, AutoAttack standard budgets", "repeats": args.repeats},
        "clean_accuracy": runs[ATTACKS[0]][paths[0]][0]["clean"], "results": summary,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "versions": {**package_versions(), **git_commit()}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
