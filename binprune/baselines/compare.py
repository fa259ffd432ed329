"""``binprune compare``: binprune and its baselines under one protocol, in one table.

Every method of a table uses the same data (one seeded subset of the training set), the same
architecture, the same training attack and budget, the same seed and batch size, the same number
of epochs per phase, and the same evaluation (clean, PGD-20 and AutoAttack standard on the same
test images). Methods differ only in what they train:

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..checkpoint import load_checkpoint, load_model, save_checkpoint
from ..convert import convert_to_binary_supermask
from ..data import load_dataset
from ..models import create_model
from ..train import StepHook, train
from ..utils import resolve_device, stable_seed, write_json
from ._common import effective_weights
from .atmc import ATMCProjection, atmc_model, atmc_size
from .dense import LatentClip, binarize_weights, binary_dense_size, count_params, dense_size, width_factor_for_ratio
from .hydra import hydra_model, hydra_size
from .rst import rst_model

__all__ = ["ComparePreset", "Method", "METHODS", "PRESETS", "DEFAULT_METHODS", "compare", "write_table",
           "resolve_preset", "list_presets"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: The shared CIFAR-10 copy (JPEG, image-folder tree), relative to the repository root.
SHARED_CIFAR10 = _REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"


# --- presets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparePreset:
    """Everything that defines a comparison; all methods of the table share it.

    ``lr`` is used by phases that start from scratch (dense AT, score training), ``finetune_lr``
    by phases that start from a trained network (HYDRA fine-tuning, ATMC). ``eval_order`` is
    ``"first"`` (the first ``eval_examples`` test images in file order) or ``"permutation"`` (the
    first ``eval_examples`` of a seeded permutation, for test sets stored sorted by class).
    """

    name: str
    description: str
    dataset: str
    arch: str
    eps: float
    epochs: int
    arch_kwargs: dict = field(default_factory=dict)
    attack: str = "pgd"
    steps: int = 10
    carry_perturbation: bool = False
    batch_size: int = 128
    lr: float = 0.1
    finetune_lr: float = 0.01
    weight_decay: float = 5e-4
    train_examples: int | None = None
    eval_examples: int = 1000
    eval_order: str = "first"
    data_dir: str | None = None
    sparsity: float = 0.99
    p: float = 0.1
    small_ratio: float = 0.01
    seed: int = 0
    pgd_steps: int = 20
    atmc_penalty: float = 0.01
    atmc_admm_every: int = 10
    autoattack_options: dict | None = None
    methods: tuple[str, ...] = ()
    data_note: str = ""
    hidden: bool = False

    def protocol(self) -> dict[str, Any]:
        """The settings that change results (checked when a run is resumed)."""
        skip = {"description", "methods", "data_dir", "hidden", "data_note"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items() if k not in skip}


DEFAULT_METHODS = (
    "at-fp", "at-binary", "at-fp-small", "at-binary-small",
    "hydra-fp", "hydra-binary", "hydra-binary-p0.1",
    "atmc-fp", "atmc-binary", "atmc-binary-p0.1",
    "rst", "binprune-p0.1", "binprune-p1.0", "binprune-global",
)

_CIFAR_NOTE = ("CIFAR-10 from the shared JPEG copy (JPEG-recompressed, so accuracies are close to, not identical "
               "with, numbers on the original release); its test set is stored sorted by class, so evaluation uses "
               "the first N images of a seeded permutation of the test set.")

PRESETS: dict[str, ComparePreset] = {
    "fmnist-cpu": ComparePreset(
        name="fmnist-cpu",
        description="all methods on Fashion-MNIST, small CNN, eps=0.1, 2 CPU cores, about 90 minutes",
        dataset="fashion-mnist", arch="small_cnn", arch_kwargs={"widths": [32, 64, 128]}, eps=0.1,
        attack="fast", carry_perturbation=True, epochs=5, train_examples=12000, batch_size=128,
        lr=0.1, finetune_lr=0.01, eval_examples=200, eval_order="first", methods=DEFAULT_METHODS,
    ),
    "cifar10-cpu": ComparePreset(
        name="cifar10-cpu",
        description="all methods on the CIFAR-10 JPEG copy, small CNN, eps=8/255, 2 CPU cores, about 90 minutes",
        dataset="cifar10", arch="small_cnn", arch_kwargs={"widths": [32, 64, 128]}, eps=8 / 255,
        attack="fast", carry_perturbation=True, epochs=5, train_examples=12000, batch_size=128,
        lr=0.1, finetune_lr=0.01, eval_examples=100, eval_order="permutation", methods=DEFAULT_METHODS,
        data_note=_CIFAR_NOTE,
    ),
    "cifar10-gpu": ComparePreset(
        name="cifar10-gpu",
        description="all methods on CIFAR-10, ResNet-18, eps=8/255, PGD-10 training, 100 epochs per phase (GPU)",
        dataset="cifar10", arch="resnet18", eps=8 / 255, attack="pgd", steps=10, epochs=100, batch_size=128,
        lr=0.1, finetune_lr=0.01, eval_examples=1000, eval_order="permutation", methods=DEFAULT_METHODS,
        data_note=_CIFAR_NOTE,
    ),
    # Seconds-long run for tests: every method, tiny network, a few hundred examples.
    "tiny": ComparePreset(
        name="tiny", description="a seconds-long smoke run (tests)", dataset="fashion-mnist", arch="small_cnn",
        arch_kwargs={"widths": [4, 8]}, eps=0.1, attack="fast", epochs=1, train_examples=256, batch_size=64,
        eval_examples=16, methods=DEFAULT_METHODS, hidden=True,
        autoattack_options={"iterations": 2, "square_queries": 5},  # not AutoAttack's budget: smoke runs only
    ),
}


def list_presets(include_hidden: bool = False) -> list[str]:
    return [k for k, v in PRESETS.items() if include_hidden or not v.hidden]


_OVERRIDABLE = ("epochs", "train_examples", "eval_examples")


def resolve_preset(preset: str | ComparePreset, overrides: dict[str, Any] | None = None) -> ComparePreset:
    """The preset named ``preset`` (or given), with ``overrides`` of ``epochs``,
    ``train_examples`` or ``eval_examples`` applied."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(list_presets())}")
        preset = PRESETS[preset]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(_OVERRIDABLE)
    if unknown:
        raise ValueError(f"cannot override {sorted(unknown)}: only {', '.join(_OVERRIDABLE)}")
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return dataclasses.replace(preset, **overrides)


# --- running phases ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a method hands back: its evaluated model, stored size, the phases it used, extras."""

    model: nn.Module
    size: dict
    phases: list[dict]
    extra: dict = field(default_factory=dict)


class Runner:
    """Runs (or reuses) the training phases of one comparison folder."""

    def __init__(self, preset: ComparePreset, out_dir: Path, train_set: Any, *, device: torch.device,
                 progress: bool, log: Callable[[str], None]):
        self.preset = preset
        self.out_dir = out_dir
        self.train_set = train_set
        self.device = device
        self.progress = progress
        self.log = log
        self._small: tuple[float, float] | None = None
        self._finished: dict[str, tuple[nn.Module, dict]] = {}

    def base_model(self, width_factor: float = 1.0) -> nn.Module:
        """The preset's dense architecture (at ``width_factor`` times its widths)."""
        ds = self.train_set
        return create_model(self.preset.arch, num_classes=ds.num_classes, in_channels=ds.in_channels,
                            mean=list(ds.mean), std=list(ds.std), width_factor=width_factor,
                            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.preset.arch_kwargs.items()})

    def small_width(self) -> tuple[float, float]:
        """``(width_factor, parameter ratio)`` of the small dense network (about ``small_ratio``)."""
        if self._small is None:
            full = count_params(self.base_model())
            self._small = width_factor_for_ratio(self.base_model, self.preset.small_ratio, full)
        return self._small

    def phase(self, name: str, build: Callable[[], nn.Module], *, lr: float,
              hook: Callable[[nn.Module], StepHook] | None = None,
              finish: Callable[[nn.Module, StepHook | None], dict] | None = None) -> tuple[nn.Module, dict]:
        """Train phase ``name`` (or resume it, or reuse its finished result).

        ``build`` makes the starting model, ``hook`` the step hook for it, ``finish`` runs on the
        trained model (e.g. ATMC's final projection) and returns plain details to record.
        """
        if name in self._finished:
            return self._finished[name]
        folder = self.out_dir / "phases" / name
        final = folder / "final.pt"
        if final.is_file():
            record = load_checkpoint(final)["phase"]
            self.log(f"  phase {name}: done ({record['seconds']:.0f} s), reusing {final}")
            self._finished[name] = (load_model(final, device=self.device), record)
            return self._finished[name]
        p = self.preset
        self.log(f"  phase {name}: training {p.epochs} epoch(s), lr {lr:g}")
        model = build()
        step_hook = hook(model) if hook is not None else None
        result = train(
            model, self.train_set, eps=p.eps, epochs=p.epochs, attack=p.attack, steps=p.steps,
            carry_perturbation=p.carry_perturbation, batch_size=p.batch_size, lr=lr, weight_decay=p.weight_decay,
            seed=p.seed, device=self.device, progress=self.progress, out_dir=folder,
            resume=(folder / "last.pt").is_file(), step_hook=step_hook,
            extra_config={"compare_preset": p.name, "compare_phase": name},
        )
        model = result.model
        details = finish(model, step_hook) if finish is not None else {}
        m = result.metrics
        record = {"name": name, "seconds": float(m["seconds"]), "epochs": p.epochs, "lr": lr,
                  "selected_epoch": m["selected_epoch"], "val_robust_acc": m["val_robust_acc"], "details": details}
        save_checkpoint(final, model, phase=record)
        self._finished[name] = (model, record)
        return model, record

    # -- the shared building blocks --

    def dense(self, *, binary: bool, small: bool) -> tuple[nn.Module, dict]:
        """AT of the dense network (full-size or small, FP or binary)."""
        factor = self.small_width()[0] if small else 1.0
        name = f"{'small' if small else 'dense'}-{'binary' if binary else 'fp'}"

        def build() -> nn.Module:
            model = self.base_model(factor)
            return binarize_weights(model) if binary else model

        return self.phase(name, build, lr=self.preset.lr, hook=(lambda m: LatentClip()) if binary else None)

    def pretrained(self) -> tuple[nn.Module, dict]:
        return self.dense(binary=False, small=False)

    def from_pretrained(self) -> tuple[nn.Module, dict]:
        """A fresh dense model holding the pre-trained (AT FP) weights, and the pre-training record."""
        pre, record = self.pretrained()
        model = self.base_model()
        model.load_state_dict(pre.state_dict())
        return model, record


def _allocation_tag(allocation: str, p: float) -> str:
    return {"uniform": "uniform", "global": "global"}.get(allocation, f"p{p:g}")


def _dense_method(binary: bool, small: bool) -> Callable[[Runner], Outcome]:
    def run(r: Runner) -> Outcome:
        model, record = r.dense(binary=binary, small=small)
        size = binary_dense_size(model) if binary else dense_size(model)
        extra = {}
        if small:
            factor, ratio = r.small_width()
            extra = {"width_factor": factor, "params": count_params(r.base_model(factor)),
                     "params_full": count_params(r.base_model()), "params_ratio": ratio}
        return Outcome(model, size, [record], extra)

    return run


def _hydra_method(binary: bool, allocation: str) -> Callable[[Runner], Outcome]:
    def run(r: Runner) -> Outcome:
        p = r.preset
        alloc_p = 1.0 if allocation == "uniform" else p.p
        tag = _allocation_tag(allocation, p.p)
        kwargs = {"sparsity": p.sparsity, "allocation": allocation, "p": alloc_p}
        _, pre_record = r.pretrained()

        def build_prune() -> nn.Module:
            model, _ = r.from_pretrained()
            return hydra_model(model, stage="prune", **kwargs)

        pruned, prune_record = r.phase(f"hydra-prune-{tag}", build_prune, lr=p.lr)

        def build_finetune() -> nn.Module:
            model = hydra_model(r.base_model(), stage="finetune", binary=binary, **kwargs)
            model.load_state_dict(pruned.state_dict())
            LatentClip()(model, 0)
            return model

        model, ft_record = r.phase(f"hydra-ft-{'binary' if binary else 'fp'}-{tag}", build_finetune,
                                   lr=p.finetune_lr, hook=(lambda m: LatentClip()) if binary else None)
        return Outcome(model, hydra_size(model), [pre_record, prune_record, ft_record])

    return run


def _atmc_method(bits: int | None, allocation: str) -> Callable[[Runner], Outcome]:
    def run(r: Runner) -> Outcome:
        p = r.preset
        tag = _allocation_tag(allocation, p.p)
        kwargs = {"sparsity": p.sparsity, "allocation": allocation, "p": p.p if allocation == "adaptive" else 1.0}
        _, pre_record = r.pretrained()

        def build() -> nn.Module:
            model, _ = r.from_pretrained()
            return atmc_model(model, bits=bits, **kwargs)

        def hook(model: nn.Module) -> ATMCProjection:
            return ATMCProjection(model, bits=bits, penalty=p.atmc_penalty, admm_every=p.atmc_admm_every, **kwargs)

        def finish(model: nn.Module, step_hook: StepHook | None) -> dict:
            return {"layers": step_hook.project(model)}

        model, record = r.phase(f"atmc-{'fp' if bits is None else f'{bits}bit'}-{tag}", build, lr=p.finetune_lr,
                                hook=hook, finish=finish)
        return Outcome(model, atmc_size(model, bits), [pre_record, record])

    return run


def _supermask_size(model: nn.Module) -> dict:
    from ..export import footprint

    fp = footprint(model)
    return {"bytes": fp["bytes"]["packed_file"], "parts": fp["packed_sections_bytes"],
            "formula": "size of the packed .bpk file (binprune.save_packed): spec and seed, coded masks, "
                       "batch-norm statistics, checksum; the fixed weights are regenerated from the seed"}


def _supermask_method(*, init: str, allocation: str, p: float | None, last_bn: bool) -> Callable[[Runner], Outcome]:
    def run(r: Runner) -> Outcome:
        pre = r.preset
        exponent = pre.p if p is None else p
        tag = {"binary": "bp", "kaiming": "rst"}[init]
        name = tag if init == "kaiming" else f"{tag}-{_allocation_tag(allocation, exponent)}{'' if last_bn else '-nolbn'}"

        def build() -> nn.Module:
            if init == "kaiming":
                return rst_model(r.base_model(), sparsity=pre.sparsity, last_bn=last_bn, seed=pre.seed)
            return convert_to_binary_supermask(r.base_model(), sparsity=pre.sparsity, allocation=allocation,
                                               p=exponent, init=init, last_bn=last_bn, seed=pre.seed)

        model, record = r.phase(name, build, lr=pre.lr)
        return Outcome(model, _supermask_size(model), [record])

    return run


@dataclass(frozen=True)
class Method:
    """One row of the table: its label, pruning strategy, weight precision, and how to run it."""

    label: str
    strategy: str
    precision: str
    run: Callable[[Runner], Outcome]


METHODS: dict[str, Method] = {
    "at-fp": Method("AT (FP)", "none (dense)", "FP", _dense_method(False, False)),
    "at-binary": Method("AT (binary)", "none (dense)", "binary", _dense_method(True, False)),
    "at-fp-small": Method("AT (FP), small", "none (small dense)", "FP", _dense_method(False, True)),
    "at-binary-small": Method("AT (binary), small", "none (small dense)", "binary", _dense_method(True, True)),
    "hydra-fp": Method("HYDRA (FP)", "uniform", "FP", _hydra_method(False, "uniform")),
    "hydra-binary": Method("HYDRA (binary)", "uniform", "binary", _hydra_method(True, "uniform")),
    "hydra-fp-p0.1": Method("HYDRA (FP), p=0.1", "adaptive p=0.1", "FP", _hydra_method(False, "adaptive")),
    "hydra-binary-p0.1": Method("HYDRA (binary), p=0.1", "adaptive p=0.1", "binary", _hydra_method(True, "adaptive")),
    "atmc-fp": Method("ATMC (FP)", "global", "FP", _atmc_method(None, "global")),
    "atmc-binary": Method("ATMC (binary)", "global", "binary", _atmc_method(1, "global")),
    "atmc-fp-p0.1": Method("ATMC (FP), p=0.1", "adaptive p=0.1", "FP", _atmc_method(None, "adaptive")),
    "atmc-binary-p0.1": Method("ATMC (binary), p=0.1", "adaptive p=0.1", "binary", _atmc_method(1, "adaptive")),
    "rst": Method("RST (kaiming, LBN)", "uniform", "FP", _supermask_method(
        init="kaiming", allocation="uniform", p=1.0, last_bn=True)),
    "binprune-p0.1": Method("binprune (binary, p=0.1, LBN)", "adaptive p=0.1", "binary", _supermask_method(
        init="binary", allocation="adaptive", p=None, last_bn=True)),
    "binprune-p1.0": Method("binprune (binary, p=1.0, LBN)", "uniform (p=1.0)", "binary", _supermask_method(
        init="binary", allocation="uniform", p=1.0, last_bn=True)),
    "binprune-global": Method("binprune (binary, global, LBN)", "global", "binary", _supermask_method(
        init="binary", allocation="global", p=None, last_bn=True)),
    "binprune-p0.1-nolbn": Method("binprune (binary, p=0.1, no LBN)", "adaptive p=0.1", "binary", _supermask_method(
        init="binary", allocation="adaptive", p=None, last_bn=False)),
}


# --- data and evaluation -------------------------------------------------------------------------


def _default_data_dir(preset: ComparePreset) -> str | None:
    if preset.data_dir is not None:
        return preset.data_dir
    if preset.dataset == "cifar10" and SHARED_CIFAR10.is_dir():
        return str(SHARED_CIFAR10)
    return None


def _load_data(preset: ComparePreset, data_dir: str | None) -> tuple[Any, torch.Tensor, torch.Tensor, dict]:
    """The training subset (seeded) and the evaluation tensors, plus a description of both."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory {data_dir} does not exist or is not a folder")
    train_set = load_dataset(preset.dataset, data_dir, split="train")
    test_set = load_dataset(preset.dataset, data_dir, split="test")
    info: dict[str, Any] = {"dataset": preset.dataset, "data_dir": str(data_dir) if data_dir else getattr(train_set, "source", ""),
                            "train_total": len(train_set), "test_total": len(test_set)}
    if preset.train_examples is not None and preset.train_examples < len(train_set):
        gen = torch.Generator().manual_seed(stable_seed(preset.seed, "compare-train-subset"))
        idx = torch.randperm(len(train_set), generator=gen)[: preset.train_examples].sort().values
        train_set = train_set.subset(idx)
        info["train_selection"] = f"{preset.train_examples} examples: a seeded random subset (seed {preset.seed})"
    else:
        info["train_selection"] = f"all {len(train_set)} training examples"
    n = min(preset.eval_examples, len(test_set))
    if preset.eval_order == "permutation":
        gen = torch.Generator().manual_seed(stable_seed(preset.seed, "compare-eval"))
        idx = torch.randperm(len(test_set), generator=gen)[:n]
        info["eval_selection"] = f"the first {n} test images of a seeded permutation of the test set (seed {preset.seed})"
    elif preset.eval_order == "first":
        idx = torch.arange(n)
        info["eval_selection"] = f"the first {n} test images in file order"
    else:
        raise ValueError(f"unknown eval_order {preset.eval_order!r}: choose 'first' or 'permutation'")
    x, y = test_set.batch(idx)
    info["eval_class_counts"] = torch.bincount(y, minlength=test_set.num_classes).tolist()
    return train_set, x, y, info


def _sparsity(model: nn.Module) -> tuple[float, int, int]:
    """(fraction of conv / linear weights that are zero, non-zero count, total) of the evaluated model."""
    weights = effective_weights(model)
    total = sum(w.numel() for _, w in weights)
    nonzero = sum(int((w != 0).sum()) for _, w in weights)
    return 1.0 - nonzero / total, nonzero, total


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, preset: ComparePreset, device: torch.device,
              progress: bool) -> dict:
    from ..evaluate import evaluate

    return evaluate(model, (x, y), eps=preset.eps, attacks=("clean", "pgd", "autoattack"), pgd_steps=preset.pgd_steps,
                    seed=preset.seed, device=device, progress=progress, autoattack_options=preset.autoattack_options)


# --- the table -----------------------------------------------------------------------------------


def _notes(preset: ComparePreset, data: dict, small: dict | None, full_params: int) -> list[str]:
    p = preset
    attack = {"fast": f"FGSM with random start (step 1.25 eps){', perturbation carried across epochs' if p.carry_perturbation else ''}",
              "pgd": f"PGD-{p.steps} (step 2.5 eps/{p.steps}, random start)",
              "trades": f"TRADES (TPGD-{p.steps})", "none": "none"}[p.attack]
    notes = [
        f"Data: {p.dataset}; training on {data['train_selection']}, {p.eps:.4g} Linf budget; the same for every method.",
        f"Architecture: {p.arch}" + (f" {p.arch_kwargs}" if p.arch_kwargs else "")
        + f", {full_params:,} parameters in the dense model (the small rows use a narrowed copy).",
        f"Training: every phase runs {p.epochs} epoch(s) of adversarial training with {attack}, batch {p.batch_size}, "
        f"SGD momentum 0.9, weight decay {p.weight_decay:g}, cosine schedule, seed {p.seed}; learning rate {p.lr:g} for "
        f"phases from scratch (dense AT, score training) and {p.finetune_lr:g} for phases that start from a trained "
        "network (HYDRA fine-tuning, ATMC). Each phase keeps the epoch with the best PGD accuracy on a held-out 2% "
        "of its training examples.",
        f"Phase budgets: AT, RST and binprune: {p.epochs} epochs; HYDRA: pre-train {p.epochs} + prune {p.epochs} + "
        f"fine-tune {p.epochs}; ATMC: pre-train {p.epochs} + ADMM {p.epochs} (penalty {p.atmc_penalty:g} per step, "
        f"Z/U update every {p.atmc_admm_every} steps). The pre-training of HYDRA and ATMC is the AT (FP) model itself "
        "(one shared run), and HYDRA's FP and binary rows share their pruning phase; train time sums a method's "
        "phases, counting shared phases in full for every method that uses them.",
        f"Evaluation: clean, PGD-{p.pgd_steps} (step 2.5 eps/{p.pgd_steps}, random start) and AutoAttack standard "
        f"(APGD-CE, APGD-T, FAB-T, Square) at eps={p.eps:.4g} on {data['eval_selection']} (class counts "
        f"{data['eval_class_counts']}); accuracies are fractions in [0, 1]."
        + (f" AutoAttack's budgets were REDUCED ({p.autoattack_options}): not the standard evaluation."
           if p.autoattack_options else ""),
        f"Sparsity: fraction of the conv / linear weights that are zero in the evaluated model (target {p.sparsity:g} "
        "for the pruning methods; the AT rows are unpruned). Stored size: bytes, by the formula of each method in "
        "docs/BASELINES.md (supermask methods: the packed .bpk file).",
        "binprune rows: fixed random ±1 weights, learned masks, non-affine batch norms, last batch norm over the "
        "logits (LBN) unless the row says otherwise; RST: the same with Kaiming-normal weights and uniform allocation.",
    ]
    if small is not None:
        notes.append(
            f"Small dense network: the same architecture with every width multiplied by {small['width_factor']:g}: "
            f"{small['params']:,} parameters, {small['params_ratio']:.2%} of the full model's {small['params_full']:,}.")
    if p.data_note:
        notes.append(p.data_note)
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
    return str(value)


def write_table(out_dir: str | os.PathLike, header: dict, rows: Sequence[dict]) -> dict:
    """Write ``table.json``, ``table.md`` and ``table.png`` into ``out_dir``; returns the table."""
    out = Path(out_dir)
    table = {**header, "rows": list(rows), "units": {
        "accuracy": "fraction of the evaluated examples, in [0, 1]", "stored_bytes": "bytes",
        "train_seconds": "seconds", "sparsity": "fraction of conv / linear weights that are zero"}}
    write_json(out / "table.json", table)
    lines = [f"# binprune compare: {header['preset']}", "",
             "| method | pruning strategy | weights | sparsity | clean | PGD-20 | AutoAttack | stored size (bytes) | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sparsity = f"{r['sparsity']:.4f}"
        if r.get("params_ratio") is not None:
            sparsity += f" ({r['params_ratio']:.2%} of full params)"
        a = r["accuracy"]
        lines.append(f"| {r['label']} | {r['strategy']} | {r['precision']} | {sparsity} | {_fmt(a.get('clean'), 'acc')} | "
                     f"{_fmt(a.get('pgd'), 'acc')} | {_fmt(a.get('autoattack'), 'acc')} | "
                     f"{_fmt(r['stored_bytes'], 'int')} | {_fmt(r['train_seconds'], 's')} |")
    lines += ["", "Notes:", ""] + [f"- {n}" for n in header.get("notes", [])]
    flagged = [(r["label"], w) for r in rows for w in r.get("autoattack_warnings", [])]
    if flagged:
        lines += ["", "AutoAttack's own reliability flags (see its flags_doc.md):", ""]
        lines += [f"- {label}: {warning}" for label, warning in flagged]
    pending = header.get("pending_methods") or []
    if pending:
        lines += ["", f"Not finished yet: {', '.join(pending)}."]
    from ..utils import atomic_write_bytes

    atomic_write_bytes(out / "table.md", ("\n".join(lines) + "\n").encode())
    _bar_chart(rows, out / "table.png", header["preset"])
    return table


def _bar_chart(rows: Sequence[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    labels = [r["label"] for r in rows]
    series = [("clean", "clean"), ("pgd", "PGD-20"), ("autoattack", "AutoAttack")]
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) * len(series) / 2 + 1.5))
    for i, (key, name) in enumerate(series):
        values = [r["accuracy"].get(key) or 0.0 for r in rows]
        ax.barh([j + (i - 1) * height for j in range(len(rows))], values, height=height, label=name)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title(f"binprune compare: {title}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --- the command ---------------------------------------------------------------------------------


def _check_methods(methods: Sequence[str] | None, preset: ComparePreset) -> list[str]:
    names = list(methods) if methods else list(preset.methods or DEFAULT_METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def compare(
    preset: str | ComparePreset,
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "auto",
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train and evaluate ``methods`` (default: the preset's) under ``preset``; write the table.

    Args:
        preset: a name from :data:`PRESETS` or a :class:`ComparePreset`.
        out_dir: the comparison folder; re-running with the same folder skips finished methods
            and resumes unfinished phases (the settings must be the same).
        methods: names from :data:`METHODS`.
        data_dir: dataset folder (default: the preset's; for CIFAR-10 the shared JPEG copy when
            present).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        overrides: ``{"epochs", "train_examples", "eval_examples"}`` replacing the preset's values
            (recorded in the table).
        progress: progress bars and per-epoch lines from the trainer and the evaluation.
        log: receives one line per method / phase.

    Returns:
        The table (the content of ``table.json``).
    """
    p = resolve_preset(preset, overrides)
    names = _check_methods(methods, p)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    dev = resolve_device(device)
    settings_path = out / "compare.json"
    protocol = p.protocol()
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if saved.get("protocol") != protocol:
            diffs = [k for k in sorted(set(protocol) | set(saved.get("protocol", {})))
                     if protocol.get(k) != saved.get("protocol", {}).get(k)]
            raise ValueError(f"{out} holds a comparison with different settings ({', '.join(diffs[:6])}): "
                             "use the same preset and options, or another --out")
    data_dir = data_dir if data_dir is not None else _default_data_dir(p)
    train_set, x_eval, y_eval, data_info = _load_data(p, data_dir)
    overridden = {k: getattr(p, k) for k in _OVERRIDABLE if (overrides or {}).get(k) is not None}
    write_json(settings_path, {"preset": p.name, "protocol": protocol, "overrides": overridden})

    runner = Runner(p, out, train_set, device=dev, progress=progress, log=log)
    methods_dir = out / "methods"
    started = time.perf_counter()
    full_params = count_params(runner.base_model())
    small = None
    if any(n.endswith("-small") for n in names):
        factor, ratio = runner.small_width()
        small = {"width_factor": factor, "params_ratio": ratio, "params": count_params(runner.base_model(factor)),
                 "params_full": full_params}

    header = {"preset": p.name, "description": p.description, "settings": protocol, "overrides": overridden,
              "data": data_info, "device": str(dev), "notes": _notes(p, data_info, small, full_params)}

    def rows_now() -> tuple[list[dict], list[str]]:
        rows, pending = [], []
        for n in names:
            path = methods_dir / f"{n}.json"
            if path.is_file():
                rows.append(json.loads(path.read_text())["row"])
            else:
                pending.append(n)
        return rows, pending

    for i, name in enumerate(names, 1):
        path = methods_dir / f"{name}.json"
        method = METHODS[name]
        if path.is_file():
            log(f"[{i}/{len(names)}] {name}: finished earlier, skipped")
            continue
        log(f"[{i}/{len(names)}] {name}: {method.label}")
        outcome = method.run(runner)
        log(f"  evaluating {name} on {len(x_eval)} test images (clean, PGD-{p.pgd_steps}, AutoAttack)")
        t0 = time.perf_counter()
        evaluation = _evaluate(outcome.model, x_eval, y_eval, p, dev, progress)
        eval_seconds = time.perf_counter() - t0
        sparsity, nonzero, total = _sparsity(outcome.model)
        row = {
            "method": name, "label": method.label, "strategy": method.strategy, "precision": method.precision,
            "sparsity": sparsity, "nonzero_weights": nonzero, "total_weights": total,
            "params_ratio": outcome.extra.get("params_ratio"),
            "accuracy": dict(evaluation["accuracy"]), "stored_bytes": outcome.size["bytes"],
            "train_seconds": sum(ph["seconds"] for ph in outcome.phases), "eval_seconds": eval_seconds,
            "phases": [{"name": ph["name"], "seconds": ph["seconds"], "selected_epoch": ph["selected_epoch"]}
                       for ph in outcome.phases],
            "autoattack_warnings": list(evaluation["attacks"].get("autoattack", {}).get("autoattack_warnings", [])),
        }
        write_json(path, {"row": row, "size": outcome.size, "phases": outcome.phases, "extra": outcome.extra,
                          "evaluation": evaluation})
        acc = row["accuracy"]
        log(f"  {name}: clean {acc['clean']:.4f}, PGD {acc['pgd']:.4f}, AutoAttack {acc['autoattack']:.4f}, "
            f"{row['stored_bytes']:,} bytes, train {row['train_seconds']:.0f} s, eval {eval_seconds:.0f} s")
        rows, pending = rows_now()
        write_table(out, {**header, "pending_methods": pending}, rows)

    rows, pending = rows_now()
    header["run_seconds_this_invocation"] = time.perf_counter() - started
    table = write_table(out, {**header, "pending_methods": pending}, rows)
    log(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'table.png'}")
    return table
