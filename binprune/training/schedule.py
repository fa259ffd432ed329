"""The learning-rate schedule, per optimizer step."""

from __future__ import annotations

import math

from ..config import TrainConfig

__all__ = ["learning_rate"]


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step ``step``: optional linear warm-up, then cosine / step
    (x0.1 at 50% and 75%) / constant."""
    steps_per_epoch = total_steps / config.epochs
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    t = (step - warmup) / max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "step":
        return config.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    return config.lr
