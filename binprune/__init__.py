"""binprune: robust binary subnetworks found by pruning randomly-initialized networks.

Weights are fixed random ±1 drawn from a seed and never trained; only a pruning mask is learned
(through per-weight scores and an exact per-layer top-k) with adversarial training. See README.md.
"""

from .analysis import analyze_masks, randomize_scores, write_inspection
from .checkpoint import CheckpointError, build_model, load_checkpoint, load_model, model_spec, save_checkpoint
from .compact import compact, compact_report, count_macs
from .convert import Subnetwork, convert_to_binary_supermask, finalize
from .data import ImageTensorDataset, load_dataset
from .evaluate import evaluate, robust_accuracy_from_autoattack, run_autoattack
from .export import footprint, load_packed, save_packed
from .leaderboard import (
    leaderboard_entry,
    load_robustbench_model,
    robustbench_architecture,
    robustbench_benchmark,
    run_robustbench_protocol,
)
from .models import Normalize, create_model, list_models, register_model
from .sparsity import (
    SparsitySchedule,
    allocate_keep_counts,
    allocate_keep_ratios,
    set_sparsity,
    sparsity_report,
)
from .sanity import sanity_checks
from .supermask import GlobalBudget, TopKMask, apply_mask, masked_tensors, topk_mask
from .train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "GlobalBudget",
    "ImageTensorDataset",
    "Normalize",
    "SparsitySchedule",
    "Subnetwork",
    "TopKMask",
    "TrainResult",
    "allocate_keep_counts",
    "allocate_keep_ratios",
    "analyze_masks",
    "apply_mask",
    "build_model",
    "compact",
    "compact_report",
    "convert_to_binary_supermask",
    "count_macs",
    "create_model",
    "finalize",
    "evaluate",
    "footprint",
    "leaderboard_entry",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "load_packed",
    "load_robustbench_model",
    "masked_tensors",
    "model_spec",
    "randomize_scores",
    "register_model",
    "robust_accuracy_from_autoattack",
    "robustbench_architecture",
    "robustbench_benchmark",
    "run_autoattack",
    "run_robustbench_protocol",
    "save_checkpoint",
    "save_packed",
    "set_sparsity",
    "sanity_checks",
    "sparsity_report",
    "topk_mask",
    "train",
    "write_inspection",
]
