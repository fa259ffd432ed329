"""Evaluation: clean accuracy, PGD, and AutoAttack, with the settings that produced each number.

All attacks work in pixel space (inputs in [0, 1], normalization inside the model). Robust
accuracy is the fraction of examples that are classified correctly *and* stay correct under the
attack, the definition AutoAttack and RobustBench use.

* ``"pgd"``: torchattacks' PGD (L-inf) or PGDL2 with a random start; ``restarts > 1`` attacks
  the examples still standing with a fresh random start each time. A quick check, not the
  headline number.
* ``"autoattack"``: ``pyautoattack.AutoAttack`` version ``"standard"`` (APGD-CE, APGD-T, FAB-T,
  Square); ``"autoattack-plus"`` and ``"autoattack-rand"`` select the other versions and
  ``"autoattack-custom"`` a chosen list of its attacks. Robust accuracy is recomputed from the
  adversarial examples AutoAttack returns (:func:`robust_accuracy_from_autoattack`), each checked
  to lie inside the threat model. AutoAttack's own log (per-attack progress, its checks for
  randomness, probability outputs and dynamic models) is captured into the result.

Speed: supermask models are evaluated through :func:`binprune.finalize` (plain layers holding
``w * mask``) when its outputs are bit-identical to the model's on the first batch; otherwise
through the model itself, whose masks are cached and never recomputed during evaluation. Model
parameters are frozen during the evaluation so attacks only compute input gradients.

Determinism: every random start is seeded from ``seed`` (and the batch), AutoAttack gets
``seed`` explicitly, and the caller's global RNG is restored afterwards (AutoAttack's attacks
re-seed it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
import torchattacks
from torch import nn

from .adversary import _rng_devices, default_alpha, run_attack
from .convert import finalize
from .supermask import masked_tensors
from .utils import resolve_device, stable_seed

__all__ = [
    "evaluate", "run_autoattack", "robust_accuracy_from_autoattack", "evaluation_tensors", "prepare_model",
    "pgd_robust_flags", "correct_flags", "ATTACKS", "NORMS", "AUTOATTACK_ATTACKS", "UNITS",
]

#: Attack names accepted by :func:`evaluate`.
ATTACKS = ("clean", "pgd", "autoattack", "autoattack-plus", "autoattack-rand", "autoattack-custom")
NORMS = ("Linf", "L2")
#: Attacks of AutoAttack that ``"autoattack-custom"`` can combine.
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_VERSION_OF = {"autoattack": "standard", "autoattack-plus": "plus", "autoattack-rand": "rand",
               "autoattack-custom": "custom"}
UNITS = {"accuracy": "fraction of the evaluated examples, in [0, 1]", "time": "seconds",
         "eps": "pixel units of inputs in [0, 1]"}

Progress = Callable[[dict], None]


# --- input checks --------------------------------------------------------------------------------

def _check_eps(eps: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    return float(eps)


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    return norm


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_attacks(attacks: Sequence[str] | str) -> list[str]:
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


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"data must be tensors (images, labels), got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"images must be floats in [0, 1], got dtype {x.dtype}: convert uint8 images with x.float() / 255"
        )
    if x.dim() < 2:
        raise ValueError(f"images must have a batch dimension, got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got dtype {y.dtype} and shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels: they must have the same length")
    if len(x) == 0:
        raise ValueError("no examples to evaluate")
    if torch.isnan(x).any():
        raise ValueError("images contain NaN")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"images must lie in [0, 1] (normalization belongs inside the model), found values in [{lo:.4g}, {hi:.4g}]"
        )
    if int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0, found {int(y.min())}")


def _class_interleaved_order(labels: torch.Tensor) -> torch.Tensor:
    """Order that takes one example of each class in turn (file order within a class)."""
    classes, counts = torch.unique_consecutive(labels, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(labels)) - starts
    key = rank * (int(labels.max()) + 1) + labels
    return torch.argsort(key, stable=True)


def evaluation_tensors(data: Any, n_examples: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The examples to evaluate, as float images in [0, 1] and int64 labels, plus a description.

    ``data`` is an ``(images, labels)`` pair, a :class:`binprune.ImageTensorDataset`, or any
    dataset yielding ``(image, label)``. The first ``n_examples`` are taken in order (the
    RobustBench convention), except for a dataset stored sorted by class (an image-folder tree),
    whose first examples would all be of one class: there, classes are interleaved (one example
    of each class in turn) and the description says so.
    """
    if n_examples is not None:
        _check_positive_int(n_examples, "n_examples")
    info: dict[str, Any] = {}
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"data as a sequence must be a pair (images, labels), got {len(data)} items")
        x, y = data
        _check_images(x, y)
        total = len(x)
        info["source"] = "tensors"
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        total = len(data)
        info["source"] = getattr(data, "name", type(data).__name__)
        if getattr(data, "source", ""):
            info["path"] = str(data.source)
        x = y = None
    else:
        raise ValueError(f"data must be a dataset or an (images, labels) pair of tensors, got {type(data).__name__}")
    if n_examples is not None and n_examples > total:
        raise ValueError(f"n_examples={n_examples} but the data holds only {total} examples")
    n = total if n_examples is None else n_examples

    labels_all = getattr(data, "labels", None) if x is None else y
    order = None
    if n < total and isinstance(labels_all, torch.Tensor) and labels_all.dim() == 1 and len(labels_all) == total:
        sorted_by_class = bool((labels_all[1:] >= labels_all[:-1]).all()) and int(labels_all[0]) != int(labels_all[-1])
        if sorted_by_class:
            order = _class_interleaved_order(labels_all.cpu())[:n]
    if order is None:
        info["selection"] = f"the first {n} examples in dataset order"
        index = slice(0, n)
    else:
        info["selection"] = (
            f"{n} examples with classes interleaved (the data is stored sorted by class, e.g. an image-folder "
            "tree, so its first examples would all be of one class; within a class, file order)"
        )
        index = order

    if x is not None:
        x, y = x[index], y[index]
    elif hasattr(data, "images") and hasattr(data, "labels") and isinstance(data.images, torch.Tensor):
        x = data.images[index]
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        y = data.labels[index].clone()
    else:
        indices = range(n) if order is None else order.tolist()
        items = [data[int(i)] for i in indices]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    y = y.long()
    _check_images(x, y)
    info["n_examples"] = int(len(x))
    info["of_total"] = int(total)
    return x.contiguous(), y, info


# --- model preparation ---------------------------------------------------------------------------

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


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits of shape (N, num_classes), got {shape}")
    return out


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
        reference, candidate = _logits(model, probe), _logits(plain, probe)
    if reference.shape == candidate.shape and torch.equal(reference, candidate):
        info.update(form="finalized", reason=f"plain layers; outputs bit-identical on {len(probe)} probe examples")
        return plain, info
    diff = (reference - candidate).abs().max().item() if reference.shape == candidate.shape else float("nan")
    info.update(form="supermask", reason=f"finalized outputs differ (max abs diff {diff:.3g}); kept the masked model")
    return model, info


# --- progress ------------------------------------------------------------------------------------

class _Progress:
    """Progress bars on stderr (``True``), a callback receiving event dicts, or nothing."""

    def __init__(self, progress: bool | Progress | None):
        self._callback = progress if callable(progress) else None
        self._bars = progress is True
        self._bar = None
        self._stage = ""
        self._done = 0
        self._total: int | None = None

    def start(self, stage: str, total: int | None, unit: str = "batch") -> None:
        self.close()
        self._stage, self._done, self._total = stage, 0, total
        if self._bars:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)
        self._emit()

    def set_total(self, total: int) -> None:
        if self._total != total:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        self._emit()

    def note(self, text: str) -> None:
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        if self._callback is not None:
            self._callback({"stage": self._stage, "message": text})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback({"stage": self._stage, "done": self._done, "total": self._total})


# --- clean and PGD -------------------------------------------------------------------------------

@contextlib.contextmanager
def _seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the CPU generator and ``device``'s generator inside a fork of both."""
    devices = _rng_devices(device)
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def correct_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, device: torch.device,
                  progress: _Progress | None = None) -> torch.Tensor:
    """Per-example ``argmax(model(x)) == y`` (bool, on the CPU), batch by batch."""
    flags = torch.zeros(len(x), dtype=torch.bool)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = _logits(model, x[start:start + batch_size].to(device))
            yb = y[start:start + batch_size].to(device)
            if int(yb.max()) >= logits.shape[1]:
                raise ValueError(f"label {int(yb.max())} is out of range for a model with {logits.shape[1]} outputs")
            flags[start:start + batch_size] = (logits.argmax(1) == yb).cpu()
            if progress is not None:
                progress.advance()
    return flags


def pgd_robust_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, *, eps: float,
                     norm: str = "Linf", steps: int = 20, restarts: int = 1, alpha: float | None = None,
                     batch_size: int = 256, device: torch.device | str = "cpu", seed: int = 0,
                     progress: _Progress | None = None) -> torch.Tensor:
    """Per-example robustness to PGD: correct on the clean input and on every restart's output.

    Each restart attacks only the examples still standing, from a random start seeded by
    ``(seed, restart, first example of the batch)``. ``eps == 0`` has a single admissible input
    (the clean one), so the clean flags are returned without running the attack (torchattacks'
    L2 projection divides by the perturbation norm, which is 0 there).
    """
    eps, norm = _check_eps(eps), _check_norm(norm)
    _check_positive_int(steps, "steps")
    _check_positive_int(restarts, "restarts")
    device = torch.device(device)
    robust = clean.clone()
    if eps == 0.0 and norm == "L2":
        return robust
    alpha = default_alpha("pgd", eps, steps) if alpha is None else float(alpha)
    if norm == "Linf":
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    else:
        attack = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    attack.set_model_training_mode(model_training=False)
    attack.set_device(device)
    for restart in range(restarts):
        idx = robust.nonzero().flatten()
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            with _seeded_rng(device, stable_seed("pgd", seed, restart, int(b[0]))):
                adv = run_attack(attack, model, xb, yb, bn_mode="eval")
            with torch.no_grad():
                fooled = (_logits(model, adv).argmax(1) != yb).cpu()
            robust[b[fooled]] = False
            if progress is not None:
                progress.advance()
    return robust


def _batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


# --- AutoAttack ----------------------------------------------------------------------------------

_AA_RUNNING = re.compile(r"^running (?P<attack>[\w-]+)$")
_AA_BATCH = re.compile(
    r"^(?P<attack>[\w-]+) - (?P<batch>\d+)/(?P<batches>\d+) - (?:tensor\()?(?P<broken>\d+).*? out of "
    r"(?P<size>\d+) successfully perturbed$"
)
_AA_AFTER = re.compile(r"^robust accuracy after (?P<attack>[\w-]+): [\d.]+% \(total time (?P<time>[\d.]+) s\)$")


class _AutoAttackLog(logging.Handler):
    """Collects AutoAttack's log records, counts the examples each attack broke (its per-batch
    lines), and drives the progress display."""

    def __init__(self, progress: _Progress, label: str):
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


def _perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)


def robust_accuracy_from_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                                    eps: float, norm: str = "Linf", y_adv: torch.Tensor | None = None,
                                    batch_size: int = 256, device: torch.device | str = "cpu",
                                    clean: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """Robust accuracy from the adversarial examples AutoAttack returned.

    An example is robust if the model classifies both ``x`` and ``x_adv`` correctly. An
    ``x_adv`` outside the threat model (perturbation above ``eps`` beyond float rounding, outside
    [0, 1], or NaN) is not an admissible attack: it is counted as not found and reported in
    ``invalid_adversarial_examples``. ``y_adv`` (AutoAttack's predicted labels) is compared with
    the model's predictions on ``x_adv``: a mismatch means the model is not deterministic.

    Returns the summary dict and the per-example robust flags (bool, CPU).
    """
    eps, norm = _check_eps(eps), _check_norm(norm)
    device = torch.device(device)
    if x_adv.shape != x.shape:
        raise ValueError(f"adversarial examples have shape {tuple(x_adv.shape)}, the inputs {tuple(x.shape)}")
    x_adv = x_adv.detach().cpu()
    adv_correct = torch.zeros(len(x), dtype=torch.bool)
    adv_pred = torch.zeros(len(x), dtype=torch.long)
    finite = torch.isfinite(x_adv.flatten(1)).all(1)
    safe = torch.where(finite.view(-1, *[1] * (x.dim() - 1)), x_adv, x.cpu())
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = _logits(model, safe[start:start + batch_size].to(device)).argmax(1).cpu()
            adv_pred[start:start + batch_size] = pred
            adv_correct[start:start + batch_size] = pred == y[start:start + batch_size]
    if clean is None:
        clean = correct_flags(model, x, y, batch_size=batch_size, device=device)
    norms = _perturbation_norms(safe, x.cpu(), norm)
    limit = eps * (1 + 1e-5) + 1e-6
    in_range = (safe.flatten(1).amin(1) >= 0) & (safe.flatten(1).amax(1) <= 1)
    valid = finite & (norms <= limit) & in_range
    robust = clean & (adv_correct | ~valid)
    n = len(x)
    summary = {
        "accuracy": int(robust.sum()) / n,
        "robust_examples": int(robust.sum()),
        "n_examples": n,
        "accuracy_on_returned_examples": int(adv_correct.sum()) / n,
        "invalid_adversarial_examples": int((~valid).sum()),
        "max_perturbation": float(norms[finite].max()) if bool(finite.any()) else None,
        "perturbation_norm": norm,
    }
    if y_adv is not None:
        summary["predictions_match_autoattack"] = bool(torch.equal(adv_pred, y_adv.detach().cpu().long()))
    return summary, robust


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                   version: str = "standard", attacks: Sequence[str] | None = None, iterations: int | None = None,
                   square_queries: int | None = None, batch_size: int = 256, device: torch.device | str = "auto",
                   seed: int = 0, progress: bool | Progress | None = False,
                   clean: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """Run ``pyautoattack.AutoAttack`` and turn what it returns into a robust accuracy.

    ``version`` is ``"standard"``, ``"plus"``, ``"rand"``, or ``"custom"`` with ``attacks`` a
    subset of :data:`AUTOATTACK_ATTACKS`; ``iterations`` (APGD and FAB) and ``square_queries``
    override AutoAttack's budgets (reduced budgets are for quick checks; the defaults are the
    standard ones). ``model`` must be on ``device``; it is put in eval mode and its parameters
    are frozen while AutoAttack runs.

    Returns the result dict (accuracy, per-attack breakdown counted from AutoAttack's log,
    warnings, log, settings, time) and the per-example robust flags.
    """
    from pyautoattack import AutoAttack
    from pyautoattack import checks as aa_checks

    eps, norm = _check_eps(eps), _check_norm(norm)
    device = resolve_device(device)
    _check_images(x, y)
    if version not in ("standard", "plus", "rand", "custom"):
        raise ValueError(f"unknown AutoAttack version {version!r}: choose standard, plus, rand or custom")
    if version == "custom":
        if not attacks:
            raise ValueError(f"AutoAttack version 'custom' needs a list of attacks from {', '.join(AUTOATTACK_ATTACKS)}")
        unknown = [a for a in attacks if a not in AUTOATTACK_ATTACKS]
        if unknown:
            raise ValueError(f"unknown AutoAttack attack(s) {unknown}: choose from {', '.join(AUTOATTACK_ATTACKS)}")
    elif attacks is not None:
        raise ValueError(f"attacks= only applies to version 'custom'; version {version!r} fixes its own attacks")
    if iterations is not None:
        _check_positive_int(iterations, "iterations")
    if square_queries is not None:
        _check_positive_int(square_queries, "square_queries")
    reporter = progress if isinstance(progress, _Progress) else _Progress(progress)

    x, y = x.detach().cpu(), y.detach().cpu()
    model.eval()
    with torch.no_grad():
        n_classes = _logits(model, x[:1].to(device)).shape[1]
    if clean is None:
        clean = correct_flags(model, x, y, batch_size=batch_size, device=device)

    adversary = AutoAttack(model, attacks=list(attacks) if version == "custom" else None, device=device, eps=eps,
                           norm=norm, seed=seed, version=version)
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
        # AutoAttack's 9 target classes need 10 classes; use every other class instead.
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = n_classes - 1
    settings["target_classes"] = adversary.apgd_targeted.n_target_classes
    settings["implementation"] = "pyautoattack.AutoAttack.run_standard_evaluation"

    label = f"autoattack-{version}" if version != "standard" else "autoattack"
    handler = _AutoAttackLog(reporter, label)
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
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=_rng_devices(device)), \
                frozen_parameters(model):
            warnings.simplefilter("always")
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        reporter.close()
    elapsed = time.perf_counter() - start

    summary, robust = robust_accuracy_from_autoattack(model, x, y, x_adv, eps=eps, norm=norm, y_adv=y_adv,
                                                      batch_size=batch_size, device=device, clean=clean)
    n = len(x)
    standing = int(clean.sum())
    breakdown = []
    for name in handler.order:
        standing -= handler.broken.get(name, 0)
        breakdown.append({
            "attack": name,
            "examples_attacked": handler.attacked.get(name, 0),
            "examples_broken": handler.broken.get(name, 0),
            "robust_accuracy_after": standing / n,
            "elapsed_s": handler.elapsed.get(name),
        })
    caught_warnings = [f"{w.category.__name__}: {w.message} ({w.filename.rsplit('/', 1)[-1]}:{w.lineno})" for w in caught]
    result = {
        **summary,
        "clean_accuracy": int(clean.sum()) / n,
        "per_attack": breakdown,
        "per_attack_consistent": standing == summary["robust_examples"] and summary["invalid_adversarial_examples"] == 0,
        "autoattack_warnings": handler.warnings,
        "python_warnings": caught_warnings,
        "settings": settings,
        "time_s": round(elapsed, 3),
        "log": handler.records,
    }
    return result, robust


# --- evaluate ------------------------------------------------------------------------------------

def _versions() -> dict:
    import pyautoattack

    from . import __version__

    return {"binprune": __version__, "torch": torch.__version__, "torchattacks": torchattacks.__version__,
            "pyautoattack": pyautoattack.__version__}


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    eps: float,
    norm: str = "Linf",
    attacks: Sequence[str] | str = ("clean", "pgd", "autoattack"),
    n_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    seed: int = 0,
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    pgd_alpha: float | None = None,
    autoattack_options: dict | None = None,
    fast: bool = True,
    progress: bool | Progress | None = True,
) -> dict:
    """Clean and robust accuracy of ``model`` on ``data``, with the settings that produced them.

    The model is put in eval mode (and left there) on ``device``; inputs are in [0, 1].

    Args:
        model: any classifier returning logits (a supermask model, a finalized one, a
            RobustBench model, ...).
        data: an ``(images, labels)`` pair of tensors, a :class:`binprune.ImageTensorDataset`
            (e.g. ``load_dataset("fashion-mnist", split="test")``) or any dataset of
            ``(image, label)``; see :func:`evaluation_tensors` for which examples are used.
        eps: attack budget in pixel units (e.g. ``8/255`` L-inf, ``0.5`` L2).
        norm: ``"Linf"`` or ``"L2"``.
        attacks: names from :data:`ATTACKS`, or one comma-separated string. ``"clean"`` is
            always measured (robust accuracy needs it).
        n_examples: evaluate the first ``n_examples`` (all by default).
        batch_size: examples per forward pass (attacks and AutoAttack alike).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        seed: seeds PGD's random starts and AutoAttack.
        pgd_steps, pgd_restarts, pgd_alpha: PGD's budget (alpha defaults to 2.5 eps / steps).
        autoattack_options: ``{"attacks": [...], "iterations": int, "square_queries": int}``
            for ``"autoattack-custom"`` (``iterations``/``square_queries`` also shorten the
            other versions, which then are no longer the published ones).
        fast: evaluate a supermask model through its finalized plain-layer form when outputs are
            bit-identical (see :func:`prepare_model`).
        progress: ``True`` shows progress bars on stderr; a callable receives event dicts.

    Returns:
        ``{"accuracy": {attack: fraction}, "attacks": {attack: details}, "settings": {...},
        "data": {...}, "model": {...}, "units": {...}, "versions": {...}, "time_s": float}``.

    Example:
        >>> test = binprune.load_dataset("fashion-mnist", split="test")
        >>> result = binprune.evaluate(model, test, eps=0.1, n_examples=1000)
        >>> result["accuracy"]  # {'clean': ..., 'pgd': ..., 'autoattack': ...}
    """
    eps, norm = _check_eps(eps), _check_norm(norm)
    names = _check_attacks(attacks)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(pgd_steps, "pgd_steps")
    _check_positive_int(pgd_restarts, "pgd_restarts")
    if pgd_alpha is not None and not (isinstance(pgd_alpha, (int, float)) and pgd_alpha > 0):
        raise ValueError(f"pgd_alpha must be a number > 0, got {pgd_alpha!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    options = dict(autoattack_options or {})
    unknown = set(options) - {"attacks", "iterations", "square_queries"}
    if unknown:
        raise ValueError(f"unknown autoattack_options {sorted(unknown)}: use attacks, iterations, square_queries")
    if "autoattack-custom" in names and not options.get("attacks"):
        raise ValueError("'autoattack-custom' needs autoattack_options={'attacks': [...]} naming AutoAttack's attacks")
    dev = resolve_device(device)
    x, y, data_info = evaluation_tensors(data, n_examples)
    reporter = _Progress(progress)
    started = time.perf_counter()

    eval_model, model_info = prepare_model(model, x[:batch_size], device=dev, fast=fast)
    model_info["class"] = type(model).__name__
    if model_info["supermask"]:
        from .sparsity import sparsity_report

        report = sparsity_report(model)
        model_info.update(sparsity=report.sparsity, kept_params=report.kept_params, total_params=report.total_params)
    else:
        model_info["total_params"] = sum(p.numel() for p in model.parameters())

    details: dict[str, dict] = {}
    accuracy: dict[str, float] = {}
    n = len(x)
    with frozen_parameters(eval_model):
        t0 = time.perf_counter()
        reporter.start("clean", _batches(n, batch_size))
        clean = correct_flags(eval_model, x, y, batch_size=batch_size, device=dev, progress=reporter)
        reporter.close()
        accuracy["clean"] = int(clean.sum()) / n
        details["clean"] = {"accuracy": accuracy["clean"], "correct_examples": int(clean.sum()), "n_examples": n,
                            "time_s": round(time.perf_counter() - t0, 3)}
        for name in names:
            if name == "clean":
                continue
            if name == "pgd":
                t0 = time.perf_counter()
                alpha = default_alpha("pgd", eps, pgd_steps) if pgd_alpha is None else float(pgd_alpha)
                reporter.start(f"pgd-{pgd_steps}" + (f" x{pgd_restarts}" if pgd_restarts > 1 else ""),
                               _batches(int(clean.sum()), batch_size) * pgd_restarts)
                robust = pgd_robust_flags(eval_model, x, y, clean, eps=eps, norm=norm, steps=pgd_steps,
                                          restarts=pgd_restarts, alpha=alpha, batch_size=batch_size, device=dev,
                                          seed=seed, progress=reporter)
                reporter.close()
                accuracy["pgd"] = int(robust.sum()) / n
                details["pgd"] = {
                    "accuracy": accuracy["pgd"], "robust_examples": int(robust.sum()), "n_examples": n,
                    "steps": pgd_steps, "restarts": pgd_restarts, "alpha": alpha, "random_start": True,
                    "implementation": f"torchattacks.{'PGD' if norm == 'Linf' else 'PGDL2'}",
                    "time_s": round(time.perf_counter() - t0, 3),
                }
                continue
            version = _VERSION_OF[name]
            result, _ = run_autoattack(
                eval_model, x, y, eps=eps, norm=norm, version=version,
                attacks=options.get("attacks") if version == "custom" else None,
                iterations=options.get("iterations"), square_queries=options.get("square_queries"),
                batch_size=batch_size, device=dev, seed=seed, progress=reporter, clean=clean,
            )
            accuracy[name] = result["accuracy"]
            details[name] = result
    return {
        "accuracy": accuracy,
        "attacks": details,
        "settings": {"eps": eps, "norm": norm, "attacks": ["clean"] + [a for a in names if a != "clean"],
                     "n_examples": n, "batch_size": batch_size, "device": str(dev), "seed": seed,
                     "pgd_steps": pgd_steps, "pgd_restarts": pgd_restarts, "autoattack_options": options or None},
        "data": data_info,
        "model": model_info,
        "units": UNITS,
        "versions": _versions(),
        "time_s": round(time.perf_counter() - started, 3),
    }
