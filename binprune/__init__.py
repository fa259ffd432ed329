"""binprune: robust binary subnetworks found by pruning randomly-initialized networks.

Weights are fixed random ±1 drawn from a seed and never trained; only a pruning mask is learned
(through per-weight scores and an exact per-layer top-k) with adversarial training. See README.md
and docs/ARCHITECTURE.md.

``import binprune`` is cheap: each public name loads its module (and torch) on first use, so the
command line answers ``--help`` without importing torch.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # configs and results
    "ModelConfig": "config", "DataConfig": "config", "TrainConfig": "config", "RunConfig": "config",
    "EvalConfig": "config", "SanityConfig": "config", "CompareConfig": "config",
    "AttackResult": "results", "EvalReport": "results", "TrainResult": "results", "ComparisonRow": "results",
    "ModelSpec": "spec",
    # convert -> allocate
    "Normalize": "models", "create_model": "models", "list_models": "models", "register_model": "models",
    "Subnetwork": "convert", "convert_to_binary_supermask": "convert", "finalize": "convert",
    "allow_type": "convert", "DisconnectedMaskWarning": "convert", "signal_report": "connectivity",
    "register_factory": "models",
    "GlobalBudget": "supermask", "TopKMask": "supermask", "apply_mask": "supermask",
    "masked_tensors": "supermask", "topk_mask": "supermask",
    "SparsitySchedule": "sparsity", "allocate_keep_counts": "sparsity", "allocate_keep_ratios": "sparsity",
    "set_sparsity": "sparsity", "sparsity_report": "sparsity",
    # data
    "ImageTensorDataset": "data", "ImageFolderDataset": "data", "load_dataset": "data", "ExampleView": "views",
    # train
    "train": "training", "StepHook": "training", "SparsityScheduleHook": "training",
    # evaluate
    "evaluate": "evaluation", "robust_accuracy_from_autoattack": "evaluation", "run_autoattack": "evaluation",
    "sanity_checks": "evaluation", "register_attack": "evaluation", "register_check": "evaluation",
    "leaderboard_entry": "evaluation", "load_robustbench_model": "evaluation",
    "robustbench_architecture": "evaluation", "robustbench_benchmark": "evaluation",
    "run_robustbench_protocol": "evaluation",
    # export, deploy, checkpoints
    "CheckpointError": "checkpoint", "build_model": "checkpoint", "load_checkpoint": "checkpoint",
    "model_spec": "checkpoint", "save_checkpoint": "checkpoint", "load_model": "loading",
    "footprint": "export", "load_packed": "export", "save_packed": "export",
    "compact": "deploy", "compact_report": "deploy", "count_macs": "deploy",
    # analysis
    "analyze_masks": "analysis", "randomize_scores": "analysis", "write_inspection": "analysis",
    # methods and comparison
    "register_method": "methods", "list_methods": "methods", "stored_size": "methods",
    "compare": "experiments",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'binprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _deprecated(old: str, new: str) -> None:
    """Warn once per process that ``old`` is replaced by ``new``."""
    key = f"_warned_{old}"
    if not globals().get(key):
        globals()[key] = True
        warnings.warn(f"{old} is deprecated and will be removed in the next release: use {new}",
                      DeprecationWarning, stacklevel=3)
