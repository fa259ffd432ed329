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
from .dense import BinaryWeight, LatentClip, binarize_weights
from .measure import coded_mask_bytes, other_float_values, register_stored_size, size_summary, weight_layers

__all__ = ["hydra_scores", "hydra_model", "STAGES", "hydra_size", "Hydra", "Sehwag2019", "HYDRA_TRAIN", "HYDRA_EPOCHS",
           "hydra_pretraining", "from_phase"]

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
    train_bn: bool = False,
) -> nn.Module:
    """A copy of ``model`` with every conv / linear weight masked by HYDRA scores, and what
    trains in ``stage`` set. ``model`` is not modified.

    ``stage="prune"``: scores trainable, weights frozen (they become fixed buffers), and the
    batch norms' affine values trainable with ``train_bn`` (HYDRA's default: its ``--freeze-bn``
    is off, ``train.py`` freezes only the conv / linear weights and biases), frozen otherwise.
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
    bn_params = {id(p) for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters(recurse=False)}
    for name, param in out.named_parameters():
        is_score = name.endswith(".scores")
        if finetune:
            param.requires_grad_(not is_score)
        else:
            param.requires_grad_(is_score or (train_bn and id(param) in bn_params))
    if binary:
        out = binarize_weights(out)
    kwargs = {"sparsity": sparsity, "allocation": allocation, "p": float(p), "stage": stage, "binary": bool(binary)}
    if train_bn:
        kwargs["train_bn"] = True
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


#: HYDRA's adversarial trainer (``trainer/adv.py``): TRADES, beta 6 (``args.py``), its inner
#: maximization with the model in eval mode (``utils/adv.py``); weight decay 1e-4 (``args.py``).
HYDRA_TRAIN = {"attack": "trades", "trades_beta": 6.0, "weight_decay": 1e-4, "schedule": "cosine"}
#: The same with cross-entropy on PGD examples (binprune 0.2's HYDRA rows).
HYDRA_TRAIN_PGD = {"attack": "pgd", "weight_decay": 1e-4, "schedule": "cosine"}
#: HYDRA's published schedule: pre-train 100, prune 20, fine-tune 100 epochs
#: (``args.py`` epochs 100; ``get_compact_net_adv_train.sh`` pruning epochs 20).
HYDRA_EPOCHS = (100.0, 20.0, 100.0)


def _trainer_settings(trainer: str) -> dict:
    """The training settings of HYDRA's ``adv`` trainer (TRADES) or of its PGD option."""
    if trainer not in ("trades", "pgd"):
        raise ValueError(f"HYDRA trainer must be 'trades' (its adv trainer) or 'pgd', got {trainer!r}")
    return HYDRA_TRAIN if trainer == "trades" else HYDRA_TRAIN_PGD


def _pruning_settings(method: "Hydra | Sehwag2019", ctx: MethodContext) -> tuple[str, dict, dict]:
    """A pruning method's phase tag, its pruning keyword arguments and its training settings."""
    exponent = ctx.config.p if method.p is None else method.p
    tag = f"{allocation_tag(method.allocation, exponent)}-{method.trainer}"
    kwargs = {"sparsity": ctx.config.sparsity, "allocation": method.allocation,
              "p": 1.0 if method.allocation == "uniform" else exponent}
    return tag, kwargs, _trainer_settings(method.trainer)


def hydra_pretraining(ctx: MethodContext, *, trainer: str = "trades", of_epochs: float = sum(HYDRA_EPOCHS)) -> Phase:
    """HYDRA's dense pre-training (``--exp-mode pretrain``, lr 0.1) with its own trainer."""
    train = _trainer_settings(trainer)
    return Phase(f"hydra-pretrain-{trainer}", start=ctx.base_model, build=copy.deepcopy, lr=0.1, train=train,
                 epochs=HYDRA_EPOCHS[0], of_epochs=of_epochs)


def from_phase(ctx: MethodContext, phase: Phase) -> nn.Module:
    """A fresh dense model holding the weights ``phase`` trained."""
    trained, _ = ctx.run_phase(phase)
    model = ctx.base_model()
    model.load_state_dict(trained.state_dict())
    return model


class Hydra(Method):
    """HYDRA (Sehwag et al., 2020, ``inspire-group/hydra``): dense pre-training, score training
    from weight-proportional scores (batch norms trained too), then fine-tuning of the kept
    weights (full precision or binary), each phase with HYDRA's trainer (TRADES, weight decay
    1e-4, cosine) and its learning rates (0.1, 0.1, 0.01), in its 100 / 20 / 100 proportions.

    ``allocation``: ``"uniform"`` (HYDRA's own: the same ``k`` in every layer) or
    ``"adaptive"`` (exponent ``p``, default the comparison's: the paper's HYDRA p = 0.1 row).
    ``trainer="pgd"``: cross-entropy on PGD examples instead of TRADES.
    """

    def __init__(self, *, binary: bool, allocation: str = "uniform", p: float | None = None, trainer: str = "trades",
                 **names: str | None):
        super().__init__(**names)
        _check_options(0.0, allocation, "finetune", binary)
        _trainer_settings(trainer)
        self.binary, self.allocation, self.p, self.trainer = bool(binary), allocation, p, trainer

    def phases(self, ctx: MethodContext) -> list[Phase]:
        tag, kwargs, train = _pruning_settings(self, ctx)
        total = sum(HYDRA_EPOCHS)
        pre = hydra_pretraining(ctx, trainer=self.trainer)
        prune = Phase(f"hydra-prune-{tag}", start=lambda: from_phase(ctx, pre),
                      build=lambda base: hydra_model(base, stage="prune", train_bn=True, **kwargs), lr=0.1,
                      train=train, epochs=HYDRA_EPOCHS[1], of_epochs=total)

        def build_finetune(base: nn.Module) -> nn.Module:
            pruned, _ = ctx.run_phase(prune)
            model = hydra_model(base, stage="finetune", binary=self.binary, **kwargs)
            state = pruned.state_dict()
            model.load_state_dict(state)
            LatentClip()(model, 0)
            return model

        finetune = Phase(f"hydra-ft-{'binary' if self.binary else 'fp'}-{tag}", start=ctx.base_model,
                         build=build_finetune, lr=0.01, train=train,
                         hook=(lambda model: LatentClip()) if self.binary else None,
                         epochs=HYDRA_EPOCHS[2], of_epochs=total)
        return [pre, prune, finetune]


class Sehwag2019(Method):
    """Sehwag et al., 2019 ("Towards compact and robust deep neural networks"): adversarial
    training, pruning by weight magnitude (the largest ``|W|`` kept in every layer), then
    adversarial fine-tuning of the kept weights. The procedure as HYDRA's repository runs it
    (its "weight based pruning" baseline, ``get_compact_net_adv_train.sh``: fine-tune from the
    pre-trained network with ``--scaled-score-init``, so the mask is the per-layer top-k of
    ``|W|``, lr 0.01), with HYDRA's trainer, in 100 / 100 proportions.
    """

    def __init__(self, *, allocation: str = "uniform", p: float | None = None, trainer: str = "trades",
                 **names: str | None):
        super().__init__(**names)
        _check_options(0.0, allocation, "finetune", False)
        _trainer_settings(trainer)
        self.allocation, self.p, self.trainer = allocation, p, trainer

    def phases(self, ctx: MethodContext) -> list[Phase]:
        tag, kwargs, train = _pruning_settings(self, ctx)
        total = 2 * HYDRA_EPOCHS[0]
        pre = hydra_pretraining(ctx, trainer=self.trainer, of_epochs=total)
        finetune = Phase(f"lwm-ft-{tag}", start=lambda: from_phase(ctx, pre),
                         build=lambda base: hydra_model(base, stage="finetune", **kwargs), lr=0.01, train=train,
                         epochs=HYDRA_EPOCHS[2], of_epochs=total)
        return [pre, finetune]


register_method("hydra-fp")(Hydra(binary=False, allocation="uniform", label="HYDRA (FP), uniform", strategy="uniform",
                                  precision="FP"))
register_method("hydra-binary")(Hydra(binary=True, allocation="uniform", label="HYDRA (binary), uniform",
                                      strategy="uniform", precision="binary"))
register_method("hydra-fp-p0.1")(Hydra(binary=False, allocation="adaptive", label="HYDRA (FP), p=0.1",
                                       strategy="adaptive p=0.1", precision="FP"))
register_method("hydra-binary-p0.1")(Hydra(binary=True, allocation="adaptive", label="HYDRA (binary), p=0.1",
                                           strategy="adaptive p=0.1", precision="binary"))
register_method("sehwag2019")(Sehwag2019(allocation="uniform", label="Sehwag et al. 2019 (AT + magnitude pruning)",
                                         strategy="uniform", precision="FP"))
register_method("sehwag2019-p0.1")(Sehwag2019(allocation="adaptive", label="Sehwag et al. 2019, p=0.1",
                                              strategy="adaptive p=0.1", precision="FP"))
