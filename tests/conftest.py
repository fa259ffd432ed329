import os

import pytest
import torch

from binprune.data import DEFAULT_FASHION_MNIST_DIR

# Tests use small models, for which one thread is fastest and timing is least disturbed by other work.
torch.set_num_threads(1)


def _fashion_mnist_available() -> bool:
    env = os.environ.get("BINPRUNE_FASHION_MNIST")
    roots = ([env] if env else []) + [str(DEFAULT_FASHION_MNIST_DIR)]
    return any(os.path.exists(os.path.join(r, "train-images-idx3-ubyte.gz")) for r in roots)


# CI sets BINPRUNE_REQUIRE_DATA=1 so that missing data fails the tests instead of skipping them.
requires_fashion_mnist = pytest.mark.skipif(
    not _fashion_mnist_available() and not os.environ.get("BINPRUNE_REQUIRE_DATA"),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, or set BINPRUNE_FASHION_MNIST)",
)

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")


def tiny_trained_supermask(eps: float = 0.1):
    """A tiny binary supermask CNN (widths 8, 16; 90% sparse) trained one fast-AT epoch on 1,024
    Fashion-MNIST images: a real, briefly trained model for evaluation tests, in seconds."""
    import binprune

    torch.manual_seed(0)
    train = binprune.load_dataset("fashion-mnist", split="train").subset(torch.arange(1024))
    net = binprune.create_model("small_cnn", num_classes=10, in_channels=1, mean=list(train.mean),
                                std=list(train.std), widths=[8, 16])
    net = binprune.convert_to_binary_supermask(net, sparsity=0.9, seed=0)
    return binprune.train(net, train, eps=eps, epochs=1, attack="fast", batch_size=64, progress=False,
                          device="cpu").model.eval()
