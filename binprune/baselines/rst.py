"""RST, the robust scratch ticket (Fu et al., 2021): a supermask on full-precision random weights.

What differs from binprune: the fixed weights are Kaiming-normal, ``N(0, 2 / fan_in)``, with
PyTorch's default random biases (``init="kaiming"``) instead of ±1 without biases, and every
layer keeps the same ratio (uniform allocation, ``p = 1``). Everything else (scores, exact top-k,
straight-through gradient, trainer, last batch norm unless disabled) is binprune's.

Its stored size is binprune's packed file: the Kaiming weights and biases are regenerated from the
seed, so only the masks and statistics are stored.
"""

from __future__ import annotations

from torch import nn

from ..convert import Subnetwork, convert_to_binary_supermask

__all__ = ["rst_model"]


def rst_model(model: nn.Module, *, sparsity: float = 0.99, last_bn: bool = True, seed: int = 0) -> Subnetwork:
    """A copy of ``model`` as a robust scratch ticket: Kaiming weights, uniform allocation."""
    return convert_to_binary_supermask(model, sparsity=sparsity, allocation="uniform", p=1.0, init="kaiming",
                                       last_bn=last_bn, seed=seed)
