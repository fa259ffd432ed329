"""A model file and a loader that RobustBench-style code can use without binprune installed.

``binprune export --format robustbench -o DIR`` writes three files:

* ``DIR/<name>.pt2``: the finalized network (masks folded into plain weights, ``Normalize``
  first, so inputs are images in [0, 1]) as a ``torch.export`` program with a dynamic batch
  axis. ``torch.export`` records the computation itself, so any architecture (binprune's own,
  torchvision's, timm's, a RobustBench zoo class, a user's factory) loads without its source.
* ``DIR/loader.py``: ``load_model(device)`` with plain torch only; the returned module gives the
  same logits as the binprune model (tested in a process where binprune cannot be imported).
* ``DIR/<name>.json``: the ``ModelInfo`` entry: the one ``binprune eval --robustbench`` wrote when
  given (``model_info=``), else the fields known without an evaluation, accuracies ``null``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..utils import write_json
from .onnx_export import default_input_shape, onnx_ready

__all__ = ["export_robustbench", "LOADER_TEMPLATE"]

LOADER_TEMPLATE = '''"""Loads {name} with plain torch (binprune is not needed).

    from loader import load_model
    model = load_model("cpu")   # input: images in [0, 1], shape (N, {channels}, {height}, {width}); output: logits

The network is a torch.export program written by binprune export --format robustbench: its masks
are folded into plain weights, its normalization is its first step, and it is in inference mode
(batch norms use their running statistics), so train()/eval() leave it as it is.
"""

import os

import torch
from torch import nn

MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "{file}")


class ExportedModel(nn.Module):
    """The exported program as an nn.Module (RobustBench calls .eval() and .to(device))."""

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = False  # fixed in inference mode when it was exported
        return self


def load_model(device: str = "cpu") -> nn.Module:
    return ExportedModel(torch.export.load(MODEL_FILE).module()).to(device)
'''


def export_robustbench(model: nn.Module, out_dir: str | os.PathLike, *, name: str,
                       input_shape: Sequence[int] | None = None, model_info: Mapping[str, Any] | None = None
                       ) -> dict[str, str]:
    """Write ``name``.pt2, loader.py and ``name``.json into ``out_dir``; returns their paths."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"model name {name!r}: use letters, digits, '-', '_' or '.' (it names the files)")
    from ..evaluation.robustbench import MODELINFO_FIELDS, architecture_name

    plain = onnx_ready(model, compact_model=False)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    example = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"model": str(out / f"{name}.pt2"), "loader": str(out / "loader.py"), "model_info": str(out / f"{name}.json")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(plain, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    tmp = Path(files["model"] + ".tmp")
    torch.export.save(program, tmp)
    os.replace(tmp, files["model"])
    loader = LOADER_TEMPLATE.format(name=name, file=f"{name}.pt2", channels=shape[0], height=shape[1], width=shape[2])
    tmp = Path(files["loader"] + ".tmp")
    tmp.write_text(loader)
    os.replace(tmp, files["loader"])
    if model_info is not None:
        missing = [f for f in MODELINFO_FIELDS if f not in model_info]
        if missing:
            raise ValueError(f"the model-info entry lacks ModelInfo's fields {missing[:4]}: pass the JSON that "
                             "'binprune eval --robustbench' wrote")
        entry = dict(model_info)
    else:
        entry = {field: None for field in MODELINFO_FIELDS}
        entry.update(name=name, architecture=architecture_name(model), number_forward_passes=1, additional_data=False)
        entry["binprune"] = {"note": "accuracies come from 'binprune eval --robustbench' (pass its entry with "
                                     "--model-info to include them)"}
    entry.setdefault("binprune", {})
    entry["binprune"] = {**entry["binprune"], "files": {"model": f"{name}.pt2", "loader": "loader.py"},
                         "input_shape": list(shape)}
    write_json(files["model_info"], json.loads(json.dumps(entry)))
    return files
