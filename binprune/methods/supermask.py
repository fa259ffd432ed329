"""binprune's own method as a peer of the baselines: a learned mask over fixed random weights
(:func:`binprune.convert_to_binary_supermask`), trained by ``binprune.train`` in one phase.

RST, the robust scratch ticket (Fu et al., 2021, ``GATECH-EIC/Robust-Scratch-Ticket``), is a
variant: edge-popup (``allenai/hidden-networks``) searched with adversarial training. What
differs from binprune, each as RST's ``config_rst/resnet18-usc-unsigned-cifar.yaml`` and code:
the fixed weights are the signed Kaiming constant ``±sqrt(2 / fan_in)`` (``init:
signed_constant``, ``--scale-fan`` off: ``utils/builder.py``), the scores start
Kaiming-uniform (``kaiming_uniform_(a=sqrt(5))``, ``utils/conv_type.py``), batch norms are
non-affine (``bn_type: NonAffineBatchNorm``), there is no last batch norm, and every layer keeps
the same ratio (``prune_rate`` per layer: uniform allocation). ``rst-lbn`` adds the last batch
norm (the paper's RST-LBN row). The score selection (exact top-k of ``|score|``,
straight-through gradient) is the same in both. RST trains with SGD lr 0.1, weight decay 5e-4,
160 epochs (its README).

The stored size of both is binprune's packed file (:func:`binprune.save_packed`): the fixed
weights and biases are regenerated from the seed, so only the masks and statistics are stored.

Methods registered here: ``rst`` (:class:`RST`), ``binprune-p0.1``, ``binprune-p1.0``,
``binprune-global`` and ``binprune-p0.1-nolbn`` (:class:`Supermask`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..convert import Subnetwork, convert_to_binary_supermask
from ..export import footprint
from .base import Method, MethodContext, Phase, allocation_tag, register_method
from .measure import register_stored_size

__all__ = ["rst_model", "supermask_size", "Supermask", "RST", "BinpruneTrainer"]


def rst_model(model: nn.Module, *, sparsity: float = 0.99, last_bn: bool = False, seed: int = 0,
              init: str = "signed_kaiming") -> Subnetwork:
    """A copy of ``model`` as a robust scratch ticket: signed Kaiming constant weights,
    Kaiming-uniform scores, non-affine batch norms, uniform allocation, no last batch norm unless
    ``last_bn`` (``init="kaiming"``: binprune 0.2's Gaussian weights, with binprune's scores)."""
    score_init = "kaiming_uniform" if init == "signed_kaiming" else "uniform"
    return convert_to_binary_supermask(model, sparsity=sparsity, allocation="uniform", p=1.0, init=init,
                                       last_bn=last_bn, seed=seed, score_init=score_init)


@register_stored_size("supermask")
def supermask_size(model: nn.Module) -> dict:
    """Stored size of a supermask model (binprune, RST): its packed ``.bpk`` file."""
    fp = footprint(model)
    return {"bytes": fp["bytes"]["packed_file"], "parts": fp["packed_sections_bytes"],
            "formula": "size of the packed .bpk file (binprune.save_packed): spec and seed, coded masks, "
                       "batch-norm statistics, checksum; the fixed weights are regenerated from the seed"}


class Supermask(Method):
    """binprune: scores over fixed random weights (``init``), trained in one phase.

    ``p`` is the adaptive exponent (default: the comparison's ``p``); ``last_bn`` adds the last
    batch norm over the logits (LBN).
    """

    def __init__(self, *, init: str = "binary", allocation: str = "adaptive", p: float | None = None,
                 last_bn: bool = True, **names: str | None):
        super().__init__(**names)
        self.init, self.allocation, self.p, self.last_bn = init, allocation, p, bool(last_bn)

    def phase_name(self, exponent: float) -> str:
        """``bp-<allocation tag>``, with ``-nolbn`` without the last batch norm."""
        return f"bp-{allocation_tag(self.allocation, exponent)}{'' if self.last_bn else '-nolbn'}"

    def convert(self, base: nn.Module, *, sparsity: float, p: float, seed: int) -> nn.Module:
        """The supermask copy of ``base`` this method trains."""
        return convert_to_binary_supermask(base, sparsity=sparsity, allocation=self.allocation, p=p, init=self.init,
                                           last_bn=self.last_bn, seed=seed)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.config
        exponent = cfg.p if self.p is None else self.p
        return [Phase(self.phase_name(exponent), start=ctx.base_model,
                      build=lambda base: self.convert(base, sparsity=cfg.sparsity, p=exponent, seed=cfg.seed),
                      lr=cfg.lr)]


class RST(Supermask):
    """RST: edge-popup's supermask on signed Kaiming constant weights, uniform allocation
    (:func:`rst_model`); ``last_bn`` gives the RST-LBN row."""

    #: RST's README: 160 epochs of search
    EPOCHS = 160.0

    def __init__(self, *, last_bn: bool = False, init: str = "signed_kaiming", **names: str | None):
        super().__init__(init=init, allocation="uniform", p=1.0, last_bn=last_bn, **names)

    def phase_name(self, exponent: float) -> str:
        base = "rst" if self.init == "signed_kaiming" else f"rst-{self.init}"
        return base + ("-lbn" if self.last_bn else "")

    def convert(self, base: nn.Module, *, sparsity: float, p: float, seed: int) -> nn.Module:
        return rst_model(base, sparsity=sparsity, last_bn=self.last_bn, seed=seed, init=self.init)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        (phase,) = super().phases(ctx)
        return [dataclasses.replace(phase, epochs=self.EPOCHS, of_epochs=self.EPOCHS)]


class BinpruneTrainer(Supermask):
    """binprune trained with a given attack: ``"pgd"`` (PGD-10, the paper's main row, 400 epochs:
    ``resnet34-binary-weights.yaml``) or ``"fast"`` (the carried FGSM of Liu et al.'s
    ``FGSM_RS``, step 4/255 at 8/255, 100 epochs: ``resnet34-binary-weights-fast.yaml``); the
    attack budget (eps) is the comparison's."""

    def __init__(self, *, attack: str, **kwargs: Any):
        super().__init__(**kwargs)
        if attack not in ("pgd", "fast"):
            raise ValueError(f"attack must be 'pgd' or 'fast', got {attack!r}")
        self.attack = attack

    def phases(self, ctx: MethodContext) -> list[Phase]:
        (phase,) = super().phases(ctx)
        if self.attack == "pgd":
            train = {"attack": "pgd", "attack_steps": 10, "carry_perturbation": False}
            epochs = 400.0
        else:
            train = {"attack": "fast", "carry_perturbation": True}
            epochs = 100.0
        return [dataclasses.replace(phase, name=f"{phase.name}-{self.attack}", train=train, epochs=epochs,
                                    of_epochs=epochs)]


register_method("rst")(RST(label="RST (signed Kaiming constant)", strategy="uniform", precision="FP"))
register_method("rst-lbn")(RST(last_bn=True, label="RST-LBN", strategy="uniform", precision="FP"))
register_method("rst-kaiming-lbn")(RST(last_bn=True, init="kaiming", label="RST (Kaiming normal, LBN; binprune 0.2)",
                                       strategy="uniform", precision="FP"))
register_method("binprune-p0.1")(Supermask(allocation="adaptive", label="binprune (binary, p=0.1, LBN)",
                                           strategy="adaptive p=0.1", precision="binary"))
register_method("binprune-pgd10")(BinpruneTrainer(attack="pgd", allocation="adaptive",
                                                  label="binprune (binary, p=0.1, LBN), PGD-10",
                                                  strategy="adaptive p=0.1", precision="binary"))
register_method("binprune-fast")(BinpruneTrainer(attack="fast", allocation="adaptive",
                                                 label="binprune (binary, p=0.1, LBN), fast",
                                                 strategy="adaptive p=0.1", precision="binary"))
register_method("binprune-p1.0")(Supermask(allocation="uniform", p=1.0, label="binprune (binary, p=1.0, LBN)",
                                           strategy="uniform (p=1.0)", precision="binary"))
register_method("binprune-global")(Supermask(allocation="global", label="binprune (binary, global, LBN)",
                                             strategy="global", precision="binary"))
register_method("binprune-p0.1-nolbn")(Supermask(allocation="adaptive", last_bn=False,
                                                 label="binprune (binary, p=0.1, no LBN)", strategy="adaptive p=0.1",
                                                 precision="binary"))
