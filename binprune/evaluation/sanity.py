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
    ``steps_factor`` x the PGD steps, or several restarts, never leave more examples standing
    (within ``tolerance``); the restarts use other random starts than the reference run.
``square_not_better_than_white_box``
    the black-box Square attack does not break many examples the gradient-based attacks
    missed (at most ``square_margin``): from AutoAttack's per-attack counts when it ran Square
    after its white-box attacks, otherwise Square alone against PGD.

Each check is a function ``check(ctx: SanityContext) -> dict | None`` in the registry
:data:`SANITY_CHECKS` (:func:`register_check` adds one); it reports ``passed`` with the numbers it
compared, or ``None`` when it does not apply. PGD runs are shared between checks through
:meth:`SanityContext.pgd_accuracy`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from pyautoattack.square import SquareAttack
from torch import nn

from ..adversary import rng_devices
from ..config import EvalConfig, SanityConfig
from ..results import EvalReport
from ..utils import resolve_device
from ..views import evaluation_tensors
from .attacks import pgd_robust_flags
from .model import correct_flags, frozen_parameters, prepare_model, preserved_modes
from .progress import ProgressCallback, ProgressReporter, n_batches
from .runner import evaluate
from .validation import check_eps, check_fraction, check_norm, check_positive_int, with_settings

__all__ = ["sanity_checks", "SANITY_CHECKS", "SanityContext", "CheckFunction", "register_check", "check_result",
           "sanity_config"]

_WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
_AUTOATTACK_KEYS = ("autoattack", "autoattack-plus", "autoattack-rand", "autoattack-custom")


@dataclass
class SanityContext:
    """What a check receives: the evaluated model and examples, the evaluation ``results`` being
    checked, the settings, and a cache of PGD accuracies shared by the checks."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    clean: torch.Tensor
    results: Mapping[str, Any]
    config: SanityConfig
    eps: float
    norm: str
    seed: int
    pgd_steps: int
    batch_size: int
    device: torch.device
    progress: ProgressReporter
    multipliers: list[float]
    large_eps: float
    _pgd: dict[tuple, float] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def clean_accuracy(self) -> float:
        return int(self.clean.sum()) / self.n

    def pgd_accuracy(self, eps: float, steps: int, restarts: int, seed: int, label: str) -> float:
        """PGD accuracy on the examples, computed once per ``(eps, steps, restarts, seed)``."""
        key = (eps, steps, restarts, seed)
        if key not in self._pgd:
            self.progress.start(label, n_batches(int(self.clean.sum()), self.batch_size) * restarts)
            flags = pgd_robust_flags(self.model, self.x, self.y, self.clean, eps=eps, norm=self.norm, steps=steps,
                                     restarts=restarts, batch_size=self.batch_size, device=self.device, seed=seed,
                                     progress=self.progress)
            self.progress.close()
            self._pgd[key] = int(flags.sum()) / self.n
        return self._pgd[key]

    def sweep(self) -> dict[float, float]:
        """PGD accuracy at each multiple of ``eps`` in ``multipliers`` (the reference steps)."""
        return {m * self.eps: self.pgd_accuracy(m * self.eps, self.pgd_steps, 1, self.seed,
                                                f"sanity: pgd-{self.pgd_steps} eps={m * self.eps:.4g}")
                for m in self.multipliers}

    def reference(self) -> float:
        """The reference PGD accuracy at ``eps`` (one restart, ``pgd_steps``, ``seed``)."""
        return self.pgd_accuracy(self.eps, self.pgd_steps, 1, self.seed,
                                 f"sanity: pgd-{self.pgd_steps} eps={self.eps:.4g}")


CheckFunction = Callable[[SanityContext], "dict | None"]

#: Registered checks by name, run in registration order.
SANITY_CHECKS: dict[str, CheckFunction] = {}


def register_check(name: str, *, replace: bool = False) -> Callable[[CheckFunction], CheckFunction]:
    """Decorator adding a check under ``name`` (``replace=True`` to override an existing one)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a check name must be a non-empty string, got {name!r}")

    def add(function: CheckFunction) -> CheckFunction:
        if name in SANITY_CHECKS and not replace:
            raise ValueError(f"check {name!r} is already registered: pass replace=True to override it")
        SANITY_CHECKS[name] = function
        return function

    return add


def check_result(name: str, passed: bool, description: str, **numbers: Any) -> dict:
    """A check's report: whether it passed, what it checks, and the numbers it compared."""
    return {"name": name, "passed": bool(passed), "description": description, "numbers": numbers}


@register_check("attack_order")
def attack_order(ctx: SanityContext) -> dict:
    """AutoAttack <= PGD <= clean, from the evaluation results (no slack)."""
    results = ctx.results
    acc = results.get("accuracy", {})
    aa_key = next((k for k in _AUTOATTACK_KEYS if k in results.get("attacks", {})), None)
    order: dict[str, Any] = {"clean": acc.get("clean"), "pgd": acc.get("pgd")}
    if aa_key is not None:
        order[aa_key] = acc.get(aa_key)
    if order["clean"] is None or order["pgd"] is None:
        return check_result("attack_order", False, "results lack clean or PGD accuracy: evaluate with 'pgd'", **order)
    ok = order["pgd"] <= order["clean"] and (aa_key is None or order[aa_key] <= order["pgd"])
    text = "autoattack <= pgd <= clean" if aa_key else "pgd <= clean (AutoAttack was not run)"
    return check_result("attack_order", ok, text, **order,
                        pgd_steps=results.get("attacks", {}).get("pgd", {}).get("steps"),
                        n_examples=results.get("settings", {}).get("n_examples"))


@register_check("eps_zero_equals_clean")
def eps_zero_equals_clean(ctx: SanityContext) -> dict:
    """PGD at eps = 0 has nothing to change: exactly the clean accuracy."""
    at_zero = ctx.sweep()[0.0]
    return check_result("eps_zero_equals_clean", at_zero == ctx.clean_accuracy,
                        "PGD at eps = 0 gives exactly the clean accuracy",
                        clean=ctx.clean_accuracy, pgd_eps_0=at_zero, n_examples=ctx.n)


@register_check("eps_sweep_non_increasing")
def eps_sweep_non_increasing(ctx: SanityContext) -> dict:
    """A larger budget contains the smaller one: accuracy must not rise (beyond ``tolerance``)."""
    sweep, tolerance = ctx.sweep(), ctx.config.tolerance
    values = list(sweep.values())
    rises = [(a, b) for a, b in zip(values, values[1:]) if b > a + tolerance]
    return check_result("eps_sweep_non_increasing", not rises,
                        f"PGD-{ctx.pgd_steps} accuracy does not rise with eps (tolerance {tolerance})",
                        eps=list(sweep.keys()), accuracy=values, tolerance=tolerance, n_examples=ctx.n)


@register_check("large_eps_near_zero")
def large_eps_near_zero(ctx: SanityContext) -> dict:
    """A budget that reaches any image must break (almost) everything, unless gradients are masked."""
    large, limit = ctx.large_eps, ctx.config.large_eps_max_accuracy
    accuracy = ctx.pgd_accuracy(large, ctx.pgd_steps, 1, ctx.seed, f"sanity: pgd-{ctx.pgd_steps} eps={large:.4g}")
    return check_result("large_eps_near_zero", accuracy <= limit,
                        f"PGD-{ctx.pgd_steps} at a budget that reaches any image gives accuracy ~0",
                        eps=large, accuracy=accuracy, max_accuracy=limit, n_examples=ctx.n)


@register_check("more_steps_not_better")
def more_steps_not_better(ctx: SanityContext) -> dict:
    """More PGD steps must not leave more examples standing (beyond ``tolerance``)."""
    steps, tolerance = ctx.pgd_steps * ctx.config.steps_factor, ctx.config.tolerance
    reference = ctx.reference()
    more = ctx.pgd_accuracy(ctx.eps, steps, 1, ctx.seed, f"sanity: pgd-{steps}")
    return check_result("more_steps_not_better", more <= reference + tolerance,
                        f"PGD-{steps} leaves no more examples standing than PGD-{ctx.pgd_steps}",
                        steps=[ctx.pgd_steps, steps], accuracy=[reference, more], tolerance=tolerance,
                        n_examples=ctx.n)


@register_check("more_restarts_not_better")
def more_restarts_not_better(ctx: SanityContext) -> dict | None:
    """Restarts from other random starts must not leave more examples standing; skipped for 1."""
    restarts, tolerance = ctx.config.restarts, ctx.config.tolerance
    if restarts <= 1:
        return None
    reference = ctx.reference()
    restarted = ctx.pgd_accuracy(ctx.eps, ctx.pgd_steps, restarts, ctx.seed + 1,
                                 f"sanity: pgd-{ctx.pgd_steps} x{restarts}")
    return check_result("more_restarts_not_better", restarted <= reference + tolerance,
                        f"PGD-{ctx.pgd_steps} with {restarts} restarts (other random starts) leaves no more "
                        "examples standing than with 1",
                        restarts=[1, restarts], accuracy=[reference, restarted], tolerance=tolerance,
                        n_examples=ctx.n)


@register_check("square_not_better_than_white_box")
def square_not_better_than_white_box(ctx: SanityContext) -> dict:
    """A black-box attack beating the gradient-based ones means their gradients mislead them."""
    name, margin = "square_not_better_than_white_box", ctx.config.square_margin
    attacks = ctx.results.get("attacks", {})
    aa = next((attacks[k] for k in _AUTOATTACK_KEYS if k in attacks), None)
    steps = (aa or {}).get("per_attack") or []
    names = [s["attack"] for s in steps]
    if aa is not None and aa.get("per_attack_consistent") and "square" in names and names.index("square") > 0 \
            and all(a in _WHITE_BOX for a in names[:names.index("square")]):
        i = names.index("square")
        before, after = steps[i - 1]["robust_accuracy_after"], steps[i]["robust_accuracy_after"]
        return check_result(name, before - after <= margin,
                            f"Square, run after AutoAttack's white-box attacks, lowers accuracy by at most {margin}",
                            white_box_attacks=names[:i], robust_accuracy_after_white_box=before,
                            robust_accuracy_after_square=after, examples_only_square_broke=steps[i]["examples_broken"],
                            margin=margin, n_examples=aa.get("n_examples"), source="AutoAttack per-attack counts")
    square_acc, pgd_acc, queries = square_accuracy(ctx), ctx.reference(), ctx.config.square_queries
    return check_result(name, square_acc >= pgd_acc - margin,
                        f"Square alone ({queries} queries) does not beat PGD-{ctx.pgd_steps} by more than {margin}",
                        square=square_acc, pgd=pgd_acc, margin=margin, n_examples=ctx.n, source="Square run alone")


def square_accuracy(ctx: SanityContext) -> float:
    """Accuracy under pyautoattack's Square attack alone (``square_queries`` queries, one restart)."""
    queries, device, batch_size = ctx.config.square_queries, ctx.device, ctx.batch_size
    square = SquareAttack(ctx.model, p_init=0.8, n_queries=queries, eps=ctx.eps, norm=ctx.norm, n_restarts=1,
                          seed=ctx.seed, verbose=False, device=device, resc_schedule=False)
    robust = ctx.clean.clone()
    idx = ctx.clean.nonzero().flatten()
    ctx.progress.start(f"sanity: square ({queries} queries)", n_batches(len(idx), batch_size))
    with torch.random.fork_rng(devices=rng_devices(device)):
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb, yb = ctx.x[b].to(device), ctx.y[b].to(device)
            adv = square.perturb(xb, yb)
            with torch.no_grad():
                robust[b[(ctx.model(adv).argmax(1) != yb).cpu()]] = False
            ctx.progress.advance()
    ctx.progress.close()
    return int(robust.sum()) / ctx.n


def sanity_config(config: SanityConfig | None = None, **settings: Any) -> tuple[SanityConfig, list[float]]:
    """``config`` with ``settings`` applied and checked, and the sorted eps multipliers."""
    cfg = with_settings(SanityConfig, config, settings, "sanity check")
    check_positive_int(cfg.steps_factor, "steps_factor")
    check_positive_int(cfg.restarts, "restarts")
    check_positive_int(cfg.square_queries, "square_queries")
    multipliers = sorted({float(m) for m in cfg.eps_multipliers})
    if 0.0 not in multipliers or 1.0 not in multipliers or any(m < 0 for m in multipliers):
        raise ValueError(f"eps_multipliers must be >= 0 and include 0 and 1, got {list(cfg.eps_multipliers)}")
    for name in ("tolerance", "square_margin", "large_eps_max_accuracy"):
        check_fraction(getattr(cfg, name), name)
    return cfg, multipliers


def _checked_results(results: Mapping[str, Any], eps: float, norm: str) -> None:
    """Results measured at another budget would make every comparison meaningless."""
    settings = results.get("settings", {})
    if not math.isclose(settings.get("eps", eps), eps) or settings.get("norm", norm) != norm:
        raise ValueError(
            f"results were computed at eps={settings.get('eps')} {settings.get('norm')}, the checks run at "
            f"eps={eps} {norm}: pass matching results or none"
        )


def sanity_checks(model: nn.Module, data: Any, eps: float, *, config: SanityConfig | None = None,
                  norm: str = EvalConfig.norm, results: EvalReport | Mapping[str, Any] | None = None,
                  device: str | torch.device = "auto", seed: int = EvalConfig.seed,
                  pgd_steps: int = EvalConfig.pgd_steps, batch_size: int = EvalConfig.batch_size,
                  fast: bool = EvalConfig.fast, progress: bool | ProgressCallback | None = True,
                  **settings: Any) -> dict:
    """Run every registered check (:data:`SANITY_CHECKS`) on the first ``n_examples`` of ``data``.

    ``results`` is :func:`binprune.evaluate`'s report for the same model, data and eps (its
    clean/PGD/AutoAttack numbers feed ``attack_order`` and the Square check); without it,
    ``evaluate`` runs with AutoAttack standard first. ``pgd_steps`` are the reference PGD's (as in
    ``results``). ``config`` and ``**settings`` (:class:`binprune.config.SanityConfig` fields)
    set the checks' budgets and tolerances; ``n_examples`` defaults to all of ``results``'.

    Returns ``{"passed", "n_passed", "n_checks", "checks", "settings", "time_s"}``; every check
    has ``name``, ``passed``, ``description`` and ``numbers``. The model's modes are restored.
    """
    eps, norm = check_eps(eps), check_norm(norm)
    if eps == 0:
        raise ValueError("sanity checks need eps > 0 (the eps sweep and the attack comparisons are relative to it)")
    check_positive_int(pgd_steps, "pgd_steps")
    cfg, multipliers = sanity_config(config, **settings)
    dev = resolve_device(device)
    started = time.perf_counter()
    if results is None:
        results = evaluate(model, data, EvalConfig(eps=eps, norm=norm, attacks=("clean", "pgd", "autoattack"),
                                                   n_examples=cfg.n_examples, batch_size=batch_size, seed=seed,
                                                   pgd_steps=pgd_steps, fast=fast), device=dev, progress=progress)
    else:
        _checked_results(results, eps, norm)
    x, y, data_info = evaluation_tensors(data, cfg.n_examples if cfg.n_examples is not None
                                         else results.get("settings", {}).get("n_examples"))
    large = cfg.large_eps if cfg.large_eps is not None else (0.5 if norm == "Linf" else 0.5 * math.sqrt(x[0].numel()))
    large = check_eps(large, "large_eps")
    reporter = ProgressReporter(progress)
    checks: list[dict] = []
    with preserved_modes(model):
        eval_model, _ = prepare_model(model, x[:batch_size], device=dev, fast=fast)
        with frozen_parameters(eval_model):
            reporter.start("sanity: clean", n_batches(len(x), batch_size))
            clean = correct_flags(eval_model, x, y, batch_size=batch_size, device=dev, progress=reporter)
            reporter.close()
            ctx = SanityContext(model=eval_model, x=x, y=y, clean=clean, results=results, config=cfg, eps=eps,
                                norm=norm, seed=seed, pgd_steps=pgd_steps, batch_size=batch_size, device=dev,
                                progress=reporter, multipliers=multipliers, large_eps=large)
            checks = [c for c in (check(ctx) for check in SANITY_CHECKS.values()) if c is not None]
    passed = sum(c["passed"] for c in checks)
    return {
        "passed": passed == len(checks), "n_passed": passed, "n_checks": len(checks), "checks": checks,
        "settings": {"eps": eps, "norm": norm, "n_examples": len(x), "data": data_info, "batch_size": batch_size,
                     "device": str(dev), "seed": seed, "pgd_steps": pgd_steps, "steps_factor": cfg.steps_factor,
                     "restarts": cfg.restarts, "eps_multipliers": multipliers, "large_eps": large,
                     "large_eps_max_accuracy": cfg.large_eps_max_accuracy, "tolerance": cfg.tolerance,
                     "square_margin": cfg.square_margin},
        "time_s": round(time.perf_counter() - started, 3),
    }
