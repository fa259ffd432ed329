"""Deprecated alias of :mod:`binprune.methods` (the baselines are methods among peers now).

``import binprune.baselines`` warns once (``DeprecationWarning``) and gives the same public names
as before, taken from :mod:`binprune.methods`; ``binprune.baselines.compare`` is likewise an
alias of :mod:`binprune.experiments.compare`.
"""

import warnings

from ..methods import (
    ATMCProjection,
    BinaryWeight,
    LatentClip,
    atmc_model,
    atmc_size,
    binarize_weights,
    binary_dense_size,
    dense_size,
    hydra_model,
    hydra_scores,
    hydra_size,
    kmeans_codebook,
    quantize_with_zero,
    rst_model,
    width_factor_for_ratio,
)

warnings.warn("binprune.baselines is deprecated: use binprune.methods", DeprecationWarning, stacklevel=2)

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
