"""Wrap a torchvision model as a binary supermask, train its masks a little, and evaluate it.

This uses a model binprune did not define (torchvision's ResNet-18, with its stem adapted to
Fashion-MNIST's one-channel 28x28 images), so it shows the three steps a user takes with their
own network:

1. put normalization in front of the model (inputs stay in [0, 1] for the attacks);
2. ``binprune.convert_to_binary_supermask``;
3. ``binprune.train`` (adversarial, fast attack) and evaluate clean / PGD-20 accuracy.

    .venv/bin/python examples/wrap_torchvision_model.py            # a few minutes on 2 CPU cores
    .venv/bin/python examples/wrap_torchvision_model.py --epochs 5 --train-examples 60000
"""

import argparse

import torch
import torchvision
from torch import nn

import binprune


def build_model() -> nn.Module:
    net = torchvision.models.resnet18(num_classes=10)
    # One input channel and a small-image stem instead of ImageNet's 7x7 stride-2 conv + max-pool.
    net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return nn.Sequential(binprune.Normalize(mean=[0.2860], std=[0.3530]), net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-examples", type=int, default=5000)
    parser.add_argument("--test-examples", type=int, default=500)
    parser.add_argument("--out", default="runs/example-torchvision")
    args = parser.parse_args()

    train_set = binprune.load_dataset("fashion-mnist", split="train")
    test_set = binprune.load_dataset("fashion-mnist", split="test")

    model = build_model()
    supermask = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, seed=0)
    report = binprune.sparsity_report(supermask)
    print(f"kept {report.kept_params:,} of {report.total_params:,} weights ({1 - report.sparsity:.2%})")

    result = binprune.train(
        supermask, train_set, test_data=test_set, eps=0.1, epochs=args.epochs, attack="fast",
        carry_perturbation=True, train_examples=args.train_examples, test_examples=args.test_examples,
        out_dir=args.out, device="auto",
    )
    acc = result.accuracy
    print(f"clean accuracy {acc['clean']:.3f}, PGD-20 accuracy {acc['pgd']:.3f} "
          f"on {result.test.n_examples} test images (eps 0.1), {result.facts['seconds']:.0f} s")

    # The same model as plain torchvision layers (weights = w * mask), e.g. for other tools.
    plain = binprune.finalize(result.model).eval()
    x = test_set.tensors(8)[0].to(next(plain.parameters()).device)
    with torch.no_grad():
        assert torch.equal(plain(x), result.model.eval()(x))
    print(f"finalized model: {type(plain.network[1].conv1).__name__} layers, outputs identical")


if __name__ == "__main__":
    main()
