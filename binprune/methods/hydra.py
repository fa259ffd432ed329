"""HYDRA (Sehwag et al., 2020): prune an adversarially pre-trained dense network with scores
initialized from its weights, then fine-tune the kept weights.

What differs from binprune: the weights are not random but pre-trained (dense adversarial
training, :mod:`binprune.methods.dense`); the scores start from the weights,
``s = sqrt(6 / fan_in) * W / max|W|`` per layer, instead of small random values; batch norms
keep their affine parameters and there is no last batch norm; and a third phase fine-tunes the
kept weights (and biases, batch-norm affine values) with the mask fixed. The score phase is
binprune's own: the same :class:`binprune.TopKMask` with its straight-through gradient, weights
frozen, trained by ``binprune.train``.

Allocation: HYDRA keeps the same ratio in every layer (``"uniform"``); binprune's adaptive rule
(``"adaptive"``, exponent ``p``) is available for the comparison.

Binary variant: in the fine-tuning phase the kept weights are binarized, ``alpha * sign(w)`` with
one scale per layer over the kept weights, and fine-tuned through the straight-through sign
(:class:`binprune.methods.BinaryWeight` placed after the mask; latents clipped to [-1, 1]).

Methods registered here: ``hydra-fp``, ``hydra-binary``, ``hydra-fp-p0.1``,
``hydra-binary-p0.1`` (:class:`Hydra`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..init import fan_in
from ..sparsity import ALLOCATIONS, allocate_keep_counts, check_sparsity
from ..spec import attach_spec, find_spec, register_transform
from ..supermask import apply_mask, masked_tensors
from .base import Method, MethodContext, Phase, allocation_tag, register_method
from .dense import BinaryWeight, LatentClip, binarize_weights, from_pretrained, pretraining_phase
from .measure import coded_mask_bytes, other_float_values, register_stored_size, size_summary, weight_layers

__all__ = ["hydra_scores", "hydra_model", "STAGES", "hydra_size", "Hydra"]

STAGES = ("prune", "finetune")


def hydra_scores(weight: torch.Tensor) -> torch.Tensor:
    """HYDRA's score initialization: ``sqrt(6 / fan_in) * W / max|W|`` (scaled-weight init)."""
    w = weight.detach().float()
    peak = w.abs().max()
    if peak == 0:
        raise ValueError("cannot initialize scores from an all-zero weight tensor")
    return math.sqrt(6.0 / max(fan_in(w), 1)) * w / peak


def _check_options(sparsity: float, allocation: str, stage: str, binary: bool) -> float:
    sparsity = check_sparsity(sparsity)
    if stage not in STAGES:
        raise ValueError(f"unknown HYDRA stage {stage!r}: choose one of {', '.join(STAGES)}")
    if allocation not in ("uniform", "adaptive"):
        raise ValueError(f"HYDRA allocation must be 'uniform' or 'adaptive', got {allocation!r} "
                         f"(binprune allocations: {', '.join(ALLOCATIONS)})")
    if binary and stage != "finetune":
        raise ValueError("HYDRA binarizes the kept weights in the fine-tuning stage only (stage='finetune')")
    return sparsity


def hydra_model(
    model: nn.Module,
    *,
    sparsity: float = 0.99,
    allocation: str = "uniform",
    p: float = 1.0,
    stage: str = "prune",
    binary: bool = False,
) -> nn.Module:
    """A copy of ``model`` with every conv / linear weight masked by HYDRA scores, and what
    trains in ``stage`` set. ``model`` is not modified.

    ``stage="prune"``: scores trainable, everything else frozen (weights become fixed buffers).
    ``stage="finetune"``: scores frozen (the mask is fixed), kept weights, biases and batch-norm
    affine values trainable; with ``binary`` the masked weights are binarized (straight-through
    sign, per-layer scale over the kept weights).

    To move a pruned model to fine-tuning, build the fine-tuning model from the same dense model
    and load the pruned model's ``state_dict`` (the keys are the same; see :class:`Hydra`).
    """
    sparsity = _check_options(sparsity, allocation, stage, binary)
    if not any(True for _ in weight_layers(model)):
        raise ValueError("the model has no Conv or Linear weight to prune")
    if any(True for _ in masked_tensors(model)):
        raise ValueError("the model is already masked: start from the dense model")
    out = copy.deepcopy(model)
    layers = list(weight_layers(out))
    counts = allocate_keep_counts([m.weight.numel() for _, m in layers], sparsity, p, allocation)
    finetune = stage == "finetune"
    for (_, module), count in zip(layers, counts):
        apply_mask(module, "weight", scores=hydra_scores(module.weight), keep_count=count, weight_trainable=finetune)
    for name, param in out.named_parameters():
        is_score = name.endswith(".scores")
        param.requires_grad_(is_score if not finetune else not is_score)
    if binary:
        out = binarize_weights(out)
    kwargs = {"sparsity": sparsity, "allocation": allocation, "p": float(p), "stage": stage, "binary": bool(binary)}
    return attach_spec(out, find_spec(model, nested=False).with_transform("hydra", kwargs))


@register_transform("hydra")
def _hydra_transform(base: nn.Module, **kwargs: Any) -> nn.Module:
    return hydra_model(base, **kwargs)


@register_stored_size("hydra")
def hydra_size(model: nn.Module) -> dict:
    """Stored size of a HYDRA model: each coded mask (binprune's mask coder) plus, per kept weight,
    32 bits (FP) or 1 bit and a 32-bit scale per layer (binary), plus 32 bits per other value."""
    binary = _uses_binary(model)
    masks = weights = scales = 0
    for mt in masked_tensors(model):
        mask = mt.mask.mask()
        kept = int(mask.sum())
        masks += coded_mask_bytes(mask)
        if binary:
            weights += math.ceil(kept / 8)
            scales += 4
        else:
            weights += 4 * kept
    parts = {"masks": masks, "weights": weights}
    if binary:
        parts["scales"] = scales
        formula = "coded masks + 1 bit x kept weights (per layer, rounded up) + 4 B scale per layer + 4 B x other values"
    else:
        formula = "coded masks + 4 B x kept weights + 4 B x other values"
    parts["other"] = 4 * other_float_values(model)
    return size_summary(parts, formula)


def _uses_binary(model: nn.Module) -> bool:
    return any(isinstance(p, BinaryWeight) for mt in masked_tensors(model)
               for p in mt.module.parametrizations[mt.tensor_name])


class Hydra(Method):
    """HYDRA: the dense AT pre-training (shared), score training, then fine-tuning of the kept
    weights (full precision or binary).

    ``p`` is the adaptive exponent (default: the comparison's ``p``); uniform allocation uses 1.
    """

    def __init__(self, *, binary: bool, allocation: str = "uniform", p: float | None = None, **names: str | None):
        super().__init__(**names)
        _check_options(0.0, allocation, "finetune", binary)
        self.binary, self.allocation, self.p = bool(binary), allocation, p

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.config
        exponent = cfg.p if self.p is None else self.p
        tag = allocation_tag(self.allocation, exponent)
        kwargs = {"sparsity": cfg.sparsity, "allocation": self.allocation,
                  "p": 1.0 if self.allocation == "uniform" else exponent}
        prune = Phase(f"hydra-prune-{tag}", start=lambda: from_pretrained(ctx),
                      build=lambda base: hydra_model(base, stage="prune", **kwargs), lr=cfg.lr)

        def build_finetune(base: nn.Module) -> nn.Module:
            pruned, _ = ctx.run_phase(prune)
            model = hydra_model(base, stage="finetune", binary=self.binary, **kwargs)
            model.load_state_dict(pruned.state_dict())
            LatentClip()(model, 0)
            return model

        finetune = Phase(f"hydra-ft-{'binary' if self.binary else 'fp'}-{tag}", start=ctx.base_model,
                         build=build_finetune, lr=cfg.finetune_lr,
                         hook=(lambda model: LatentClip()) if self.binary else None)
        return [pretraining_phase(ctx), prune, finetune]


register_method("hydra-fp")(Hydra(binary=False, allocation="uniform", label="HYDRA (FP)", strategy="uniform",
                                  precision="FP"))
register_method("hydra-binary")(Hydra(binary=True, allocation="uniform", label="HYDRA (binary)", strategy="uniform",
                                      precision="binary"))
register_method("hydra-fp-p0.1")(Hydra(binary=False, allocation="adaptive", label="HYDRA (FP), p=0.1",
                                       strategy="adaptive p=0.1", precision="FP"))
register_method("hydra-binary-p0.1")(Hydra(binary=True, allocation="adaptive", label="HYDRA (binary), p=0.1",
                                           strategy="adaptive p=0.1", precision="binary"))
