"""Input checks shared by the evaluation modules, and settings merged into a config.

Every check raises ``ValueError`` with a one-line message naming the setting, so the command line
can print it as is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, TypeVar

from ..config import NORMS, check_linf_eps
from ..utils import check_seed  # the one seed check, re-exported for the evaluation modules

__all__ = ["check_eps", "check_norm", "check_positive_int", "check_fraction", "check_seed", "with_settings"]

C = TypeVar("C")


def check_eps(eps: Any, name: str = "eps", *, user_linf: bool = False) -> float:
    """A budget: a finite number >= 0, as a float. ``user_linf``: a budget the user gave for the
    L-inf threat model, which above 1 was meant in 0-255 units and is refused with a hint."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    if user_linf:
        check_linf_eps(eps, name)
    return float(eps)


def check_norm(norm: Any) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    return norm


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return value


def with_settings(cls: type[C], config: C | None, settings: Mapping[str, Any], where: str) -> C:
    """``config`` (default: ``cls()``) with the fields named in ``settings`` replaced.

    Unknown names raise: a misspelt setting must not be silently ignored.
    """
    if config is not None and not isinstance(config, cls):
        raise ValueError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"unknown {where} setting(s) {', '.join(unknown)}: choose from {', '.join(names)}")
    return dataclasses.replace(config if config is not None else cls(), **settings)  # type: ignore[type-var]
