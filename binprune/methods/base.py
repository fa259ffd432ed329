"""The interface every pruning / training method implements, and the registry of methods.

A :class:`Method` is one row of a ``binprune compare`` table: binprune's own supermask training
and each baseline (AT, HYDRA, ATMC, RST) are peers under it. A method names its table label,
pruning strategy and weight precision, and lists its training :class:`Phase` objects; the
comparison (:func:`binprune.experiments.compare`) runs the phases through the trainer, in their
own folders, and reuses a finished phase for every method that lists the same phase name (HYDRA
and ATMC start from the dense AT model, for instance).

A phase is built from a base model it is given (:attr:`Phase.start`), never by changing that
model: :attr:`Phase.build` returns a new model (the transforms of :mod:`binprune.methods` all
return copies). An optional step hook runs after every optimizer step (ATMC's projection, the
latent clipping of binary weights), and :attr:`Phase.finish` runs on the trained model.

Registering a method (a user's included) makes it available to ``compare`` by name::

    @register_method("my-method")
    class MyMethod(Method):
        label, strategy, precision = "mine", "uniform", "binary"

        def phases(self, ctx):
            return [Phase("my-phase", start=ctx.base_model, build=my_transform, lr=ctx.config.lr)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar

from torch import nn

from .measure import stored_size

if TYPE_CHECKING:  # pragma: no cover
    from ..config import CompareConfig
    from ..training import StepHook

__all__ = ["Method", "Phase", "PHASE_SETTINGS", "Outcome", "MethodContext", "register_method", "unregister_method", "get_method",
           "list_methods", "allocation_tag"]


@dataclass(frozen=True)
class Phase:
    """One training phase of a method.

    Attributes:
        name: the phase's folder name; phases of the same name are one run, shared by the
            methods that list them (so a name must always stand for the same training).
        start: gives the base model that :attr:`build` transforms (e.g. the architecture, or a
            fresh copy holding pre-trained weights); called only when the phase is trained.
        build: ``build(base_model) -> model``: the model to train, a new module (``base_model``
            is left unchanged).
        lr: its learning rate.
        hook: ``hook(model) -> StepHook`` for the model :attr:`build` returned, or ``None``.
        finish: ``finish(model, step_hook) -> dict`` on the trained model (e.g. ATMC's final
            projection, in place), returning plain values recorded with the phase; or ``None``.
        train: the method's own training settings for this phase, as
            :class:`binprune.config.TrainConfig` fields (optimizer, weight decay, schedule, loss:
            ``attack="trades"``, ``clean_loss_weight``...); data, budget and seed are the
            comparison's and cannot be set here (:data:`PHASE_SETTINGS` lists what can).
        epochs: the phase's epochs in the method's published schedule (HYDRA: 100, 20, 100).
        of_epochs: the sum of ``epochs`` over the method's phases (HYDRA: 220). Under the equal
            budget a phase trains ``comparison epochs * epochs / of_epochs`` epochs' worth of
            optimizer steps; under the published budget, ``epochs``. ``None`` (both): the
            comparison's epochs.
    """

    name: str
    start: Callable[[], nn.Module]
    build: Callable[[nn.Module], nn.Module]
    lr: float
    hook: Callable[[nn.Module], "StepHook"] | None = None
    finish: Callable[[nn.Module, "StepHook | None"], dict] | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    epochs: float | None = None
    of_epochs: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(PHASE_SETTINGS)
        if unknown:
            raise ValueError(f"phase {self.name!r}: {sorted(unknown)} cannot differ between methods of a comparison; "
                             f"a phase sets only {', '.join(PHASE_SETTINGS)}")
        if (self.epochs is None) != (self.of_epochs is None):
            raise ValueError(f"phase {self.name!r}: give both epochs and of_epochs, or neither")
        if self.epochs is not None and not 0 < self.epochs <= self.of_epochs:
            raise ValueError(f"phase {self.name!r}: need 0 < epochs <= of_epochs, got {self.epochs}, {self.of_epochs}")

    def budget_epochs(self, total: float, budget: str) -> float:
        """Epochs this phase trains: its share of ``total`` (``"equal"``) or its published count
        (``"published"``)."""
        if self.epochs is None:
            return float(total)
        if budget == "published":
            return float(self.epochs)
        return float(total) * self.epochs / self.of_epochs


#: Training settings a method may set per phase (its own loss, optimizer and schedule).
PHASE_SETTINGS = ("optimizer", "momentum", "weight_decay", "schedule", "warmup_epochs", "attack", "attack_steps",
                  "alpha", "carry_perturbation", "attack_bn", "trades_beta", "clean_loss_weight")


@dataclass
class Outcome:
    """What a method hands back: its evaluated model, stored size, the records of the phases it
    used, and extra plain values for its result file."""

    model: nn.Module
    size: dict
    phases: list[dict]
    extra: dict = field(default_factory=dict)


class MethodContext(Protocol):
    """What a comparison offers a method (:class:`binprune.experiments.compare.Runner`)."""

    config: "CompareConfig"

    def base_model(self, width_factor: float = 1.0) -> nn.Module:
        """A fresh dense model of the comparison's architecture (widths times ``width_factor``)."""

    def small_width(self) -> tuple[float, float]:
        """``(width_factor, parameter ratio)`` of the small dense network."""

    def run_phase(self, phase: Phase) -> tuple[nn.Module, dict]:
        """Train ``phase`` (or resume it, or reuse its finished result): ``(model, record)``."""

    def phase_steps(self, phase: Phase) -> int:
        """Optimizer steps ``phase`` will train (its budget; for hooks that schedule by step)."""


class Method:
    """A pruning / training method: one row of a comparison table.

    Subclasses set :attr:`label`, :attr:`strategy` and :attr:`precision` (or pass them to
    ``__init__``) and implement :meth:`phases`; :meth:`run`, :meth:`stored_size` and
    :meth:`extra` have defaults. :attr:`name` is set by :func:`register_method`.
    """

    name: str = ""
    label: str = ""
    strategy: str = ""
    precision: str = ""
    #: whether the method trains the small dense network (the comparison then describes it)
    uses_small_network: bool = False

    def __init__(self, *, label: str | None = None, strategy: str | None = None, precision: str | None = None):
        if label is not None:
            self.label = label
        if strategy is not None:
            self.strategy = strategy
        if precision is not None:
            self.precision = precision

    def phases(self, ctx: MethodContext) -> list[Phase]:
        """The training phases, in order; the last one gives the evaluated model."""
        raise NotImplementedError(f"{type(self).__name__} must implement phases(ctx)")

    def run(self, ctx: MethodContext) -> Outcome:
        """Run every phase (reusing finished ones), then measure the last phase's model."""
        model, records = None, []
        for phase in self.phases(ctx):
            model, record = ctx.run_phase(phase)
            records.append(record)
        if model is None:
            raise ValueError(f"method {self.name or type(self).__name__!r} has no phase")
        return Outcome(model, self.stored_size(model), records, self.extra(ctx, model))

    def stored_size(self, model: nn.Module) -> dict:
        """Stored size in bytes (:func:`binprune.methods.measure.stored_size`, found from the
        model's spec)."""
        return stored_size(model)

    def extra(self, ctx: MethodContext, model: nn.Module) -> dict[str, Any]:
        """Extra plain values for the method's result file (e.g. the small network's width)."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '(unregistered)'}: {self.label}>"


def allocation_tag(allocation: str, p: float) -> str:
    """Short tag of an allocation in phase names: ``uniform``, ``global`` or ``p<exponent>``."""
    return {"uniform": "uniform", "global": "global"}.get(allocation, f"p{p:g}")


_METHODS: dict[str, Method] = {}

M = TypeVar("M")


def register_method(name: str, *, replace: bool = False) -> Callable[[M], M]:
    """Register a method under ``name``; returns a decorator taking a :class:`Method` instance or
    a :class:`Method` subclass (instantiated without arguments) and giving it back unchanged.

    Example:
        >>> register_method("hydra-fp-p0.5")(Hydra(binary=False, allocation="adaptive", p=0.5, label="HYDRA (FP), p=0.5",
        ...                                        strategy="adaptive p=0.5"))
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"a method name is a non-empty string without spaces, got {name!r}")

    def wrap(obj: M) -> M:
        method = obj() if isinstance(obj, type) else obj
        if not isinstance(method, Method):
            raise TypeError(f"register_method({name!r}) takes a Method instance or subclass, got {obj!r}")
        if name in _METHODS and not replace:
            raise ValueError(f"method {name!r} is registered already (pass replace=True to replace it)")
        method.name = name
        _METHODS[name] = method
        return obj

    return wrap


def unregister_method(name: str) -> None:
    """Remove method ``name`` from the registry (``KeyError`` when it is not registered)."""
    del _METHODS[name]


def get_method(name: str) -> Method:
    """The registered method ``name``."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(_METHODS)}")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_METHODS)
