"""Experiments built on binprune's training and evaluation: :func:`compare` (binprune and its
baselines under one protocol, in one table; :mod:`.compare`)."""

from .compare import DEFAULT_METHODS, Runner, compare, list_methods, list_presets, resolve_preset, write_table

__all__ = ["DEFAULT_METHODS", "Runner", "compare", "list_methods", "list_presets", "resolve_preset", "write_table"]
