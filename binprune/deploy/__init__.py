"""Deployment forms of a trained supermask model: the compact dense model (dead channels
removed, batch norms folded) and its cost accounting. The packed kilobyte file format lives in
:mod:`binprune.export`."""

from .compact import channel_groups, compact, compact_report, count_macs

__all__ = ["compact", "compact_report", "count_macs", "channel_groups"]
