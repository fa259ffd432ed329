"""Flying Bird (Chen et al., ICLR 2022, "Sparsity Winning Twice"): adversarial training of a
sparse network whose mask changes during training (dynamic sparse training).

As the reference (``VITA-Group/Sparsity-Win-Robust-Generalization``: ``main_adv.py --fb``,
``sparselearning/core.py``, ``utils.py``): the network starts sparse (a random mask at each
layer's density), the weights are trained with PGD adversarial training (SGD lr 0.1, momentum
0.9, weight decay 5e-4, x0.1 at epochs 100 and 150 of 200), the mask is applied after every
optimizer step (``Masking.step``), and every ``update_frequency`` steps (900; 1200 in the second
half with ``--dynamic_fre``) each layer drops the ``death_rate`` share of its kept weights with
the smallest magnitude (``magnitude_death``) and regrows as many at random positions
(``random_growth``; the regrown weights start at zero). The death rate decays from 0.5 to 0.005
over training by a cosine (``CosineDecay``). The update intervals are set as the same fractions
of the run as the reference's (900 and 1200 of its 200 x 391 steps), so a shorter run makes as
many mask updates.

What differs, and why: the initial layer densities are the comparison's allocation (binprune's
adaptive counts, exponent ``p``, or uniform) instead of the reference's ``igq`` rule, so every
pruned row of a table keeps the same per-layer budget. Flying Bird+ (``--fbp``) is not
implemented: its public code depends on ``args.dynamic_sparse``, which ``main_adv.py`` never
defines (docs/BASELINES.md).

Methods registered here: ``flyingbird`` (:class:`FlyingBird`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..sparsity import allocate_keep_counts, check_sparsity
from ..spec import attach_spec, find_spec, register_transform
from ..utils import stable_seed
from .atmc import atmc_size
from .base import Method, MethodContext, Phase, allocation_tag, register_method
from .measure import register_stored_size, weight_layers

__all__ = ["DynamicSparsity", "flyingbird_model", "FlyingBird", "FLYINGBIRD_TRAIN"]

#: the reference's schedule in steps: CIFAR-10, batch 128 (391 steps per epoch), 200 epochs
_REFERENCE_STEPS = 391 * 200
#: ``main_adv.py``: SGD lr 0.1, weight decay 5e-4, MultiStepLR at 100 and 150 of 200 (x0.1)
FLYINGBIRD_TRAIN = {"attack": "pgd", "weight_decay": 5e-4, "schedule": "step"}


def flyingbird_model(model: nn.Module, *, sparsity: float = 0.99, allocation: str = "adaptive",
                     p: float = 0.1) -> nn.Module:
    """A copy of a dense model tagged as a Flying Bird model (its masks live in
    :class:`DynamicSparsity`; the weights outside them are zero). ``model`` is not modified."""
    check_sparsity(sparsity)
    if allocation not in ("adaptive", "uniform"):
        raise ValueError(f"Flying Bird allocation must be 'adaptive' or 'uniform', got {allocation!r}")
    kwargs = {"sparsity": float(sparsity), "allocation": allocation, "p": float(p)}
    return attach_spec(copy.deepcopy(model), find_spec(model, nested=False).with_transform("flyingbird", kwargs))


@register_transform("flyingbird")
def _flyingbird_transform(base: nn.Module, **kwargs: Any) -> nn.Module:
    return flyingbird_model(base, **kwargs)


@register_stored_size("flyingbird")
def _flyingbird_size(model: nn.Module) -> dict:
    return atmc_size(model, None)


class DynamicSparsity:
    """Step hook: masks the weights after every step and prunes / regrows them periodically.

    Args:
        model: the dense model (its conv / linear weights are masked; the masks start random).
        sparsity, allocation, p: the per-layer kept counts (fixed through training).
        total_steps: optimizer steps of the run (death-rate cosine, update intervals).
        seed: seeds the initial masks and every regrowth.
        death_rate: initial share of kept weights replaced per update (0.5).
        frequencies: update intervals as shares of the reference's run (900, 1200 of 78,200
            steps): the first applies in the first half of training, the second after.
    """

    def __init__(self, model: nn.Module, *, sparsity: float, allocation: str = "adaptive", p: float = 0.1,
                 total_steps: int, seed: int = 0, death_rate: float = 0.5,
                 frequencies: tuple[int, int] = (900, 1200)):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps, self.seed, self.death_rate = int(total_steps), int(seed), float(death_rate)
        self.intervals = tuple(max(1, round(self.total_steps * f / _REFERENCE_STEPS)) for f in frequencies)
        weights = self.weights(model)
        self.counts = allocate_keep_counts([w.numel() for w in weights], check_sparsity(sparsity), p, allocation)
        gen = torch.Generator().manual_seed(stable_seed(seed, "flyingbird-init"))
        self.masks = []
        for w, k in zip(weights, self.counts):
            keep = torch.zeros(w.numel(), dtype=torch.bool)
            keep[torch.randperm(w.numel(), generator=gen)[:k]] = True
            self.masks.append(keep.view_as(w))
        self.step = 0
        self.updates = 0
        self.apply_masks(weights)

    @staticmethod
    def weights(model: nn.Module) -> list[torch.Tensor]:
        """The conv / linear weights the masks apply to, in model order."""
        weights = [m.weight for _, m in weight_layers(model)]
        if not weights:
            raise ValueError("the model has no Conv or Linear weight to sparsify")
        return weights

    @torch.no_grad()
    def apply_masks(self, weights: list[torch.Tensor]) -> None:
        """Zero the weights outside the current masks (in place)."""
        for w, m in zip(weights, self.masks):
            w.mul_(m.to(w.device))

    def current_death_rate(self) -> float:
        """The reference's ``CosineDecay``: from ``death_rate`` to 0.005 over the run."""
        t = min(self.step, self.total_steps) / self.total_steps
        return 0.005 + (self.death_rate - 0.005) * 0.5 * (1 + math.cos(math.pi * t))

    @torch.no_grad()
    def prune_and_regrow(self, weights: list[torch.Tensor]) -> None:
        """Each layer: drop the ``death rate`` share of its kept weights with the smallest
        magnitude, regrow as many at random free positions (new weights start at zero)."""
        rate = self.current_death_rate()
        gen = torch.Generator().manual_seed(stable_seed(self.seed, "flyingbird-grow", self.step))
        for i, (w, m) in enumerate(zip(weights, self.masks)):
            kept = int(m.sum())
            drop = min(math.ceil(rate * kept), kept, m.numel() - kept)
            if drop == 0:
                continue
            flat = m.flatten().clone()
            magnitude = w.detach().abs().flatten().cpu().float()
            magnitude[~flat] = float("inf")
            flat[torch.topk(magnitude, drop, largest=False).indices] = False
            free = (~flat).nonzero().flatten()  # the just-dropped positions included, as the reference
            flat[free[torch.randperm(len(free), generator=gen)[:drop]]] = True
            self.masks[i] = flat.view_as(m)
            w.mul_(self.masks[i].to(w.device))
        self.updates += 1

    def __call__(self, model: nn.Module, step: int) -> None:
        self.step = int(step)
        weights = self.weights(model)
        self.apply_masks(weights)
        interval = self.intervals[0] if self.step <= self.total_steps / 2 else self.intervals[1]
        if self.step % interval == 0 and self.step < self.total_steps:
            self.prune_and_regrow(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "updates": self.updates, "masks": [m.clone() for m in self.masks],
                "settings": {"counts": list(self.counts), "total_steps": self.total_steps, "seed": self.seed,
                             "death_rate": self.death_rate, "intervals": list(self.intervals)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()["settings"]
        if state.get("settings") != mine:
            raise ValueError(f"Flying Bird state was saved with settings {state.get('settings')}, not {mine}")
        self.step, self.updates = int(state["step"]), int(state["updates"])
        self.masks = [m.clone() for m in state["masks"]]


class FlyingBird(Method):
    """Flying Bird: dynamic sparse adversarial training from scratch (:class:`DynamicSparsity`),
    one phase of the reference's 200 epochs.

    ``p`` is the adaptive exponent of the layer budgets (default: the comparison's);
    ``allocation="uniform"`` keeps the same ratio in every layer."""

    EPOCHS = 200.0

    def __init__(self, *, allocation: str = "adaptive", p: float | None = None, **names: str | None):
        super().__init__(**names)
        self.allocation, self.p = allocation, p

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.config
        exponent = cfg.p if self.p is None else self.p
        kwargs = {"sparsity": cfg.sparsity, "allocation": self.allocation,
                  "p": exponent if self.allocation == "adaptive" else 1.0}
        phase_ref: list[Phase] = []

        def hook(model: nn.Module) -> DynamicSparsity:
            return DynamicSparsity(model, total_steps=ctx.phase_steps(phase_ref[0]), seed=cfg.seed, **kwargs)

        def finish(model: nn.Module, step_hook: Any) -> dict:
            step_hook.apply_masks(step_hook.weights(model))
            return {"mask_updates": step_hook.updates, "intervals": list(step_hook.intervals),
                    "kept": [int(m.sum()) for m in step_hook.masks]}

        phase = Phase(f"flyingbird-{allocation_tag(self.allocation, exponent)}", start=ctx.base_model,
                      build=lambda base: flyingbird_model(base, **kwargs), lr=0.1, train=FLYINGBIRD_TRAIN, hook=hook,
                      finish=finish, epochs=self.EPOCHS, of_epochs=self.EPOCHS)
        phase_ref.append(phase)
        return [phase]


register_method("flyingbird")(FlyingBird(allocation="adaptive", label="Flying Bird (dynamic sparse AT), p=0.1",
                                         strategy="adaptive p=0.1 (dynamic mask)", precision="FP"))
