"""Named training configurations for ``binprune train --preset NAME``.

A preset is a plain dict of ``binprune train`` options (argument names as in the CLI, with
underscores); options given on the command line override it. README.md lists them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRAIN_PRESETS", "train_preset"]

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # The README's main command: a binary 99%-sparse network with adaptive allocation (p = 0.1)
    # and the last batch norm, adversarially trained on Fashion-MNIST at eps = 0.1 on 2 CPU cores.
    "quickstart": {
        "description": "binary supermask, 99% sparse, p=0.1, LBN, Fashion-MNIST eps=0.1, fast AT, CPU",
        "dataset": "fashion-mnist",
        "arch": "small_cnn",
        "width_factor": 1.0,
        "sparsity": 0.99,
        "p": 0.1,
        "allocation": "adaptive",
        "init": "binary",
        "last_bn": True,
        "attack": "fast",
        "carry_perturbation": True,
        "eps": 0.1,
        "epochs": 4,
        "batch_size": 128,
        "lr": 0.1,
        "device": "cpu",
    },
    # Closer to the paper's CIFAR-10 setting (ResNet-18, PGD-10 at 8/255); meant for a GPU.
    "cifar10-resnet18": {
        "description": "binary supermask ResNet-18, 99% sparse, p=0.1, LBN, CIFAR-10 eps=8/255, PGD-10",
        "dataset": "cifar10",
        "arch": "resnet18",
        "sparsity": 0.99,
        "p": 0.1,
        "allocation": "adaptive",
        "init": "binary",
        "last_bn": True,
        "attack": "pgd",
        "eps": 8 / 255,
        "steps": 10,
        "epochs": 100,
        "batch_size": 128,
        "lr": 0.1,
    },
}


def train_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name`` without its description."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(sorted(TRAIN_PRESETS))}")
    preset = dict(TRAIN_PRESETS[name])
    preset.pop("description", None)
    return preset
