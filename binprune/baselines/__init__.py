"""Baselines trained, attacked and measured in binprune's own framework (``binprune compare``).

Each module says what differs from the main method: :mod:`.dense` (AT of the dense network, full
precision or binary weights), :mod:`.hydra` (HYDRA), :mod:`.atmc` (ATMC), :mod:`.rst` (robust
scratch ticket), and :mod:`.compare` (the method registry, presets, table and chart; imported on its own, as
``binprune.baselines.compare``, since it pulls in evaluation and plotting). Importing
this package registers the model transforms (``binary_weights``, ``hydra``, ``atmc``) with
:func:`binprune.checkpoint.register_transform`, so :func:`binprune.load_model` rebuilds baseline
checkpoints.
"""

from .atmc import ATMCProjection, atmc_model, atmc_size, kmeans_codebook, quantize_with_zero
from .dense import (
    BinaryWeight,
    LatentClip,
    binarize_weights,
    binary_dense_size,
    dense_size,
    width_factor_for_ratio,
)
from .hydra import hydra_model, hydra_scores, hydra_size
from .rst import rst_model

__all__ = [
    "ATMCProjection",
    "BinaryWeight",
    "LatentClip",
    "atmc_model",
    "atmc_size",
    "binarize_weights",
    "binary_dense_size",
    "dense_size",
    "hydra_model",
    "hydra_scores",
    "hydra_size",
    "kmeans_codebook",
    "quantize_with_zero",
    "rst_model",
    "width_factor_for_ratio",
]

