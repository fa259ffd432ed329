"""Fixed weight schemes for supermask layers.

The weights of a supermask network are never trained, so they must be reproducible from a seed
alone: every scheme draws from a generator seeded by ``(seed, layer name)``. That is what lets a
trained network be shipped as seed + masks (see :mod:`binprune.export`).

Schemes
-------
``"binary"``
    Rademacher ±1. With batch norm after every layer, the scale is irrelevant; the last layer's
    scale is absorbed by the last batch norm (LBN).
``"signed_constant"``
    ±sqrt(2 / (keep_ratio * fan_in)): the binary weights scaled so that a layer keeping a fraction
    ``keep_ratio`` of its inputs preserves activation variance (He et al. scaling applied to the
    pruned fan-in).
``"kaiming"``
    Full-precision N(0, 2 / fan_in) (binprune 0.2's RST row).
``"signed_kaiming"``
    ±sqrt(2 / fan_in): edge-popup's ``signed_constant`` without ``--scale-fan`` (the Kaiming
    standard deviation with random signs; ``allenai/hidden-networks`` ``utils/builder.py``), the
    weights of the robust scratch ticket (RST, ``GATECH-EIC/Robust-Scratch-Ticket``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .utils import check_seed, generator_for

from .config import WEIGHT_INITS  # noqa: E402  (names defined once)


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit, as PyTorch's own initializers count them."""
    fan, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan)


def fixed_weight(
    shape: torch.Size | tuple[int, ...],
    *,
    init: str,
    seed: int,
    name: str,
    keep_ratio: float,
    fan_in_count: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw the fixed weight tensor of one layer.

    Same ``(init, seed, name, shape)`` gives the same tensor on every machine. ``keep_ratio`` is
    only used by ``"signed_constant"``. ``seed`` must be an integer: the seed is hashed as text,
    so a float would draw other weights than the integer a spec records.
    """
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(WEIGHT_INITS)}")
    seed = check_seed(seed)
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be a number in [0, 1], got {keep_ratio!r}")
    gen = generator_for("weight", init, seed, name)
    if init == "kaiming":
        std = math.sqrt(2.0 / max(fan_in_count, 1))
        return torch.randn(shape, generator=gen, dtype=torch.float32).mul_(std).to(dtype)
    signs = torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).mul_(2).sub_(1)
    scale = 1.0
    if init == "signed_constant":
        scale = math.sqrt(2.0 / (max(keep_ratio, 1e-12) * max(fan_in_count, 1)))
    elif init == "signed_kaiming":
        scale = math.sqrt(2.0 / max(fan_in_count, 1))
    return signs.to(dtype).mul_(scale)


def fixed_bias(
    shape: torch.Size | tuple[int, ...], *, init: str, seed: int, name: str, fan_in_count: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw the fixed bias of one layer.

    Zero for ``"binary"``, ``"signed_constant"`` and ``"signed_kaiming"``: a binary network has
    no full-precision biases to store (edge-popup's and RST's layers have no bias). ``"kaiming"`` keeps PyTorch's default bias distribution U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), drawn from the seeded generator.
    """
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(WEIGHT_INITS)}")
    seed = check_seed(seed)
    if init in ("binary", "signed_constant", "signed_kaiming"):
        return torch.zeros(shape, dtype=dtype)
    gen = generator_for("bias", init, seed, name)
    bound = 1.0 / math.sqrt(max(fan_in_count, 1))
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1).mul_(bound).to(dtype)
