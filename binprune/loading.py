"""Loading any model binprune wrote: checkpoints (``.pt``) and packed files (``.bpk``).

This sits above the core: it registers the transforms of every method in
:mod:`binprune.methods` (HYDRA, ATMC, binary weights, ...) before rebuilding, so a checkpoint of
any row of a ``compare`` table loads; :mod:`binprune.checkpoint` itself only knows what is
registered and never imports the methods.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import checkpoint, export
from . import methods  # noqa: F401  (registers the methods' model transforms)
from .utils import resolve_device

__all__ = ["load_model"]


def load_model(
    path: str | os.PathLike,
    *,
    base_model: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild and load the model stored in a checkpoint (``.pt``) or packed file (``.bpk``),
    in eval mode, on ``device``.

    ``base_model`` is needed only for a model that :func:`binprune.create_model` did not build
    (its architecture is then not recorded in the file).

    Example:
        >>> net = binprune.load_model("runs/quickstart/best.pt")
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    with open(path, "rb") as fh:
        packed = fh.read(3) == b"BPK"
    if not packed:
        return checkpoint.load_model(path, base_model=base_model, device=device)
    return export.load_packed(path, base_model=base_model).to(resolve_device(device)).eval()
