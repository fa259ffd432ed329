"""Sanity checks against gradient masking and broken evaluations.

A robustness number is only as good as the attack behind it. Models that mask gradients (or an
evaluation with a bug) show tell-tale inconsistencies, which these checks look for (after
Carlini et al., 2019, "On Evaluating Adversarial Robustness", and AutoAttack's own flags). Every
check can fail: each one compares numbers computed independently of each other, and
``tests/test_sanity.py`` shows each failing on a model built to break it.

``attack_order``
    AutoAttack <= PGD (from ``results``), and PGD run on *every* example, independently of the
    clean pass, leaves no more than ``tolerance`` of the examples correct that were wrong on the
    clean input (a random or input-detecting model fails).
``eps_zero_equals_clean``
    PGD at ``eps = 0``, run on every example, returns the clean inputs and the same prediction
    correctness per example as the clean pass (a random forward fails).
``eps_sweep_non_increasing``
    accuracy never rises as ``eps`` grows (within ``tolerance``).
``large_eps_near_zero``
    at a budget that can turn any image into any other one (0.5 L-inf; ``0.5 * sqrt(d)`` L2)
    accuracy is about 0 (at most ``large_eps_max_accuracy``).
``more_steps_not_better``
    ``steps_factor`` x the PGD steps never leave more examples standing (within ``tolerance``).
``restarts_consistent`` (was ``more_restarts_not_better``)
    ``restarts`` new PGD runs, each attacking every example from new random starts, agree with the
    reference run example by example: at most ``tolerance`` of the examples are broken by the
    reference and by none of the restarts, and the restarts lower the accuracy by at most
    ``SanityConfig.restarts_margin`` (a random forward fails).
``input_gradients_nonzero``
    the loss gradient with respect to the input is finite and non-zero on at least
    ``SanityConfig.gradient_min_share`` of the examples (input quantization, a saturated softmax, a
    model that ignores its input fail).
``square_not_better_than_white_box``
    the black-box Square attack does not break many examples the gradient-based attacks
    missed (at most ``square_margin``): from AutoAttack's per-attack counts when it ran Square
    after its white-box attacks, otherwise Square alone against PGD.
``transfer_not_better_than_white_box``
    PGD examples crafted on a dense ``surrogate`` model (trained on the same data) break at most
    ``SanityConfig.transfer_margin`` more examples of the model than its own white-box PGD; skipped (not
    passed) without a surrogate.

Each check is a function ``check(ctx: SanityContext) -> dict | None`` in the registry
:data:`SANITY_CHECKS` (:func:`register_check` adds one); it returns :func:`check_result` with the
numbers it compared, or :func:`check_skipped` (or ``None``) when it cannot run. PGD runs are
shared between checks through :meth:`SanityContext.pgd_accuracy` and
:meth:`SanityContext.pgd_correct`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from pyautoattack.square import SquareAttack
from torch import nn

from ..adversary import rng_devices
from ..config import EvalConfig, SanityConfig
from ..results import EvalReport, git_commit
from ..utils import resolve_device
from ..views import evaluation_tensors
from .attacks import pgd_examples, pgd_robust_flags
from .model import correct_flags, frozen_parameters, model_logits, prepare_model, preserved_modes
from .progress import ProgressCallback, ProgressReporter, n_batches
from .runner import evaluate, package_versions
from .validation import check_eps, check_fraction, check_norm, check_positive_int, with_settings

__all__ = ["sanity_checks", "SANITY_CHECKS", "SanityContext", "CheckFunction", "register_check", "check_result",
           "check_skipped", "sanity_config", "input_gradient_flags"]

# Thresholds live in SanityConfig: restarts_margin (a deterministic model's PGD-20 gains well under
# 0.02 from restarts, e.g. the quickstart model 0.008 with 5; a random forward loses far more, since
# every run re-draws its predictions), gradient_min_share, transfer_margin.

_WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
_AUTOATTACK_KEYS = ("autoattack", "autoattack-plus", "autoattack-rand", "autoattack-custom")


@dataclass
class SanityContext:
    """What a check receives: the evaluated model and examples, the evaluation ``results`` being
    checked, the settings, an optional dense ``surrogate`` for the transfer check, and caches of
    the PGD runs shared by the checks."""

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
    surrogate: nn.Module | None = None
    _pgd: dict[tuple, float] = field(default_factory=dict, repr=False)
    _correct: dict[tuple, tuple[torch.Tensor, float]] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def clean_accuracy(self) -> float:
        return int(self.clean.sum()) / self.n

    def pgd_accuracy(self, eps: float, steps: int, restarts: int, seed: int, label: str) -> float:
        """PGD robust accuracy (clean examples only, as the evaluation's ``pgd``), computed once
        per ``(eps, steps, restarts, seed)``."""
        key = (eps, steps, restarts, seed)
        if key not in self._pgd:
            self.progress.start(label, n_batches(int(self.clean.sum()), self.batch_size) * restarts)
            flags = pgd_robust_flags(self.model, self.x, self.y, self.clean, eps=eps, norm=self.norm, steps=steps,
                                     restarts=restarts, batch_size=self.batch_size, device=self.device, seed=seed,
                                     progress=self.progress)
            self.progress.close()
            self._pgd[key] = int(flags.sum()) / self.n
        return self._pgd[key]

    def pgd_correct(self, eps: float, restart: int = 0, steps: int | None = None) -> torch.Tensor:
        """Per example: is the prediction on PGD's output correct? PGD attacks *every* example
        (nothing taken from the clean flags), from the random start of ``restart``; computed once
        per ``(eps, steps, restart)``."""
        return self._pgd_run(eps, restart, steps)[0]

    def pgd_max_perturbation(self, eps: float, restart: int = 0, steps: int | None = None) -> float:
        """The largest L-inf distance of :meth:`pgd_correct`'s PGD outputs from the clean inputs."""
        return self._pgd_run(eps, restart, steps)[1]

    def _pgd_run(self, eps: float, restart: int, steps: int | None) -> tuple[torch.Tensor, float]:
        steps = self.pgd_steps if steps is None else steps
        key = (eps, steps, restart)
        if key not in self._correct:
            self.progress.start(f"sanity: pgd-{steps} eps={eps:.4g} (all examples, start {restart})",
                                n_batches(self.n, self.batch_size))
            adv = pgd_examples(self.model, self.x, self.y, eps=eps, norm=self.norm, steps=steps,
                               batch_size=self.batch_size, device=self.device, seed=self.seed, restart=restart,
                               progress=self.progress)
            self.progress.close()
            flags = correct_flags(self.model, adv, self.y, batch_size=self.batch_size, device=self.device)
            self._correct[key] = (flags, float((adv - self.x).abs().max()) if self.n else 0.0)
        return self._correct[key]

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
    return {"name": name, "passed": bool(passed), "status": "passed" if passed else "failed",
            "description": description, "numbers": numbers}


def check_skipped(name: str, reason: str) -> dict:
    """A check that could not run (and so neither passed nor failed), with the reason."""
    return {"name": name, "passed": None, "status": "skipped", "description": reason, "numbers": {}}


@register_check("attack_order")
def attack_order(ctx: SanityContext) -> dict:
    """AutoAttack <= PGD <= clean. The PGD half uses PGD run on every example, independently of
    the clean pass: the evaluation's own PGD starts from the clean flags, so it cannot exceed
    clean accuracy by construction and would check nothing."""
    name, tolerance, results = "attack_order", ctx.config.tolerance, ctx.results
    correct = ctx.pgd_correct(ctx.eps)
    made_correct = int((correct & ~ctx.clean).sum())
    accuracy = results.get("accuracy", {})
    aa_key = next((k for k in _AUTOATTACK_KEYS if k in results.get("attacks", {})), None)
    pgd_robust = int((correct & ctx.clean).sum()) / ctx.n
    pgd = accuracy.get("pgd") if accuracy.get("pgd") is not None else pgd_robust
    autoattack = accuracy.get(aa_key) if aa_key is not None else None
    independent_ok = made_correct <= tolerance * ctx.n
    ok = independent_ok and (autoattack is None or autoattack <= pgd)
    text = (f"PGD-{ctx.pgd_steps} run on every example makes at most {tolerance} of the examples correct that were "
            "wrong on the clean input" + (f", and {aa_key} <= pgd" if aa_key else " (AutoAttack was not run)"))
    return check_result(name, ok, text, clean=ctx.clean_accuracy, pgd_all_examples=int(correct.sum()) / ctx.n,
                        examples_wrong_clean_correct_under_pgd=made_correct, tolerance=tolerance,
                        pgd=pgd, pgd_source="results" if accuracy.get("pgd") is not None else "sanity run",
                        **({aa_key: autoattack} if aa_key else {}), n_examples=ctx.n,
                        results_n_examples=results.get("settings", {}).get("n_examples"))


@register_check("eps_zero_equals_clean")
def eps_zero_equals_clean(ctx: SanityContext) -> dict:
    """PGD at eps = 0 has nothing to change: its outputs are the clean inputs and, example by
    example, as correct as the clean pass. Both are computed independently, so a random forward,
    a stateful model or an attack leaving the ball is caught."""
    correct = ctx.pgd_correct(0.0)
    moved = ctx.pgd_max_perturbation(0.0)
    mismatched = int((correct != ctx.clean).sum())
    return check_result("eps_zero_equals_clean", mismatched == 0 and moved == 0.0,
                        "PGD at eps = 0 on every example returns the clean inputs and the clean pass's correctness, "
                        "example by example",
                        clean=ctx.clean_accuracy, pgd_eps_0=int(correct.sum()) / ctx.n,
                        mismatched_examples=mismatched, max_perturbation=moved, n_examples=ctx.n)


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


@register_check("restarts_consistent")
def restarts_consistent(ctx: SanityContext) -> dict:
    """New random starts must agree with the reference run, example by example. Each restart
    attacks every example (not only those still standing, which made the old check nearly a
    tautology); a model whose predictions are re-drawn on every forward disagrees with itself."""
    restarts, tolerance, margin = ctx.config.restarts, ctx.config.tolerance, ctx.config.restarts_margin
    reference = ctx.pgd_correct(ctx.eps)
    runs = [ctx.pgd_correct(ctx.eps, restart=r) for r in range(1, restarts + 1)]
    survived_restarts = torch.stack(runs).all(0)
    missed = int((~reference & survived_restarts).sum())  # broken by the reference, by no restart
    found = int((reference & ~survived_restarts).sum())  # broken by a restart only: the accuracy drop
    after_all = int((reference & survived_restarts).sum()) / ctx.n
    ok = missed <= tolerance * ctx.n and found <= margin * ctx.n
    return check_result("restarts_consistent", ok,
                        f"{restarts} PGD-{ctx.pgd_steps} run(s) from new random starts on every example break the "
                        f"examples the reference run broke (all but {tolerance} of the examples) and lower its "
                        f"accuracy by at most {margin}",
                        restarts=restarts, reference=int(reference.sum()) / ctx.n,
                        restarts_accuracy=[int(r.sum()) / ctx.n for r in runs], after_all=after_all,
                        broken_by_reference_only=missed, broken_by_restarts_only=found, change=found / ctx.n,
                        tolerance=tolerance, margin=margin, n_examples=ctx.n)


def input_gradient_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: is the cross-entropy gradient w.r.t. the input finite, and is it non-zero?

    The loss is summed (not averaged) so no example's gradient is scaled down by the batch size.
    A model whose output does not depend on the input at all has a zero gradient.
    """
    finite = torch.zeros(len(x), dtype=torch.bool)
    nonzero = torch.zeros(len(x), dtype=torch.bool)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device).requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model_logits(model, xb), y[start:start + batch_size].to(device), reduction="sum")
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            grad = torch.zeros_like(xb)
        flat = grad.detach().flatten(1)
        finite[start:start + batch_size] = torch.isfinite(flat).all(1).cpu()
        nonzero[start:start + batch_size] = (flat.nan_to_num(0.0).abs().amax(1) > 0).cpu()
    return finite, nonzero


@register_check("input_gradients_nonzero")
def input_gradients_nonzero(ctx: SanityContext) -> dict:
    """Gradient attacks need a gradient: zero (quantized input, saturated softmax, an ignored
    input) or non-finite input gradients on many examples mean PGD and APGD are blind there."""
    minimum = ctx.config.gradient_min_share
    ctx.progress.start("sanity: input gradients", n_batches(ctx.n, ctx.batch_size))
    finite, nonzero = input_gradient_flags(ctx.model, ctx.x, ctx.y, batch_size=ctx.batch_size, device=ctx.device)
    ctx.progress.close()
    share = int((finite & nonzero).sum()) / ctx.n
    return check_result("input_gradients_nonzero", share >= minimum,
                        f"the loss gradient w.r.t. the input is finite and non-zero on at least {minimum} of the "
                        "examples", share=share, min_share=minimum, zero_examples=int((finite & ~nonzero).sum()),
                        non_finite_examples=int((~finite).sum()), n_examples=ctx.n)


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


@register_check("transfer_not_better_than_white_box")
def transfer_not_better_than_white_box(ctx: SanityContext) -> dict:
    """Examples crafted on a dense surrogate must not beat the model's own white-box PGD: a
    model whose gradients are masked resists white-box attacks yet falls to transferred ones.
    Without a surrogate the check is skipped, not passed."""
    name, margin = "transfer_not_better_than_white_box", ctx.config.transfer_margin
    if ctx.surrogate is None:
        return check_skipped(name, "no surrogate model given: pass sanity_checks(..., surrogate=dense_model), a "
                                   "dense model of the same task trained on the same data")
    ctx.progress.start(f"sanity: transfer pgd-{ctx.pgd_steps} from the surrogate", n_batches(ctx.n, ctx.batch_size))
    adv = pgd_examples(ctx.surrogate, ctx.x, ctx.y, eps=ctx.eps, norm=ctx.norm, steps=ctx.pgd_steps,
                       batch_size=ctx.batch_size, device=ctx.device, seed=ctx.seed, progress=ctx.progress)
    ctx.progress.close()
    transfer = correct_flags(ctx.model, adv, ctx.y, batch_size=ctx.batch_size, device=ctx.device) & ctx.clean
    white_box = ctx.pgd_correct(ctx.eps) & ctx.clean
    extra = (int(white_box.sum()) - int(transfer.sum())) / ctx.n  # breaks by transfer minus breaks by white box
    return check_result(name, extra <= margin,
                        f"PGD-{ctx.pgd_steps} examples transferred from the surrogate break at most {margin} more of "
                        "the examples than white-box PGD on the model",
                        transfer=int(transfer.sum()) / ctx.n, white_box=int(white_box.sum()) / ctx.n,
                        broken_by_transfer_only=int((white_box & ~transfer).sum()), extra_breaks=extra, margin=margin,
                        surrogate=type(ctx.surrogate).__name__, n_examples=ctx.n)


def sanity_config(config: SanityConfig | None = None, **settings: Any) -> tuple[SanityConfig, list[float]]:
    """``config`` with ``settings`` applied and checked, and the sorted eps multipliers."""
    cfg = with_settings(SanityConfig, config, settings, "sanity check")
    check_positive_int(cfg.steps_factor, "steps_factor")
    check_positive_int(cfg.restarts, "restarts")
    check_positive_int(cfg.square_queries, "square_queries")
    multipliers = sorted({float(m) for m in cfg.eps_multipliers})
    if 0.0 not in multipliers or 1.0 not in multipliers or any(m < 0 for m in multipliers):
        raise ValueError(f"eps_multipliers must be >= 0 and include 0 and 1, got {list(cfg.eps_multipliers)}")
    for name in ("tolerance", "square_margin", "large_eps_max_accuracy", "restarts_margin", "gradient_min_share",
                 "transfer_margin"):
        check_fraction(getattr(cfg, name), name)
    return cfg, multipliers


def _run_checks(ctx: SanityContext, names: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The named checks in registry order: ``(run checks, skipped checks)``."""
    ran, skipped = [], []
    for name in names:
        result = SANITY_CHECKS[name](ctx)
        if result is None:
            result = check_skipped(name, "does not apply to these settings")
        (skipped if result.get("status") == "skipped" else ran).append(result)
    return ran, skipped


def _check_names(checks: Sequence[str] | str | None) -> list[str]:
    """Registered check names to run, in registry order (all by default)."""
    if checks is None:
        return list(SANITY_CHECKS)
    wanted = [checks] if isinstance(checks, str) else list(checks)
    unknown = [c for c in wanted if c not in SANITY_CHECKS]
    if unknown or not wanted:
        raise ValueError(f"unknown sanity check(s) {unknown}: choose from {', '.join(SANITY_CHECKS)}")
    return [c for c in SANITY_CHECKS if c in wanted]


@contextlib.contextmanager
def _prepared_surrogate(surrogate: nn.Module | None, device: torch.device) -> Any:
    """The surrogate on ``device`` in eval mode with frozen parameters (modes restored on exit)."""
    if surrogate is None:
        yield None
        return
    if not isinstance(surrogate, nn.Module):
        raise ValueError(f"surrogate must be an nn.Module, got {type(surrogate).__name__}")
    with preserved_modes(surrogate):
        surrogate.to(device).eval()
        with frozen_parameters(surrogate):
            yield surrogate


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
                  surrogate: nn.Module | None = None, checks: Sequence[str] | str | None = None,
                  **settings: Any) -> dict:
    """Run the registered checks (:data:`SANITY_CHECKS`; ``checks`` names a subset) on the first
    ``n_examples`` of ``data``.

    ``results`` is :func:`binprune.evaluate`'s report for the same model, data and eps (its
    clean/PGD/AutoAttack numbers feed ``attack_order`` and the Square check); without it,
    ``evaluate`` runs with AutoAttack standard first. ``pgd_steps`` are the reference PGD's (as in
    ``results``). ``surrogate``: a dense model of the same task trained on the same data, for the
    transfer check (skipped without one). ``config`` and ``**settings``
    (:class:`binprune.config.SanityConfig` fields) set the checks' budgets and tolerances;
    ``n_examples`` defaults to all of ``results``'.

    Returns ``{"passed", "n_passed", "n_checks", "checks", "skipped", "settings", "versions",
    "time_s"}``: ``checks`` are the checks that ran (each with ``name``, ``passed``, ``status``,
    ``description`` and ``numbers``), ``skipped`` those that could not run, with the reason;
    ``passed`` means every check that ran passed. The models' modes are restored.
    """
    norm = check_norm(norm)
    eps = check_eps(eps, user_linf=norm == "Linf")
    if eps == 0:
        raise ValueError("sanity checks need eps > 0 (the eps sweep and the attack comparisons are relative to it)")
    check_positive_int(pgd_steps, "pgd_steps")
    cfg, multipliers = sanity_config(config, **settings)
    names = _check_names(checks)
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
    with preserved_modes(model), _prepared_surrogate(surrogate, dev) as dense:
        eval_model, _ = prepare_model(model, x[:batch_size], device=dev, fast=fast)
        with frozen_parameters(eval_model):
            reporter.start("sanity: clean", n_batches(len(x), batch_size))
            clean = correct_flags(eval_model, x, y, batch_size=batch_size, device=dev, progress=reporter)
            reporter.close()
            ctx = SanityContext(model=eval_model, x=x, y=y, clean=clean, results=results, config=cfg, eps=eps,
                                norm=norm, seed=seed, pgd_steps=pgd_steps, batch_size=batch_size, device=dev,
                                progress=reporter, multipliers=multipliers, large_eps=large, surrogate=dense)
            ran, skipped = _run_checks(ctx, names)
    passed = sum(c["passed"] for c in ran)
    return {
        "passed": passed == len(ran), "n_passed": passed, "n_checks": len(ran), "checks": ran, "skipped": skipped,
        "settings": {"eps": eps, "norm": norm, "n_examples": len(x), "data": data_info, "batch_size": batch_size,
                     "device": str(dev), "seed": seed, "pgd_steps": pgd_steps, "steps_factor": cfg.steps_factor,
                     "restarts": cfg.restarts, "eps_multipliers": multipliers, "large_eps": large,
                     "large_eps_max_accuracy": cfg.large_eps_max_accuracy, "tolerance": cfg.tolerance,
                     "square_margin": cfg.square_margin, "restarts_margin": cfg.restarts_margin,
                     "gradient_min_share": cfg.gradient_min_share, "transfer_margin": cfg.transfer_margin,
                     "surrogate": type(surrogate).__name__ if surrogate is not None else None, "checks": names},
        "versions": {**package_versions(), **git_commit()},
        "time_s": round(time.perf_counter() - started, 3),
    }
