"""AutoAttack (``pyautoattack``) with robust accuracy recomputed from what it returns.

:func:`run_autoattack` is three steps: :func:`setup_autoattack` builds the ``AutoAttack`` object
and records its settings, :func:`execute_autoattack` runs it with its log captured (and the
caller's RNG, the model's parameters and pyautoattack's global counters protected), and
:func:`autoattack_result` turns the returned adversarial examples into a robust accuracy
(:func:`robust_accuracy_from_autoattack`; an example outside the threat model is an error) and a
per-attack breakdown counted from AutoAttack's per-batch log lines.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from pyautoattack import AutoAttack
from pyautoattack import checks as aa_checks
from torch import nn

from ..adversary import rng_devices
from ..config import EvalConfig
from ..utils import resolve_device
from ..views import check_images
from .model import correct_flags, frozen_parameters, model_logits
from .progress import ProgressCallback, ProgressReporter
from .validation import check_eps, check_norm, check_positive_int

__all__ = [
    "AUTOATTACK_ATTACKS", "AUTOATTACK_VERSIONS", "APGD_ATTACKS", "STANDARD_TAIL_ATTACKS", "AutoAttackLog",
    "AutoAttackRun", "run_autoattack",
    "robust_accuracy_from_autoattack", "check_threat_model", "check_autoattack_arguments", "setup_autoattack",
    "execute_autoattack", "autoattack_result",
]

#: Attacks of AutoAttack that version ``"custom"`` can combine.
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
AUTOATTACK_VERSIONS = ("standard", "apgd", "plus", "rand", "custom")
#: Version ``"apgd"``: the first two attacks of ``"standard"`` with its budgets and seed, so its
#: per-example flags are those of ``"standard"`` before FAB-T and Square run.
APGD_ATTACKS = ("apgd-ce", "apgd-t")
#: Version ``"standard-tail"`` (internal): the last two attacks of ``"standard"`` with its budgets
#: and seed. Run on the examples ``"apgd"`` left standing, it completes ``"standard"``: every
#: attack of AutoAttack re-seeds itself, so FAB-T and Square see the same batches and random
#: draws as inside one ``"standard"`` run.
STANDARD_TAIL_ATTACKS = ("fab-t", "square")
_SPLIT_VERSIONS = {"apgd": APGD_ATTACKS, "standard-tail": STANDARD_TAIL_ATTACKS}

_AA_RUNNING = re.compile(r"^running (?P<attack>[\w-]+)$")
_AA_BATCH = re.compile(
    r"^(?P<attack>[\w-]+) - (?P<batch>\d+)/(?P<batches>\d+) - (?:tensor\()?(?P<broken>\d+).*? out of "
    r"(?P<size>\d+) successfully perturbed$"
)
_AA_AFTER = re.compile(r"^robust accuracy after (?P<attack>[\w-]+): [\d.]+% \(total time (?P<time>[\d.]+) s\)$")


class AutoAttackLog(logging.Handler):
    """Collects AutoAttack's log records, counts the examples each attack broke (its per-batch
    lines), and drives the progress display."""

    def __init__(self, progress: ProgressReporter, label: str):
        super().__init__(level=logging.DEBUG)
        self.progress = progress
        self.label = label
        self.records: list[dict] = []
        self.broken: dict[str, int] = {}
        self.attacked: dict[str, int] = {}
        self.elapsed: dict[str, float] = {}
        self.order: list[str] = []
        self.start = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.records.append({"level": record.levelname, "message": message,
                             "time_s": round(time.perf_counter() - self.start, 3)})
        if record.levelno >= logging.WARNING:
            self.progress.note(f"AutoAttack {record.levelname.lower()}: {message}")
            return
        if m := _AA_RUNNING.match(message):
            name = m["attack"]
            self.order.append(name)
            self.broken.setdefault(name, 0)
            self.attacked.setdefault(name, 0)
            self.progress.start(f"{self.label}: {name}", None)
        elif m := _AA_BATCH.match(message):
            name = m["attack"]
            self.broken[name] = self.broken.get(name, 0) + int(m["broken"])
            self.attacked[name] = self.attacked.get(name, 0) + int(m["size"])
            self.progress.set_total(int(m["batches"]))
            self.progress.advance()
        elif m := _AA_AFTER.match(message):
            self.elapsed[m["attack"].lower()] = float(m["time"])

    @property
    def warnings(self) -> list[str]:
        """Warning messages, each once, with how often it was repeated (the full log keeps all)."""
        counts: dict[str, int] = {}
        for r in self.records:
            if r["level"] in ("WARNING", "ERROR", "CRITICAL"):
                counts[r["message"]] = counts.get(r["message"], 0) + 1
        return [m if c == 1 else f"{m} (x{c})" for m, c in counts.items()]


@dataclass
class AutoAttackRun:
    """What one ``run_standard_evaluation`` call produced, with its captured log and warnings."""

    x_adv: torch.Tensor
    y_adv: torch.Tensor
    log: AutoAttackLog
    python_warnings: list[str]
    seconds: float


def _perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)


def check_threat_model(x: torch.Tensor, x_adv: torch.Tensor, *, eps: float, norm: str) -> torch.Tensor:
    """Per-example perturbation norms of ``x_adv``; ``ValueError`` if any is outside the threat model.

    Inadmissible means: a perturbation above ``eps`` beyond float rounding
    (``eps * (1 + 1e-5) + 1e-6``), a value outside [0, 1], or a NaN/inf. Such an example is a bug in
    the attack (or a model that changes its inputs); counting it as "not broken" would hide the
    bug and inflate robust accuracy, so it stops the evaluation with the offending norm and count.
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"adversarial examples have shape {tuple(x_adv.shape)}, the inputs {tuple(x.shape)}")
    flat = x_adv.flatten(1)
    finite = torch.isfinite(flat).all(1)
    norms = _perturbation_norms(torch.where(finite.view(-1, *[1] * (x.dim() - 1)), x_adv, x), x, norm)
    limit = eps * (1 + 1e-5) + 1e-6
    too_far = finite & (norms > limit)
    out_of_range = finite & ((flat.amin(1) < 0) | (flat.amax(1) > 1))
    bad = too_far | out_of_range | ~finite
    if bool(bad.any()):
        parts = []
        if bool(too_far.any()):
            worst = int(norms.masked_fill(~too_far, -1).argmax())
            parts.append(f"{int(too_far.sum())} with a {norm} perturbation above eps={eps:g} (largest "
                         f"{float(norms[worst]):.6g}, example {worst}; limit {limit:.6g})")
        if bool(out_of_range.any()):
            parts.append(f"{int(out_of_range.sum())} with values outside [0, 1] (min {float(flat[finite].min()):.6g}, "
                         f"max {float(flat[finite].max()):.6g})")
        if bool((~finite).any()):
            parts.append(f"{int((~finite).sum())} with NaN or infinite values")
        raise ValueError(f"{int(bad.sum())} of {len(x)} adversarial examples are outside the threat model ({norm}, "
                         f"eps={eps:g}, images in [0, 1]): {'; '.join(parts)}. They are not counted as robust: "
                         "the attack or the model is broken")
    return norms


def robust_accuracy_from_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                                    eps: float, norm: str = EvalConfig.norm, y_adv: torch.Tensor | None = None,
                                    batch_size: int = EvalConfig.batch_size, device: torch.device | str = "cpu",
                                    clean: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """Robust accuracy from the adversarial examples AutoAttack returned.

    An example is robust if the model classifies both ``x`` and ``x_adv`` correctly. Every
    ``x_adv`` must lie in the threat model (:func:`check_threat_model`): one that does not
    raises ``ValueError`` naming the offending norm and count (``invalid_adversarial_examples``
    is therefore always 0 in a result). ``y_adv`` (AutoAttack's predicted labels) is compared with
    the model's predictions on ``x_adv``: a mismatch means the model is not deterministic.

    Returns the summary dict and the per-example robust flags (bool, CPU).
    """
    eps, norm = check_eps(eps), check_norm(norm)
    device = torch.device(device)
    x_adv, x_cpu = x_adv.detach().cpu(), x.detach().cpu()
    norms = check_threat_model(x_cpu, x_adv, eps=eps, norm=norm)
    adv_correct = torch.zeros(len(x), dtype=torch.bool)
    adv_pred = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = model_logits(model, x_adv[start:start + batch_size].to(device)).argmax(1).cpu()
            adv_pred[start:start + batch_size] = pred
            adv_correct[start:start + batch_size] = pred == y[start:start + batch_size]
    if clean is None:
        clean = correct_flags(model, x, y, batch_size=batch_size, device=device)
    robust = clean & adv_correct
    n = len(x)
    summary = {
        "accuracy": int(robust.sum()) / n,
        "robust_examples": int(robust.sum()),
        "n_examples": n,
        "accuracy_on_returned_examples": int(adv_correct.sum()) / n,
        "invalid_adversarial_examples": 0,
        "max_perturbation": float(norms.max()) if n else None,
        "perturbation_norm": norm,
    }
    if y_adv is not None:
        summary["predictions_match_autoattack"] = bool(torch.equal(adv_pred, y_adv.detach().cpu().long()))
    return summary, robust


def check_autoattack_arguments(version: str, attacks: Sequence[str] | None, iterations: int | None,
                               square_queries: int | None) -> None:
    """Reject a version, attack list or budget that AutoAttack would not run as asked."""
    if version not in AUTOATTACK_VERSIONS and version not in _SPLIT_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}: choose standard, apgd, plus, rand or custom")
    if version == "custom":
        if not attacks:
            raise ValueError(f"AutoAttack version 'custom' needs a list of attacks from {', '.join(AUTOATTACK_ATTACKS)}")
        unknown = [a for a in attacks if a not in AUTOATTACK_ATTACKS]
        if unknown:
            raise ValueError(f"unknown AutoAttack attack(s) {unknown}: choose from {', '.join(AUTOATTACK_ATTACKS)}")
    elif attacks is not None:
        raise ValueError(f"attacks= only applies to version 'custom'; version {version!r} fixes its own attacks")
    if iterations is not None:
        check_positive_int(iterations, "iterations")
    if square_queries is not None:
        check_positive_int(square_queries, "square_queries")


def setup_autoattack(model: nn.Module, n_classes: int, *, eps: float, norm: str, version: str,
                     attacks: Sequence[str] | None, iterations: int | None, square_queries: int | None,
                     batch_size: int, device: torch.device, seed: int) -> tuple[AutoAttack, dict]:
    """The ``AutoAttack`` object with the requested budgets, and its settings as plain values.

    With fewer than 10 classes, the targeted attacks use every other class as a target
    (AutoAttack's default of 9 target classes would fail).
    """
    adversary = AutoAttack(model, attacks=list(attacks) if version == "custom" else None, device=device, eps=eps,
                           norm=norm, seed=seed, version="standard" if version in _SPLIT_VERSIONS else version)
    if version in _SPLIT_VERSIONS:
        adversary.attacks_to_run = list(_SPLIT_VERSIONS[version])
    if iterations is not None:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = iterations
    if square_queries is not None:
        adversary.square.n_queries = square_queries
    settings: dict[str, Any] = {
        "version": version,
        "attacks": list(adversary.attacks_to_run),
        "eps": eps,
        "norm": norm,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(device),
        "apgd_iterations": adversary.apgd.n_iter,
        "apgd_restarts": adversary.apgd.n_restarts,
        "fab_iterations": adversary.fab.n_iter,
        "square_queries": adversary.square.n_queries,
    }
    if n_classes - 1 < max(adversary.apgd_targeted.n_target_classes, adversary.fab.n_target_classes):
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = n_classes - 1
    settings["target_classes"] = adversary.apgd_targeted.n_target_classes
    settings["implementation"] = "pyautoattack.AutoAttack.run_standard_evaluation"
    return adversary, settings


def execute_autoattack(adversary: AutoAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                       batch_size: int, device: torch.device, progress: ProgressReporter,
                       label: str) -> AutoAttackRun:
    """``run_standard_evaluation`` with AutoAttack's log captured (not printed), Python warnings
    recorded, the caller's RNG restored (its attacks re-seed it) and parameters frozen."""
    handler = AutoAttackLog(progress, label)
    logger = logging.getLogger("auto-attack")
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its debug lines are captured here, not printed by the root logger
    logger.addHandler(handler)
    # pyautoattack counts calls to grad/backward for its dynamic-model check in a module-level
    # dict that it never resets: a previous dynamic model would taint every later check.
    for key in aa_checks.funcs:
        aa_checks.funcs[key] = 0
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=rng_devices(device)), \
                frozen_parameters(model):
            warnings.simplefilter("always")
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        progress.close()
    elapsed = time.perf_counter() - start
    caught_warnings = [f"{w.category.__name__}: {w.message} ({w.filename.rsplit('/', 1)[-1]}:{w.lineno})" for w in caught]
    return AutoAttackRun(x_adv=x_adv, y_adv=y_adv, log=handler, python_warnings=caught_warnings, seconds=elapsed)


def autoattack_result(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, run: AutoAttackRun,
                      settings: dict, *, eps: float, norm: str, batch_size: int,
                      device: torch.device) -> tuple[dict, torch.Tensor]:
    """The result dict of :func:`run_autoattack` and the per-example robust flags."""
    summary, robust = robust_accuracy_from_autoattack(model, x, y, run.x_adv, eps=eps, norm=norm, y_adv=run.y_adv,
                                                      batch_size=batch_size, device=device, clean=clean)
    n = len(x)
    standing = int(clean.sum())
    breakdown = []
    handler = run.log
    for name in handler.order:
        standing -= handler.broken.get(name, 0)
        breakdown.append({
            "attack": name,
            "examples_attacked": handler.attacked.get(name, 0),
            "examples_broken": handler.broken.get(name, 0),
            "robust_accuracy_after": standing / n,
            "elapsed_s": handler.elapsed.get(name),
        })
    result = {
        **summary,
        "clean_accuracy": int(clean.sum()) / n,
        "per_attack": breakdown,
        "per_attack_consistent": standing == summary["robust_examples"],
        "autoattack_warnings": handler.warnings,
        "python_warnings": run.python_warnings,
        "settings": settings,
        "time_s": round(run.seconds, 3),
        "log": handler.records,
    }
    return result, robust


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = EvalConfig.norm,
                   version: str = "standard", attacks: Sequence[str] | None = None, iterations: int | None = None,
                   square_queries: int | None = None, batch_size: int = EvalConfig.batch_size,
                   device: torch.device | str = "auto", seed: int = EvalConfig.seed,
                   progress: bool | ProgressCallback | ProgressReporter | None = False,
                   clean: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """Run ``pyautoattack.AutoAttack`` and turn what it returns into a robust accuracy.

    ``version`` is ``"standard"``, ``"apgd"`` (standard's APGD-CE and APGD-T only, with its
    budgets), ``"plus"``, ``"rand"``, or ``"custom"`` with ``attacks`` a
    subset of :data:`AUTOATTACK_ATTACKS`; ``iterations`` (APGD and FAB) and ``square_queries``
    override AutoAttack's budgets (reduced budgets are for quick checks; the defaults are the
    standard ones). ``model`` must be on ``device``; it is put in eval mode and its parameters
    are frozen while AutoAttack runs.

    Returns the result dict (accuracy, per-attack breakdown counted from AutoAttack's log,
    warnings, log, settings, time) and the per-example robust flags.
    """
    eps, norm = check_eps(eps), check_norm(norm)
    device = resolve_device(device)
    check_images(x, y)
    check_autoattack_arguments(version, attacks, iterations, square_queries)
    reporter = progress if isinstance(progress, ProgressReporter) else ProgressReporter(progress)

    x, y = x.detach().cpu(), y.detach().cpu()
    model.eval()
    with torch.no_grad():
        n_classes = model_logits(model, x[:1].to(device)).shape[1]
    if clean is None:
        clean = correct_flags(model, x, y, batch_size=batch_size, device=device)
    adversary, settings = setup_autoattack(model, n_classes, eps=eps, norm=norm, version=version, attacks=attacks,
                                           iterations=iterations, square_queries=square_queries,
                                           batch_size=batch_size, device=device, seed=seed)
    label = f"autoattack-{version}" if version != "standard" else "autoattack"
    run = execute_autoattack(adversary, model, x, y, batch_size=batch_size, device=device, progress=reporter,
                             label=label)
    return autoattack_result(model, x, y, clean, run, settings, eps=eps, norm=norm, batch_size=batch_size,
                             device=device)
