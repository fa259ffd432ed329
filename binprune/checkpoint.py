"""Checkpoint files: what they hold, how a model is rebuilt from them, and their errors.

A model built by binprune carries a :class:`binprune.spec.ModelSpec`: the architecture recipe
(from :func:`binprune.create_model`) and the transform applied to it (the supermask conversion, or
a method's own). A checkpoint stores the spec next to the ``state_dict``, so a model can be
rebuilt without the code that trained it. Transforms are rebuilt through the registry of
:mod:`binprune.spec`; this module knows only what is registered (binprune's own conversion
registers itself; :func:`binprune.load_model` also registers every method of
:mod:`binprune.methods`). Models binprune did not define have no recipe: pass the same base model.

Checkpoints hold only tensors and plain types (``torch.load(weights_only=True)`` works) and are
written atomically (temporary file + rename).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import model_from_recipe
from .spec import ModelSpec, known_transforms, register_transform, spec_owner, transform_builder
from .utils import atomic_torch_save, resolve_device

__all__ = [
    "CheckpointError", "model_spec", "build_model", "register_transform", "save_checkpoint",
    "load_checkpoint", "load_model", "load_state_dict_strict", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
]

CHECKPOINT_FORMAT = "binprune-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, of another format, or does not match a model."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The model that holds the spec, through wrappers that add no state of their own."""
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    owner, _ = spec_owner(module)
    if owner is module:
        return module
    inner = {id(t) for t in owner.state_dict(keep_vars=True).values()}
    extra = [k for k, t in module.state_dict(keep_vars=True).items() if id(t) not in inner]
    if extra:
        raise CheckpointError(
            f"{type(module).__name__} wraps a binprune model but adds state of its own ({', '.join(extra[:4])}): "
            "save the inner binprune model, or build the whole model with binprune.create_model/register_model")
    return owner


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The plain-dict form of ``model``'s :class:`~binprune.spec.ModelSpec` (found through wrappers)."""
    return spec_owner(_unwrap(model))[1].to_dict()


def build_model(spec: dict[str, Any] | ModelSpec, base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model (untrained values) from its spec.

    ``base_model`` replaces the recipe for models binprune did not define.
    """
    try:
        spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    except ValueError as exc:
        raise CheckpointError(f"invalid model spec: {exc}") from exc
    if base_model is not None:
        base = copy.deepcopy(base_model)
    elif spec.recipe is not None:
        base = model_from_recipe(dict(spec.recipe))
    else:
        raise CheckpointError(
            "this checkpoint's model was not built by binprune.create_model, so its architecture is not "
            "recorded: pass the same base model (base_model=... / the Python API)"
        )
    if spec.transform is None:
        return base
    name = spec.transform_name
    try:
        builder = transform_builder(name)
    except KeyError:
        raise CheckpointError(f"unknown model transform {name!r} in checkpoint; known: {', '.join(known_transforms())} "
                              "(binprune.load_model knows every method of binprune.methods)") from None
    return builder(base, **dict(spec.transform.get("kwargs", {})))


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
    module = _unwrap(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": spec_owner(module)[1].to_dict(),
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
    """Rebuild and load the model stored in a checkpoint (``.pt``), in eval mode.

    Knows the transforms registered so far. :func:`binprune.load_model` is what users call: it
    also reads packed ``.bpk`` files and registers every method of :mod:`binprune.methods` first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    with open(path, "rb") as fh:
        if fh.read(3) == b"BPK":
            raise CheckpointError(f"{path} is a packed .bpk file, not a checkpoint: load it with binprune.load_model")
    payload = load_checkpoint(path)
    model = build_model(payload["spec"], base_model=base_model)
    load_state_dict_strict(model, payload["model"], source=f"checkpoint {path}")
    return model.to(resolve_device(device)).eval()
