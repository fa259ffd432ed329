"""Short runs for choosing the quickstart's settings: each configuration (width, sparsity, epochs,
training subset, training settings) is trained with ``binprune.train`` on Fashion-MNIST and tested
with PGD-20 on the first test images; one JSON line per configuration is appended to ``--out``.

    python benchmarks/quickstart_explore.py '[{"name": "w05_s95", "width": 0.5, "sparsity": 0.95,
        "epochs": 2, "train_examples": 20000, "test_examples": 1000}]' --out benchmarks/results/quickstart-explore.jsonl

Every configuration uses the carried fast attack at eps = 0.1, lr 0.1, batch 128, seed 0, one
thread, unless its JSON sets another ``binprune.train`` setting. ``"dense": true`` trains the
weights of the same dense network instead (full-precision AT); ``width``, ``sparsity`` and ``p``
set the network and its mask. Each line records the kept parameters (``binprune.sparsity_report``).
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


def run(config: dict, train_set, test_set) -> dict:
    c = dict(config)
    name, width, sparsity = c.pop("name"), c.pop("width", 1.0), c.pop("sparsity", 0.99)
    dense, p = c.pop("dense", False), c.pop("p", 0.1)
    model = binprune.create_model("small_cnn", in_channels=1, mean=train_set.mean, std=train_set.std,
                                  width_factor=width, seed=0)
    if not dense:
        model = binprune.convert_to_binary_supermask(model, sparsity=sparsity, p=p, seed=0)
    settings = {"eps": 0.1, "attack": "fast", "carry_perturbation": True, "lr": 0.1, "batch_size": 128, **c}
    start = time.perf_counter()
    result = binprune.train(model, train_set, test_data=test_set, progress=False, device="cpu", **settings)
    kept = binprune.sparsity_report(model).kept_params
    return {"name": name, "width": width, "dense": dense, "sparsity": 0.0 if dense else sparsity, "p": p,
            "kept_params": kept, **c, "acc": result.accuracy,
            "seconds": time.perf_counter() - start, "img_s": [h["images_per_second"] for h in result.history],
            "val": [h.get("val_accuracy") for h in result.history], "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", help="JSON list of configurations (see above)")
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_set = binprune.load_dataset("fashion-mnist")
    test_set = binprune.load_dataset("fashion-mnist", split="test")
    for config in json.loads(args.configs):
        record = run(config, train_set, test_set)
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
