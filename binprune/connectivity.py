"""Whether a random mask leaves any path from the input to the output, and a remedy.

At 99% sparsity a random mask can empty every output channel of a thin layer, or every path of
a stage (its main branch and its shortcut), so the network gives the same output for every
input and no gradient reaches the masks before it (shufflenet_v2_x0_5 at initialization,
``benchmarks/results/torchvision_disconnected.json``). :func:`signal_report` finds
it by running two different inputs through the model and naming the masked layers whose input
still differs between the two but whose output no longer does, after which nothing does;
:func:`connect_output_channels` is the remedy offered: an initial mask that keeps at least one
weight in every output channel of every masked layer (its largest-score positive weight is
raised to the top; the layer keeps at least one weight per output channel), so every channel
carries signal from the start.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .adversary import frozen_batchnorm_stats
from .supermask import masked_tensors

__all__ = ["signal_report", "connect_output_channels"]


def _differs(out: Any) -> bool | None:
    """Whether the two examples of a batch give different values (``None``: not a tensor batch)."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != 2 or not out.is_floating_point():
        return None
    a, b = out[0].detach().float(), out[1].detach().float()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return bool((a - b).abs().max() > 1e-6 * scale)


def signal_report(model: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """Run two inputs (the first two examples of ``example_input``, made different if equal)
    through ``model`` as in training (batch norms normalize with the batch's statistics, their
    running statistics untouched; dropout off); ``{"connected", "cut_layers", "finite"}``: whether
    the output depends on the input, the masked layers after which nothing does, and whether the
    output is finite.

    Batch statistics, not the running ones: at initialization the running statistics are the
    identity, so in eval mode the activations of deep networks can grow until they overflow, which
    is not a cut path and disappears once training has updated them."""
    x = example_input[:2].detach().clone()
    if len(x) < 2:
        raise ValueError("signal_report needs a batch of at least two examples")
    if torch.equal(x[0], x[1]):
        x[1] = torch.rand_like(x[1])
    masked = {mt.module_name for mt in masked_tensors(model)}
    names = {id(m): n for n, m in model.named_modules()}
    events: list[tuple[str, bool | None, bool | None]] = []

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        first = inputs[0] if inputs else None
        events.append((names.get(id(module), "?"), _differs(first), _differs(output)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children()) or names[id(m)] in masked]
    was_training = model.training
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        with torch.no_grad(), frozen_batchnorm_stats(model):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
    finite = bool(torch.isfinite(logits).all()) if isinstance(logits, torch.Tensor) else True
    connected = bool(_differs(out))
    last_varying = max((i for i, (_, _, varies) in enumerate(events) if varies), default=-1)
    cut = [] if connected else [name for i, (name, into, varies) in enumerate(events)
                                 if i > last_varying and name in masked and into and varies is False]
    if not connected and not cut and 0 <= last_varying < len(events) - 1:
        # the signal died in a layer without a mask (a ReLU after a lone negative weight): name the
        # masked layer that fed it
        before = [name for name, _, _ in events[:last_varying + 1] if name in masked]
        cut = [f"{before[-1]} (then {events[last_varying + 1][0]})"] if before else [events[last_varying + 1][0]]
    return {"connected": connected, "cut_layers": list(dict.fromkeys(cut)), "finite": finite}


def connect_output_channels(model: nn.Module) -> int:
    """Raise the largest-score weight (a positive one where the channel has one) of every output
    channel of every masked layer above all other scores, so the initial mask keeps at least one weight per output channel (where the
    layer keeps at least as many weights as it has channels). Returns how many channels were
    empty before. Scores are changed in place; call it right after conversion."""
    revived = 0
    with torch.no_grad():
        for mt in masked_tensors(model):
            scores = mt.mask.scores
            if scores.dim() < 2:
                continue
            rows = scores.reshape(scores.shape[0], -1)
            revived += int((mt.mask.mask().reshape(rows.shape).sum(1) == 0).sum())
            weight = getattr(mt.module.parametrizations, mt.tensor_name).original.reshape(rows.shape)
            top = float(rows.abs().max())
            # a positive weight where the channel has one: after a ReLU the inputs are >= 0, so a
            # kept +1 passes their signal on, where a lone -1 would be cut by the next ReLU
            preference = torch.where(weight > 0, rows.abs() + top + 1.0, rows.abs())
            best = preference.argmax(1)
            picked = rows.gather(1, best[:, None])
            rows.scatter_(1, best[:, None], torch.where(picked >= 0, 1.0, -1.0) * (top * 1.5 + 1e-3))
    return revived
