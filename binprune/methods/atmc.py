"""ATMC (Gui et al., 2019): adversarial training under a sparsity budget and weight quantization,
solved by projection and ADMM.

What differs from binprune: the weights themselves are trained and there are no scores. ATMC
runs three stages, as its README does with ``cifar/train_proj_admm_quant.py`` (200 epochs each):
dense pre-training (``--raw_train``), training under the L0 projection alone
(``--prune_algo l0proj``), then the ADMM stage with quantization. Every stage minimizes
``0.5 CE(clean) + 0.5 CE(adversarial)`` (``cifar/util_trts.py``,
``model_train_proj_prune_admm_quant``), and the ADMM stage adds ``rho/2 ||W - Z + U||^2``
(``rho = 0.1``, ``train_proj_admm_quant.py``) to that loss (:meth:`ATMCProjection.loss_term`).
After every optimizer step of ``binprune.train``, :class:`ATMCProjection` (a step hook whose
state is checkpointed):

1. with ``penalty > 0`` only (binprune 0.2's variant, not ATMC's): pulls the weights toward the
   ADMM target, ``W -= penalty * (W - Z + U)``, outside the optimizer;
2. projects onto the L0 budget: keeps the ``k`` largest ``|W|`` across all layers (``"global"``,
   ATMC's own allocation) or per layer with binprune's counts (``"adaptive"`` / ``"uniform"``),
   and zeroes the rest;
3. every ``admm_every`` steps, the ADMM ``Z`` and dual ``U`` updates:
   ``Z = Q(W + U)`` on the kept entries, ``U += W - Z``, where ``Q`` quantizes each layer to a
   codebook of ``2**bits`` non-zero levels plus a fixed zero level, fitted by k-means.

When training ends, :meth:`ATMCProjection.project` applies the exact projection ``W = Q(P_k(W))``:
the final model is sparse and quantized, and that is the model evaluated. ``bits=1`` is the
binary setting (two levels plus zero per layer); ``bits=None`` skips quantization (kept weights in
full precision; only the sparsity projection). Biases and batch-norm values stay in full precision.

Methods registered here: ``atmc-fp``, ``atmc-binary``, ``atmc-fp-p0.1``, ``atmc-binary-p0.1``
(:class:`ATMC`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..sparsity import allocate_keep_counts, check_sparsity
from ..spec import attach_spec, find_spec, register_transform
from ..supermask import topk_mask
from .base import Method, MethodContext, Phase, allocation_tag, register_method
from .dense import from_pretrained, pretraining_phase
from .hydra import from_phase
from .measure import (
    coded_mask_bytes,
    effective_weights,
    other_float_values,
    register_stored_size,
    size_summary,
    weight_layers,
)

__all__ = ["ATMCProjection", "quantize_with_zero", "kmeans_codebook", "atmc_model", "atmc_size", "ATMC_ALLOCATIONS",
           "ATMC", "ATMC_TRAIN", "ATMC_EPOCHS", "ATMC_RHO"]

ATMC_ALLOCATIONS = ("global", "adaptive", "uniform")


def kmeans_codebook(values: torch.Tensor, levels: int, iterations: int = 10) -> torch.Tensor:
    """``levels`` non-zero centroids for ``values`` by k-means (Lloyd) with an extra level fixed at
    zero. Initial centroids: the ``(i + 0.5) / levels`` quantiles. Deterministic."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    v = values.detach().flatten().float()
    if v.numel() == 0:
        return torch.zeros(levels, dtype=torch.float32, device=values.device)
    q = (torch.arange(levels, dtype=torch.float32, device=v.device) + 0.5) / levels
    centroids = torch.quantile(v, q)
    for _ in range(iterations):
        table = torch.cat([centroids.new_zeros(1), centroids])
        assign = (v[:, None] - table[None, :]).abs().argmin(1)
        sums = torch.zeros(levels + 1, device=v.device).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=levels + 1).float()
        update = counts[1:] > 0
        new = torch.where(update, sums[1:] / counts[1:].clamp_min(1), centroids)
        if torch.equal(new, centroids):
            break
        centroids = new
    return centroids


def quantize_with_zero(values: torch.Tensor, mask: torch.Tensor, levels: int, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``values`` onto ``{0} U codebook`` on the entries of ``mask`` (zero elsewhere), with a
    per-tensor codebook of ``levels`` non-zero values fitted by :func:`kmeans_codebook`.

    Returns ``(quantized, codebook)``.
    """
    kept = values[mask]
    codebook = kmeans_codebook(kept, levels, iterations)
    table = torch.cat([codebook.new_zeros(1), codebook]).to(values.dtype)
    out = torch.zeros_like(values)
    if kept.numel():
        assign = (kept[:, None] - table[None, :]).abs().argmin(1)
        out[mask] = table[assign]
    return out, codebook


class ATMCProjection:
    """Step hook: sparsity projection after every step and ADMM quantization (module docstring).

    Args:
        model: the dense model being trained (its conv / linear weights are projected); the ADMM
            variables start at ``Z = Q(P_k(W))``, ``U = 0``.
        sparsity: fraction of the conv / linear weights removed.
        allocation: ``"global"`` (one threshold across layers), ``"adaptive"`` (binprune's counts,
            exponent ``p``) or ``"uniform"``.
        bits: ``2**bits`` non-zero levels per layer (1: binary); ``None`` for no quantization.
        penalty: pull toward ``Z - U`` per step, outside the loss (0: off).
        rho: weight of ``rho/2 ||W - Z + U||^2`` in the loss (:meth:`loss_term`; ATMC: 0.1).
        admm_every: steps between ``Z`` / ``U`` updates.
        kmeans_iterations: Lloyd iterations per codebook fit.
    """

    def __init__(self, model: nn.Module, *, sparsity: float, allocation: str = "global", p: float = 0.1,
                 bits: int | None = 1, penalty: float = 0.01, admm_every: int = 10, kmeans_iterations: int = 10,
                 rho: float = 0.0):
        self.sparsity = check_sparsity(sparsity)
        if allocation not in ATMC_ALLOCATIONS:
            raise ValueError(f"unknown ATMC allocation {allocation!r}: choose one of {', '.join(ATMC_ALLOCATIONS)}")
        if bits is not None and not (isinstance(bits, int) and 1 <= bits <= 16):
            raise ValueError(f"bits must be an integer in [1, 16] or None, got {bits!r}")
        if not 0 <= penalty < 1:
            raise ValueError(f"penalty must be in [0, 1), got {penalty}")
        if admm_every < 1:
            raise ValueError(f"admm_every must be >= 1, got {admm_every}")
        self.allocation, self.p, self.bits = allocation, float(p), bits
        self.penalty, self.admm_every, self.kmeans_iterations = float(penalty), int(admm_every), int(kmeans_iterations)
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self.rho = float(rho)
        weights = self._weights(model)
        sizes = [w.numel() for w in weights]
        self.total_keep = max(1, round((1.0 - self.sparsity) * sum(sizes)))
        self.counts = None if allocation == "global" else allocate_keep_counts(sizes, self.sparsity, self.p, allocation)
        self.step = 0
        self.Z: list[torch.Tensor] = []
        self.U: list[torch.Tensor] = []
        self.codebooks: list[torch.Tensor] = []
        if bits is not None:
            with torch.no_grad():
                masks = self.masks(weights)
                for w, m in zip(weights, masks):
                    z, book = quantize_with_zero(w.detach() * m, m, self.levels, self.kmeans_iterations)
                    self.Z.append(z)
                    self.U.append(torch.zeros_like(w))
                    self.codebooks.append(book)

    @property
    def levels(self) -> int:
        return 2 ** self.bits if self.bits is not None else 0

    @staticmethod
    def _weights(model: nn.Module) -> list[torch.Tensor]:
        weights = [m.weight for _, m in weight_layers(model)]
        if not weights:
            raise ValueError("the model has no Conv or Linear weight to project")
        return weights

    def masks(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Boolean masks of the kept entries: the global or per-layer top-k of ``|W|``."""
        if self.counts is not None:
            return [topk_mask(w, k) for w, k in zip(weights, self.counts)]
        flat = torch.cat([w.detach().abs().flatten() for w in weights])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, self.total_keep, sorted=False).indices] = True
        return [part.view_as(w) for part, w in zip(torch.split(keep, [w.numel() for w in weights]), weights)]

    def _to(self, device: torch.device) -> None:
        if self.Z and self.Z[0].device != device:
            self.Z = [z.to(device) for z in self.Z]
            self.U = [u.to(device) for u in self.U]
            self.codebooks = [c.to(device) for c in self.codebooks]

    def loss_term(self, model: nn.Module) -> torch.Tensor | float:
        """ATMC's augmented-Lagrangian term ``rho/2 * sum ||W - Z + U||^2`` over the conv / linear
        weights (differentiable in ``W``; 0 without quantization or with ``rho = 0``)."""
        if self.bits is None or self.rho == 0:
            return 0.0
        weights = self._weights(model)
        self._to(weights[0].device)
        return self.rho / 2 * sum(((w - z + u) ** 2).sum() for w, z, u in zip(weights, self.Z, self.U))

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int) -> None:
        weights = self._weights(model)
        if self.bits is not None:
            self._to(weights[0].device)
            if self.penalty > 0:
                for w, z, u in zip(weights, self.Z, self.U):
                    w.sub_(self.penalty * (w - z + u))
        masks = self.masks(weights)
        for w, m in zip(weights, masks):
            w.mul_(m)
        self.step = int(step)
        if self.bits is not None and self.step % self.admm_every == 0:
            for i, (w, m) in enumerate(zip(weights, masks)):
                z, book = quantize_with_zero(w + self.U[i], m, self.levels, self.kmeans_iterations)
                self.Z[i], self.codebooks[i] = z, book
                self.U[i] = self.U[i] + w - z

    @torch.no_grad()
    def project(self, model: nn.Module) -> list[dict[str, Any]]:
        """The final exact projection ``W = Q(P_k(W))`` (in place); returns per-layer counts and
        codebooks."""
        weights = self._weights(model)
        masks = self.masks(weights)
        info = []
        for (name, _), w, m in zip(weight_layers(model), weights, masks):
            if self.bits is None:
                w.mul_(m)
                book = None
            else:
                q, book = quantize_with_zero(w.detach() * m, m, self.levels, self.kmeans_iterations)
                w.copy_(q)
            info.append({"name": name, "total": w.numel(), "kept": int((w != 0).sum()),
                         "codebook": book.tolist() if book is not None else None})
        return info

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "Z": [z.detach().clone() for z in self.Z],
                "U": [u.detach().clone() for u in self.U], "codebooks": [c.detach().clone() for c in self.codebooks],
                "settings": self._settings()}

    def _settings(self) -> dict[str, Any]:
        settings = {"sparsity": self.sparsity, "allocation": self.allocation, "p": self.p, "bits": self.bits,
                    "penalty": self.penalty, "admm_every": self.admm_every, "kmeans_iterations": self.kmeans_iterations}
        if self.rho:
            settings["rho"] = self.rho
        return settings

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self._settings():
            raise ValueError(f"ATMC state was saved with settings {state.get('settings')}, not {self._settings()}")
        if len(state["Z"]) != len(self.Z) or len(state["U"]) != len(self.U):
            raise ValueError("ATMC state holds a different number of layers than the model")
        self.step = int(state["step"])
        self.Z = [z.clone() for z in state["Z"]]
        self.U = [u.clone() for u in state["U"]]
        self.codebooks = [c.clone() for c in state["codebooks"]]


def atmc_model(model: nn.Module, *, sparsity: float = 0.99, allocation: str = "global", p: float = 0.1,
               bits: int | None = 1) -> nn.Module:
    """A copy of a dense model tagged as an ATMC model: its structure is the dense one (the
    projection happens in :class:`ATMCProjection`), and its spec records the settings so that
    checkpoints rebuild it. ``model`` is not modified."""
    check_sparsity(sparsity)
    if allocation not in ATMC_ALLOCATIONS:
        raise ValueError(f"unknown ATMC allocation {allocation!r}: choose one of {', '.join(ATMC_ALLOCATIONS)}")
    kwargs = {"sparsity": float(sparsity), "allocation": allocation, "p": float(p), "bits": bits}
    return attach_spec(copy.deepcopy(model), find_spec(model, nested=False).with_transform("atmc", kwargs))


@register_transform("atmc")
def _atmc_transform(base: nn.Module, **kwargs: Any) -> nn.Module:
    return atmc_model(base, **kwargs)


def atmc_size(model: nn.Module, bits: int | None) -> dict:
    """Stored size of a projected ATMC model: each layer's coded mask of non-zero weights, its
    codebook (32 bits per non-zero level; the zero level is implied by the mask) and ``bits`` per
    non-zero weight (32 for ``bits=None``), plus 32 bits per other value."""
    masks = weights = books = 0
    for name, w in effective_weights(model):
        nonzero = w != 0
        kept = int(nonzero.sum())
        masks += coded_mask_bytes(nonzero)
        if bits is None:
            weights += 4 * kept
        else:
            distinct = int(torch.unique(w[nonzero]).numel())
            if distinct > 2 ** bits:
                raise ValueError(f"layer {name} has {distinct} distinct non-zero values, more than 2**{bits}: "
                                 "project the model first (ATMCProjection.project)")
            weights += math.ceil(kept * bits / 8)
            books += 4 * 2 ** bits
    parts = {"masks": masks, "weights": weights}
    if bits is None:
        formula = "coded masks of non-zero weights + 4 B x non-zero weights + 4 B x other values"
    else:
        parts["codebooks"] = books
        formula = (f"coded masks of non-zero weights + {bits} bit(s) x non-zero weights (per layer, rounded up) "
                   f"+ 4 B x {2 ** bits} codebook levels per layer + 4 B x other values")
    parts["other"] = 4 * other_float_values(model)
    return size_summary(parts, formula)


@register_stored_size("atmc")
def _atmc_stored_size(model: nn.Module) -> dict:
    return atmc_size(model, find_spec(model).transform["kwargs"]["bits"])


#: ATMC's loss in every stage: 0.5 CE(clean) + 0.5 CE(adversarial) (``cifar/util_trts.py``), weight
#: decay 1e-4 (``train_proj_admm_quant.py --wd``), SGD momentum 0.9 with step decays.
ATMC_TRAIN = {"attack": "pgd", "clean_loss_weight": 0.5, "weight_decay": 1e-4, "schedule": "step"}
#: ATMC's README: 200 epochs per stage, learning rates 0.05 (pre-training), 0.01 (L0), 0.005 (ADMM).
ATMC_EPOCHS = (200.0, 200.0, 200.0)
ATMC_LRS = (0.05, 0.01, 0.005)
#: ATMC's ADMM weight (``rho=0.1`` in ``train_proj_admm_quant.py``) and Z/U interval
#: (``--quant_interval 10`` in the README's ATMC command).
ATMC_RHO = 0.1


class ATMC(Method):
    """ATMC: dense pre-training, the L0-projection stage, then the ADMM stage with quantization
    to ``bits`` (``None``: the kept weights stay in full precision and the last stage projects
    only), every stage with ATMC's loss; the last stage ends with the exact projection.

    ``allocation``: ``"global"`` (ATMC's own ``l0proj``: one budget across layers) or
    ``"adaptive"`` (exponent ``p``, default the comparison's: the paper's p = 0.1 row).
    ``admm="step"``: binprune 0.2's variant (cross-entropy on adversarial examples, ADMM pull
    ``atmc_penalty`` outside the loss, one stage from the AT model).
    """

    def __init__(self, *, bits: int | None, allocation: str = "global", p: float | None = None, admm: str = "loss",
                 **names: str | None):
        super().__init__(**names)
        if allocation not in ATMC_ALLOCATIONS:
            raise ValueError(f"unknown ATMC allocation {allocation!r}: choose one of {', '.join(ATMC_ALLOCATIONS)}")
        if admm not in ("loss", "step"):
            raise ValueError(f"admm must be 'loss' (ATMC's) or 'step', got {admm!r}")
        self.bits, self.allocation, self.p, self.admm = bits, allocation, p, admm

    def _kwargs(self, ctx: MethodContext) -> tuple[dict[str, Any], str]:
        cfg = ctx.config
        exponent = cfg.p if self.p is None else self.p
        kwargs = {"sparsity": cfg.sparsity, "allocation": self.allocation,
                  "p": exponent if self.allocation == "adaptive" else 1.0}
        return kwargs, allocation_tag(self.allocation, exponent)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        if self.admm == "step":
            return self._step_phases(ctx)
        cfg, bits = ctx.config, self.bits
        kwargs, tag = self._kwargs(ctx)
        total = sum(ATMC_EPOCHS)

        def finish(model: nn.Module, step_hook: Any) -> dict:
            return {"layers": step_hook.project(model)}

        pre = Phase("atmc-pretrain", start=ctx.base_model, build=copy.deepcopy, lr=ATMC_LRS[0], train=ATMC_TRAIN,
                    epochs=ATMC_EPOCHS[0], of_epochs=total)
        l0 = Phase(f"atmc-l0-{tag}", start=lambda: from_phase(ctx, pre),
                   build=lambda base: atmc_model(base, bits=None, **kwargs), lr=ATMC_LRS[1], train=ATMC_TRAIN,
                   hook=lambda model: ATMCProjection(model, bits=None, penalty=0.0, **kwargs), finish=finish,
                   epochs=ATMC_EPOCHS[1], of_epochs=total)

        def start_admm() -> nn.Module:
            projected, _ = ctx.run_phase(l0)
            model = ctx.base_model()
            model.load_state_dict(projected.state_dict())
            return model

        def hook(model: nn.Module) -> ATMCProjection:
            return ATMCProjection(model, bits=bits, penalty=0.0, rho=ATMC_RHO, admm_every=cfg.atmc_admm_every, **kwargs)

        name = f"atmc-{'fp' if bits is None else f'{bits}bit'}-{tag}"
        admm = Phase(name, start=start_admm, build=lambda base: atmc_model(base, bits=bits, **kwargs), lr=ATMC_LRS[2],
                     train=ATMC_TRAIN, hook=hook, finish=finish, epochs=ATMC_EPOCHS[2], of_epochs=total)
        return [pre, l0, admm]

    def _step_phases(self, ctx: MethodContext) -> list[Phase]:
        cfg, bits = ctx.config, self.bits
        kwargs, tag = self._kwargs(ctx)

        def hook(model: nn.Module) -> ATMCProjection:
            return ATMCProjection(model, bits=bits, penalty=cfg.atmc_penalty, admm_every=cfg.atmc_admm_every, **kwargs)

        def finish(model: nn.Module, step_hook: Any) -> dict:
            return {"layers": step_hook.project(model)}

        name = f"atmc-step-{'fp' if bits is None else f'{bits}bit'}-{tag}"
        return [pretraining_phase(ctx),
                Phase(name, start=lambda: from_pretrained(ctx), build=lambda base: atmc_model(base, bits=bits, **kwargs),
                      lr=cfg.finetune_lr, hook=hook, finish=finish)]


register_method("atmc-fp")(ATMC(bits=None, allocation="global", label="ATMC (FP), global", strategy="global",
                                precision="FP"))
register_method("atmc-binary")(ATMC(bits=1, allocation="global", label="ATMC (binary), global", strategy="global",
                                    precision="binary"))
register_method("atmc-fp-p0.1")(ATMC(bits=None, allocation="adaptive", label="ATMC (FP), p=0.1",
                                     strategy="adaptive p=0.1", precision="FP"))
register_method("atmc-binary-p0.1")(ATMC(bits=1, allocation="adaptive", label="ATMC (binary), p=0.1",
                                         strategy="adaptive p=0.1", precision="binary"))
