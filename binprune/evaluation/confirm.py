"""Attack a faster equivalent model, then confirm every result on the model itself.

Attacks are most of an evaluation's cost, and nearly all of it is forward and backward passes.
:func:`binprune.compact` computes the same function as a trained supermask model (masks folded,
batch norms folded, dead channels removed) up to float rounding, in fewer operations. The
protocol that lets an evaluation attack it and still report the model's own numbers:

1. :func:`equivalent_model`: the compact copy is used only if, on *every* evaluated input, its
   logits are within ``tolerance * max(1, largest logit)`` of the model's; otherwise the model
   itself is attacked, and the record says why.
2. The attack runs on the compact copy. Each adversarial example is checked against the threat
   model and classified by the model itself (:func:`confirm`): where the model is fooled, the
   example is broken, whatever the copy said.
3. An example that fooled the copy but not the model (it did not transfer, or the copy was
   already wrong on the clean input) is attacked again on the model itself, with the same attack;
   that outcome counts.
4. An example the attack did not break on the copy and that the model classifies correctly stays
   robust: the attack failed on a function equal to the model's within the tolerance.

Every example counted as broken is therefore broken on the model; clean accuracy is always the
model's. Only step 4 relies on the equivalence (an attack on the model itself might have found
an example the attack on the copy missed, as a different random start might);
``benchmarks/fast_eval.py`` measures how often the flags differ from attacking the model
directly. The counts of each step are recorded in the attack's result (``attack_form``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..deploy import compact
from .autoattack import autoattack_result, check_threat_model, execute_autoattack, setup_autoattack
from .model import correct_flags, model_logits
from .progress import ProgressReporter

__all__ = ["AttackForm", "equivalent_model", "confirm", "transfer_counts", "autoattack_confirmed"]


@dataclass
class AttackForm:
    """The model an attack runs on in place of the evaluated one, with its clean flags."""

    model: nn.Module
    clean: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _logit_gap(model: nn.Module, candidate: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
               device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Largest absolute logit difference, largest absolute logit, and the candidate's clean flags."""
    gap, scale = 0.0, 0.0
    flags = torch.zeros(len(x), dtype=torch.bool)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            ref, out = model_logits(model, xb), model_logits(candidate, xb)
            if ref.shape != out.shape:
                return float("inf"), 0.0, flags
            gap = max(gap, float((ref - out).abs().max()))
            scale = max(scale, float(ref.abs().max()))
            flags[start:start + batch_size] = (out.argmax(1).cpu() == y[start:start + batch_size])
    return gap, scale, flags


def equivalent_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tolerance: float, engine: str,
                     batch_size: int, device: torch.device) -> tuple[AttackForm | None, dict]:
    """``binprune.compact(model, engine)`` if its logits agree with ``model``'s on all of ``x``
    within ``tolerance * max(1, largest logit)``; else ``None``. The dict says which and why."""
    started = time.perf_counter()
    try:
        candidate = compact(model, engine=engine).to(device).eval()
    except (ValueError, TypeError, RuntimeError, NotImplementedError, KeyError, AttributeError) as exc:
        return None, {"attacked": "model", "reason": f"compact() failed: {type(exc).__name__}: {exc}"}
    gap, scale, flags = _logit_gap(model, candidate, x, y, batch_size, device)
    limit = tolerance * max(1.0, scale)
    info = {"engine": engine, "max_logit_difference": gap, "largest_logit": scale, "limit": limit,
            "tolerance": tolerance, "checked_examples": len(x), "seconds": round(time.perf_counter() - started, 3)}
    if not gap <= limit:
        return None, {**info, "attacked": "model",
                      "reason": f"compact outputs differ by {gap:.3g} > {limit:.3g}: attacked the model itself"}
    info.update(attacked="compact", reason=f"compact outputs within {limit:.3g} on all {len(x)} evaluated inputs; "
                                           "every adversarial example confirmed on the model")
    return AttackForm(candidate, flags, info), info


def confirm(model: nn.Module, form: AttackForm, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *,
            eps: float, norm: str, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example of ``x_adv`` (crafted on ``form.model``): ``(model correct, copy correct)``.
    ``x_adv`` must lie in the threat model around ``x`` (``ValueError`` otherwise)."""
    check_threat_model(x.detach().cpu(), x_adv.detach().cpu(), eps=eps, norm=norm)
    own = correct_flags(model, x_adv, y, batch_size=batch_size, device=device)
    copy = correct_flags(form.model, x_adv, y, batch_size=batch_size, device=device)
    return own, copy


def transfer_counts(clean: torch.Tensor, copy_robust: torch.Tensor, own_correct: torch.Tensor) -> dict[str, Any]:
    """How the copy's outcome carried over, for the examples ``clean`` on the model: the
    examples the copy counted broken, those confirmed on the model, those to re-attack (as a
    tensor under ``"retry"``), and those broken on the model although the copy held."""
    broken_on_copy = clean & ~copy_robust
    return {"broken_on_compact": int(broken_on_copy.sum()), "confirmed": int((broken_on_copy & ~own_correct).sum()),
            "not_transferred": int((broken_on_copy & own_correct).sum()),
            "broken_only_on_model": int((clean & copy_robust & ~own_correct).sum()),
            "retry": (broken_on_copy & own_correct).nonzero().flatten()}


def autoattack_confirmed(model: nn.Module, form: AttackForm, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                         *, run_on_model: Callable[[torch.Tensor, torch.Tensor], tuple[dict, torch.Tensor]],
                         eps: float, norm: str, version: str, attacks: Any, iterations: int | None,
                         square_queries: int | None, batch_size: int, device: torch.device, seed: int,
                         progress: ProgressReporter) -> tuple[dict, torch.Tensor]:
    """AutoAttack on ``form.model``, confirmed on ``model``; ``run_on_model(x, y)`` re-attacks the
    examples that did not transfer. Returns the result dict (the copy's per-attack record, the
    model's accuracy, ``attack_form`` with the counts) and the model's robust flags."""
    started = time.perf_counter()
    x, y = x.detach().cpu(), y.detach().cpu()
    with torch.no_grad():
        n_classes = model_logits(form.model, x[:1].to(device)).shape[1]
    adversary, settings = setup_autoattack(form.model, n_classes, eps=eps, norm=norm, version=version,
                                           attacks=attacks, iterations=iterations, square_queries=square_queries,
                                           batch_size=batch_size, device=device, seed=seed)
    label = f"autoattack-{version}" if version != "standard" else "autoattack"
    run = execute_autoattack(adversary, form.model, x, y, batch_size=batch_size, device=device, progress=progress,
                             label=f"{label} (compact)")
    result, copy_robust = autoattack_result(form.model, x, y, form.clean, run, settings, eps=eps, norm=norm,
                                            batch_size=batch_size, device=device)
    own_correct, _ = confirm(model, form, x, run.x_adv, y, eps=eps, norm=norm, batch_size=batch_size, device=device)
    robust = clean & own_correct
    counts = transfer_counts(clean, copy_robust, own_correct)
    retry = counts.pop("retry")
    reattack: dict[str, Any] = {}
    if len(retry):
        sub, flags = run_on_model(x[retry], y[retry])
        robust[retry] = flags
        reattack = {k: v for k, v in sub.items() if k not in ("log", "robust_flags")}
    n = len(x)
    result.update(
        accuracy=int(robust.sum()) / n, robust_examples=int(robust.sum()), clean_accuracy=int(clean.sum()) / n,
        accuracy_on_returned_examples=int(own_correct.sum()) / n, time_s=round(time.perf_counter() - started, 3),
        attack_form={**form.info, **counts, "reattacked": len(retry),
                     "broken_by_reattack": int(len(retry) - int(robust[retry].sum())), "reattack": reattack,
                     "note": "per_attack, per_attack_consistent and predictions_match_autoattack describe the run "
                             "on the compact model; accuracy and robust_flags are the model's"})
    return result, robust
