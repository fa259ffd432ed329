"""What the methods measure on a model: its weight layers, its sparsity and its stored size.

Sizes are counted in bytes from a documented formula per method (``docs/BASELINES.md``). Every
method pays the same for the tensors that are not conv/linear weights ("other" values: biases,
batch-norm affine parameters and running statistics, the input normalization constants, the last
batch norm): 4 bytes per value.

:func:`stored_size` is the one entry point: it reads the transform name of the model's
:class:`binprune.spec.ModelSpec` (``None`` for a plain dense model) and calls the size function
that the method which built the model registered for it (:func:`register_stored_size`).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..coding import encode_mask
from ..convert import MASKABLE_LAYERS
from ..spec import find_spec

__all__ = [
    "weight_layers", "effective_weights", "other_float_values", "coded_mask_bytes", "size_summary", "count_params",
    "weight_counts", "weight_sparsity", "register_stored_size", "stored_size", "sized_transforms",
]


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every conv / linear layer with a weight, in module order (the layers
    the methods prune, binarize or quantize, as :func:`binprune.convert_to_binary_supermask`
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


def count_params(model: nn.Module) -> int:
    """Parameters of a plain (unconverted) model: weights, biases, batch-norm affine values."""
    return sum(p.numel() for p in model.parameters())


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """``(non-zero, total)`` entries of the conv / linear weights the model computes with."""
    weights = effective_weights(model)
    total = sum(w.numel() for _, w in weights)
    nonzero = sum(int((w != 0).sum()) for _, w in weights)
    return nonzero, total


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of the conv / linear weights that are zero in ``model`` as it computes (after masks,
    binarization or projection): the sparsity a ``compare`` table reports for every method.

    This is not :func:`binprune.sparsity_report`'s ``sparsity``, which is the pruned share of all
    the parameters of a supermask model (masked weights plus the dense tensors it still uses).
    """
    nonzero, total = weight_counts(model)
    if total == 0:
        raise ValueError("the model has no Conv or Linear weight")
    return 1.0 - nonzero / total


# --- stored size, by the method that built the model ---------------------------------------------

_SIZERS: dict[str | None, Callable[[nn.Module], dict]] = {}


def register_stored_size(transform: str | None) -> Callable[[Callable[[nn.Module], dict]], Callable[[nn.Module], dict]]:
    """Register ``fn(model) -> {"bytes", "parts", "formula"}`` as the stored size of models whose
    spec names ``transform`` (``None``: models without a transform, i.e. plain dense ones)."""

    def wrap(fn: Callable[[nn.Module], dict]) -> Callable[[nn.Module], dict]:
        _SIZERS[transform] = fn
        return fn

    return wrap


def sized_transforms() -> list[str | None]:
    """The transform names :func:`stored_size` knows (``None``: plain dense models)."""
    return list(_SIZERS)


def stored_size(model: nn.Module) -> dict:
    """Stored size of ``model`` in bytes by the formula of the method that built it:
    ``{"bytes": total, "parts": {name: bytes}, "formula": text}``.

    The method is found from the transform of the model's :class:`binprune.spec.ModelSpec`
    (found through wrappers such as ``nn.Sequential(model)``): no transform is a dense
    full-precision model, ``"binary_weights"`` a dense binary one, ``"hydra"``, ``"atmc"`` and
    ``"supermask"`` (binprune and RST) are the pruning methods.
    """
    name = find_spec(model).transform_name
    if name not in _SIZERS:
        known = ", ".join(str(n) for n in _SIZERS)
        raise ValueError(f"no stored-size formula for models of transform {name!r} (known: {known}); "
                         "register one with binprune.methods.register_stored_size")
    return _SIZERS[name](model)
