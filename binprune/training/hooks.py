"""Step hooks that ship with binprune (a hook runs after every optimizer step; see
:class:`binprune.training.StepHook`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..sparsity import SparsitySchedule, set_sparsity

__all__ = ["SparsityScheduleHook"]


class SparsityScheduleHook:
    """Re-allocate a supermask model's keep counts after every step, following a
    :class:`~binprune.sparsity.SparsitySchedule` (e.g. a cubic ramp from 0.5 to 0.99), so methods
    that prune gradually run through :func:`binprune.train`::

        hook = SparsityScheduleHook(SparsitySchedule(final=0.99, ramp_steps=1000, initial=0.5))
        binprune.train(net, data, eps=0.1, epochs=4, step_hook=hook)

    The sparsity is a function of the step alone, so the hook has no state to checkpoint.
    """

    def __init__(self, schedule: SparsitySchedule, *, allocation: str = "adaptive", p: float = 0.1):
        self.schedule, self.allocation, self.p = schedule, allocation, p

    def __call__(self, model: nn.Module, step: int) -> None:
        set_sparsity(model, self.schedule(step), allocation=self.allocation, p=self.p)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
