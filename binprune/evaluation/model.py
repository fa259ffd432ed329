"""The model side of an evaluation: which form is attacked, frozen parameters, seeded randomness,
and clean predictions.

Attacks only need input gradients, so parameters are frozen while they run; the caller's
train/eval modes and ``requires_grad`` flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..adversary import rng_devices
from ..convert import finalize
from ..sparsity import sparsity_report
from ..supermask import masked_tensors
from .progress import ProgressReporter

__all__ = ["prepare_model", "describe_model", "output_warnings", "frozen_parameters", "preserved_modes", "seeded_rng",
           "model_logits", "correct_flags"]


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be logits of shape ``(N, num_classes)``."""
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits of shape (N, num_classes), got {shape}")
    return out


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter needs a gradient inside the block (attacks only need input gradients; FAB
    calls ``backward``, which would otherwise accumulate into every ``.grad``)."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextlib.contextmanager
def preserved_modes(model: Any) -> Iterator[None]:
    """Restore every submodule's train/eval flag on exit (evaluation switches to eval mode; a
    caller evaluating in the middle of training must get its train mode back)."""
    saved = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


@contextlib.contextmanager
def seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the CPU generator and ``device``'s generator inside a fork of both."""
    devices = rng_devices(device)
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def prepare_model(model: nn.Module, probe: torch.Tensor, *, device: torch.device, fast: bool = True) -> tuple[nn.Module, dict]:
    """Move ``model`` to ``device`` in eval mode and pick the form used for evaluation.

    A supermask model is replaced by its :func:`binprune.finalize` copy only if that copy's
    outputs on ``probe`` are bit-identical; the returned dict says which form was used and why.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    model.to(device).eval()
    if not any(True for _ in masked_tensors(model)):
        return model, {"form": "as given", "supermask": False}
    info: dict[str, Any] = {"supermask": True}
    if not fast:
        info.update(form="supermask", reason="fast=False (masks are cached, computed once)")
        return model, info
    try:
        plain = finalize(model).to(device).eval()
    except (ValueError, TypeError, RuntimeError) as exc:
        info.update(form="supermask", reason=f"finalize failed: {exc}")
        return model, info
    probe = probe.to(device)
    with torch.no_grad():
        reference, candidate = model_logits(model, probe), model_logits(plain, probe)
    if reference.shape == candidate.shape and torch.equal(reference, candidate):
        info.update(form="finalized", reason=f"plain layers; outputs bit-identical on {len(probe)} probe examples")
        return plain, info
    diff = (reference - candidate).abs().max().item() if reference.shape == candidate.shape else float("nan")
    info.update(form="supermask", reason=f"finalized outputs differ (max abs diff {diff:.3g}); kept the masked model")
    return model, info


def output_warnings(model: nn.Module, probe: torch.Tensor, device: torch.device) -> list[str]:
    """What makes gradient-based attacks unreliable on this model, found on ``probe``: a random
    forward (two passes disagree) or probability outputs (a saturated softmax masks gradients).
    Checked for every evaluation, whichever attacks run."""
    probe = probe.to(device)
    with torch.no_grad(), torch.random.fork_rng(devices=rng_devices(device)):
        first, second = model_logits(model, probe), model_logits(model, probe)
    found = []
    if first.shape != second.shape or not torch.equal(first, second):
        diff = (first - second).abs().max().item() if first.shape == second.shape else float("nan")
        found.append(f"the model is random: the same inputs gave different outputs (max abs difference {diff:.3g}); "
                     "attack results are unreliable: make the forward deterministic or use an EOT attack")
    if first.dim() == 2 and bool(((first >= 0) & (first <= 1)).all()) \
            and bool(torch.allclose(first.sum(1), torch.ones(len(first), device=first.device), atol=1e-4)):
        found.append("the model outputs probabilities (rows in [0, 1] summing to 1), not logits: a saturated softmax "
                     "masks gradients; return the logits instead")
    return found


def describe_model(model: nn.Module, info: dict) -> dict:
    """``info`` from :func:`prepare_model` plus the model's class and parameter counts."""
    info["class"] = type(model).__name__
    if info["supermask"]:
        report = sparsity_report(model)
        info.update(sparsity=report.sparsity, kept_params=report.kept_params, total_params=report.total_params)
    else:
        info["total_params"] = sum(p.numel() for p in model.parameters())
    return info


def correct_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, device: torch.device,
                  progress: ProgressReporter | None = None) -> torch.Tensor:
    """Per-example ``argmax(model(x)) == y`` (bool, on the CPU), batch by batch."""
    flags = torch.zeros(len(x), dtype=torch.bool)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model_logits(model, x[start:start + batch_size].to(device))
            yb = y[start:start + batch_size].to(device)
            if int(yb.max()) >= logits.shape[1]:
                raise ValueError(f"label {int(yb.max())} is out of range for a model with {logits.shape[1]} outputs")
            flags[start:start + batch_size] = (logits.argmax(1) == yb).cpu()
            if progress is not None:
                progress.advance()
    return flags
