"""Masked tensors: per-weight scores, an exact top-k mask, and its straight-through gradient.

A supermask layer is an ordinary PyTorch layer whose weight tensor is *parametrized*
(:mod:`torch.nn.utils.parametrize`): reading ``layer.weight`` returns ``w * m`` where ``w`` is
the fixed original tensor and ``m`` keeps the ``k`` entries with the largest ``|score|``. Because
it is a parametrization, the layer keeps its own class and forward (any ``nn.Conv*``,
``nn.Linear`` subclass, or the packed projection of ``nn.MultiheadAttention``), and
``torch.nn.utils.parametrize.remove_parametrizations`` or :func:`binprune.finalize` turn it back
into a plain layer.

Gradient: the mask is a hard selection, so the scores get the straight-through estimate
``dL/ds = sign(s) * w * dL/d(w*m)`` (the derivative of ``|s|`` times the upstream gradient of the
mask, treating the selection as the identity).

Speed: one adversarial training step runs the network 10+ times (the attack) per optimizer step,
and the scores only change at the optimizer step. The mask and the masked weight are therefore
cached and recomputed only when the scores (or the weight, or ``k``) have changed, detected
through the tensors' version counters. Selection uses ``torch.topk`` (a partial selection), not a
full sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "TopKMask",
    "GlobalBudget",
    "MaskedTensor",
    "topk_mask",
    "apply_mask",
    "masked_tensors",
]


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the same shape as ``scores`` with exactly ``k`` entries set: the largest
    ``|scores|``.

    Uses a partial selection of whichever side is smaller (the ``k`` kept or the ``n - k``
    removed), so a 99%-sparse mask only selects 1% of the entries.
    """
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"keep count k={k} is outside [0, {n}] for a tensor of shape {tuple(scores.shape)}")
    flat = scores.detach().abs().flatten()
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k <= n - k:
        mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
        mask[torch.topk(flat, k, sorted=False).indices] = True
    else:
        mask = torch.ones(n, dtype=torch.bool, device=scores.device)
        mask[torch.topk(flat, n - k, largest=False, sorted=False).indices] = False
    return mask.view_as(scores)


class _MaskedWeight(torch.autograd.Function):
    """Returns the cached ``w * m``; backward sends ``sign(s) * w * g`` to the scores and
    ``m * g`` to the weight (the latter only when the weight is trainable, e.g. fine-tuning)."""

    @staticmethod
    def forward(ctx, scores, weight, mask, masked):  # type: ignore[override]
        ctx.save_for_backward(scores, weight, mask)
        return masked.view_as(masked)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        scores, weight, mask = ctx.saved_tensors
        grad_scores = grad * weight * scores.sign() if ctx.needs_input_grad[0] else None
        grad_weight = grad * mask if ctx.needs_input_grad[1] else None
        return grad_scores, grad_weight, None, None


def _tensor_key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


class TopKMask(nn.Module):
    """Parametrization ``w -> w * topk_mask(scores, keep_count)`` with a straight-through gradient.

    Args:
        scores: initial scores, same shape as the parametrized tensor; they become the learnable
            parameter ``scores`` (the tensor is used as is, not copied).
        keep_count: how many entries the mask keeps (stored as the buffer ``keep_count``, so it
            travels with the ``state_dict``).
        budget: a :class:`GlobalBudget` shared with other masks when ``keep_count`` is decided
            jointly (one threshold across layers); ``None`` for a fixed per-layer count.
    """

    def __init__(self, scores: torch.Tensor, keep_count: int, budget: "GlobalBudget | None" = None):
        super().__init__()
        n = scores.numel()
        if not 0 <= int(keep_count) <= n:
            raise ValueError(f"keep_count={keep_count} is outside [0, {n}] for scores of shape {tuple(scores.shape)}")
        self.scores = nn.Parameter(scores.detach())
        self.register_buffer("keep_count", torch.tensor(int(keep_count), dtype=torch.long))
        self.budget = budget
        if budget is not None:
            budget.add(self)
        # Caches hold aliases of the tensors they were computed from, so their storage cannot be
        # freed and reused at the same address while the cache claims to describe them.
        self._k_cache: tuple | None = None
        self._mask_cache: tuple | None = None
        self._weight_cache: tuple | None = None

    def current_keep_count(self) -> int:
        """The number of kept entries, read without a device sync unless it changed."""
        if self.budget is not None:
            self.budget.refresh()
        key = _tensor_key(self.keep_count)
        if self._k_cache is None or self._k_cache[0] != key:
            self._k_cache = (key, int(self.keep_count), self.keep_count.detach())
        return self._k_cache[1]

    def mask(self) -> torch.Tensor:
        """The current boolean mask (cached; recomputed only after the scores or k changed)."""
        k = self.current_keep_count()
        key = (_tensor_key(self.scores), k)
        if self._mask_cache is None or self._mask_cache[0] != key:
            self._mask_cache = (key, self.compute_mask(self.scores, k), self.scores.detach())
        return self._mask_cache[1]

    def compute_mask(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Selection rule; a subclass can override it (e.g. to benchmark alternatives)."""
        return topk_mask(scores, k)

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight * mask`` as a tensor without autograd history (cached)."""
        mask = self.mask()
        key = (self._mask_cache[0], _tensor_key(weight))
        if self._weight_cache is None or self._weight_cache[0] != key:
            with torch.no_grad():
                self._weight_cache = (key, weight.detach() * mask, weight.detach())
        return self._weight_cache[1]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        masked = self.masked_weight(weight)
        if torch.is_grad_enabled() and (self.scores.requires_grad or weight.requires_grad):
            return _MaskedWeight.apply(self.scores, weight, self._mask_cache[1], masked)
        return masked

    def extra_repr(self) -> str:
        mode = "global" if self.budget is not None else "fixed"
        return f"shape={tuple(self.scores.shape)}, keep_count={int(self.keep_count)} ({mode})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_k_cache"] = state["_mask_cache"] = state["_weight_cache"] = None
        return state


class GlobalBudget:
    """One keep count shared by several masks: the ``total_keep`` largest ``|score|`` across all
    of them are kept (a single global threshold), and each member's ``keep_count`` buffer is
    updated to its share whenever any member's scores change.

    Members are held by reference, so the budget is copied along with the model by
    ``copy.deepcopy``.
    """

    def __init__(self, total_keep: int):
        if total_keep < 0:
            raise ValueError(f"total_keep must be >= 0, got {total_keep}")
        self.total_keep = int(total_keep)
        self.members: list[TopKMask] = []
        self._key: tuple | None = None

    def add(self, member: TopKMask) -> None:
        self.members.append(member)
        self._key = None

    def refresh(self) -> None:
        key = tuple(_tensor_key(m.scores) for m in self.members)
        if key == self._key:
            return
        total = sum(m.scores.numel() for m in self.members)
        if self.total_keep > total:
            raise ValueError(f"global budget keeps {self.total_keep} entries but its layers hold only {total}")
        with torch.no_grad():
            flat = torch.cat([m.scores.detach().abs().flatten() for m in self.members])
            owner = torch.repeat_interleave(
                torch.arange(len(self.members), device=flat.device),
                torch.tensor([m.scores.numel() for m in self.members], device=flat.device),
            )
            kept = torch.topk(flat, self.total_keep, sorted=False).indices
            counts = torch.bincount(owner[kept], minlength=len(self.members))
            for member, count in zip(self.members, counts):
                member.keep_count.copy_(count)
        self._key = tuple(_tensor_key(m.scores) for m in self.members)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_key"] = None
        return state


@dataclass(frozen=True)
class MaskedTensor:
    """A masked tensor found in a model: ``getattr(module, tensor_name)`` is ``original * mask``."""

    name: str  # qualified name, e.g. "layer1.0.conv1.weight"
    module_name: str
    module: nn.Module
    tensor_name: str
    mask: TopKMask

    @property
    def original(self) -> torch.Tensor:
        return self.module.parametrizations[self.tensor_name].original


def apply_mask(
    module: nn.Module,
    tensor_name: str,
    *,
    scores: torch.Tensor,
    keep_count: int,
    weight_trainable: bool = False,
    budget: GlobalBudget | None = None,
) -> TopKMask:
    """Mask ``module.<tensor_name>`` in place with learnable ``scores`` keeping ``keep_count``.

    The original tensor becomes a buffer (fixed) unless ``weight_trainable`` is true, in which
    case it stays a parameter (used by baselines that fine-tune the kept weights).
    """
    original = getattr(module, tensor_name, None)
    if not isinstance(original, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor named {tensor_name!r} to mask")
    if parametrize.is_parametrized(module, tensor_name):
        raise ValueError(f"{type(module).__name__}.{tensor_name} is already parametrized")
    if scores.shape != original.shape:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} do not match {tensor_name} of shape {tuple(original.shape)}"
        )
    data = original.detach()  # the module's own tensor, removed next: no copy needed
    delattr(module, tensor_name)
    if weight_trainable:
        module.register_parameter(tensor_name, nn.Parameter(data))
    else:
        module.register_buffer(tensor_name, data)
    mask = TopKMask(scores.to(device=data.device, dtype=data.dtype), keep_count, budget=budget)
    parametrize.register_parametrization(module, tensor_name, mask, unsafe=True)
    return mask


def masked_tensors(model: nn.Module) -> Iterator[MaskedTensor]:
    """Every tensor of ``model`` masked by a :class:`TopKMask`, in module order."""
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, plist in module.parametrizations.items():
            for p in plist:
                if isinstance(p, TopKMask):
                    name = f"{module_name}.{tensor_name}" if module_name else tensor_name
                    yield MaskedTensor(name, module_name, module, tensor_name, p)
