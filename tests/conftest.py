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
