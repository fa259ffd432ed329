"""The evaluation attacks, in a registry :func:`binprune.evaluate` looks names up in.

Every attack is a function ``attack(context: AttackContext) -> AttackResult``: it receives the
model (in the form being evaluated, parameters frozen), the examples, the clean flags and the
settings, and returns the per-example robust flags with its own record. Add one with::

    @register_attack("my-attack")
    def my_attack(ctx: AttackContext) -> AttackResult:
        robust = ctx.clean & ...
        return AttackResult("my-attack", int(robust.sum()) / ctx.n, ctx.n, seconds, {...}, robust=robust)

``"clean"`` always runs first (robust accuracy needs it); the others see its flags as
``ctx.clean``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..adversary import Attack, L2PGD, LinfPGD, default_alpha, run_attack
from ..config import EvalConfig
from ..results import AttackResult
from ..utils import stable_seed
from .autoattack import APGD_ATTACKS, STANDARD_TAIL_ATTACKS, check_threat_model, run_autoattack
from .confirm import AttackForm, autoattack_confirmed, transfer_counts
from .model import correct_flags, model_logits, seeded_rng
from .progress import ProgressReporter, n_batches
from .validation import check_eps, check_norm, check_positive_int

__all__ = ["AttackContext", "AttackFunction", "ATTACKS", "register_attack", "check_attacks", "pgd_robust_flags",
           "pgd_attack", "pgd_examples", "pgd_confirmed_flags"]


@dataclass
class AttackContext:
    """What an evaluation attack receives. ``clean`` is ``None`` only while ``"clean"`` runs;
    ``form``, when set, is a faster equivalent of ``model`` that attacks may run on, confirming
    every result on ``model`` (:mod:`binprune.evaluation.confirm`)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    config: EvalConfig
    device: torch.device
    progress: ProgressReporter
    clean: torch.Tensor | None = None
    form: AttackForm | None = None
    #: the results of the attacks that ran before this one in the same evaluation, by name
    earlier: dict[str, AttackResult] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.x)


AttackFunction = Callable[[AttackContext], AttackResult]

#: Registered attacks by name, in registration order.
ATTACKS: dict[str, AttackFunction] = {}


def register_attack(name: str, *, replace: bool = False) -> Callable[[AttackFunction], AttackFunction]:
    """Decorator adding an attack under ``name`` (``replace=True`` to override an existing one)."""
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"an attack name must be a non-empty string without commas, got {name!r}")

    def add(function: AttackFunction) -> AttackFunction:
        if name in ATTACKS and not replace:
            raise ValueError(f"attack {name!r} is already registered: pass replace=True to override it")
        ATTACKS[name] = function
        return function

    return add


def check_attacks(attacks: Sequence[str] | str) -> list[str]:
    """Registered attack names from a list or a comma-separated string, each once, in order
    (``"autoattack-standard"`` is an alias of ``"autoattack"``)."""
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    names: list[str] = []
    for name in attacks:
        name = "autoattack" if name == "autoattack-standard" else name
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}: choose from {', '.join(ATTACKS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"no attack given: choose from {', '.join(ATTACKS)}")
    return names


def pgd_attack(model: nn.Module, *, eps: float, norm: str, steps: int, alpha: float | None,
               device: torch.device) -> Attack:
    """PGD under L-inf (:class:`LinfPGD`) or L2 (:class:`L2PGD`) with a random start, in eval mode on ``device``."""
    alpha = default_alpha("pgd", eps, steps) if alpha is None else float(alpha)
    if norm == "Linf":
        attack: Attack = LinfPGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    else:
        attack = L2PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    attack.set_model_training_mode(model_training=False)
    attack.set_device(device)
    return attack


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = EvalConfig.norm,
                 steps: int = EvalConfig.pgd_steps, alpha: float | None = None,
                 batch_size: int = EvalConfig.batch_size, device: torch.device | str = "cpu",
                 seed: int = EvalConfig.seed, restart: int = 0,
                 progress: ProgressReporter | None = None) -> torch.Tensor:
    """PGD's adversarial inputs for *every* example (one random start each), on the CPU.

    Unlike :func:`pgd_robust_flags`, nothing is taken from the clean pass: the sanity checks
    compare these inputs' predictions with the clean ones, which only means something if the
    two were computed independently. Random starts are seeded by ``(seed, restart, first example
    of the batch)``, so each ``restart`` is a new, reproducible start. At ``eps == 0`` under L2 the
    L-inf attack runs instead (both balls are the single clean input; the L2
    projection divides by a zero norm there).
    """
    eps, norm = check_eps(eps), check_norm(norm)
    check_positive_int(steps, "steps")
    device = torch.device(device)
    attack = pgd_attack(model, eps=eps, norm="Linf" if eps == 0.0 else norm, steps=steps, alpha=alpha, device=device)
    out = torch.empty_like(x, device="cpu")
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        with seeded_rng(device, stable_seed("pgd-all", seed, restart, start)):
            out[start:start + batch_size] = run_attack(attack, model, xb, yb, bn_mode="eval").detach().cpu()
        if progress is not None:
            progress.advance()
    return out


def pgd_robust_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, *, eps: float,
                     norm: str = EvalConfig.norm, steps: int = EvalConfig.pgd_steps, restarts: int = 1,
                     alpha: float | None = None, batch_size: int = EvalConfig.batch_size,
                     device: torch.device | str = "cpu", seed: int = EvalConfig.seed,
                     progress: ProgressReporter | None = None) -> torch.Tensor:
    """Per-example robustness to PGD: correct on the clean input and on every restart's output.

    Each restart attacks only the examples still standing, from a random start seeded by
    ``(seed, restart, first example of the batch)``. ``eps == 0`` under L2 has a single
    admissible input (the clean one), so the clean flags are returned without running the attack
    (the L2 projection divides by the perturbation norm, which is 0 there).
    """
    eps, norm = check_eps(eps), check_norm(norm)
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    device = torch.device(device)
    robust = clean.clone()
    if eps == 0.0 and norm == "L2":
        return robust
    attack = pgd_attack(model, eps=eps, norm=norm, steps=steps, alpha=alpha, device=device)
    for restart in range(restarts):
        idx = robust.nonzero().flatten()
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            with seeded_rng(device, stable_seed("pgd", seed, restart, int(b[0]))):
                adv = run_attack(attack, model, xb, yb, bn_mode="eval")
            with torch.no_grad():
                fooled = (model_logits(model, adv).argmax(1) != yb).cpu()
            robust[b[fooled]] = False
            if progress is not None:
                progress.advance()
    return robust


def _fooled(model: nn.Module, adv: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model_logits(model, adv).argmax(1) != yb).cpu()


def pgd_confirmed_flags(model: nn.Module, form: AttackForm, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                        *, eps: float, norm: str = EvalConfig.norm, steps: int = EvalConfig.pgd_steps,
                        restarts: int = 1, alpha: float | None = None, batch_size: int = EvalConfig.batch_size,
                        device: torch.device | str = "cpu", seed: int = EvalConfig.seed,
                        progress: ProgressReporter | None = None) -> tuple[torch.Tensor, dict]:
    """:func:`pgd_robust_flags` of ``model``, with the attack run on ``form.model`` (same random
    starts, batch by batch): every adversarial example is checked against the threat model and
    classified by ``model``; an example that fooled the copy but not ``model`` is attacked again on
    ``model`` (start seeded by ``(seed, restart, first example)`` under its own tag). Returns the
    flags and the counts of :func:`binprune.evaluation.confirm.transfer_counts`, summed over restarts."""
    eps, norm = check_eps(eps), check_norm(norm)
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    device = torch.device(device)
    robust = clean.clone()
    totals = {"broken_on_compact": 0, "confirmed": 0, "not_transferred": 0, "broken_only_on_model": 0,
              "reattacked": 0, "broken_by_reattack": 0}
    if eps == 0.0 and norm == "L2":
        return robust, totals
    on_copy = pgd_attack(form.model, eps=eps, norm=norm, steps=steps, alpha=alpha, device=device)
    on_model = pgd_attack(model, eps=eps, norm=norm, steps=steps, alpha=alpha, device=device)
    for restart in range(restarts):
        idx = robust.nonzero().flatten()
        retry = []
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            with seeded_rng(device, stable_seed("pgd", seed, restart, int(b[0]))):
                adv = run_attack(on_copy, form.model, xb, yb, bn_mode="eval")
            check_threat_model(xb.cpu(), adv.detach().cpu(), eps=eps, norm=norm)
            own, copy = ~_fooled(model, adv, yb), ~_fooled(form.model, adv, yb)
            counts = transfer_counts(torch.ones(len(b), dtype=torch.bool), copy, own)
            retry.append(b[counts.pop("retry")])
            for key, value in counts.items():
                totals[key] += value
            robust[b[~own]] = False
            if progress is not None:
                progress.advance()
        retry_idx = torch.cat(retry) if retry else torch.zeros(0, dtype=torch.long)
        totals["reattacked"] += len(retry_idx)
        for start in range(0, len(retry_idx), batch_size):
            b = retry_idx[start:start + batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            with seeded_rng(device, stable_seed("pgd-reattack", seed, restart, int(b[0]))):
                adv = run_attack(on_model, model, xb, yb, bn_mode="eval")
            fooled = _fooled(model, adv, yb)
            robust[b[fooled]] = False
            totals["broken_by_reattack"] += int(fooled.sum())
    return robust, totals


@register_attack("clean")
def clean(ctx: AttackContext) -> AttackResult:
    """Accuracy on the unperturbed examples; its flags are every other attack's starting point."""
    started = time.perf_counter()
    batch_size = ctx.config.batch_size
    ctx.progress.start("clean", n_batches(ctx.n, batch_size))
    flags = correct_flags(ctx.model, ctx.x, ctx.y, batch_size=batch_size, device=ctx.device, progress=ctx.progress)
    ctx.progress.close()
    correct = int(flags.sum())
    return AttackResult("clean", correct / ctx.n, ctx.n, time.perf_counter() - started,
                        {"correct_examples": correct}, robust=flags)


@register_attack("pgd")
def pgd(ctx: AttackContext) -> AttackResult:
    """PGD (L-inf or L2) with a random start: a quick check, not the headline."""
    cfg = ctx.config
    started = time.perf_counter()
    alpha = default_alpha("pgd", cfg.eps, cfg.pgd_steps) if cfg.pgd_alpha is None else float(cfg.pgd_alpha)
    ctx.progress.start(f"pgd-{cfg.pgd_steps}" + (f" x{cfg.pgd_restarts}" if cfg.pgd_restarts > 1 else ""),
                       n_batches(int(ctx.clean.sum()), cfg.batch_size) * cfg.pgd_restarts)
    options = dict(eps=cfg.eps, norm=cfg.norm, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, alpha=alpha,
                   batch_size=cfg.batch_size, device=ctx.device, seed=cfg.seed, progress=ctx.progress)
    form: dict = {}
    if ctx.form is not None:
        robust, counts = pgd_confirmed_flags(ctx.model, ctx.form, ctx.x, ctx.y, ctx.clean, **options)
        form = {"attack_form": {**ctx.form.info, **counts}}
    else:
        robust = pgd_robust_flags(ctx.model, ctx.x, ctx.y, ctx.clean, **options)
    ctx.progress.close()
    details = {"robust_examples": int(robust.sum()), "steps": cfg.pgd_steps, "restarts": cfg.pgd_restarts,
               "alpha": alpha, "random_start": True,
               "implementation": f"binprune.adversary.{'LinfPGD' if cfg.norm == 'Linf' else 'L2PGD'}", **form}
    return AttackResult("pgd", int(robust.sum()) / ctx.n, ctx.n, time.perf_counter() - started, details,
                        robust=robust)


def _autoattack(ctx: AttackContext, name: str, version: str) -> AttackResult:
    """One AutoAttack version through :func:`run_autoattack`; ``autoattack_options`` may shorten
    its budgets (the numbers are then no longer the published protocol's)."""
    cfg = ctx.config
    options = cfg.autoattack_options or {}
    settings = dict(eps=cfg.eps, norm=cfg.norm, version=version,
                    attacks=options.get("attacks") if version == "custom" else None,
                    iterations=options.get("iterations"), square_queries=options.get("square_queries"),
                    batch_size=cfg.batch_size, device=ctx.device, seed=cfg.seed, progress=ctx.progress)
    if ctx.form is None or version == "rand":  # a randomized defense is never replaced by a copy
        result, robust = run_autoattack(ctx.model, ctx.x, ctx.y, clean=ctx.clean, **settings)
    else:
        def on_model(xs: torch.Tensor, ys: torch.Tensor) -> tuple[dict, torch.Tensor]:
            return run_autoattack(ctx.model, xs, ys, clean=torch.ones(len(xs), dtype=torch.bool), **settings)

        result, robust = autoattack_confirmed(ctx.model, ctx.form, ctx.x, ctx.y, ctx.clean, run_on_model=on_model,
                                              **settings)
    details = {k: v for k, v in result.items() if k not in ("accuracy", "n_examples", "time_s")}
    return AttackResult(name, result["accuracy"], result["n_examples"], result["time_s"], details, robust=robust)


def _standard_after_apgd(ctx: AttackContext, apgd: AttackResult) -> AttackResult:
    """AutoAttack ``"standard"`` completed from the ``"autoattack-apgd"`` result of the same
    evaluation: FAB-T and Square (standard budgets, same seed) on the examples APGD-CE and APGD-T
    left standing, instead of running the two APGD attacks a second time."""
    started = time.perf_counter()
    robust = apgd.robust.clone()
    standing = robust.nonzero().flatten()
    tail = None
    if len(standing):
        form = None if ctx.form is None else AttackForm(ctx.form.model, ctx.form.clean[standing], ctx.form.info)
        sub = AttackContext(model=ctx.model, x=ctx.x[standing], y=ctx.y[standing], config=ctx.config,
                            device=ctx.device, progress=ctx.progress, form=form,
                            clean=torch.ones(len(standing), dtype=torch.bool))
        tail = _autoattack(sub, "autoattack", "standard-tail")
        robust[standing] = tail.robust
    first = apgd.details.get("per_attack") or []
    offset = max((step.get("elapsed_s") or 0.0 for step in first), default=0.0)  # AutoAttack's times are cumulative
    if tail is not None:
        steps = [dict(step) for step in first] + [{**step, "elapsed_s": offset + (step.get("elapsed_s") or 0.0)}
                                                  for step in tail.details.get("per_attack") or []]
    else:  # as a standard run logs it: FAB-T starts, finds no example left, and the run stops
        steps = [dict(step) for step in first] + [{"attack": STANDARD_TAIL_ATTACKS[0], "examples_attacked": 0,
                                                   "examples_broken": 0, "elapsed_s": None}]
    left = int(ctx.clean.sum())
    for step in steps:
        left -= step["examples_broken"]
        step["robust_accuracy_after"] = left / ctx.n
    settings = dict(apgd.details.get("settings") or {})
    settings.update(version="standard", attacks=list(APGD_ATTACKS + STANDARD_TAIL_ATTACKS))
    details = {
        "robust_examples": int(robust.sum()), "clean_accuracy": int(ctx.clean.sum()) / ctx.n, "per_attack": steps,
        "per_attack_consistent": left == int(robust.sum()),
        "autoattack_warnings": list(dict.fromkeys(apgd.details.get("autoattack_warnings", [])
                                                  + (tail.details.get("autoattack_warnings", []) if tail else []))),
        "settings": settings,
        "apgd_from": "autoattack-apgd: its APGD-CE and APGD-T flags (same budgets and seed as standard's) are "
                     "standard's first two attacks; FAB-T and Square ran on the examples left standing",
        "tail": {k: v for k, v in tail.details.items() if k not in ("per_attack", "log")} if tail else None,
    }
    seconds = apgd.seconds + (time.perf_counter() - started)  # the cost of the whole standard evaluation
    return AttackResult("autoattack", int(robust.sum()) / ctx.n, ctx.n, seconds, details, robust=robust)


@register_attack("autoattack")
def autoattack(ctx: AttackContext) -> AttackResult:
    """AutoAttack ``"standard"``: APGD-CE, APGD-T, FAB-T, Square (the headline number). After
    ``"autoattack-apgd"`` in the same evaluation, its flags stand for the first two attacks."""
    apgd = ctx.earlier.get("autoattack-apgd")
    if apgd is not None and apgd.robust is not None:
        return _standard_after_apgd(ctx, apgd)
    return _autoattack(ctx, "autoattack", "standard")


@register_attack("autoattack-apgd")
def autoattack_apgd(ctx: AttackContext) -> AttackResult:
    """AutoAttack's two APGD attacks (APGD-CE, APGD-T) with the standard version's budgets and
    seed: the flags of ``"autoattack"`` before FAB-T and Square, at a fraction of the cost."""
    return _autoattack(ctx, "autoattack-apgd", "apgd")


@register_attack("autoattack-plus")
def autoattack_plus(ctx: AttackContext) -> AttackResult:
    """AutoAttack ``"plus"``: more restarts and the untargeted FAB and DLR variants."""
    return _autoattack(ctx, "autoattack-plus", "plus")


@register_attack("autoattack-rand")
def autoattack_rand(ctx: AttackContext) -> AttackResult:
    """AutoAttack ``"rand"``: expectation over transformation, for randomized defenses."""
    return _autoattack(ctx, "autoattack-rand", "rand")


@register_attack("autoattack-custom")
def autoattack_custom(ctx: AttackContext) -> AttackResult:
    """The AutoAttack attacks listed in ``autoattack_options["attacks"]``."""
    return _autoattack(ctx, "autoattack-custom", "custom")
