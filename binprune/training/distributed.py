"""Multi-process training under ``torchrun``: process group setup and rank information."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..utils import resolve_device

__all__ = ["init_distributed_from_env", "dist_info"]


def init_distributed_from_env(device: str | torch.device = "auto") -> tuple[int, int]:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL when the device is CUDA, gloo otherwise. Returns ``(rank, world_size)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dev = resolve_device(device)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
