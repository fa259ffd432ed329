"""binprune's own method as a peer of the baselines: a learned mask over fixed random weights
(:func:`binprune.convert_to_binary_supermask`), trained by ``binprune.train`` in one phase.

RST, the robust scratch ticket (Fu et al., 2021), is a variant: a supermask on full-precision
random weights. What differs from binprune: the fixed weights are Kaiming-normal,
``N(0, 2 / fan_in)``, with PyTorch's default random biases (``init="kaiming"``) instead of ±1
without biases, and every layer keeps the same ratio (uniform allocation, ``p = 1``). Everything
else (scores, exact top-k, straight-through gradient, trainer, last batch norm unless disabled)
is binprune's.

The stored size of both is binprune's packed file (:func:`binprune.save_packed`): the fixed
weights and biases are regenerated from the seed, so only the masks and statistics are stored.

Methods registered here: ``rst`` (:class:`RST`), ``binprune-p0.1``, ``binprune-p1.0``,
``binprune-global`` and ``binprune-p0.1-nolbn`` (:class:`Supermask`).
"""

from __future__ import annotations

from torch import nn

from ..convert import Subnetwork, convert_to_binary_supermask
from ..export import footprint
from .base import Method, MethodContext, Phase, allocation_tag, register_method
from .measure import register_stored_size

__all__ = ["rst_model", "supermask_size", "Supermask", "RST"]


def rst_model(model: nn.Module, *, sparsity: float = 0.99, last_bn: bool = True, seed: int = 0) -> Subnetwork:
    """A copy of ``model`` as a robust scratch ticket: Kaiming weights, uniform allocation."""
    return convert_to_binary_supermask(model, sparsity=sparsity, allocation="uniform", p=1.0, init="kaiming",
                                       last_bn=last_bn, seed=seed)


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
    """RST: binprune's method with Kaiming-normal weights and uniform allocation
    (:func:`rst_model`)."""

    def __init__(self, *, last_bn: bool = True, **names: str | None):
        super().__init__(init="kaiming", allocation="uniform", p=1.0, last_bn=last_bn, **names)

    def phase_name(self, exponent: float) -> str:
        return "rst" if self.last_bn else "rst-nolbn"

    def convert(self, base: nn.Module, *, sparsity: float, p: float, seed: int) -> nn.Module:
        return rst_model(base, sparsity=sparsity, last_bn=self.last_bn, seed=seed)


register_method("rst")(RST(label="RST (kaiming, LBN)", strategy="uniform", precision="FP"))
register_method("binprune-p0.1")(Supermask(allocation="adaptive", label="binprune (binary, p=0.1, LBN)",
                                           strategy="adaptive p=0.1", precision="binary"))
register_method("binprune-p1.0")(Supermask(allocation="uniform", p=1.0, label="binprune (binary, p=1.0, LBN)",
                                           strategy="uniform (p=1.0)", precision="binary"))
register_method("binprune-global")(Supermask(allocation="global", label="binprune (binary, global, LBN)",
                                             strategy="global", precision="binary"))
register_method("binprune-p0.1-nolbn")(Supermask(allocation="adaptive", last_bn=False,
                                                 label="binprune (binary, p=0.1, no LBN)", strategy="adaptive p=0.1",
                                                 precision="binary"))
