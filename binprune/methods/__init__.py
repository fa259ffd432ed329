"""Pruning and training methods as peers: binprune's own and the baselines it is compared with.

Every method implements :class:`Method` (:mod:`.base`): its label, pruning strategy, weight
precision and training phases, each built from a base model without changing it. The registry
(:func:`register_method`, :func:`get_method`, :func:`list_methods`) is what
:func:`binprune.experiments.compare` iterates; a user's method registers the same way.

- :mod:`.supermask`: binprune (learned masks over fixed random ±1 weights) and RST (Kaiming
  weights, uniform allocation);
- :mod:`.dense`: AT of the dense network, full precision or binary weights, full-size or small;
- :mod:`.hydra`: HYDRA (scores from pre-trained weights, then fine-tuning);
- :mod:`.atmc`: ATMC (projection and ADMM quantization);
- :mod:`.flyingbird`: Flying Bird (dynamic sparse adversarial training);
- :mod:`.measure`: weight layers, :func:`weight_sparsity`, and :func:`stored_size`, which finds
  the size formula of the method that built a model from the model's spec.

Importing this package registers the model transforms of the methods (``binary_weights``,
``hydra``, ``atmc``) with :func:`binprune.spec.register_transform`, so
:func:`binprune.load_model` rebuilds their checkpoints. Every transform returns a new model and
leaves its input unchanged.
"""

from .base import (
    Method,
    MethodContext,
    Outcome,
    Phase,
    allocation_tag,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)
from .measure import (
    coded_mask_bytes,
    count_params,
    effective_weights,
    other_float_values,
    register_stored_size,
    size_summary,
    stored_size,
    weight_counts,
    weight_layers,
    weight_sparsity,
)
from .dense import (
    BinaryWeight,
    DenseAT,
    LatentClip,
    binarize_weights,
    binary_dense_size,
    dense_size,
    width_factor_for_ratio,
)
from .hydra import Hydra, hydra_model, hydra_scores, hydra_size
from .atmc import ATMC, ATMCProjection, atmc_model, atmc_size, kmeans_codebook, quantize_with_zero
from .supermask import RST, BinpruneTrainer, Supermask, rst_model, supermask_size
from .flyingbird import DynamicSparsity, FlyingBird, flyingbird_model
from .dense import ConnectClip, ConnectSign, LastBatchNorm, at_model
from .hydra import Sehwag2019

__all__ = [
    # the interface and the registry
    "Method", "MethodContext", "Outcome", "Phase", "allocation_tag", "get_method", "list_methods",
    "register_method", "unregister_method",
    # measuring
    "coded_mask_bytes", "count_params", "effective_weights", "other_float_values", "register_stored_size",
    "size_summary", "stored_size", "weight_counts", "weight_layers", "weight_sparsity",
    # the methods and their transforms
    "ATMC", "ATMCProjection", "BinaryWeight", "DenseAT", "Hydra", "LatentClip", "RST", "Supermask",
    "atmc_model", "atmc_size", "binarize_weights", "binary_dense_size", "dense_size", "hydra_model", "hydra_scores",
    "hydra_size", "kmeans_codebook", "quantize_with_zero", "rst_model", "supermask_size", "width_factor_for_ratio",
    "BinpruneTrainer", "ConnectClip", "ConnectSign", "DynamicSparsity", "FlyingBird", "LastBatchNorm", "Sehwag2019",
    "at_model", "flyingbird_model",
]
