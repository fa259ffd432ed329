"""ONNX export of a binprune model for runtimes other than PyTorch (onnxruntime, TensorRT, ...).

The exported graph holds only standard operators (``Conv``, ``Gemm``, ``Relu``, ``Add``,
``GlobalAveragePool``, ...) with the masks folded into dense weights: ONNX has no operator for
a sparse convolution that runtimes execute as such, so the file runs anywhere at the dense
kernels' speed. A supermask model is compacted first (dead channels removed, batch norms
folded, :func:`binprune.compact`), so the graph is also smaller than the finalized network.
The legacy TorchScript exporter is used (``dynamo=False``): it needs only ``torch``, and the
``onnx`` package is not required to write the file (``onnxruntime`` checks it in the tests).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..convert import finalize
from ..spec import find_spec
from ..supermask import masked_tensors
from .compact import compact
from .sparse import densify

__all__ = ["export_onnx", "onnx_ready", "default_input_shape"]

DEFAULT_OPSET = 17


def onnx_ready(model: nn.Module, *, compact_model: bool = True) -> nn.Module:
    """The plain eval-mode model that is exported: compacted (or only finalized) if it has masks,
    sparse layers turned back into ``nn`` layers, the input left untouched."""
    if any(True for _ in masked_tensors(model)):
        plain = compact(model) if compact_model else finalize(model)
    else:
        plain = copy.deepcopy(model)
    plain = densify(plain).eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain


def default_input_shape(model: nn.Module, image_size: int = 32) -> tuple[int, int, int]:
    """``(channels, size, size)``: channels from the model's recipe (3 if it has none)."""
    recipe = find_spec(model).recipe or {}
    return int(recipe.get("in_channels", 3)), image_size, image_size


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
                example_input: torch.Tensor | None = None, opset: int = DEFAULT_OPSET,
                compact_model: bool = True) -> int:
    """Write ``model`` (supermask, finalized, or compact) as an ONNX file; returns its size in bytes.

    The batch axis is dynamic; the other input dimensions are those of ``example_input`` (or a
    random batch of shape ``(1, *input_shape)``, by default :func:`default_input_shape`). The
    input is named ``input`` and the output ``output``. ``compact_model=False`` exports the
    finalized network instead of the compact one (same outputs, more channels).
    """
    plain = onnx_ready(model, compact_model=compact_model)
    if example_input is None:
        shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
        example_input = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its successor
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(plain, (example_input,), str(tmp), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True)
    os.replace(tmp, path)
    return path.stat().st_size
