"""Sanity checks against gradient masking and broken evaluations.

A robustness number is only as good as the attack behind it. Models that mask gradients (or an
evaluation with a bug) show tell-tale inconsistencies, which these checks look for (after
Carlini et al., 2019, "On Evaluating Adversarial Robustness", and AutoAttack's own flags):

``attack_order``
    AutoAttack <= PGD <= clean accuracy: the strongest attack finds the most.
``eps_zero_equals_clean``
    PGD with ``eps = 0`` gives exactly the clean accuracy.
``eps_sweep_non_increasing``
    accuracy never rises as ``eps`` grows (within ``tolerance``).
``large_eps_near_zero``
    at a budget that can turn any image into any other one (0.5 L-inf; ``0.5 * sqrt(d)`` L2)
    accuracy is about 0 (at most ``large_eps_max_accuracy``).
``more_steps_not_better`` / ``more_restarts_not_better``
    5x the PGD steps, or several restarts, never leave more examples standing (within
    ``tolerance``); the restarts use other random starts than the reference run.
``square_not_better_than_white_box``
    the black-box Square attack does not break many examples the gradient-based attacks
    missed (at most ``square_margin``): from AutoAttack's per-attack counts when it ran Square
    after its white-box attacks, otherwise Square alone against PGD.

Each check reports ``passed`` with the numbers it compared.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch
from torch import nn

from .evaluate import (
    _check_eps,
    _check_norm,
    _check_positive_int,
    _Progress,
    _batches,
    _rng_devices,
    correct_flags,
    evaluate,
    evaluation_tensors,
    frozen_parameters,
    pgd_robust_flags,
    prepare_model,
)
from .utils import resolve_device

__all__ = ["sanity_checks", "SANITY_CHECKS"]

SANITY_CHECKS = (
    "attack_order", "eps_zero_equals_clean", "eps_sweep_non_increasing", "large_eps_near_zero",
    "more_steps_not_better", "more_restarts_not_better", "square_not_better_than_white_box",
)
_WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")


def _check(name: str, passed: bool, description: str, **numbers: Any) -> dict:
    return {"name": name, "passed": bool(passed), "description": description, "numbers": numbers}


def _autoattack_entry(results: dict) -> tuple[str, dict] | tuple[None, None]:
    for key in ("autoattack", "autoattack-plus", "autoattack-rand", "autoattack-custom"):
        if key in results.get("attacks", {}):
            return key, results["attacks"][key]
    return None, None


def sanity_checks(
    model: nn.Module,
    data: Any,
    eps: float,
    *,
    norm: str = "Linf",
    results: dict | None = None,
    n_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    seed: int = 0,
    pgd_steps: int = 20,
    steps_factor: int = 5,
    restarts: int = 5,
    eps_multipliers: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    large_eps: float | None = None,
    large_eps_max_accuracy: float = 0.01,
    tolerance: float = 0.005,
    square_margin: float = 0.01,
    square_queries: int = 5000,
    fast: bool = True,
    progress: Any = True,
) -> dict:
    """Run the checks of the module docstring on the first ``n_examples`` of ``data``.

    Args:
        model, data, eps, norm: as for :func:`binprune.evaluate`; ``eps`` must be > 0.
        results: the output of :func:`binprune.evaluate` for the same model, data and eps (its
            clean/PGD/AutoAttack numbers feed ``attack_order`` and the Square check). If
            ``None``, :func:`binprune.evaluate` is run with AutoAttack standard.
        n_examples: examples used by the PGD-based checks (all of ``results``' by default).
        pgd_steps: steps of the reference PGD (as in ``results``).
        steps_factor, restarts: the stronger PGD runs compared with the reference.
        eps_multipliers: the sweep, as multiples of ``eps`` (must include 0 and 1).
        large_eps: the "large" budget (default 0.5 for L-inf, ``0.5 * sqrt(d)`` for L2).
        large_eps_max_accuracy: accuracy allowed at ``large_eps``.
        tolerance: slack (fraction of examples) for the monotonicity checks that compare
            independent random attacks; ``attack_order`` and the eps-0 check use none.
        square_margin: how much lower than the white-box attacks Square may bring accuracy.
        square_queries: Square's budget when it has to run alone.

    Returns:
        ``{"passed": bool, "n_passed": int, "n_checks": int, "checks": [...], "settings": {...},
        "time_s": float}``; every check has ``name``, ``passed``, ``description``, ``numbers``.
    """
    eps, norm = _check_eps(eps), _check_norm(norm)
    if eps == 0:
        raise ValueError("sanity checks need eps > 0 (the eps sweep and the attack comparisons are relative to it)")
    _check_positive_int(pgd_steps, "pgd_steps")
    _check_positive_int(steps_factor, "steps_factor")
    _check_positive_int(restarts, "restarts")
    _check_positive_int(square_queries, "square_queries")
    multipliers = sorted({float(m) for m in eps_multipliers})
    if 0.0 not in multipliers or 1.0 not in multipliers or any(m < 0 for m in multipliers):
        raise ValueError(f"eps_multipliers must be >= 0 and include 0 and 1, got {list(eps_multipliers)}")
    for name, value in (("tolerance", tolerance), ("square_margin", square_margin),
                        ("large_eps_max_accuracy", large_eps_max_accuracy)):
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    dev = resolve_device(device)
    started = time.perf_counter()

    if results is None:
        results = evaluate(model, data, eps=eps, norm=norm, attacks=("clean", "pgd", "autoattack"),
                           n_examples=n_examples, batch_size=batch_size, device=dev, seed=seed,
                           pgd_steps=pgd_steps, fast=fast, progress=progress)
    else:
        settings = results.get("settings", {})
        if not math.isclose(settings.get("eps", eps), eps) or settings.get("norm", norm) != norm:
            raise ValueError(
                f"results were computed at eps={settings.get('eps')} {settings.get('norm')}, the checks run at "
                f"eps={eps} {norm}: pass matching results or none"
            )
    n_subset = n_examples if n_examples is not None else results.get("settings", {}).get("n_examples")
    x, y, data_info = evaluation_tensors(data, n_subset)
    n = len(x)
    large = large_eps if large_eps is not None else (0.5 if norm == "Linf" else 0.5 * math.sqrt(x[0].numel()))
    large = _check_eps(large, "large_eps")
    reporter = _Progress(progress)
    checks: list[dict] = []

    eval_model, _ = prepare_model(model, x[:batch_size], device=dev, fast=fast)

    def pgd(eps_value: float, steps: int, n_restarts: int, run_seed: int, label: str) -> float:
        reporter.start(label, _batches(int(clean.sum()), batch_size) * n_restarts)
        flags = pgd_robust_flags(eval_model, x, y, clean, eps=eps_value, norm=norm, steps=steps, restarts=n_restarts,
                                 batch_size=batch_size, device=dev, seed=run_seed, progress=reporter)
        reporter.close()
        return int(flags.sum()) / n

    with frozen_parameters(eval_model):
        reporter.start("sanity: clean", _batches(n, batch_size))
        clean = correct_flags(eval_model, x, y, batch_size=batch_size, device=dev, progress=reporter)
        reporter.close()
        clean_acc = int(clean.sum()) / n

        # 1. attack order, from the evaluation results
        acc = results.get("accuracy", {})
        aa_key, aa = _autoattack_entry(results)
        order: dict[str, Any] = {"clean": acc.get("clean"), "pgd": acc.get("pgd")}
        if aa_key is not None:
            order[aa_key] = acc.get(aa_key)
        if order["clean"] is None or order["pgd"] is None:
            checks.append(_check("attack_order", False, "results lack clean or PGD accuracy: evaluate with 'pgd'",
                                 **order))
        else:
            ok = order["pgd"] <= order["clean"] and (aa_key is None or order[aa_key] <= order["pgd"])
            text = "autoattack <= pgd <= clean" if aa_key else "pgd <= clean (AutoAttack was not run)"
            checks.append(_check("attack_order", ok, text, **order,
                                 pgd_steps=results.get("attacks", {}).get("pgd", {}).get("steps"),
                                 n_examples=results.get("settings", {}).get("n_examples")))

        # 2./3. eps sweep, including eps = 0
        sweep = {}
        for m in multipliers:
            sweep[m * eps] = pgd(m * eps, pgd_steps, 1, seed, f"sanity: pgd-{pgd_steps} eps={m * eps:.4g}")
        checks.append(_check("eps_zero_equals_clean", sweep[0.0] == clean_acc,
                             "PGD at eps = 0 gives exactly the clean accuracy",
                             clean=clean_acc, pgd_eps_0=sweep[0.0], n_examples=n))
        values = list(sweep.values())
        rises = [(a, b) for a, b in zip(values, values[1:]) if b > a + tolerance]
        checks.append(_check("eps_sweep_non_increasing", not rises,
                             f"PGD-{pgd_steps} accuracy does not rise with eps (tolerance {tolerance})",
                             eps=list(sweep.keys()), accuracy=values, tolerance=tolerance, n_examples=n))

        # 4. large eps
        large_acc = pgd(large, pgd_steps, 1, seed, f"sanity: pgd-{pgd_steps} eps={large:.4g}")
        checks.append(_check("large_eps_near_zero", large_acc <= large_eps_max_accuracy,
                             f"PGD-{pgd_steps} at a budget that reaches any image gives accuracy ~0",
                             eps=large, accuracy=large_acc, max_accuracy=large_eps_max_accuracy, n_examples=n))

        # 5./6. more steps, more restarts
        reference = sweep[eps]
        more_steps = pgd(eps, pgd_steps * steps_factor, 1, seed, f"sanity: pgd-{pgd_steps * steps_factor}")
        checks.append(_check("more_steps_not_better", more_steps <= reference + tolerance,
                             f"PGD-{pgd_steps * steps_factor} leaves no more examples standing than PGD-{pgd_steps}",
                             steps=[pgd_steps, pgd_steps * steps_factor], accuracy=[reference, more_steps],
                             tolerance=tolerance, n_examples=n))
        if restarts > 1:
            restarted = pgd(eps, pgd_steps, restarts, seed + 1, f"sanity: pgd-{pgd_steps} x{restarts}")
            checks.append(_check("more_restarts_not_better", restarted <= reference + tolerance,
                                 f"PGD-{pgd_steps} with {restarts} restarts (other random starts) leaves no more "
                                 "examples standing than with 1",
                                 restarts=[1, restarts], accuracy=[reference, restarted], tolerance=tolerance,
                                 n_examples=n))

        # 7. Square vs white box
        checks.append(_square_check(aa, eval_model, x, y, clean, reference, eps=eps, norm=norm, seed=seed,
                                    batch_size=batch_size, device=dev, margin=square_margin, queries=square_queries,
                                    pgd_steps=pgd_steps, reporter=reporter))

    passed = sum(c["passed"] for c in checks)
    return {
        "passed": passed == len(checks),
        "n_passed": passed,
        "n_checks": len(checks),
        "checks": checks,
        "settings": {"eps": eps, "norm": norm, "n_examples": n, "data": data_info, "batch_size": batch_size,
                     "device": str(dev), "seed": seed, "pgd_steps": pgd_steps, "steps_factor": steps_factor,
                     "restarts": restarts, "eps_multipliers": multipliers, "large_eps": large,
                     "large_eps_max_accuracy": large_eps_max_accuracy, "tolerance": tolerance,
                     "square_margin": square_margin},
        "time_s": round(time.perf_counter() - started, 3),
    }


def _square_check(aa: dict | None, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                  pgd_acc: float, *, eps: float, norm: str, seed: int, batch_size: int, device: torch.device,
                  margin: float, queries: int, pgd_steps: int, reporter: _Progress) -> dict:
    name = "square_not_better_than_white_box"
    steps = (aa or {}).get("per_attack") or []
    names = [s["attack"] for s in steps]
    if aa is not None and aa.get("per_attack_consistent") and "square" in names and names.index("square") > 0 \
            and all(a in _WHITE_BOX for a in names[:names.index("square")]):
        i = names.index("square")
        before, after = steps[i - 1]["robust_accuracy_after"], steps[i]["robust_accuracy_after"]
        return _check(name, before - after <= margin,
                      f"Square, run after AutoAttack's white-box attacks, lowers accuracy by at most {margin}",
                      white_box_attacks=names[:i], robust_accuracy_after_white_box=before,
                      robust_accuracy_after_square=after, examples_only_square_broke=steps[i]["examples_broken"],
                      margin=margin, n_examples=aa.get("n_examples"), source="AutoAttack per-attack counts")
    from pyautoattack.square import SquareAttack

    square = SquareAttack(model, p_init=0.8, n_queries=queries, eps=eps, norm=norm, n_restarts=1, seed=seed,
                          verbose=False, device=device, resc_schedule=False)
    robust = clean.clone()
    idx = clean.nonzero().flatten()
    reporter.start(f"sanity: square ({queries} queries)", _batches(len(idx), batch_size))
    with torch.random.fork_rng(devices=_rng_devices(device)):
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            adv = square.perturb(xb, yb)
            with torch.no_grad():
                robust[b[(model(adv).argmax(1) != yb).cpu()]] = False
            reporter.advance()
    reporter.close()
    square_acc = int(robust.sum()) / len(x)
    return _check(name, square_acc >= pgd_acc - margin,
                  f"Square alone ({queries} queries) does not beat PGD-{pgd_steps} by more than {margin}",
                  square=square_acc, pgd=pgd_acc, margin=margin, n_examples=len(x), source="Square run alone")
