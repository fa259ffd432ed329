"""Model provenance: what built a model, as one value object that travels with it.

A :class:`ModelSpec` records the architecture recipe (the arguments of
:func:`binprune.create_model`, or ``None`` for a model binprune did not define) and the transform
applied to it (the supermask conversion, or a method's own: ``{"name", "kwargs"}``), in plain
types. The model that a builder returns holds its spec (:func:`attach_spec`); :func:`find_spec`
finds it again through any wrapper (a user's ``nn.Sequential``, ``torch.compile``,
``DistributedDataParallel``), and checkpoints and packed files store it next to the weights.

Transforms are rebuilt through a registry of builder functions (:func:`register_transform`):
binprune's supermask conversion registers itself, each method of :mod:`binprune.methods`
registers its own. A name read from a file only selects among registered builders; nothing is
imported because a file names it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["ModelSpec", "attach_spec", "find_spec", "spec_owner", "register_transform", "transform_builder", "known_transforms"]

_SPEC_ATTRIBUTE = "binprune_spec"


@dataclass(frozen=True)
class ModelSpec:
    """The recipe of the base architecture and the transform applied to it (plain values)."""

    recipe: Mapping[str, Any] | None = None
    transform: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": copy.deepcopy(dict(self.recipe)) if self.recipe is not None else None,
                "transform": copy.deepcopy(dict(self.transform)) if self.transform is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ModelSpec":
        """Parse the plain form (from a file: checked, since a file may hold anything)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or set(data) - {"recipe", "transform"}:
            raise ValueError(f"a model spec is a mapping with 'recipe' and 'transform', got {data!r}"[:300])
        recipe, transform = data.get("recipe"), data.get("transform")
        if recipe is not None and not (isinstance(recipe, Mapping) and isinstance(recipe.get("kwargs", {}), Mapping)):
            raise ValueError(f"a model spec's recipe is a mapping of create_model's arguments, got {recipe!r}"[:300])
        if transform is not None and (not isinstance(transform, Mapping) or not isinstance(transform.get("name"), str)):
            raise ValueError(f"a model spec's transform needs a 'name', got {transform!r}"[:300])
        if transform is not None and not isinstance(transform.get("kwargs", {}), Mapping):
            raise ValueError(f"a model spec's transform settings ('kwargs') are a mapping, got {transform!r}"[:300])
        return cls(copy.deepcopy(recipe), copy.deepcopy(transform))

    def with_transform(self, name: str, kwargs: Mapping[str, Any]) -> "ModelSpec":
        """This spec's recipe with transform ``name`` (a method applied to the base model)."""
        return ModelSpec(self.recipe, {"name": name, "kwargs": copy.deepcopy(dict(kwargs))})

    @property
    def transform_name(self) -> str | None:
        return self.transform.get("name") if self.transform is not None else None


def attach_spec(model: "nn.Module", spec: ModelSpec) -> "nn.Module":
    """Let ``model`` carry ``spec`` (returned by builders; survives ``copy.deepcopy``)."""
    object.__setattr__(model, _SPEC_ATTRIBUTE, spec)
    return model


def spec_owner(model: "nn.Module") -> tuple["nn.Module", ModelSpec]:
    """``(module, spec)``: ``model`` and its own spec, else the first submodule holding a spec (a
    wrapper such as ``torch.compile``'s or DDP's), else ``(model, ModelSpec())``."""
    for module in model.modules():
        spec = module.__dict__.get(_SPEC_ATTRIBUTE)
        if isinstance(spec, ModelSpec):
            return module, spec
    return model, ModelSpec()


def find_spec(model: "nn.Module", *, nested: bool = True) -> ModelSpec:
    """The spec of ``model``: its own, else (``nested``) that of the first submodule holding one,
    so wrappers keep it; an empty spec for a model binprune did not build."""
    if not nested:
        spec = model.__dict__.get(_SPEC_ATTRIBUTE)
        return spec if isinstance(spec, ModelSpec) else ModelSpec()
    return spec_owner(model)[1]


_TRANSFORMS: dict[str, Callable[..., "nn.Module"]] = {}


def register_transform(name: str) -> Callable[[Callable[..., "nn.Module"]], Callable[..., "nn.Module"]]:
    """Register ``fn(base_model, **kwargs) -> model`` so specs naming ``name`` can be rebuilt."""

    def wrap(fn: Callable[..., "nn.Module"]) -> Callable[..., "nn.Module"]:
        _TRANSFORMS[name] = fn
        return fn

    return wrap


def transform_builder(name: str) -> Callable[..., "nn.Module"]:
    """The registered builder of transform ``name`` (``KeyError`` when none is registered)."""
    return _TRANSFORMS[name]


def known_transforms() -> list[str]:
    return sorted(_TRANSFORMS)
