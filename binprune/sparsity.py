"""How much of each layer to keep: per-layer keep ratios, reports, and schedules over training.

Vocabulary: ``sparsity`` is the fraction of weights *removed*, ``keep_ratio`` the fraction kept
(``keep_ratio = 1 - sparsity``), ``keep_count`` the number kept.

The adaptive rule (Liu et al., NeurIPS 2022): layer ``l`` with ``n_l`` weights keeps a count
proportional to ``n_l ** p`` under the global budget ``(1 - sparsity) * sum(n_l)``. Small layers
(the first conv, the classifier) are pruned less. ``p = 1`` is the uniform ratio, ``p = 0`` the
same count for every layer. A layer whose share would exceed its size keeps everything and the
rest of the budget is re-split over the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .supermask import masked_tensors

from .config import ALLOCATIONS  # noqa: E402  (names defined once)


def check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not math.isfinite(sparsity):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"sparsity={sparsity} is outside [0, 1): it is the fraction of weights removed "
            "(0.99 keeps 1%)"
        )
    return float(sparsity)


def _check_sizes(layer_sizes: Sequence[int]) -> list[int]:
    sizes = [int(n) for n in layer_sizes]
    if not sizes:
        raise ValueError("layer_sizes is empty: there is no layer to allocate a budget to")
    bad = [n for n in sizes if n <= 0]
    if bad:
        raise ValueError(f"layer sizes must be positive, got {bad}")
    return sizes


def _size_powers(sizes: Sequence[int], p: float) -> list[float]:
    """``n ** p`` per layer, the adaptive rule's weights; only their ratios matter.

    A large ``p`` (``1e6``) overflows floats (``n ** p`` raises ``OverflowError``, or their sum is
    infinite): the weights are then computed relative to the largest of ``sizes`` in log space,
    ``exp(p * (log n - log n_max))`` in (0, 1], which gives the same allocation without overflow
    (the largest layers keep everything they can). Ordinary ``p`` takes the direct formula, so its
    results are unchanged to the last bit.
    """
    try:
        weights = [float(n) ** p for n in sizes]
        if math.isfinite(sum(weights)):
            return weights
    except OverflowError:
        pass
    top = math.log(max(sizes))
    return [math.exp(p * (math.log(n) - top)) for n in sizes]


def allocate_keep_ratios(layer_sizes: Sequence[int], sparsity: float, p: float = 0.1) -> list[float]:
    """Per-layer keep ratios under the adaptive rule (kept count proportional to ``n_l ** p``).

    Args:
        layer_sizes: number of weights of each layer.
        sparsity: overall fraction of weights removed, in [0, 1).
        p: exponent; 1 gives the uniform ratio ``1 - sparsity``, 0 the same count everywhere.

    Returns:
        One keep ratio in (0, 1] per layer, in the input order. The kept weights sum to
        ``(1 - sparsity) * sum(layer_sizes)`` exactly (before rounding to whole weights; see
        :func:`allocate_keep_counts`).
    """
    sizes = _check_sizes(layer_sizes)
    sparsity = check_sparsity(sparsity)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
        raise ValueError(f"p must be a finite number >= 0, got {p!r}")
    budget = (1.0 - sparsity) * sum(sizes)
    kept: dict[int, float] = {}
    remaining = sorted(range(len(sizes)), key=lambda i: sizes[i])
    # Smallest first: for p <= 1 the smallest layer has the highest ratio, so once a layer fits
    # every larger one fits too. For p > 1 the check is repeated until nothing overflows.
    while remaining:
        weights = dict(zip(remaining, _size_powers([sizes[i] for i in remaining], p)))
        weight_sum = sum(weights[i] for i in remaining)
        scale = budget / weight_sum
        overflow = [i for i in remaining if scale * weights[i] >= sizes[i]]
        if not overflow:
            for i in remaining:
                kept[i] = scale * weights[i]
            break
        for i in overflow:
            kept[i] = float(sizes[i])
            budget -= sizes[i]
            remaining.remove(i)
    return [kept[i] / sizes[i] for i in range(len(sizes))]


def keep_counts_from_ratios(layer_sizes: Sequence[int], keep_ratios: Sequence[float]) -> list[int]:
    """Whole-weight counts for ``keep_ratios`` whose sum is the rounded total budget.

    Each layer gets the floor of its share, then the leftover weights go one each to the layers
    furthest below their share (largest remainder), so every layer is within one weight of its
    share. Every layer keeps at least one weight (an empty layer would cut the network), so the
    total exceeds the budget by the number of layers whose share is below one weight.
    """
    sizes = _check_sizes(layer_sizes)
    if len(keep_ratios) != len(sizes):
        raise ValueError(f"got {len(keep_ratios)} keep ratios for {len(sizes)} layers")
    shares = [r * n for r, n in zip(keep_ratios, sizes)]
    counts = [min(n, max(1, math.floor(s))) for s, n in zip(shares, sizes)]
    missing = round(sum(shares)) - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in order[: max(missing, 0)]:
        if shares[i] > counts[i]:
            counts[i] += 1
    return counts


def allocate_keep_counts(
    layer_sizes: Sequence[int], sparsity: float, p: float = 0.1, allocation: str = "adaptive"
) -> list[int]:
    """Whole-weight keep counts for ``"adaptive"`` (exponent ``p``) or ``"uniform"`` allocation.

    (``"global"`` has no fixed per-layer counts: it is decided from the scores, see
    :class:`binprune.supermask.GlobalBudget`.)
    """
    if allocation == "adaptive":
        ratios = allocate_keep_ratios(layer_sizes, sparsity, p)
    elif allocation == "uniform":
        ratios = allocate_keep_ratios(layer_sizes, sparsity, 1.0)
    elif allocation == "global":
        raise ValueError("allocation='global' has no fixed per-layer counts: they follow the scores")
    else:
        raise ValueError(f"unknown allocation {allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
    return keep_counts_from_ratios(layer_sizes, ratios)


@dataclass
class LayerSparsity:
    """One row of a :func:`sparsity_report`."""

    name: str
    shape: tuple[int, ...]
    total: int
    kept: int
    masked: bool

    @property
    def keep_ratio(self) -> float:
        return self.kept / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "total": self.total,
            "kept": self.kept,
            "keep_ratio": self.keep_ratio,
            "masked": self.masked,
        }


@dataclass
class SparsityReport:
    """Per-tensor counts and totals. ``dense`` lists every other tensor holding values the
    network uses (unconverted weights, norms' affine parameters, non-zero fixed biases, ...):
    nothing is left dense without being counted."""

    layers: list[LayerSparsity] = field(default_factory=list)
    dense: list[LayerSparsity] = field(default_factory=list)

    @property
    def masked_total(self) -> int:
        return sum(r.total for r in self.layers)

    @property
    def masked_kept(self) -> int:
        return sum(r.kept for r in self.layers)

    @property
    def dense_total(self) -> int:
        return sum(r.total for r in self.dense)

    @property
    def total_params(self) -> int:
        return self.masked_total + self.dense_total

    @property
    def kept_params(self) -> int:
        return self.masked_kept + self.dense_total

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept_params / self.total_params if self.total_params else 0.0

    @property
    def masked_sparsity(self) -> float:
        return 1.0 - self.masked_kept / self.masked_total if self.masked_total else 0.0

    def as_dict(self) -> dict:
        return {
            "layers": [r.as_dict() for r in self.layers],
            "dense": [r.as_dict() for r in self.dense],
            "masked_total": self.masked_total,
            "masked_kept": self.masked_kept,
            "masked_sparsity": self.masked_sparsity,
            "dense_total": self.dense_total,
            "total_params": self.total_params,
            "kept_params": self.kept_params,
            "sparsity": self.sparsity,
        }

    def table(self) -> str:
        """A fixed-width text table, one line per tensor."""
        width = max([len(r.name) for r in self.layers + self.dense] + [5])
        lines = [f"{'layer':<{width}}  {'shape':<20} {'total':>11} {'kept':>10} {'keep':>7}"]
        for r in self.layers + self.dense:
            tag = "" if r.masked else "  (dense)"
            lines.append(
                f"{r.name:<{width}}  {str(tuple(r.shape)):<20} {r.total:>11,} {r.kept:>10,} {r.keep_ratio:>7.2%}{tag}"
            )
        lines.append(
            f"{'total':<{width}}  {'':<20} {self.total_params:>11,} {self.kept_params:>10,} "
            f"{1 - self.sparsity:>7.2%}"
        )
        return "\n".join(lines)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Count what a (supermask) model keeps, tensor by tensor.

    Masked tensors report their kept entries. Every other parameter (frozen or not: unconverted
    weights, excluded layers, norms' affine parameters, tokens and embeddings) is listed as dense
    with all its entries counted, and so is a masked layer's fixed bias unless it is all zero.
    Buffers that are not weights (running statistics, normalization constants) are not counted.
    """
    report = SparsityReport()
    skip: set[int] = set()
    fixed_biases: list[tuple[str, torch.Tensor]] = []
    for mt in masked_tensors(model):
        mask = mt.mask.mask()
        report.layers.append(
            LayerSparsity(mt.name, tuple(mask.shape), mask.numel(), int(mask.sum()), masked=True)
        )
        skip.update({id(mt.mask.scores)})
        for bias_name in ("bias", "in_proj_bias"):
            bias = mt.module._buffers.get(bias_name)
            if bias is not None and bias.is_floating_point():
                prefix = f"{mt.module_name}." if mt.module_name else ""
                fixed_biases.append((prefix + bias_name, bias))
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters()) + fixed_biases:
        if id(tensor) in skip or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if not isinstance(tensor, nn.Parameter) and not bool(tensor.detach().any()):
            continue  # an all-zero fixed bias (binary layers) stores nothing
        report.dense.append(LayerSparsity(name, tuple(tensor.shape), tensor.numel(), tensor.numel(), masked=False))
    return report


def set_sparsity(model: nn.Module, sparsity: float, *, allocation: str = "adaptive", p: float = 0.1) -> list[int]:
    """Re-allocate the keep counts of a converted model in place (used by sparsity schedules).

    Returns the new per-layer counts. Not available for ``allocation="global"`` models, whose
    counts follow the scores.
    """
    tensors = list(masked_tensors(model))
    if not tensors:
        raise ValueError("the model has no masked tensors: convert it with convert_to_binary_supermask first")
    if any(t.mask.budget is not None for t in tensors):
        raise ValueError("this model uses a global budget; change it with GlobalBudget.total_keep instead")
    counts = allocate_keep_counts([t.mask.scores.numel() for t in tensors], sparsity, p, allocation)
    with torch.no_grad():
        for t, k in zip(tensors, counts):
            t.mask.keep_count.fill_(k)
    return counts


@dataclass(frozen=True)
class SparsitySchedule:
    """Sparsity as a function of training progress: ``initial`` at step 0, ramping to ``final``
    over ``ramp_steps`` steps, then constant.

    ``kind="cubic"`` follows Zhu & Gupta (2017): ``final + (initial - final) * (1 - t)^3``, which
    prunes fast early and gently near the end; ``"linear"`` ramps evenly.
    """

    final: float
    ramp_steps: int
    initial: float = 0.0
    kind: str = "cubic"

    def __post_init__(self) -> None:
        check_sparsity(self.final)
        check_sparsity(self.initial)
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {self.ramp_steps}")
        if self.kind not in ("cubic", "linear"):
            raise ValueError(f"unknown schedule kind {self.kind!r}: choose 'cubic' or 'linear'")

    def __call__(self, step: int) -> float:
        if self.ramp_steps == 0 or step >= self.ramp_steps:
            return self.final
        t = max(step, 0) / self.ramp_steps
        if self.kind == "linear":
            return self.initial + (self.final - self.initial) * t
        return self.final + (self.initial - self.final) * (1.0 - t) ** 3
