"""Helpers shared by the baselines: which layers carry weights, and stored-size accounting.

Sizes are counted in bytes from a documented formula per method (``docs/BASELINES.md``). Every
method pays the same for the tensors that are not conv/linear weights ("other" values: biases,
batch-norm affine parameters and running statistics, the input normalization constants, the last
batch norm): 4 bytes per value.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..coding import encode_mask
from ..convert import MASKABLE_LAYERS

__all__ = ["weight_layers", "effective_weights", "other_float_values", "coded_mask_bytes", "size_summary"]


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every conv / linear layer with a weight, in module order (the layers
    the baselines prune, binarize or quantize, as :func:`binprune.convert_to_binary_supermask`
    masks them)."""
    for name, module in model.named_modules():
        if isinstance(module, MASKABLE_LAYERS) and getattr(module, "weight", None) is not None:
            yield name, module


def effective_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight each layer computes with (after masks / binarization), detached."""
    with torch.no_grad():
        return [(name, module.weight.detach()) for name, module in weight_layers(model)]


def _weight_state_prefixes(model: nn.Module) -> list[str]:
    prefixes = []
    for name, module in weight_layers(model):
        dot = f"{name}." if name else ""
        if parametrize.is_parametrized(module, "weight"):
            prefixes.append(f"{dot}parametrizations.weight.")
        else:
            prefixes.append(f"{dot}weight")
    return prefixes


def other_float_values(model: nn.Module) -> int:
    """Number of floating-point values in ``model.state_dict()`` outside the conv / linear weights
    (and their scores / keep counts): what every method stores at 32 bits."""
    prefixes = _weight_state_prefixes(model)
    total = 0
    for key, value in model.state_dict().items():
        if any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes):
            continue
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            total += value.numel()
    return total


def coded_mask_bytes(mask: torch.Tensor) -> int:
    """Bytes of a mask coded by :func:`binprune.coding.encode_mask` (close to ``log2 C(n, k)``
    bits; the same coder as binprune's packed files)."""
    return len(encode_mask(mask.detach().to("cpu", torch.bool).numpy()).data)


def size_summary(parts: dict[str, int], formula: str) -> dict:
    """``{"bytes": total, "parts": {...}, "formula": ...}`` with every part rounded up to bytes."""
    parts = {k: int(math.ceil(v)) for k, v in parts.items()}
    return {"bytes": sum(parts.values()), "parts": parts, "formula": formula}
