"""Architectures of other libraries by name: ``torchvision:NAME``, ``timm:NAME``,
``robustbench:NAME`` and a user's own factory ``package.module:callable``.

:func:`binprune.create_model` builds these like its own architectures (``Normalize`` first, a
recipe in the spec), so checkpoints of such models rebuild from the file alone, with one
exception: a user's factory is code binprune would have to import, and nothing read from a file
decides which code runs. Its checkpoints load only once the user names the factory again
(``--arch package.module:callable`` on the command line, which imports it through
:func:`import_factory`) or registers it in code (``binprune.register_model(NAME)(fn)``).
The library names only select among the library's own registered builders.

Normalization: a timm model brings its own mean/std (its ``pretrained_cfg``); a RobustBench
model-zoo architecture normalizes inside itself where it needs to (binprune's ``Normalize`` is
then the identity); torchvision's architectures and user factories have none, so the data set's
mean/std are used.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any, Callable, Sequence

from torch import nn

__all__ = ["LIBRARIES", "is_external", "is_user_factory", "check_arch_name", "build_external", "own_normalization",
           "import_factory", "brings_normalization"]

LIBRARIES = ("torchvision", "timm", "robustbench")
_ROBUSTBENCH_DATASETS = {10: "cifar10", 100: "cifar100"}
_ROBUSTBENCH_THREATS = ("Linf", "L2", "corruptions")


def is_external(name: str) -> bool:
    """Whether ``name`` has the ``source:target`` form (another library's model or a factory)."""
    return ":" in name


def is_user_factory(name: str) -> bool:
    return is_external(name) and name.split(":", 1)[0] not in LIBRARIES


def check_arch_name(name: str) -> None:
    """Refuse a malformed ``source:target`` name, before any work."""
    source, _, target = name.partition(":")
    if not source or not target:
        raise ValueError(f"architecture {name!r}: write torchvision:NAME, timm:NAME, robustbench:NAME or "
                         "package.module:callable")
    if source == "timm" and importlib.util.find_spec("timm") is None:
        raise ValueError(f"architecture {name!r} needs timm, which is not installed: pip install \"binprune[timm]\"")
    if source == "robustbench" and importlib.util.find_spec("robustbench") is None:
        raise ValueError(f"architecture {name!r} needs robustbench, which is not installed: "
                         "pip install \"binprune[robustbench]\"")
    if source not in LIBRARIES and not all(part.isidentifier() for part in source.split(".") + target.split(".")):
        raise ValueError(f"architecture {name!r}: a factory is named package.module:callable (Python identifiers)")


def _torchvision(target: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    import torchvision.models as tvm

    if target not in tvm.list_models(module=tvm):
        import difflib

        close = difflib.get_close_matches(target, tvm.list_models(module=tvm), n=4)
        raise ValueError(f"torchvision has no classification model {target!r}"
                         + (f" (similar: {', '.join(close)})" if close else ""))
    if in_channels != 3:
        raise ValueError(f"torchvision:{target} takes 3-channel images, the data have {in_channels}: use a 3-channel "
                         "data set, or timm:NAME (timm adapts the first layer to any number of channels)")
    return tvm.get_model(target, weights=None, num_classes=num_classes, **kwargs)


def _timm(target: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    import timm

    if not timm.is_model(target):
        close = timm.list_models(f"*{target}*")[:4]
        raise ValueError(f"timm has no model {target!r}" + (f" (similar: {', '.join(close)})" if close else ""))
    return timm.create_model(target, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def _robustbench(target: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    from .compat import robustbench_modules

    if num_classes not in _ROBUSTBENCH_DATASETS or in_channels != 3 or kwargs:
        raise ValueError(f"robustbench:{target} is a CIFAR-10 or CIFAR-100 model-zoo architecture (3 channels, 10 "
                         f"or 100 classes, no options); got {num_classes} classes, {in_channels} channels")
    threat, _, name = target.rpartition("/")
    parts = robustbench_modules()
    dataset = parts.enums.BenchmarkDataset(_ROBUSTBENCH_DATASETS[num_classes])
    for tm in ([threat] if threat else _ROBUSTBENCH_THREATS):
        zoo = parts.model_zoo.model_dicts[dataset].get(parts.enums.ThreatModel(tm), {})
        if name in zoo:
            if isinstance(zoo[name].get("gdrive_id"), list):
                raise ValueError(f"robustbench:{target} is an ensemble of several checkpoints, which binprune does "
                                 "not build")
            return zoo[name]["model"]()
    raise ValueError(f"robustbench:{target} is not in RobustBench's {dataset.value} model zoo "
                     f"({', '.join([threat] if threat else _ROBUSTBENCH_THREATS)})")


def import_factory(name: str) -> Callable[..., nn.Module]:
    """Import the factory ``package.module:callable`` that the user named (command line or code),
    as a builder taking ``num_classes``/``in_channels`` where its signature has them."""
    check_arch_name(name)
    module_name, _, attr = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for --arch {name}: {exc} (is it on PYTHONPATH?)") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name} has no {attr!r} (from --arch {name})")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{name} is not callable")
    factory = target
    try:
        accepted = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        accepted = set()

    def build(*, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
        given = {"num_classes": num_classes, "in_channels": in_channels}
        model = factory(**{k: v for k, v in given.items() if k in accepted}, **kwargs)
        if not isinstance(model, nn.Module):
            raise ValueError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    build.__qualname__ = build.__name__ = f"factory[{name}]"
    return build


_BUILDERS = {"torchvision": _torchvision, "timm": _timm, "robustbench": _robustbench}


def build_external(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The network ``torchvision:NAME``, ``timm:NAME`` or ``robustbench:NAME`` (untrained)."""
    check_arch_name(name)
    source, _, target = name.partition(":")
    if source not in _BUILDERS:
        raise ValueError(f"architecture {name!r} is a user factory and is not registered: binprune does not import "
                         f"code a file names; pass --arch {name} (or binprune.register_model({name!r})(fn) in code)")
    return _BUILDERS[source](target, num_classes, in_channels, dict(kwargs))


def brings_normalization(name: str) -> bool:
    """Whether models of ``name`` bring their own mean/std (see :func:`own_normalization`)."""
    return name.partition(":")[0] in ("timm", "robustbench") and is_external(name)


def own_normalization(name: str, net: nn.Module, in_channels: int) -> tuple[Sequence[float], Sequence[float]] | None:
    """The mean/std a built network brings (timm's ``pretrained_cfg``; identity for RobustBench's
    zoo, which normalizes inside), or ``None`` when it has none of its own."""
    source = name.partition(":")[0]
    if source == "robustbench":
        return [0.0] * in_channels, [1.0] * in_channels
    if source == "timm":
        cfg = getattr(net, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean"), cfg.get("std")
        if mean is not None and std is not None and len(mean) == len(std) == in_channels:
            return [float(m) for m in mean], [float(s) for s in std]
    return None
