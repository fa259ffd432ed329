"""Checkpoint files: what they hold, how a model is rebuilt from them, and their errors.

A model built by binprune carries a *spec*: the architecture recipe (``binprune_recipe``, from
:func:`binprune.create_model`) and the transform applied to it (``binprune_transform``: the
supermask conversion, or a baseline's), both plain dicts. A checkpoint stores the spec next to
the ``state_dict``, so :func:`load_model` can rebuild the model without the code that trained it.
Models binprune did not define have no recipe: pass the same base model to :func:`load_model`.

Checkpoints hold only tensors and plain types (``torch.load(weights_only=True)`` works) and are
written atomically (temporary file + rename).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .models import model_from_recipe
from .utils import atomic_torch_save, resolve_device

__all__ = [
    "CheckpointError", "model_spec", "build_model", "register_transform", "save_checkpoint",
    "load_checkpoint", "load_model", "load_state_dict_strict", "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "binprune-checkpoint"
CHECKPOINT_VERSION = 1

_TRANSFORMS: dict[str, Callable[..., nn.Module]] = {}


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, of another format, or does not match a model."""


def register_transform(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(base_model, **kwargs) -> model`` so specs naming ``name`` can be rebuilt."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _TRANSFORMS[name] = fn
        return fn

    return wrap


def _supermask(base: nn.Module, **kwargs: Any) -> nn.Module:
    from .convert import convert_to_binary_supermask

    return convert_to_binary_supermask(base, **kwargs)


register_transform("supermask")(_supermask)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The plain-dict description from which :func:`build_model` rebuilds ``model``'s structure."""
    from .convert import Subnetwork

    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    recipe = getattr(module, "binprune_recipe", None)
    transform = getattr(module, "binprune_transform", None)
    if isinstance(module, Subnetwork):
        config = dict(module.config)
        recipe = config.pop("recipe", recipe)
        config.pop("finalized", None)
        transform = {"name": "supermask", "kwargs": config}
    return {"recipe": copy.deepcopy(recipe), "transform": copy.deepcopy(transform)}


def build_model(spec: dict[str, Any], base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model (untrained values) from :func:`model_spec`'s output.

    ``base_model`` replaces the recipe for models binprune did not define.
    """
    recipe, transform = spec.get("recipe"), spec.get("transform")
    if base_model is not None:
        base = copy.deepcopy(base_model)
    elif recipe is not None:
        base = model_from_recipe(recipe)
    else:
        raise CheckpointError(
            "this checkpoint's model was not built by binprune.create_model, so its architecture is not "
            "recorded: pass the same base model (base_model=... / the Python API)"
        )
    if transform is None:
        return base
    name = transform.get("name")
    if name not in _TRANSFORMS:
        # Baselines register their transforms on import.
        from . import baselines  # noqa: F401
    if name not in _TRANSFORMS:
        raise CheckpointError(f"unknown model transform {name!r} in checkpoint; known: {', '.join(sorted(_TRANSFORMS))}")
    model = _TRANSFORMS[name](base, **transform.get("kwargs", {}))
    if recipe is not None and getattr(model, "binprune_recipe", None) is None:
        model.binprune_recipe = copy.deepcopy(recipe)
    return model


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """``load_state_dict`` that never drops keys: any missing, unexpected or mis-shaped key raises
    :class:`CheckpointError` naming them."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} in {source} vs {tuple(own[k].shape)} in model"
        for k in own if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
        raise CheckpointError(f"the {source} does not match the model: " + " | ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Atomically write ``model``'s spec and state_dict plus ``extra`` (plain types / tensors)."""
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": model_spec(module),
        "model": module.state_dict(),
        **extra,
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupted, truncated or not a torch file ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a binprune checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; this binprune reads version {CHECKPOINT_VERSION}")
    return payload


def load_model(
    path: str | os.PathLike,
    *,
    base_model: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild and load the model stored in a checkpoint (or a packed ``.bpk`` file), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"BPK"):
        from .export import load_packed

        model = load_packed(path, base_model=base_model)
    else:
        payload = load_checkpoint(path)
        model = build_model(payload["spec"], base_model=base_model)
        load_state_dict_strict(model, payload["model"], source=f"checkpoint {path}")
    return model.to(resolve_device(device)).eval()
