"""Checkpoint files: what they hold, how a model is rebuilt from them, and their errors.

A model built by binprune carries a :class:`binprune.spec.ModelSpec`: the architecture recipe
(from :func:`binprune.create_model`) and the transform applied to it (the supermask conversion, or
a method's own). A checkpoint stores the spec next to the ``state_dict``, so a model can be
rebuilt without the code that trained it. Transforms are rebuilt through the registry of
:mod:`binprune.spec`; this module knows only what is registered (binprune's own conversion
registers itself; :func:`binprune.load_model` also registers every method of
:mod:`binprune.methods`). Models binprune did not define have no recipe: pass the same base model.

Checkpoints hold only tensors and plain types (``torch.load(weights_only=True)`` works), are
written atomically (temporary file + rename), and record a SHA-256 digest of their contents
(:func:`checkpoint_digest`): a byte changed inside a tensor makes loading fail with a
:class:`CheckpointError` naming the file instead of loading a different model. Files written by
binprune 0.1 have no digest and load unchecked.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .models import model_from_recipe
from .spec import ModelSpec, known_transforms, register_transform, spec_owner, transform_builder
from .utils import atomic_torch_save, resolve_device

__all__ = [
    "CheckpointError", "model_spec", "build_model", "register_transform", "save_checkpoint",
    "load_checkpoint", "load_model", "load_state_dict_strict", "checkpoint_digest", "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]

CHECKPOINT_FORMAT = "binprune-checkpoint"
CHECKPOINT_VERSION = 1
# Keys of the payload itself; save_checkpoint's extra entries may not use them.
_RESERVED_KEYS = ("format", "version", "spec", "model", "digest")


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
        try:
            base = model_from_recipe(dict(spec.recipe))
        except (ValueError, TypeError) as exc:  # an unknown architecture or option in the file
            raise CheckpointError(f"cannot rebuild the architecture: {_first_line(exc)}") from exc
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
    kwargs = spec.transform.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"the {name!r} transform's settings are not a mapping of names: {kwargs!r}"[:300])
    try:
        return builder(base, **dict(kwargs))
    except CheckpointError:
        raise
    except (ValueError, TypeError) as exc:  # settings this version refuses (see the message)
        raise CheckpointError(f"cannot rebuild the model's {name!r} transform: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (one-line errors), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:600] if text else type(exc).__name__


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


def _feed_tensor(h: Any, tensor: torch.Tensor) -> None:
    data = tensor.detach()
    if data.layout != torch.strided:
        data = data.to_dense()
    data = data.resolve_conj().resolve_neg().to("cpu").contiguous()
    h.update(f"T{data.dtype}{tuple(data.shape)}|".encode())
    if data.numel():
        h.update(data.reshape(-1).view(torch.uint8).numpy())


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` canonically: the same value after a ``torch.save``/``torch.load`` round trip
    (on any device) gives the same bytes; containers are tagged, tensors hashed by value."""
    if isinstance(obj, torch.Tensor):
        _feed_tensor(h, obj)
    elif isinstance(obj, Mapping):
        h.update(b"{%d|" % len(obj))
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d|" % len(obj))
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, (set, frozenset)):  # iteration order of a set changes between processes
        h.update(b"<%d|" % len(obj))
        for value in sorted(obj, key=repr):
            _feed(h, value)
    elif obj is None or isinstance(obj, bool):
        h.update(f"{obj!r}|".encode())
    elif isinstance(obj, int):
        h.update(f"i{int(obj)}|".encode())
    elif isinstance(obj, float):
        h.update(f"f{float(obj)!r}|".encode())
    elif isinstance(obj, (str, bytes)):
        h.update(f"s{str(obj)!r}|".encode() if isinstance(obj, str) else b"b%d|" % len(obj) + bytes(obj))
    else:  # torch.dtype, torch.device, complex, ...: a stable repr
        h.update(f"o{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}|".encode())


def checkpoint_digest(payload: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 digests of a checkpoint's contents: ``"model"`` over its state_dict (each key, then
    the tensor's dtype, shape and bytes, in key order) and ``"other"`` over everything else (spec,
    optimizer and training state), so that a changed byte anywhere is detected on loading."""
    model = hashlib.sha256(b"binprune-state_dict\n")
    _feed(model, payload.get("model"))
    other = hashlib.sha256(b"binprune-checkpoint\n")
    _feed(other, {k: v for k, v in payload.items() if k not in ("model", "digest")})
    return {"algorithm": "sha256", "model": model.hexdigest(), "other": other.hexdigest()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Atomically write ``model``'s spec and state_dict plus ``extra`` (plain types / tensors),
    with the digest that :func:`load_checkpoint` verifies.

    Raises ``ValueError`` when ``extra`` uses one of the payload's own keys, and
    :class:`binprune.utils.WriteError` when the file cannot be written.
    """
    clash = [k for k in extra if k in _RESERVED_KEYS]
    if clash:
        raise ValueError(f"save_checkpoint: {', '.join(clash)} is part of the checkpoint itself; name the entry differently")
    module = _unwrap(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": spec_owner(module)[1].to_dict(),
        "model": module.state_dict(),
        **extra,
    }
    payload["digest"] = checkpoint_digest(payload)
    atomic_torch_save(payload, path)


def _verify_digest(payload: dict[str, Any], path: Path) -> None:
    """Compare the recorded digest with the contents (files of binprune 0.1 have none)."""
    recorded = payload.get("digest")
    if recorded is None:
        return
    if not isinstance(recorded, Mapping) or recorded.get("algorithm") != "sha256":
        raise CheckpointError(f"{path} has an unreadable digest record ({str(recorded)[:80]}): the file is corrupted")
    actual = checkpoint_digest(payload)
    for part, what in (("model", "model weights (state_dict)"), ("other", "spec, optimizer or training state")):
        if recorded.get(part) != actual[part]:
            raise CheckpointError(
                f"{path} is corrupted: its {what} do not match the SHA-256 digest recorded when it was written "
                "(a changed byte); use another copy, or an earlier checkpoint")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with one-line errors for bad files:
    empty, truncated, of another format or version, or altered since it was written (digest)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): it was not written completely, or is not a checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupted, truncated or not a torch file "
                              f"({exc.__class__.__name__}: {_first_line(exc)[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a binprune checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; this binprune reads version {CHECKPOINT_VERSION}")
    if not isinstance(payload.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no model state (its 'model' entry is {type(payload.get('model')).__name__})")
    _verify_digest(payload, path)
    return payload


def _stored_precision(model: nn.Module, state: Mapping[str, Any]) -> nn.Module:
    """A model saved after ``.double()``/``.half()`` is rebuilt in float32: give it the stored
    floating dtype, so loading does not round its values (one dtype in the file only)."""
    stored = {v.dtype for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    own = {v.dtype for v in model.state_dict().values() if v.is_floating_point()}
    if len(stored) == 1 and own and own != stored:
        return model.to(next(iter(stored)))
    return model


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
    try:
        model = build_model(payload.get("spec"), base_model=base_model)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model = _stored_precision(model, payload["model"])
    load_state_dict_strict(model, payload["model"], source=f"checkpoint {path}")
    return model.to(resolve_device(device)).eval()
