"""Load a RobustBench model-zoo model from a local file, evaluate it, wrap it as a binary
supermask network, and evaluate that too. Nothing is downloaded.

    python examples/robustbench_wrap_and_evaluate.py --data-dir data/cifar10 \
        --name Standard --checkpoint models/cifar10/Linf/Standard.pt

``--data-dir`` is CIFAR-10 in torchvision's format (``cifar-10-batches-py``) or an image-folder
tree ``test/<class>/*.png|jpg``. Without ``--checkpoint`` the script saves the architecture's
random initial weights in RobustBench's checkpoint format (``{"state_dict": ...}`` with
DataParallel's ``module.`` prefix) to a temporary file and loads that, to show the mechanics
offline; accuracies are then at chance level.

The wrapped model keeps the zoo architecture (its own classes) but its weights are fixed random
±1 values: its masks still have to be trained (``binprune.train``) before it is robust.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import binprune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder (torchvision format or image-folder tree)")
    parser.add_argument("--name", default="Standard", help="RobustBench model-zoo name (default: Standard, WRN-28-10)")
    parser.add_argument("--checkpoint", help="the model's checkpoint file (default: random weights, see above)")
    parser.add_argument("--n-examples", type=int, default=16, help="test images to evaluate (default: 16)")
    parser.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default: 10)")
    parser.add_argument("--sparsity", type=float, default=0.99, help="fraction of weights removed (default: 0.99)")
    parser.add_argument("--autoattack", action="store_true", help="also run AutoAttack standard (slow on a CPU)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    test = binprune.load_dataset("cifar10", args.data_dir, split="test")
    attacks = ("clean", "pgd", "autoattack") if args.autoattack else ("clean", "pgd")
    eps = 8 / 255

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            architecture = binprune.robustbench_architecture(args.name, "cifar10", "Linf")
            checkpoint = str(Path(tmp) / f"{args.name}.pt")
            state = {f"module.{k}": v for k, v in architecture.state_dict().items()}
            torch.save({"state_dict": state}, checkpoint)
            print(f"no --checkpoint: saved the random initial weights of {args.name} to {checkpoint}")
        model = binprune.load_robustbench_model(args.name, "cifar10", "Linf", checkpoint=checkpoint)

    dense = binprune.evaluate(model, test, eps=eps, attacks=attacks, n_examples=args.n_examples,
                              pgd_steps=args.pgd_steps, device=args.device)

    wrapped = binprune.convert_to_binary_supermask(model, sparsity=args.sparsity)
    report = binprune.sparsity_report(wrapped)
    supermask = binprune.evaluate(wrapped, test, eps=eps, attacks=attacks, n_examples=args.n_examples,
                                  pgd_steps=args.pgd_steps, device=args.device)

    print(f"\n{args.name} on {dense['settings']['n_examples']} CIFAR-10 test images, L-inf eps = 8/255")
    print(f"  ({dense['data']['selection']})")
    for label, result in (("zoo model", dense), (f"binary supermask ({report.kept_params:,} of "
                                                   f"{report.total_params:,} parameters kept)", supermask)):
        numbers = ", ".join(f"{k} {v:.3f}" for k, v in result.accuracy.items())
        print(f"  {label}: {numbers}  [evaluated as: {result.model['form']}]")
    print("The supermask's masks are untrained here: train them with binprune.train before reading its accuracy.")


if __name__ == "__main__":
    main()
