"""binprune: robust binary subnetworks found by pruning randomly-initialized networks.

Weights are fixed random ±1 drawn from a seed and never trained; only a pruning mask is learned
(through per-weight scores and an exact per-layer top-k) with adversarial training. See README.md.
"""

from .convert import Subnetwork, convert_to_binary_supermask, finalize
from .data import ImageTensorDataset, load_dataset
from .models import Normalize, create_model, list_models, register_model
from .sparsity import (
    SparsitySchedule,
    allocate_keep_counts,
    allocate_keep_ratios,
    set_sparsity,
    sparsity_report,
)
from .supermask import GlobalBudget, TopKMask, apply_mask, masked_tensors, topk_mask

__version__ = "0.1.0"

__all__ = [
    "GlobalBudget",
    "ImageTensorDataset",
    "Normalize",
    "SparsitySchedule",
    "Subnetwork",
    "TopKMask",
    "allocate_keep_counts",
    "allocate_keep_ratios",
    "apply_mask",
    "convert_to_binary_supermask",
    "create_model",
    "finalize",
    "list_models",
    "load_dataset",
    "masked_tensors",
    "register_model",
    "set_sparsity",
    "sparsity_report",
    "topk_mask",
]
