"""Deprecated alias of :mod:`binprune.experiments.compare` (warns once on import).

The earlier names stay available: ``ComparePreset`` is :class:`binprune.config.CompareConfig`
(with the fields ``attack_steps``, ``test_examples`` and ``test_pgd_steps`` instead of ``steps``,
``eval_examples`` and ``pgd_steps``), ``PRESETS`` maps preset names to their configs, ``METHODS``
maps the registered method names to their :class:`binprune.methods.Method`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..config import CompareConfig as ComparePreset
from ..experiments.compare import DEFAULT_METHODS, compare, list_presets, resolve_preset, write_table
from ..methods import Method, get_method, list_methods

warnings.warn("binprune.baselines.compare is deprecated: use binprune.experiments.compare", DeprecationWarning,
              stacklevel=2)

__all__ = ["ComparePreset", "Method", "METHODS", "PRESETS", "DEFAULT_METHODS", "compare", "write_table",
           "resolve_preset", "list_presets"]


def __getattr__(name: str) -> Any:
    # Built on access, so they follow the presets on disk and the methods registered so far.
    if name == "PRESETS":
        return {n: resolve_preset(n) for n in list_presets(include_hidden=True)}
    if name == "METHODS":
        return {n: get_method(n) for n in list_methods()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
