"""``binprune compare``: binprune and its baselines under one protocol, in one table.

Every method of a table uses the same data (one seeded subset of the training set), the same
architecture, the same training attack and budget, the same seed and batch size, the same number
of epochs per phase, and the same evaluation (clean, PGD-20 and AutoAttack standard on the same
test images). Methods differ only in what they train; each is a registered
:class:`binprune.methods.Method` and lists its phases:

=================  =====================================================================
phase              used by
=================  =====================================================================
``dense-fp``       AT (FP); HYDRA's pre-training; ATMC's starting point
``dense-binary``   AT (binary)
``small-*``        AT of the small dense network (about 1% of the parameters)
``hydra-prune-*``  HYDRA's score training (shared by its FP and binary fine-tuning)
``hydra-ft-*``     HYDRA's fine-tuning
``atmc-*``         ATMC's projected / ADMM training
``rst``, ``bp-*``  the supermask methods (one phase each)
=================  =====================================================================

Each phase trains with :func:`binprune.train` in its own folder (``DIR/phases/NAME``), so an
interrupted run resumes where it stopped; a finished phase leaves ``final.pt`` and is reused by
every method that needs it. Each finished method writes ``DIR/methods/NAME.json`` (atomically);
re-running with the same ``DIR`` skips those. ``DIR/table.json``, ``DIR/table.md`` and
``DIR/table.png`` are rewritten after every method.

The settings are a :class:`binprune.config.CompareConfig`, read from the YAML presets shipped in
``binprune/presets/compare/`` (:func:`list_presets`, :func:`resolve_preset`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import CompareConfig, TrainConfig, config_from_dict, load_preset
from ..config import list_presets as list_config_presets
from ..data import load_dataset, num_batches
from ..evaluation import evaluate
from ..evaluation.runner import package_versions
from ..loading import load_model
from ..methods import Method, Outcome, Phase, count_params, get_method, list_methods, weight_counts, weight_sparsity
from ..methods.dense import width_factor_for_ratio
from ..models import create_model
from ..results import ComparisonRow, EvalReport, accuracy_interval, git_commit
from ..stats import INTERVAL_METHOD, PAIRED_TEST, exact_mcnemar
from ..training import train
from ..utils import atomic_write_bytes, resolve_device, write_json
from ..views import ExampleView, select_examples
from .parallel import phase_lock, run_parallel
from .protocol import (ALPHA, ATTACK_LABELS, evaluation_attacks, format_p, holm_correct, protocol_note,
                       saved_robust_flags, seed_markdown, table_attacks)
from .sweeps import seed_runs, width_sweep

__all__ = ["DEFAULT_METHODS", "Runner", "compare", "list_methods", "list_presets", "resolve_preset", "write_table",
           "table_statistics", "REFERENCE_METHOD", "PAIRED_ATTACKS", "ALPHA"]

#: The rows of the paper's table (Liu et al., 2022), in its order, and binprune's own variants.
PAPER_METHODS = (
    "at-fp", "at-fp-lbn", "at-binary", "at-binary-lbn", "at-fp-small", "at-binary-small",
    "flyingbird", "rst", "rst-lbn", "hydra-fp-p0.1", "hydra-binary-p0.1", "hydra-fp", "hydra-binary",
    "sehwag2019", "atmc-fp", "atmc-binary", "atmc-fp-p0.1", "atmc-binary-p0.1", "binprune-pgd10", "binprune-fast",
)
DEFAULT_METHODS = PAPER_METHODS + ("binprune-p0.1", "binprune-p1.0", "binprune-global")

#: Datasets without a default folder (Fashion-MNIST has the Debian package's).
_NEEDS_DATA_DIR = ("cifar10", "cifar100", "imagefolder")

# --- presets -------------------------------------------------------------------------------------

_OVERRIDABLE = ("epochs", "train_examples", "test_examples", "budget")
_CHOICE_OVERRIDES = {"budget": ("equal", "published")}
_DEPRECATED_OVERRIDES = {"eval_examples": "test_examples"}
# Protocol keys of results folders written before the settings were renamed.
_LEGACY_PROTOCOL_KEYS = {"steps": "attack_steps", "eval_examples": "test_examples", "pgd_steps": "test_pgd_steps"}


def list_presets(include_hidden: bool = False) -> list[str]:
    """Names of the comparison presets shipped with binprune (``binprune/presets/compare``)."""
    return list_config_presets("compare", include_hidden)


def _normalize_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overrides`` without ``None`` values, deprecated names replaced (with a warning), checked."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for old, new in _DEPRECATED_OVERRIDES.items():
        if old in given:
            warnings.warn(f"the override {old!r} is deprecated: use {new!r}", DeprecationWarning, stacklevel=3)
            value = given.pop(old)
            if given.get(new, value) != value:
                raise ValueError(f"{old} (deprecated) and {new} given with different values")
            given[new] = value
    unknown = set(given) - set(_OVERRIDABLE)
    if unknown:
        raise ValueError(f"cannot override {sorted(unknown)}: only {', '.join(_OVERRIDABLE)}")
    for key, value in given.items():
        if key in _CHOICE_OVERRIDES:
            if value not in _CHOICE_OVERRIDES[key]:
                raise ValueError(f"{key} must be one of {', '.join(_CHOICE_OVERRIDES[key])}, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return given


def resolve_preset(preset: str | CompareConfig, overrides: Mapping[str, Any] | None = None) -> CompareConfig:
    """The preset named ``preset`` (or the config given), with ``overrides`` of ``epochs``,
    ``train_examples`` or ``test_examples`` applied (``eval_examples``: deprecated name of
    ``test_examples``). The config given is not modified."""
    if isinstance(preset, str):
        try:
            data = load_preset("compare", preset)
        except ValueError:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(list_presets())}") from None
        config = config_from_dict(CompareConfig, {**data, "name": preset}, where=f"compare preset {preset}")
    elif isinstance(preset, CompareConfig):
        config = preset
    else:
        raise TypeError(f"preset must be a preset name or a CompareConfig, got {type(preset).__name__}")
    config = dataclasses.replace(config, **_normalize_overrides(overrides))
    config.validate()
    return config


# --- running phases ------------------------------------------------------------------------------


class Runner:
    """Runs (or reuses) the training phases of one comparison folder: the context
    (:class:`binprune.methods.MethodContext`) every method's phases are built in."""

    def __init__(self, config: CompareConfig, out_dir: Path, train_set: Any, *, device: torch.device,
                 progress: bool, log: Callable[[str], None]):
        self.config = config
        self.out_dir = Path(out_dir)
        self.train_set = train_set
        self.device = device
        self.progress = progress
        self.log = log
        self._small: tuple[float, float] | None = None
        self._finished: dict[str, tuple[nn.Module, dict]] = {}

    def base_model(self, width_factor: float = 1.0) -> nn.Module:
        """The comparison's dense architecture (at ``width_factor`` times its widths)."""
        ds = self.train_set
        return create_model(self.config.arch, num_classes=ds.num_classes, in_channels=ds.in_channels,
                            mean=list(ds.mean), std=list(ds.std), width_factor=width_factor, seed=self.config.seed,
                            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.arch_kwargs.items()})

    def small_width(self) -> tuple[float, float]:
        """``(width_factor, parameter ratio)`` of the small dense network (about ``small_ratio``)."""
        if self._small is None:
            full = count_params(self.base_model())
            self._small = width_factor_for_ratio(self.base_model, self.config.small_ratio, full)
        return self._small

    def train_config(self, lr: float) -> TrainConfig:
        """The trainer's settings of every phase (only the learning rate differs)."""
        c = self.config
        return TrainConfig(eps=c.eps, epochs=c.epochs, attack=c.attack, attack_steps=c.attack_steps,
                           carry_perturbation=c.carry_perturbation, batch_size=c.batch_size, lr=lr,
                           weight_decay=c.weight_decay, seed=c.seed)

    def phase_epochs(self, phase: Phase) -> float:
        """Epochs of ``phase`` under the comparison's budget rule (:meth:`Phase.budget_epochs`)."""
        return phase.budget_epochs(self.config.epochs, self.config.budget)

    def phase_config(self, phase: Phase) -> TrainConfig:
        """The trainer's settings of ``phase``: the comparison's (data, attack budget, batch, seed),
        its share of the step budget, and the method's own loss, optimizer and schedule."""
        epochs = self.phase_epochs(phase)
        whole = max(1, math.ceil(epochs - 1e-9))
        base = dataclasses.replace(self.train_config(phase.lr), epochs=whole,
                                   budget_epochs=None if epochs == whole else epochs)
        settings = dict(phase.train)
        if settings.get("attack", base.attack) != "fast":  # a method's own iterative attack carries nothing
            settings.setdefault("carry_perturbation", False)
        config = dataclasses.replace(base, **settings)
        config.validate()
        return config

    def phase_steps(self, phase: Phase) -> int:
        """Optimizer steps ``phase`` trains: its epochs times the trainer's steps per epoch (the
        training subset less the validation share, whole batches)."""
        config = self.phase_config(phase)
        view = ExampleView(self.train_set).split(config.val_fraction, config.seed, "val")[0]
        per_epoch = num_batches(len(view), config.batch_size, drop_last=True)
        if config.budget_epochs is None:
            return per_epoch * config.epochs
        return max(1, round(per_epoch * config.budget_epochs))

    def phase_folder(self, phase: Phase) -> str:
        """A phase's folder name: its name, with its epochs when the method gives a schedule
        (the same phase under two budgets is two runs)."""
        if phase.epochs is None:
            return phase.name
        return f"{phase.name}-e{self.phase_epochs(phase):.4g}"

    def run_phase(self, phase: Phase) -> tuple[nn.Module, dict]:
        """Train ``phase`` (or resume it, or reuse its finished result): ``(model, record)``."""
        key = self.phase_folder(phase)
        if key in self._finished:
            return self._finished[key]
        folder = self.out_dir / "phases" / key
        with phase_lock(folder):  # parallel workers: one trains a shared phase, the others wait and reuse it
            return self._run_phase(phase, folder, key)

    def _run_phase(self, phase: Phase, folder: Path, key: str) -> tuple[nn.Module, dict]:
        final = folder / "final.pt"
        if final.is_file():
            record = load_checkpoint(final)["phase"]
            self.log(f"  phase {key}: done ({record['seconds']:.0f} s), reusing {final}")
            self._finished[key] = (load_model(final, device=self.device), record)
            return self._finished[key]
        config = self.phase_config(phase)
        self.log(f"  phase {key}: training {config.budget_epochs or config.epochs:.4g} epoch(s), lr {phase.lr:g}"
                 + (f", {dict(phase.train)}" if phase.train else ""))
        model = phase.build(phase.start())
        step_hook = phase.hook(model) if phase.hook is not None else None
        result = train(model, self.train_set, config, device=self.device,
                       progress=self.progress, out_dir=folder, resume=(folder / "last.pt").is_file(),
                       step_hook=step_hook,
                       extra_config={"compare_preset": self.config.name, "compare_phase": key})
        model = result.model
        details = phase.finish(model, step_hook) if phase.finish is not None else {}
        facts = result.facts
        val = facts.get("val_accuracy")
        record = {"name": key, "seconds": float(facts["seconds"]), "epochs": config.budget_epochs or config.epochs,
                  "lr": phase.lr, "selected_epoch": facts["selected_epoch"],
                  "val_robust_acc": val.get("pgd") if val else None, "details": details,
                  "settings": dict(phase.train), "optimizer_steps": facts.get("optimizer_steps")}
        save_checkpoint(final, model, phase=record)
        self._finished[key] = (model, record)
        return model, record


# --- data and evaluation -------------------------------------------------------------------------


def _data_dir(config: CompareConfig, data_dir: str | os.PathLike | None) -> str | None:
    folder = data_dir if data_dir is not None else config.data_dir
    if folder is None and config.dataset in _NEEDS_DATA_DIR:
        raise ValueError(f"{config.dataset} has no default folder: pass data_dir=... to compare "
                         f"(binprune compare --data-dir DIR), e.g. torchvision's CIFAR-10 folder or an image-folder "
                         "tree with train/ and test/")
    return None if folder is None else str(folder)


def _load_data(config: CompareConfig, data_dir: str | None) -> tuple[Any, torch.Tensor, torch.Tensor, dict]:
    """The training subset (seeded) and the evaluation tensors, plus a description of both."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory {data_dir} does not exist or is not a folder")
    train_set = load_dataset(config.dataset, data_dir, split="train")
    test_set = load_dataset(config.dataset, data_dir, split="test")
    info: dict[str, Any] = {"dataset": config.dataset,
                            "data_dir": str(data_dir) if data_dir else getattr(train_set, "source", ""),
                            "train_total": len(train_set), "test_total": len(test_set)}
    data_seed = config.effective_data_seed
    subset = ExampleView(train_set).random_subset(config.train_examples, data_seed, "compare-train-subset")
    if subset.indices is not None:
        train_set = train_set.subset(subset.indices)
        info["train_selection"] = f"{config.train_examples} examples: a seeded random subset (seed {data_seed})"
    else:
        info["train_selection"] = f"all {len(train_set)} training examples"
    x, y, selected = select_examples(test_set, config.test_examples, config.eval_order, data_seed)
    info["eval_selection"] = selected["selection"]
    info["eval_class_counts"] = torch.bincount(y, minlength=test_set.num_classes).tolist()
    return train_set, x, y, info


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: CompareConfig, device: torch.device,
              progress: bool, name: str, resume_dir: Path | None = None) -> EvalReport:
    """A method's evaluation; with ``config.eval_chunk`` in chunks saved under ``resume_dir``
    (a killed evaluation resumes at the first missing chunk)."""
    return evaluate(model, (x, y), eps=config.eps, attacks=evaluation_attacks(config, name),
                    pgd_steps=config.test_pgd_steps, seed=config.seed, device=device, progress=progress,
                    autoattack_options=config.autoattack_options, chunk_examples=config.eval_chunk,
                    resume_dir=resume_dir if config.eval_chunk else None)


def _autoattack_warnings(report: EvalReport) -> list[str]:
    found = [w for name in ("autoattack-apgd", "autoattack") if (result := report.attacks.get(name)) is not None
             for w in result.details.get("autoattack_warnings", [])]
    return list(dict.fromkeys(found))


# --- the table -----------------------------------------------------------------------------------


def _attack_text(c: CompareConfig) -> str:
    fast = ("FGSM from each example's perturbation of the previous epoch (step 0.5 eps; with crop-and-flip data the "
            "perturbation is kept in the padded frame)" if c.carry_perturbation else
            "FGSM with random start (step 1.25 eps)")
    return {"fast": fast,
            "pgd": f"PGD-{c.attack_steps} (step 2.5 eps/{c.attack_steps}, random start)",
            "trades": f"TRADES (TPGD-{c.attack_steps})", "none": "none"}[c.attack]


def _budget_note(c: CompareConfig) -> str:
    """The step-budget rule of the table, stated with its numbers."""
    if c.budget == "published":
        return ("Budget: published: every phase runs its method's published epoch count (AT and binprune PGD-10 400, "
                "binprune fast 100, RST 160, Flying Bird 200, HYDRA 100/20/100, Sehwag et al. 100/100, ATMC "
                "200/200/200), so methods get DIFFERENT numbers of optimizer steps. Train time sums a method's phases.")
    return (f"Budget: equal: every method gets the same total number of optimizer steps, {c.epochs} epoch(s) of the "
            "training subset (to within one step per phase); a multi-phase method splits it in its published "
            "proportions (HYDRA pre-train/prune/fine-tune 100/20/100, Sehwag et al. 100/100, ATMC pre-train/L0/ADMM "
            "200/200/200) while each phase keeps its method's own loss, optimizer, learning rate and schedule "
            "(docs/BASELINES.md). Rows without a schedule of their own (binprune-p0.1, -p1.0, -global) train "
            f"{c.epochs} epoch(s) with the table's attack. budget=published runs every method's own full schedule "
            "instead. Train time (wall clock) sums a method's phases, shared phases counted in full.")


def _notes(c: CompareConfig, data: dict, small: dict | None, full_params: int) -> list[str]:
    notes = [
        f"Data: {c.dataset}; training on {data['train_selection']}, {c.eps:.4g} Linf budget; the same for every method.",
        f"Architecture: {c.arch}" + (f" {c.arch_kwargs}" if c.arch_kwargs else "")
        + f", {full_params:,} parameters in the dense model (the small rows use a narrowed copy).",
        f"Training: adversarial training with {_attack_text(c)} at the table's eps unless a method's own trainer "
        "says otherwise (HYDRA and Sehwag et al.: TRADES; ATMC: 0.5 CE clean + 0.5 CE adversarial on PGD; Flying Bird "
        "and binprune-pgd10: PGD-10; binprune-fast: the carried FGSM), all with the same eps and attack iterations; "
        f"batch {c.batch_size}, seed {c.seed}. Optimizers, learning rates, weight decays and schedules are each "
        f"method's own (docs/BASELINES.md); rows without their own use SGD momentum 0.9, lr {c.lr:g} (from scratch) "
        f"or {c.finetune_lr:g} (from a trained network), weight decay {c.weight_decay:g}, cosine. Each phase keeps the "
        "epoch with the best PGD accuracy on a held-out 2% of its training examples.",
        _budget_note(c),
        f"Evaluation: clean, PGD-{c.test_pgd_steps} (step 2.5 eps/{c.test_pgd_steps}, random start) and AutoAttack "
        f"standard (APGD-CE, APGD-T, FAB-T, Square) at eps={c.eps:.4g} on {data['eval_selection']} (class counts "
        f"{data['eval_class_counts']}); accuracies are fractions in [0, 1]."
        + (f" AutoAttack's budgets were REDUCED ({c.autoattack_options}): not the standard evaluation."
           if c.autoattack_options else "")
        + (f" The test images were evaluated in chunks of {c.eval_chunk}, each saved as it finished (random starts "
           "are drawn per chunk)." if c.eval_chunk else ""),
        f"Sparsity: fraction of the conv / linear weights that are zero in the evaluated model (target {c.sparsity:g} "
        "for the pruning methods; the AT rows are unpruned). Stored size: bytes, by the formula of each method in "
        "docs/BASELINES.md (supermask methods: the packed .bpk file).",
        "binprune rows: fixed random ±1 weights, learned masks, non-affine batch norms, last batch norm over the "
        "logits (LBN) unless the row says otherwise; RST: fixed signed Kaiming constant weights, Kaiming-uniform "
        "scores, non-affine batch norms, uniform allocation, no LBN (RST-LBN: with it).",
    ]
    if small is not None:
        notes.append(
            f"Small dense network: the same architecture with every width multiplied by {small['width_factor']:g}: "
            f"{small['params']:,} parameters, {small['params_ratio']:.2%} of the full model's {small['params_full']:,}.")
    if protocol_note(c):
        notes.append(protocol_note(c))
    if c.data_note:
        notes.append(c.data_note)
    return notes


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "s":
        return f"{value:.0f}"
    if kind == "p":
        return format_p(value)
    return str(value)


# --- statistics ----------------------------------------------------------------------------------

#: The row every other method is tested against (the first ``binprune-*`` row when it is absent).
REFERENCE_METHOD = "binprune-p0.1"
#: Attacks whose per-example robust flags are compared (error rate: protocol.ALPHA).
PAIRED_ATTACKS = ("pgd", "autoattack-apgd", "autoattack")
_NO_FLAGS = "no per-example flags (row written by an older binprune): n/a"


def _reference_method(rows: Sequence[dict]) -> str | None:
    methods = [r["method"] for r in rows]
    if REFERENCE_METHOD in methods:
        return REFERENCE_METHOD
    return next((m for m in methods if m.startswith("binprune")), None)


def _row_examples(row: dict, header: Mapping[str, Any]) -> int | None:
    """Evaluated examples of a row: its own record, else the table's class counts (older rows)."""
    if row.get("n_examples"):
        return int(row["n_examples"])
    counts = header.get("data", {}).get("eval_class_counts")
    return int(sum(counts)) if counts else None


def _with_intervals(row: dict, header: Mapping[str, Any]) -> dict:
    """``row`` with ``n_examples`` and the 95% Wilson interval of each accuracy (``None``: unknown n)."""
    n = _row_examples(row, header)
    intervals = {k: (accuracy_interval(round(v * n), n) if n and v is not None else None)
                 for k, v in row["accuracy"].items()}
    return {**row, "n_examples": n, "interval95": intervals}


def _paired(method: str, attack: str, ours: Sequence[int] | None, theirs: Sequence[int] | None) -> dict:
    """One exact McNemar comparison of ``method`` with the reference (``n/a`` without flags)."""
    entry: dict[str, Any] = {"method": method, "attack": attack}
    if ours is None or theirs is None:
        return {**entry, "p_value": None, "p_holm": None, "significant": None, "note": _NO_FLAGS}
    if len(ours) != len(theirs):
        return {**entry, "p_value": None, "p_holm": None, "significant": None,
                "note": f"flags of {len(ours)} and {len(theirs)} examples: not the same examples, n/a"}
    test = exact_mcnemar(ours, theirs)
    return {**entry, "method_only_robust": test["b"], "reference_only_robust": test["c"], "n_examples": test["n"],
            "accuracy_difference": (test["b"] - test["c"]) / test["n"] if test["n"] else 0.0,
            "p_value": test["p_value"], "p_holm": None, "significant": None}


def table_statistics(rows: Sequence[Mapping[str, Any]], flags: Mapping[str, Mapping[str, Sequence[int]]],
                     alpha: float = ALPHA) -> dict:
    """Paired tests of every method against the binprune reference row, on the same examples.

    For each other row and each attack of :data:`PAIRED_ATTACKS`: the exact McNemar test on the
    two per-example robust flag vectors; the p-values of the table are Holm-corrected together
    (one family), and ``significant`` is the Holm decision at ``alpha``. Rows without flags get
    ``p_value: None`` ("n/a") and are left out of the correction.
    """
    reference = _reference_method(rows)
    out: dict[str, Any] = {"interval_method": INTERVAL_METHOD, "paired_test": PAIRED_TEST,
                           "correction": "Holm (step-down) over all the comparisons of this table", "alpha": alpha,
                           "reference": reference, "attacks": list(PAIRED_ATTACKS), "comparisons": [], "n_tested": 0}
    if reference is None:
        out["note"] = "no binprune row: no paired comparisons"
        return out
    ref_flags = flags.get(reference, {})
    ref_row = next(r for r in rows if r["method"] == reference)
    comparisons = [_paired(r["method"], attack, flags.get(r["method"], {}).get(attack), ref_flags.get(attack))
                   for r in rows if r["method"] != reference for attack in PAIRED_ATTACKS
                   if r["accuracy"].get(attack) is not None and ref_row["accuracy"].get(attack) is not None]
    out["comparisons"], out["n_tested"] = comparisons, holm_correct(comparisons, alpha)
    return out


def _statistics_notes(stats: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    ns = sorted({r["n_examples"] for r in rows if r.get("n_examples")})
    notes = [f"Intervals: each accuracy with its 95% Wilson score interval (n = {', '.join(map(str, ns)) or 'n/a'} "
             "test images), as [low-high]."]
    reference = stats.get("reference")
    if reference is None:
        return notes + ["Paired tests: n/a (no binprune row to compare with)."]
    label = next((r["label"] for r in rows if r["method"] == reference), reference)
    if not stats["n_tested"]:
        return notes + [f"Paired tests against {label}: n/a (no per-example robust flags in these rows; "
                        "results written by binprune before they were recorded)."]
    return notes + [
        f"Paired tests: each method against {label} on the same test images, exact McNemar test (two-sided "
        "binomial test on the images where exactly one of the two is robust) on the per-example robust flags "
        f"of each attack both rows ran; p-values Holm-corrected over the table's {stats['n_tested']} comparisons; "
        f"* marks a difference significant at alpha = {stats['alpha']:g} after the correction. Per-example flags: "
        "methods/NAME.json, evaluation.attacks.<attack>.robust_flags."]


def paired_verdicts(stats: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per method, the paired test against the reference under the strongest attack both rows ran
    (AutoAttack, else its APGD attacks, else PGD): which one is more robust, or that the table
    cannot tell them apart. What a claim "A beats B" may cite."""
    verdicts = []
    for r in rows:
        if r["method"] == stats.get("reference"):
            continue
        found = {c["attack"]: c for c in stats.get("comparisons", [])
                 if c["method"] == r["method"] and c.get("p_holm") is not None}
        attack = next((a for a in reversed(PAIRED_ATTACKS) if a in found), None)
        if attack is None:
            continue
        c = found[attack]
        if not c["significant"]:
            outcome = "no significant difference"
        elif c["accuracy_difference"] > 0:
            outcome = "method more robust"
        else:
            outcome = "reference more robust"
        verdicts.append({"method": r["method"], "label": r["label"], "attack": attack, "outcome": outcome,
                         "accuracy_difference": c["accuracy_difference"], "p_holm": c["p_holm"],
                         "method_only_robust": c["method_only_robust"],
                         "reference_only_robust": c["reference_only_robust"]})
    return verdicts


def _verdict_markdown(stats: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    verdicts = stats.get("verdicts")  # computed once, by write_table
    if not verdicts:
        return []
    reference = next(r["label"] for r in rows if r["method"] == stats["reference"])
    lines = ["", f"Paired verdicts against {reference} (strongest attack both rows ran; Holm-corrected exact "
             "McNemar; a difference without * in the table is not a finding):", ""]
    for v in verdicts:
        diff = f"{v['accuracy_difference']:+.1%}".replace("%", " points")
        if v["outcome"] == "no significant difference":
            text = f"no significant difference ({diff}, p = {_fmt(v['p_holm'], 'p')})"
        else:
            winner = v["label"] if v["outcome"] == "method more robust" else reference
            text = f"**{winner}** more robust ({diff}, p = {_fmt(v['p_holm'], 'p')})"
        lines.append(f"- {v['label']}, {ATTACK_LABELS[v['attack']]}: {text}; robust only under the row "
                     f"{v['method_only_robust']}, only under the reference {v['reference_only_robust']} images")
    return lines


def _p_cell(stats: Mapping[str, Any], method: str, attacks: Sequence[str]) -> str:
    if method == stats.get("reference"):
        return "reference"
    found = {c["attack"]: c for c in stats.get("comparisons", []) if c["method"] == method}
    if all(c.get("p_holm") is None for c in found.values()):
        return "n/a"
    return " / ".join(_fmt(found[a].get("p_holm"), "p") + ("*" if found[a].get("significant") else "")
                      if a in found else "n/a" for a in attacks[1:])


def _acc_cell(row: dict, key: str, stats: Mapping[str, Any]) -> str:
    value, interval = row["accuracy"].get(key), (row.get("interval95") or {}).get(key)
    text = _fmt(value, "acc")
    if any(c["method"] == row["method"] and c["attack"] == key and c.get("significant")
           for c in stats.get("comparisons", [])):
        text += "*"
    return text + (f" [{interval[0]:.3f}-{interval[1]:.3f}]" if interval else "")


def _markdown(header: dict, rows: Sequence[dict], stats: Mapping[str, Any] | None = None) -> str:
    stats = stats or {}
    reference = stats.get("reference")
    attacks = table_attacks(rows)
    labels = [ATTACK_LABELS[a] for a in attacks]
    lines = [f"# binprune compare: {header['preset']}", "",
             f"| method | pruning strategy | weights | sparsity | {' | '.join(labels)} | stored size (bytes) | "
             f"train time (s) | vs {reference or 'binprune'}: Holm p, {' / '.join(labels[1:])} |",
             "|---|---|---|---|" + "---|" * len(attacks) + "---|---|---|"]
    for r in rows:
        sparsity = f"{r['sparsity']:.4f}"
        if r.get("params_ratio") is not None:
            sparsity += f" ({r['params_ratio']:.2%} of full params)"
        accuracies = " | ".join(_acc_cell(r, key, stats) for key in attacks)
        lines.append(f"| {r['label']} | {r['strategy']} | {r['precision']} | {sparsity} | {accuracies} | "
                     f"{_fmt(r['stored_bytes'], 'int')} | {_fmt(r['train_seconds'], 's')} | "
                     f"{_p_cell(stats, r['method'], attacks)} |")
    notes = list(header.get("notes", [])) + (_statistics_notes(stats, rows) if stats else [])
    lines += _verdict_markdown(stats, rows)
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes] + seed_markdown(header.get("seed_summary"))
    flagged = [(r["label"], w) for r in rows for w in r.get("autoattack_warnings", [])]
    if flagged:
        lines += ["", "AutoAttack's own reliability flags (see its flags_doc.md):", ""]
        lines += [f"- {label}: {warning}" for label, warning in flagged]
    pending = header.get("pending_methods") or []
    if pending:
        lines += ["", f"Not finished yet: {', '.join(pending)}."]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[dict]) -> str:
    """The table's rows as CSV (one row per method; accuracies as fractions, 95% interval bounds)."""
    import csv
    import io

    columns = ["method", "label", "strategy", "precision", "sparsity", "params_ratio", "stored_bytes", "train_seconds"]
    attacks = ("clean", "pgd", "autoattack")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + [f"{a}{suffix}" for a in attacks for suffix in ("", "_low95", "_high95")])
    for r in rows:
        values = [r.get(c) for c in columns]
        for a in attacks:
            low, high = ((r.get("interval95") or {}).get(a) or (None, None))
            values += [(r.get("accuracy") or {}).get(a), low, high]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def write_table(out_dir: str | os.PathLike, header: dict, rows: Sequence[ComparisonRow | Mapping[str, Any]],
                flags: Mapping[str, Mapping[str, Sequence[int]]] | None = None) -> dict:
    """Write ``table.json``, ``table.md``, ``table.csv`` and ``table.png`` into ``out_dir``; returns the table
    (the content of ``table.json``). ``rows`` are :class:`binprune.results.ComparisonRow` (or
    their ``to_dict()`` form); ``flags`` maps a method to ``{attack: per-example robust flags}``
    for the paired tests (:func:`table_statistics`; without flags they read "n/a")."""
    out = Path(out_dir)
    plain = [_with_intervals(r.to_dict() if isinstance(r, ComparisonRow) else dict(r), header) for r in rows]
    stats = table_statistics(plain, flags or {})
    stats["verdicts"] = paired_verdicts(stats, plain)
    table = {**header, "rows": plain, "statistics": stats, "units": {
        "accuracy": "fraction of the evaluated examples, in [0, 1]",
        "interval95": "[low, high]: 95% Wilson score interval of the accuracy", "stored_bytes": "bytes",
        "train_seconds": "seconds", "sparsity": "fraction of conv / linear weights that are zero",
        "p_value": "exact McNemar test against the reference row; p_holm: Holm-corrected over the table"}}
    write_json(out / "table.json", table)
    atomic_write_bytes(out / "table.md", _markdown(header, plain, stats).encode())
    atomic_write_bytes(out / "table.csv", _csv(plain).encode())
    _bar_chart(plain, out / "table.png", header["preset"])
    return table


def _bar_chart(rows: Sequence[dict], path: Path, title: str) -> None:
    """Clean / PGD / AutoAttack accuracy per method as horizontal bars with their 95% intervals
    (written atomically)."""
    from matplotlib.figure import Figure

    if not rows:
        return
    series = [(key, ATTACK_LABELS[key]) for key in table_attacks(rows)]
    height = 0.8 / len(series)
    fig = Figure(figsize=(8, 0.45 * len(rows) * len(series) / 2 + 1.5))
    ax = fig.subplots()
    for i, (key, name) in enumerate(series):
        values = [r["accuracy"].get(key) or 0.0 for r in rows]
        intervals = [(r.get("interval95") or {}).get(key) for r in rows]
        errors = [[v - iv[0] if iv else 0.0 for v, iv in zip(values, intervals)],
                  [iv[1] - v if iv else 0.0 for v, iv in zip(values, intervals)]]
        ax.barh([j + (i - (len(series) - 1) / 2) * height for j in range(len(rows))], values, height=height, label=name,
                xerr=[[max(e, 0.0) for e in side] for side in errors], error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (bars: 95% Wilson intervals)")
    ax.set_title(f"binprune compare: {title}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


# --- the command ---------------------------------------------------------------------------------


def _check_methods(methods: Sequence[str] | None, config: CompareConfig) -> list[str]:
    names = list(methods) if methods else list(config.methods or DEFAULT_METHODS)
    known = list_methods()
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    unknown = [m for m in config.headline_methods if m not in known]
    if unknown:
        raise ValueError(f"unknown headline method(s) {', '.join(unknown)} in the preset: choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def _check_protocol(path: Path, protocol: dict[str, Any], out: Path) -> None:
    """Refuse a folder that holds a comparison with other settings (earlier names accepted)."""
    if not path.is_file():
        return
    saved = json.loads(path.read_text()).get("protocol", {})
    saved = {_LEGACY_PROTOCOL_KEYS.get(k, k): v for k, v in saved.items()}
    if saved != protocol:
        diffs = [k for k in sorted(set(protocol) | set(saved)) if protocol.get(k) != saved.get(k)]
        raise ValueError(f"{out} holds a comparison with different settings ({', '.join(diffs[:6])}): "
                         "use the same preset and options, or another --out")


def _header(config: CompareConfig, runner: Runner, methods: Sequence[Method], data_info: dict,
            overridden: dict, device: torch.device) -> dict:
    """The table's header: settings, data, device and notes (the small network described when a
    method trains it)."""
    full_params = count_params(runner.base_model())
    small = None
    if any(m.uses_small_network for m in methods):
        factor, ratio = runner.small_width()
        small = {"width_factor": factor, "params_ratio": ratio, "params": count_params(runner.base_model(factor)),
                 "params_full": full_params}
    return {"preset": config.name, "description": config.description, "settings": config.protocol(),
            "overrides": overridden, "data": data_info, "device": str(device),
            "versions": {**package_versions(), **git_commit()},
            "notes": _notes(config, data_info, small, full_params)}


def _collect_rows(names: Sequence[str], methods_dir: Path) -> tuple[list[ComparisonRow], list[str], dict]:
    """The finished rows, the pending methods, and each finished method's per-example robust
    flags ``{method: {attack: flags}}`` (absent in files written before flags were recorded)."""
    rows, pending, flags = [], [], {}
    for name in names:
        path = methods_dir / f"{name}.json"
        if path.is_file():
            rows.append(ComparisonRow.from_dict(json.loads(path.read_text())["row"]))
            flags[name] = saved_robust_flags(path)
        else:
            pending.append(name)
    return rows, pending, flags


_REUSE_IGNORED = ("name", "headline_methods", "seeds", "width_factors")


def reuse_results(source: str | os.PathLike, config: CompareConfig, data_info: Mapping[str, Any],
                  names: Sequence[str], methods_dir: Path, log: Callable[[str], None]) -> list[str]:
    """Copy into ``methods_dir`` the finished results of ``names`` held by comparison folder
    ``source`` when they are the numbers this comparison would produce: every setting that changes
    results equal (the preset's name, its headline list and extra seeds aside), the same data
    (``data_info``: folder, selections, class counts) and, per method, the same evaluation attacks.
    Returns the methods reused; the copies record where they came from.

    Why: the width sweep's x1 column is the fmnist-cpu table's network; training it twice costs
    CPU-hours and gives the same files."""
    source = Path(source)
    settings = source / "compare.json"
    if not settings.is_file():
        raise ValueError(f"reuse: {source} holds no compare.json (not a comparison folder): pass a folder written "
                         "by binprune compare")
    saved = json.loads(settings.read_text()).get("protocol", {})
    saved = {_LEGACY_PROTOCOL_KEYS.get(k, k): v for k, v in saved.items()}
    ours = config.protocol()
    differing = [k for k in sorted(set(ours) | set(saved)) if k not in _REUSE_IGNORED and ours.get(k) != saved.get(k)]
    table = source / "table.json"
    if not differing and (not table.is_file() or json.loads(table.read_text()).get("data") != json.loads(
            json.dumps(dict(data_info), default=str))):
        differing = ["data (its folder or the examples selected)"]
    if differing:
        log(f"nothing reused from {source}: its settings differ ({', '.join(differing[:6])})")
        return []
    theirs = dataclasses.replace(config, headline_methods=tuple(saved.get("headline_methods", ())))
    reused = []
    for name in names:
        path = source / "methods" / f"{name}.json"
        if not path.is_file():
            continue
        if evaluation_attacks(theirs, name) != evaluation_attacks(config, name):
            log(f"{name}: not reused from {source}: evaluated there with other attacks")
            continue
        record = json.loads(path.read_text())
        record["reused_from"] = str(path)
        write_json(methods_dir / f"{name}.json", record)
        reused.append(name)
        log(f"{name}: reused the finished result of {path} (same settings)")
    return reused


def _pending(names: Sequence[str], config: CompareConfig, methods_dir: Path) -> list[str]:
    """The methods without a result file, headline rows first: a comparison stopped part-way (they
    take hours on a CPU) then already holds the rows its conclusions rest on. The table keeps the
    given row order."""
    headline = set(config.headline_methods)
    return sorted((n for n in names if not (methods_dir / f"{n}.json").is_file()), key=lambda n: n not in headline)


def _skip_finished(names: Sequence[str], todo: Sequence[str], config: CompareConfig, data_info: Mapping[str, Any],
                   methods_dir: Path, reuse_from: str | os.PathLike | None, log: Callable[[str], None]) -> list[str]:
    """``todo`` less the methods copied from ``reuse_from`` (:func:`reuse_results`); logs the
    methods finished earlier."""
    reused = reuse_results(reuse_from, config, data_info, todo, methods_dir, log) if reuse_from and todo else []
    for name in names:
        if name not in todo:
            log(f"{name}: finished earlier, skipped")
    return [n for n in todo if n not in reused]


def _measure(name: str, method: Method, outcome: Outcome, report: EvalReport, eval_seconds: float) -> ComparisonRow:
    nonzero, total = weight_counts(outcome.model)
    return ComparisonRow(
        method=name, label=method.label, strategy=method.strategy, precision=method.precision,
        sparsity=weight_sparsity(outcome.model), nonzero_weights=nonzero, total_weights=total,
        stored_bytes=outcome.size["bytes"], accuracy=dict(report.accuracy),
        train_seconds=sum(ph["seconds"] for ph in outcome.phases), eval_seconds=eval_seconds,
        phases=[{"name": ph["name"], "seconds": ph["seconds"], "selected_epoch": ph["selected_epoch"]}
                for ph in outcome.phases],
        params_ratio=outcome.extra.get("params_ratio"), autoattack_warnings=_autoattack_warnings(report),
        n_examples=report.n_examples,
    )


def _run_method(name: str, runner: Runner, x_eval: torch.Tensor, y_eval: torch.Tensor, path: Path) -> None:
    """Train (or reuse) the phases of method ``name``, evaluate its model, write its result file."""
    config, log, method = runner.config, runner.log, get_method(name)
    outcome = method.run(runner)
    attacks = evaluation_attacks(config, name)
    log(f"  evaluating {name} on {len(x_eval)} test images ({', '.join(ATTACK_LABELS[a] for a in attacks)})")
    t0 = time.perf_counter()
    report = _evaluate(outcome.model, x_eval, y_eval, config, runner.device, runner.progress, name,
                       runner.out_dir / "evaluations" / name)
    eval_seconds = time.perf_counter() - t0
    if report.settings.get("resumed_chunks"):
        log(f"  {name}: chunks {report.settings['resumed_chunks']} reused from {runner.out_dir / 'evaluations' / name}")
        eval_seconds = report.seconds  # the earlier runs' chunks count too
    row = _measure(name, method, outcome, report, eval_seconds)
    write_json(path, {"row": row.to_dict(), "size": outcome.size, "phases": outcome.phases, "extra": outcome.extra,
                      "evaluation": report.to_dict()})
    accuracies = ", ".join(f"{ATTACK_LABELS[a]} {row.accuracy[a]:.4f}" for a in attacks)
    log(f"  {name}: {accuracies}, {row.stored_bytes:,} bytes, train {row.train_seconds:.0f} s, "
        f"eval {eval_seconds:.0f} s")


def _run_methods(todo: Sequence[str], runner: Runner, x_eval: torch.Tensor, y_eval: torch.Tensor, methods_dir: Path,
                 worker_arguments: dict | None, done: Callable[[str], Any]) -> None:
    """The methods in ``todo``: in parallel processes when ``config.workers > 1`` (and
    ``worker_arguments`` are given), else one after the other; ``done(name)`` after each."""
    workers = runner.config.workers
    if worker_arguments is not None and workers > 1 and len(todo) > 1:
        runner.log(f"{len(todo)} method(s) in {min(workers, len(todo))} parallel processes: {', '.join(todo)}")
        run_parallel(compare, todo, workers, worker_arguments, done)
        return
    for i, name in enumerate(todo, 1):
        runner.log(f"[{i}/{len(todo)}] {name}: {get_method(name).label}")
        _run_method(name, runner, x_eval, y_eval, methods_dir / f"{name}.json")
        done(name)


def compare(
    preset: str | CompareConfig,
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    workers: int | None = None,
    as_worker: bool = False,
    reuse_from: str | os.PathLike | None = None,
) -> dict:
    """Train and evaluate ``methods`` (default: the preset's) under ``preset``; write the table.

    Args:
        preset: a name from :func:`list_presets` or a :class:`binprune.config.CompareConfig`.
        out_dir: the comparison folder; re-running with the same folder skips finished methods
            and resumes unfinished phases (the settings must be the same).
        methods: names from :func:`binprune.methods.list_methods` (a user's registered ones too).
        data_dir: dataset folder (default: the preset's ``data_dir``; CIFAR-10 has no default).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        overrides: ``{"epochs", "train_examples", "test_examples"}`` replacing the preset's values
            (recorded in the table; ``eval_examples`` is a deprecated name of ``test_examples``).
        progress: progress bars and per-epoch lines from the trainer and the evaluation.
        log: receives one line per method / phase.
        workers: methods run in this many parallel processes, one thread each (default: the
            preset's ``workers``, 1); the result files are those of a serial run on one thread
            (:mod:`binprune.experiments.parallel`).
        as_worker: run the methods only (no table, no extra seeds): how parallel workers call it.
        reuse_from: a comparison folder whose finished methods are copied where they are this
            comparison's numbers (:func:`reuse_results`; a width sweep passes it to every width).

    A preset with ``width_factors`` runs every method at each width (:func:`width_sweep`) and
    returns the width table; one with ``seeds`` trains the headline rows with those seeds too and
    adds their mean and spread to the table (``seed_summary``).

    Returns: the table (the content of ``table.json``).
    """
    changes = _normalize_overrides(overrides)
    config = resolve_preset(preset, changes)
    config = dataclasses.replace(config, workers=config.workers if workers is None else workers)
    config.validate()
    names = _check_methods(methods, config)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    arguments = {"data_dir": data_dir, "device": device, "progress": progress, "log": log, "workers": config.workers,
                 "reuse_from": reuse_from}
    if config.width_factors:
        return width_sweep(config, out, names, compare, arguments, log)
    dev = resolve_device(device)
    settings_path = out / "compare.json"
    _check_protocol(settings_path, config.protocol(), out)
    train_set, x_eval, y_eval, data_info = _load_data(config, _data_dir(config, data_dir))
    overridden = {k: getattr(config, k) for k in _OVERRIDABLE if k in changes}
    runner = Runner(config, out, train_set, device=dev, progress=progress, log=log)
    methods_dir = out / "methods"
    todo = _pending(names, config, methods_dir)
    if as_worker:
        _run_methods(todo, runner, x_eval, y_eval, methods_dir, None, lambda *_: None)
        return {}
    todo = _skip_finished(names, todo, config, data_info, methods_dir, reuse_from, log)
    write_json(settings_path, {"preset": config.name, "protocol": config.protocol(), "overrides": overridden})
    started = time.perf_counter()
    header = _header(config, runner, [get_method(n) for n in names], data_info, overridden, dev)

    def rewrite_table(*_: Any) -> dict:
        rows, pending, flags = _collect_rows(names, methods_dir)
        return write_table(out, {**header, "pending_methods": pending}, rows, flags)

    _run_methods(todo, runner, x_eval, y_eval, methods_dir,
                 {"preset": config, "out_dir": str(out), "data_dir": data_dir, "device": device}, rewrite_table)
    if config.seeds:
        header["seed_summary"] = seed_runs(config, out, names, rewrite_table(), compare, arguments)
    header["run_seconds_this_invocation"] = time.perf_counter() - started
    table = rewrite_table()
    log(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'table.png'}")
    return table
