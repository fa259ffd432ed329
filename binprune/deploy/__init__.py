"""Deployment forms of a trained supermask model: the compact model (dead channels removed,
batch norms folded), run with dense or sparse kernels, its cost accounting, and ONNX export.
The packed kilobyte file format lives in :mod:`binprune.export`."""

from .compact import ENGINES, channel_groups, compact, compact_report, count_macs
from .kernels import load_sparse_kernels, release_sparse_memory, sparse_kernels_status
from .onnx_export import export_onnx
from .sparse import ALWAYS_SPARSE, DEFAULT_RULE, SparseRule, densify, sparse_plan, sparsify

__all__ = ["compact", "compact_report", "count_macs", "channel_groups", "ENGINES", "sparsify", "densify",
           "sparse_plan", "SparseRule", "DEFAULT_RULE", "ALWAYS_SPARSE", "load_sparse_kernels", "sparse_kernels_status",
           "release_sparse_memory", "export_onnx"]
