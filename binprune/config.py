"""Settings: the only place where binprune's defaults are written.

Each group of settings is a dataclass whose fields carry their default, a one-line help text and
the kind of value they take (``metadata``). The command line builds its flags and help from these
fields (:mod:`binprune.cli`), presets are YAML files shipped in ``binprune/presets/`` holding
values for the same fields, and every run saves its settings as YAML that replays it exactly
(``binprune train --config runs/x/config.yaml``).

The groups:

- :class:`ModelConfig`: the architecture and its conversion (sparsity, allocation, init, LBN);
- :class:`DataConfig`: which dataset, from where;
- :class:`TrainConfig`: adversarial training (attack, optimizer, schedule, selection, test);
- :class:`RunConfig`: the three above plus the device: one ``binprune train`` run;
- :class:`EvalConfig`, :class:`SanityConfig`: ``binprune eval`` / :func:`binprune.evaluate`;
- :class:`CompareConfig`: one ``binprune compare`` table.

This module imports neither torch nor the rest of binprune, so the CLI answers ``--help`` fast;
the names of the choices (attacks, allocations, ...) live here for the same reason and the
modules that implement them import them from here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

__all__ = [
    "ModelConfig", "DataConfig", "TrainConfig", "RunConfig", "EvalConfig", "SanityConfig", "CompareConfig",
    "load_yaml", "dump_yaml", "config_from_dict", "config_to_dict", "list_presets", "load_preset",
    "TRAIN_ATTACKS", "ATTACK_BN_MODES", "SCHEDULES", "OPTIMIZERS", "AUGMENTATIONS", "DATASETS", "ALLOCATIONS",
    "WEIGHT_INITS", "SCORE_INITS", "NORMS", "EVAL_ATTACKS", "PRESET_DIR", "check_linf_eps", "IN_MEMORY_IMAGE_BYTES",
    "AMP_DTYPES", "recorded",
]

# --- names of choices (implemented elsewhere, named once here) -----------------------------------

TRAIN_ATTACKS = ("pgd", "fast", "trades", "none")
AMP_DTYPES = ("none", "bf16")
ATTACK_BN_MODES = ("train", "eval")
SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("sgd", "adam")
BUDGETS = ("equal", "published")
AUGMENTATIONS = ("crop_flip", "none")
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder")
#: An image folder whose decoded images would take more bytes than this is streamed from disk
#: batch by batch instead of decoded into memory (ImageNet-100 at 224 px would need ~19 GB).
IN_MEMORY_IMAGE_BYTES = 2 * 1024**3
ALLOCATIONS = ("adaptive", "uniform", "global")
WEIGHT_INITS = ("binary", "signed_constant", "kaiming", "signed_kaiming")
SCORE_INITS = ("uniform", "kaiming_uniform")
NORMS = ("Linf", "L2")
EVAL_ATTACKS = ("clean", "pgd", "autoattack", "autoattack-apgd", "autoattack-plus", "autoattack-rand",
                "autoattack-custom")
EVAL_ORDERS = ("interleaved", "first", "permutation")

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def setting(default: Any, help: str, *, kind: str = "str", choices: tuple | None = None, cli: bool = True,
            neutral: bool = False, default_factory: Any = None, flag: str | None = None,
            omit_default: bool = False) -> Any:
    """A config field with its help text and value kind.

    ``kind`` tells the CLI how to parse the flag (``int+``, ``int0``, ``float+``, ``float0``,
    ``fraction``, ``bool``, ``str``, ``list``); ``cli=False`` keeps the field off the command line;
    ``neutral=True`` marks a field that does not change results (not compared on resume);
    ``flag`` replaces the flag derived from the field name (``--field-name``); ``omit_default=True``
    leaves a result-changing field out of the run's record while it has its default value, so
    records (and checkpoints) made before the field existed still match.
    """
    meta = {"help": help, "kind": kind, "choices": choices, "cli": cli, "neutral": neutral, "flag": flag,
            "omit_default": omit_default}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def recorded(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that change results (not ``neutral``; ``omit_default``
    fields only when set), by name."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("neutral") or (f.metadata.get("omit_default") and value == f.default):
            continue
        out[f.name] = value
    return out


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        _fail(f"unknown {name} {value!r}: choose one of {', '.join(map(str, choices))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_linf_eps(eps: float, name: str = "eps") -> None:
    """Refuse an L-inf budget above 1: images are in [0, 1], so it was meant in 0-255 units."""
    if _is_number(eps) and eps > 1:
        _fail(f"{name} {eps:g} is above 1, but images are in [0, 1] (L-inf budgets are in pixel units): did you "
              f"mean {eps:g}/255 = {eps / 255:.4g}? (the command line accepts --eps {eps:g}/255)")


def _check_optional_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or value < 1):
            _fail(f"{name} must be an integer >= 1, got {value!r}")


# --- model, data, training -----------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The network and its conversion into a binary supermask network."""

    arch: str = setting("small_cnn", "architecture: binprune.list_models(), torchvision:NAME, timm:NAME, "
                                     "robustbench:NAME or package.module:callable")
    width_factor: float = setting(1.0, "multiply every layer's width", kind="float+")
    arch_kwargs: dict = setting(None, "extra keyword arguments of the architecture", cli=False, default_factory=dict)
    num_classes: int | None = setting(None, "logits size (default: the dataset's class count)", kind="int+")
    dense: bool = setting(False, "train the weights of the dense model instead (AT baseline)", kind="bool")
    sparsity: float = setting(0.99, "fraction of the weights removed, in [0, 1)", kind="fraction")
    p: float = setting(0.1, "adaptive allocation exponent: kept counts proportional to n_l ** p", kind="float0")
    allocation: str = setting("adaptive", "per-layer keep ratios", choices=ALLOCATIONS)
    init: str = setting("binary", "fixed weight scheme", choices=WEIGHT_INITS)
    last_bn: bool = setting(True, "non-affine batch norm over the logits (LBN)", kind="bool")
    connect_channels: bool = setting(False, "start from a mask keeping a weight in every output channel (for "
                                            "networks a random mask disconnects)", kind="bool")

    def validate(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            _fail(f"arch must be a model name, got {self.arch!r}")
        if not _is_number(self.width_factor) or self.width_factor <= 0:
            _fail(f"width_factor must be a number > 0, got {self.width_factor!r}")
        _check_optional_positive_ints(self, ("num_classes",))
        if not _is_number(self.sparsity) or not 0 <= self.sparsity < 1:
            _fail(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        if not _is_number(self.p) or self.p < 0:
            _fail(f"p must be a number >= 0, got {self.p!r}")
        _check_choice("allocation", self.allocation, ALLOCATIONS)
        _check_choice("init", self.init, WEIGHT_INITS)


@dataclass
class DataConfig:
    """Which dataset, and from where."""

    dataset: str | None = setting(None, "dataset", choices=DATASETS)
    data_dir: str | None = setting(None, "folder with the dataset (fashion-mnist: the Debian package's folder)",
                                   neutral=True)

    def validate(self) -> None:
        if self.dataset is None:
            _fail("no dataset: pass --dataset (fashion-mnist, cifar10, cifar100, imagefolder) or --preset/--config")
        _check_choice("dataset", self.dataset, DATASETS)
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise FileNotFoundError(f"data_dir {self.data_dir} does not exist or is not a folder")


@dataclass
class TrainConfig:
    """Adversarial training: every setting that changes the result of a run (checked again on
    resume), plus a few that do not (``neutral``)."""

    eps: float | None = setting(None, "Linf budget of the training attack in pixel units, e.g. 0.1 or 0.0314",
                                kind="float0")
    epochs: int | None = setting(None, "training epochs", kind="int+")
    budget_epochs: float | None = setting(None, "stop after this many epochs' worth of optimizer steps (a fraction "
                                                "allowed; epochs must then be its ceiling)", kind="float+", cli=False)
    attack: str = setting("pgd", "training attack", choices=TRAIN_ATTACKS)
    alpha: float | None = setting(None, "attack step (default: 2.5*eps/attack_steps; fast: 1.25*eps)", kind="float+")
    attack_steps: int = setting(10, "iterations of the training attack (PGD / TRADES)", kind="int+")
    batch_size: int = setting(128, "global batch size", kind="int+")
    lr: float = setting(0.1, "learning rate", kind="float+")
    optimizer: str = setting("sgd", "optimizer (adam: BinaryConnect's, for binary weights)", choices=OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum", kind="fraction")
    weight_decay: float = setting(5e-4, "weight decay (L2, added to the gradient)", kind="float0")
    schedule: str = setting("cosine", "learning-rate schedule (per step)", choices=SCHEDULES)
    warmup_epochs: float = setting(0.0, "linear warm-up epochs", kind="float0")
    val_fraction: float = setting(0.02, "held-out share of the training set for model selection", kind="fraction")
    trades_beta: float = setting(6.0, "TRADES: weight of the robustness term", kind="float0")
    clean_loss_weight: float = setting(0.0, "weight of the clean cross-entropy next to the adversarial one (ATMC: "
                                            "0.5)", kind="fraction")
    carry_perturbation: bool = setting(False, "fast attack: start from each example's previous perturbation",
                                       kind="bool")
    attack_bn: str | None = setting(None, "batch-norm mode while the training attack runs (default: eval for "
                                          "trades, as its references do; train otherwise)", choices=ATTACK_BN_MODES)
    augment: str | None = setting(None, "augmentation (default: the dataset's own: crop_flip for CIFAR)",
                                  choices=AUGMENTATIONS)
    seed: int = setting(0, "seed of weights, scores, data order and attacks", kind="int0")
    clean_acc_every: int = setting(10, "measure clean batch accuracy every N steps", kind="int+")
    val_pgd_steps: int | None = setting(None, "PGD steps of the validation (default: attack_steps for pgd/trades, "
                                              "else 10)", kind="int+")
    test_pgd_steps: int = setting(20, "PGD steps of the final test", kind="int+")
    test_examples: int | None = setting(None, "evaluate on the first N test examples, classes interleaved "
                                              "(default: all)", kind="int+")
    train_examples: int | None = setting(None, "use only N training examples (a seeded random subset)", kind="int+")
    checkpoint_every: int = setting(0, "also checkpoint every N optimizer steps (0: once per epoch)", kind="int0",
                                    neutral=True)
    checkpoint_seconds: float = setting(0.0, "also checkpoint about every this many seconds, N steps apart with N "
                                             "from the measured step time (0: off)", kind="float0", neutral=True)
    # Accelerator speed settings. Off by default: each changes results in the last bits (bf16 in more
    # than the last bits); the test metrics are always computed in float32.
    amp: str = setting("none", "autocast of the training step's forward passes: none or bf16 (GPU speed)",
                       choices=AMP_DTYPES, omit_default=True)
    channels_last: bool = setting(False, "channels-last memory format for the model and 4-D batches (GPU speed)",
                                  kind="bool", omit_default=True)
    cudnn_benchmark: bool = setting(False, "let cuDNN pick the fastest convolution algorithms (CUDA; results are "
                                           "then not bit-for-bit repeatable)", kind="bool", omit_default=True)

    def validate(self) -> None:
        if self.eps is None:
            _fail("no attack budget: pass --eps / eps= (e.g. 0.1 for Fashion-MNIST, 8/255 for CIFAR-10) or a preset")
        if self.epochs is None:
            _fail("no epoch count: pass --epochs / epochs= or a preset")
        _check_choice("attack", self.attack, TRAIN_ATTACKS)
        if not _is_number(self.eps) or self.eps < 0:
            _fail(f"eps must be a number >= 0, got {self.eps!r}")
        check_linf_eps(self.eps)
        if self.alpha is not None and not (_is_number(self.alpha) and self.alpha > 0):
            _fail(f"alpha must be > 0, got {self.alpha}")
        if not _is_int(self.epochs) or self.epochs < 1:
            _fail(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.budget_epochs is not None and (not _is_number(self.budget_epochs) or self.budget_epochs <= 0
                                               or math.ceil(self.budget_epochs) != self.epochs):
            _fail(f"budget_epochs must be > 0 with epochs = its ceiling, got {self.budget_epochs!r} and {self.epochs}")
        if not _is_int(self.attack_steps) or self.attack_steps < 1:
            _fail(f"attack_steps must be an integer >= 1, got {self.attack_steps!r}")
        if not _is_int(self.batch_size) or self.batch_size < 2:
            _fail(f"batch_size must be >= 2 (batch norm needs two examples), got {self.batch_size}")
        if not (_is_number(self.lr) and self.lr > 0):
            _fail(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            _fail(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            _fail(f"weight_decay must be >= 0, got {self.weight_decay}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (_is_number(self.clean_loss_weight) and 0 <= self.clean_loss_weight <= 1):
            _fail(f"clean_loss_weight must be in [0, 1], got {self.clean_loss_weight!r}")
        if self.clean_loss_weight > 0 and self.attack == "trades":
            _fail("clean_loss_weight applies to cross-entropy attacks, not to trades (whose loss has its own clean term)")
        if not 0 <= self.warmup_epochs < self.epochs:
            _fail(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.val_fraction < 1:
            _fail(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.attack_bn is not None:
            _check_choice("attack_bn", self.attack_bn, ATTACK_BN_MODES)
        _check_choice("amp", self.amp, AMP_DTYPES)
        if self.augment is not None:
            _check_choice("augment", self.augment, AUGMENTATIONS)
        if self.carry_perturbation and self.attack != "fast":
            _fail("carry_perturbation only applies to attack='fast'")
        if not _is_int(self.seed) or self.seed < 0:
            _fail(f"seed must be an integer >= 0, got {self.seed!r}")
        _check_optional_positive_ints(self, ("test_examples", "train_examples", "val_pgd_steps"))
        for name in ("clean_acc_every", "test_pgd_steps"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                _fail(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            _fail(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not _is_number(self.checkpoint_seconds) or self.checkpoint_seconds < 0:
            _fail(f"checkpoint_seconds must be a number >= 0, got {self.checkpoint_seconds!r}")

    @property
    def effective_val_pgd_steps(self) -> int:
        if self.val_pgd_steps is not None:
            return self.val_pgd_steps
        return self.attack_steps if self.attack in ("pgd", "trades") else 10

    def record(self) -> dict[str, Any]:
        """The settings that change results, as plain values (compared on resume)."""
        return recorded(self)


@dataclass
class RunConfig:
    """One ``binprune train`` run: data, model, training and device. Saved by every run as
    ``config.yaml``; ``binprune train --config FILE`` replays it."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", neutral=True)
    description: str = setting("", "what this configuration is for", cli=False, neutral=True)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()

    def record(self) -> dict[str, Any]:
        """The settings that change results (two runs with equal records compute the same)."""
        def own(config: Any) -> dict[str, Any]:
            return {name: _plain(value) for name, value in recorded(config).items()}

        return {"data": own(self.data), "model": own(self.model), "train": own(self.train)}


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What :func:`binprune.evaluate` measures and how."""

    eps: float | None = setting(None, "attack budget in pixel units, e.g. 0.1 (default: RobustBench's for "
                                      "cifar10/cifar100)", kind="float0")
    norm: str = setting("Linf", "threat model", choices=NORMS)
    attacks: tuple = setting(None, "attacks, comma-separated", kind="list",
                             default_factory=lambda: ("clean", "pgd", "autoattack"))
    n_examples: int | None = setting(None, "evaluate the first N test examples, classes interleaved "
                                           "(default: all)", kind="int+")
    batch_size: int = setting(256, "examples per forward pass", kind="int+", neutral=True)
    seed: int = setting(0, "seed of PGD's random starts and AutoAttack", kind="int0")
    pgd_steps: int = setting(20, "PGD steps", kind="int+")
    pgd_restarts: int = setting(1, "PGD restarts", kind="int+")
    pgd_alpha: float | None = setting(None, "PGD step (default: 2.5*eps/pgd_steps)", kind="float+")
    autoattack_options: dict | None = setting(None, "AutoAttack overrides: attacks, iterations, square_queries",
                                              cli=False)
    fast: bool = setting(True, "attack a faster equivalent form of the model when its outputs are identical",
                         kind="bool", neutral=True)
    attack_compact: bool = setting(True, "with fast: attack binprune.compact(model) when its outputs agree within "
                                         "compact_tolerance, confirm every adversarial example on the model and "
                                         "re-attack the model where one does not transfer", kind="bool")
    compact_tolerance: float = setting(1e-4, "largest logit difference allowed between the compact model and the "
                                             "model, relative to max(1, largest logit)", kind="float+")
    compact_engine: str = setting("dense", "kernels of the compact model attacked", choices=("dense", "sparse"))
    chunk_examples: int | None = setting(None, "run the attacks on chunks of this many examples, each saved as it "
                                               "finishes when a resume folder is given (random starts are drawn "
                                               "per chunk, so it is a setting of the result; default: one chunk)",
                                         kind="int+", omit_default=True)


@dataclass
class SanityConfig:
    """The sanity checks' budgets and tolerances (:func:`binprune.sanity_checks`)."""

    n_examples: int | None = setting(None, "examples for the sanity checks (default: min(evaluated, 1000))",
                                     kind="int+", flag="--sanity-examples")
    steps_factor: int = setting(5, "more_steps check: this many times the PGD steps", kind="int+",
                                flag="--sanity-steps-factor")
    restarts: int = setting(5, "restarts_consistent check: new PGD runs from other random starts", kind="int+",
                            flag="--sanity-restarts")
    restarts_margin: float = setting(0.02, "restarts_consistent check: accuracy drop allowed", kind="fraction",
                                     cli=False)
    gradient_min_share: float = setting(0.95, "input_gradients check: share of examples with finite, non-zero "
                                              "input gradients required", kind="fraction", cli=False)
    transfer_margin: float = setting(0.01, "transfer check: share of extra breaks allowed", kind="fraction",
                                     cli=False)
    eps_multipliers: tuple = setting(None, "eps sweep, as multiples of eps", kind="list", cli=False,
                                     default_factory=lambda: (0.0, 0.25, 0.5, 1.0, 2.0, 4.0))
    large_eps: float | None = setting(None, "budget of the large-eps check (default: 0.5 Linf, 0.5*sqrt(d) L2)",
                                      kind="float+", cli=False)
    large_eps_max_accuracy: float = setting(0.01, "large-eps check: highest accuracy allowed", kind="fraction",
                                            cli=False)
    tolerance: float = setting(0.005, "tolerance of the monotonicity checks", kind="fraction", cli=False)
    square_margin: float = setting(0.01, "Square check: share of extra breaks allowed", kind="fraction", cli=False)
    square_queries: int = setting(5000, "Square check: query budget", kind="int+", cli=False)


# --- comparison ----------------------------------------------------------------------------------


@dataclass
class CompareConfig:
    """Everything that defines a comparison; every method of the table shares it.

    ``lr`` is used by phases that start from scratch (dense AT, score training), ``finetune_lr``
    by phases that start from a trained network (HYDRA fine-tuning, ATMC). ``eval_order`` is
    ``"first"`` (the first ``test_examples`` test images in file order) or ``"permutation"`` (the
    first ``test_examples`` of a seeded permutation, for test sets stored sorted by class) or
    ``"balanced"`` (the same number of test images of each class, drawn at random within a class).
    """

    name: str = setting("", "preset name", cli=False)
    description: str = setting("", "what the preset is for", cli=False)
    dataset: str = setting("fashion-mnist", "dataset", choices=DATASETS, cli=False)
    arch: str = setting("small_cnn", "architecture", cli=False)
    arch_kwargs: dict = setting(None, "architecture keyword arguments", cli=False, default_factory=dict)
    eps: float = setting(0.1, "Linf budget of training and evaluation", kind="float0", cli=False)
    epochs: int = setting(5, "epochs of every method: the step budget its phases share (budget=equal)", kind="int+")
    budget: str = setting("equal", "equal: every method trains `epochs` epochs' worth of optimizer steps, split over "
                                   "its phases in its published proportions; published: every phase runs its "
                                   "published epoch count", choices=BUDGETS)
    attack: str = setting("pgd", "training attack", choices=TRAIN_ATTACKS, cli=False)
    attack_steps: int = setting(10, "training attack iterations", kind="int+", cli=False)
    carry_perturbation: bool = setting(False, "fast attack: carried perturbations", kind="bool", cli=False)
    batch_size: int = setting(128, "batch size", kind="int+", cli=False)
    lr: float = setting(0.1, "learning rate of phases from scratch", kind="float+", cli=False)
    finetune_lr: float = setting(0.01, "learning rate of phases from a trained network", kind="float+", cli=False)
    weight_decay: float = setting(5e-4, "weight decay", kind="float0", cli=False)
    train_examples: int | None = setting(None, "training examples (a seeded random subset)", kind="int+")
    test_examples: int = setting(1000, "evaluated test images", kind="int+")
    eval_order: str = setting("first", "which test images", choices=("first", "permutation", "balanced"), cli=False)
    data_dir: str | None = setting(None, "dataset folder", cli=False, neutral=True)
    sparsity: float = setting(0.99, "sparsity of the pruning methods", kind="fraction", cli=False)
    p: float = setting(0.1, "adaptive allocation exponent", kind="float0", cli=False)
    small_ratio: float = setting(0.01, "parameter ratio of the small dense network", kind="fraction", cli=False)
    seed: int = setting(0, "seed", kind="int0", cli=False)
    test_pgd_steps: int = setting(20, "PGD steps of the evaluation", kind="int+", cli=False)
    atmc_penalty: float = setting(0.01, "ATMC: ADMM penalty per step", kind="float0", cli=False)
    atmc_admm_every: int = setting(10, "ATMC: Z/U update every N steps", kind="int+", cli=False)
    autoattack_options: dict | None = setting(None, "AutoAttack overrides (smoke runs only)", cli=False)
    methods: tuple = setting(None, "methods, in table order", kind="list", cli=False, default_factory=tuple)
    data_note: str = setting("", "a note on the data for the table", cli=False, neutral=True)
    hidden: bool = setting(False, "hide from the preset list", kind="bool", cli=False, neutral=True)
    headline_methods: tuple = setting(None, "rows evaluated with AutoAttack standard; the others get AutoAttack's "
                                            "APGD-CE and APGD-T (empty: every row standard)", kind="list", cli=False,
                                      default_factory=tuple)
    seeds: tuple = setting(None, "more training seeds of the headline rows (mean and spread next to the table)",
                           kind="list", cli=False, default_factory=tuple)
    data_seed: int | None = setting(None, "seed of the training subset and the test images (default: seed)",
                                    kind="int0", cli=False)
    width_factors: tuple = setting(None, "train the methods at these multiples of the widths (a width sweep)",
                                   kind="list", cli=False, default_factory=tuple)
    workers: int = setting(1, "methods run in parallel processes (one thread each; results as a serial run)",
                           kind="int+", neutral=True)
    eval_chunk: int | None = setting(None, "test images per evaluation chunk: each chunk's results are saved as it "
                                           "finishes, so a killed evaluation resumes (random starts are drawn per "
                                           "chunk; default: one chunk)", kind="int+", cli=False)
    standard_autoattack: bool | None = setting(None, "False: no row gets AutoAttack standard, every row AutoAttack's "
                                                     "APGD-CE + APGD-T (how the extra seeds' runs are evaluated); "
                                                     "default: the headline rows get it", kind="bool", cli=False)

    #: Fields added after result folders were written: left out of :meth:`protocol` at their
    #: default, so those folders still resume.
    _LATER_FIELDS = ("headline_methods", "seeds", "data_seed", "width_factors", "standard_autoattack", "eval_chunk")

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def protocol(self) -> dict[str, Any]:
        """The settings that change results (checked when a run is resumed)."""
        skip = {"description", "methods", "data_dir", "hidden", "data_note", "workers"}
        skip |= {k for k in self._LATER_FIELDS if getattr(self, k) in ((), None)}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config_to_dict(self).items() if k not in skip}

    def validate(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("attack", self.attack, TRAIN_ATTACKS)
        _check_choice("eval_order", self.eval_order, ("first", "permutation", "balanced"))
        _check_choice("budget", self.budget, BUDGETS)
        check_linf_eps(self.eps)
        for name in ("epochs", "test_examples", "attack_steps", "batch_size", "test_pgd_steps", "atmc_admm_every"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                _fail(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        _check_optional_positive_ints(self, ("train_examples", "eval_chunk"))
        if not _is_int(self.workers) or self.workers < 1:
            _fail(f"workers must be an integer >= 1, got {self.workers!r}")
        for seed in self.seeds:
            if not _is_int(seed) or seed < 0 or seed == self.seed:
                _fail(f"seeds must be integers >= 0 other than seed ({self.seed}), got {list(self.seeds)}")
        for factor in self.width_factors:
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
                _fail(f"width_factors must be numbers > 0, got {list(self.width_factors)}")
        if self.data_seed is not None and (not _is_int(self.data_seed) or self.data_seed < 0):
            _fail(f"data_seed must be an integer >= 0, got {self.data_seed!r}")
        if not 0 <= self.sparsity < 1:
            _fail(f"sparsity must be in [0, 1), got {self.sparsity}")


# --- plain dicts and YAML ------------------------------------------------------------------------

C = TypeVar("C")

# Names of earlier releases, accepted (with a warning, by the callers) for one release.
RENAMED_FIELDS = {"steps": "attack_steps", "val_steps": "val_pgd_steps", "eval_examples": "test_examples",
                  "pgd_steps@compare": "test_pgd_steps"}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config (nested configs included) as plain YAML/JSON values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = config_to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def config_from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = "config") -> C:
    """Build ``cls`` from plain values; unknown keys raise (a typo must not be ignored)."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        value = data[name]
        default = _field_default(f)
        if dataclasses.is_dataclass(default):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"{where}: {name} must be a mapping of settings, got {type(value).__name__}")
            value = config_from_dict(type(default), value, where=f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping (safe loader: plain values only, no Python objects)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(_plain(dict(data)), sort_keys=False, default_flow_style=False)


def list_presets(kind: str, include_hidden: bool = False) -> list[str]:
    """Names of the presets of ``kind`` (``"train"`` or ``"compare"``) shipped with binprune."""
    folder = PRESET_DIR / kind
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    if include_hidden:
        return names
    return [n for n in names if not load_yaml(folder / f"{n}.yaml").get("hidden", False)]


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The plain settings of preset ``name`` of ``kind`` (``"train"`` or ``"compare"``)."""
    path = PRESET_DIR / kind / f"{name}.yaml"
    if not name or "/" in name or os.sep in name or not path.is_file():
        raise ValueError(f"unknown {kind} preset {name!r}: choose one of {', '.join(list_presets(kind))}")
    return load_yaml(path)
