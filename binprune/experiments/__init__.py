"""Experiments built on binprune's training and evaluation: :func:`compare` (binprune and its
baselines under one protocol, in one table; :mod:`.compare`), with the evaluation protocol of
its rows (:mod:`.protocol`), parallel workers (:mod:`.parallel`) and seed / width sweeps
(:mod:`.sweeps`)."""

from .compare import DEFAULT_METHODS, Runner, compare, list_methods, list_presets, resolve_preset, write_table

__all__ = ["DEFAULT_METHODS", "Runner", "compare", "list_methods", "list_presets", "resolve_preset", "write_table"]
