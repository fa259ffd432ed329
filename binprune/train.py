"""Adversarial training of masks (or of ordinary weights), with checkpoints and exact resume.

One loop serves binprune and its baselines: it trains whatever parameters require gradients, so
for a supermask model that is the scores only, and for a dense model the weights.

Reproducibility: the example order of an epoch depends only on (seed, epoch), augmentation and
the attack's random start only on (seed, epoch, batch), so a run killed at any point and resumed
from its last checkpoint ends with the same numbers as an uninterrupted one (on the same device
and thread count). Checkpoints also carry the RNG states, optimizer, schedule position, running
epoch sums and the per-example perturbation buffer of the carried fast attack.

Distributed: under ``torchrun`` (see :func:`init_distributed_from_env`) the model is wrapped in
``DistributedDataParallel`` (``SyncBatchNorm`` on CUDA; PyTorch's SyncBatchNorm has no CPU
implementation, so on CPU each process normalizes with its own batch statistics), each process
reads its shard of every epoch, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack
from torch import nn

from .adversary import (
    BN_MODES,
    TRAIN_ATTACKS,
    CarriedFGSM,
    configure_bn_mode,
    default_alpha,
    frozen_batchnorm_stats,
    _rng_devices,
    make_attack,
    run_attack,
    trades_loss,
)
from .checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, model_spec, save_checkpoint
from .data import AUGMENTATIONS, iterate_batches, num_batches
from .sparsity import sparsity_report
from .utils import atomic_write_bytes, resolve_device, stable_seed, write_json

__all__ = ["TrainConfig", "TrainResult", "StepHook", "train", "init_distributed_from_env", "SCHEDULES"]

SCHEDULES = ("cosine", "step", "constant")


class StepHook(Protocol):
    """Called after every optimizer step (e.g. ATMC's projection). Its state is checkpointed."""

    def __call__(self, model: nn.Module, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainConfig:
    """Every setting that changes the result of a run (checked again on resume)."""

    eps: float
    epochs: int
    attack: str = "pgd"
    alpha: float | None = None
    steps: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    val_fraction: float = 0.02
    trades_beta: float = 6.0
    carry_perturbation: bool = False
    attack_bn: str = "train"
    augment: str | None = None
    seed: int = 0
    clean_acc_every: int = 10
    val_steps: int | None = None
    test_pgd_steps: int = 20
    test_examples: int | None = None
    train_examples: int | None = None

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if self.attack not in TRAIN_ATTACKS:
            bad(f"unknown attack {self.attack!r}: choose one of {', '.join(TRAIN_ATTACKS)}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            bad(f"eps must be a number >= 0, got {self.eps!r}")
        if self.alpha is not None and not self.alpha > 0:
            bad(f"alpha must be > 0, got {self.alpha}")
        if self.epochs < 1:
            bad(f"epochs must be >= 1, got {self.epochs}")
        if self.steps < 1:
            bad(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            bad(f"batch_size must be >= 2 (batch norm needs two examples), got {self.batch_size}")
        if not self.lr > 0:
            bad(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            bad(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            bad(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            bad(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.val_fraction < 1:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.attack_bn not in BN_MODES:
            bad(f"unknown attack_bn {self.attack_bn!r}: choose one of {', '.join(BN_MODES)}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            bad(f"unknown augment {self.augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
        if self.carry_perturbation and self.attack != "fast":
            bad("carry_perturbation only applies to attack='fast'")
        if self.clean_acc_every < 1:
            bad(f"clean_acc_every must be >= 1, got {self.clean_acc_every}")
        for name in ("test_examples", "train_examples", "val_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(f"{name} must be >= 1, got {value}")
        if self.test_pgd_steps < 1:
            bad(f"test_pgd_steps must be >= 1, got {self.test_pgd_steps}")

    @property
    def effective_alpha(self) -> float:
        return default_alpha(self.attack, self.eps, self.steps) if self.alpha is None else self.alpha

    @property
    def effective_val_steps(self) -> int:
        if self.val_steps is not None:
            return self.val_steps
        return self.steps if self.attack in ("pgd", "trades") else 10


@dataclass
class TrainResult:
    """The trained model (the best validation state, else the last), and the final metrics."""

    model: nn.Module
    metrics: dict[str, Any]
    out_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


# --- data views ------------------------------------------------------------------------------------


class _Indexed:
    """A uniform ``len`` / ``batch(indices)`` view over datasets, tensor pairs and subsets."""

    def __init__(self, base: Any, indices: torch.Tensor | None = None):
        self.base = base
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else _length(self.base)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        real = self.indices[idx] if self.indices is not None else idx
        if hasattr(self.base, "batch"):
            return self.base.batch(real)
        if isinstance(self.base, tuple):
            return self.base[0][real], self.base[1][real]
        items = [self.base[int(i)] for i in real]
        return torch.stack([torch.as_tensor(it[0]) for it in items]), torch.as_tensor([int(it[1]) for it in items])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(torch.arange(len(self)))

    def subset(self, idx: torch.Tensor) -> "_Indexed":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return _Indexed(self.base, self.indices[idx] if self.indices is not None else idx)

    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.batch(torch.tensor([0]))[0].shape[1:])


def _length(data: Any) -> int:
    if isinstance(data, tuple):
        if len(data) != 2 or len(data[0]) != len(data[1]):
            raise ValueError("data given as a tuple must be (images, labels) of equal length")
        return len(data[0])
    return len(data)


def _as_indexed(data: Any, name: str) -> _Indexed:
    if isinstance(data, list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = tuple(data)
    if not (isinstance(data, tuple) or hasattr(data, "__getitem__")):
        raise TypeError(f"{name} must be a dataset or an (images, labels) pair, got {type(data).__name__}")
    view = _Indexed(data)
    if len(view) == 0:
        raise ValueError(f"{name} is empty")
    x, y = view.batch(torch.tensor([0]))
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} must hold float images in [0, 1] (normalization belongs inside the model)")
    return view


# --- schedule ------------------------------------------------------------------------------------


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step ``step``: optional linear warm-up, then cosine / step / constant."""
    steps_per_epoch = total_steps / config.epochs
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    t = (step - warmup) / max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "step":
        return config.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    return config.lr


# --- distributed ---------------------------------------------------------------------------------


def init_distributed_from_env(device: str | torch.device = "auto") -> tuple[int, int]:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL when the device is CUDA, gloo otherwise. Returns ``(rank, world_size)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dev = resolve_device(device)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- the trainer ---------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_SUMS = ("loss", "adv_correct", "clean_correct", "clean_seen", "seen")


class _Trainer:
    def __init__(self, model: nn.Module, train_data: Any, test_data: Any, config: TrainConfig, *,
                 out_dir: Path | None, resume: bool, device: torch.device, progress: bool | str,
                 attack: Attack | None, step_hook: StepHook | None, extra_config: dict[str, Any],
                 checkpoint_every: int):
        self.config = config
        self.checkpoint_every = checkpoint_every
        self._t0 = time.perf_counter()
        self._best_state: dict[str, torch.Tensor] | None = None
        self.rank, self.world = _dist_info()
        self.device = device
        self.out_dir = out_dir
        if progress not in (True, False, "epochs"):
            raise ValueError(f"progress must be True, False or 'epochs', got {progress!r}")
        self.progress = progress is True and self.rank == 0  # progress bars
        self.log_epochs = progress in (True, "epochs") and self.rank == 0  # one line per epoch
        self.step_hook = step_hook
        self.extra_config = extra_config
        self.model = model.to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no parameter with requires_grad=True: nothing to train")

        full = _as_indexed(train_data, "train_data")
        if config.train_examples is not None and config.train_examples < len(full):
            # A seeded random subset: datasets stored by class (image folders) would otherwise
            # give the first classes only.
            pick = torch.randperm(len(full), generator=torch.Generator().manual_seed(stable_seed(config.seed, "subset")))
            full = full.subset(pick[:config.train_examples].sort().values)
        n_val = int(round(len(full) * config.val_fraction))
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(stable_seed(config.seed, "val")))
        self.val = full.subset(perm[:n_val].sort().values) if n_val else None
        self.train_view = full.subset(perm[n_val:].sort().values) if n_val else full
        self.test = _as_indexed(test_data, "test_data") if test_data is not None else None
        self.augment = config.augment or getattr(train_data, "augment", "none")
        self.per_rank_batch = max(2, config.batch_size // self.world)
        self.steps_per_epoch = num_batches(len(self.train_view), self.per_rank_batch, world_size=self.world,
                                           drop_last=True)
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(self.train_view)} examples, fewer than one batch of "
                             f"{self.per_rank_batch}: lower batch_size")
        self.total_steps = self.steps_per_epoch * config.epochs

        if self.world > 1 and config.carry_perturbation:
            raise ValueError("carry_perturbation keeps one buffer per process and is not supported with more than one process")
        self.ddp = None
        if self.world > 1:
            if device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        self.optimizer = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        if attack is not None:
            if getattr(attack, "model", None) is not model:
                raise ValueError("the attack instance must be built on the same model object passed to train()")
            attack.set_device(device)
            configure_bn_mode(attack, config.attack_bn)
            self.attack = attack
        else:
            self.attack = make_attack(
                config.attack, self.model, eps=config.eps, alpha=config.alpha, steps=config.steps,
                bn_mode=config.attack_bn, num_examples=len(self.train_view), example_shape=self.train_view.example_shape(),
                carry=config.carry_perturbation, generator=torch.Generator().manual_seed(stable_seed(config.seed, "carry")))
        self.epoch = 0
        self.next_batch = 0
        self.global_step = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.elapsed = 0.0
        if resume:
            self._resume()

    # -- checkpoints --

    def _config_record(self) -> dict[str, Any]:
        return {**asdict(self.config), **self.extra_config, "world_size": self.world}

    def _state(self) -> dict[str, Any]:
        sums = [dict(self.sums)]
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, dict(self.sums))
            sums = gathered
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"name": self.config.schedule, "step": self.global_step, "total_steps": self.total_steps},
            "epoch": self.epoch, "next_batch": self.next_batch, "global_step": self.global_step,
            "sums_per_rank": sums, "history": self.history, "best": self.best,
            "elapsed": self.elapsed + (time.perf_counter() - self._t0),
            "rng": _rng_state(), "config": self._config_record(),
        }
        if isinstance(self.attack, CarriedFGSM):
            state["carry_codes"] = self.attack.codes
        if self.step_hook is not None:
            state["step_hook"] = self.step_hook.state_dict()
        return state

    def _save_last(self) -> None:
        state = self._state()  # collective when distributed: every rank takes part
        if self.rank == 0 and self.out_dir is not None:
            save_checkpoint(self.out_dir / "last.pt", self.model, **state)

    def _resume(self) -> None:
        path = self.out_dir / "last.pt" if self.out_dir is not None else None
        if path is None:
            raise ValueError("resume=True needs out_dir (where the checkpoint is)")
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist (run without --resume to start)")
        ckpt = load_checkpoint(path)
        saved, current = ckpt.get("config", {}), self._config_record()
        diffs = [f"{k}: {saved.get(k)!r} in checkpoint vs {current.get(k)!r} now"
                 for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if diffs:
            raise CheckpointError(f"{path} was made with a different configuration ({'; '.join(diffs[:6])}); "
                                  "use the same settings or a new output directory")
        if ckpt["spec"] != model_spec(self.model):
            raise CheckpointError(f"{path} holds a different model (spec {ckpt['spec']}) than the one given")
        load_state_dict_strict(self.model, ckpt["model"], source=f"checkpoint {path}")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer state does not match the model's trainable parameters ({exc})") from exc
        self.epoch, self.next_batch, self.global_step = ckpt["epoch"], ckpt["next_batch"], ckpt["global_step"]
        sums = ckpt["sums_per_rank"]
        self.sums = dict(sums[self.rank] if self.rank < len(sums) else dict.fromkeys(_SUMS, 0.0))
        self.history, self.best, self.elapsed = list(ckpt["history"]), ckpt["best"], float(ckpt["elapsed"])
        if isinstance(self.attack, CarriedFGSM):
            self.attack.codes = ckpt["carry_codes"].clone()
        if self.step_hook is not None and "step_hook" in ckpt:
            self.step_hook.load_state_dict(ckpt["step_hook"])
        _set_rng_state(ckpt["rng"])

    # -- one step --

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch: int) -> None:
        cfg = self.config
        torch.manual_seed(stable_seed(cfg.seed, "step", self.epoch, batch, self.rank))
        lr = learning_rate(cfg, self.global_step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        forward = self.ddp if self.ddp is not None else self.model
        self.model.train()
        if self.attack is None:
            x_adv = x
        elif isinstance(self.attack, CarriedFGSM):
            x_adv = run_attack(self.attack, self.model, x, y, idx, bn_mode=cfg.attack_bn)
        else:
            x_adv = run_attack(self.attack, self.model, x, y, bn_mode=cfg.attack_bn)
        self.model.train()
        if cfg.attack == "trades":
            logits_clean = forward(x)
            logits_adv = forward(x_adv)
            loss = trades_loss(logits_clean, logits_adv, y, cfg.trades_beta)
            clean_correct = int((logits_clean.argmax(1) == y).sum())
            clean_seen = len(y)
        else:
            logits_adv = forward(x_adv)
            loss = F.cross_entropy(logits_adv, y)
            clean_correct = clean_seen = 0
            if batch % cfg.clean_acc_every == 0:
                with torch.no_grad(), frozen_batchnorm_stats(self.model):
                    clean_correct = int((self.model(x).argmax(1) == y).sum())
                clean_seen = len(y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        if self.step_hook is not None:
            self.step_hook(self.model, self.global_step)
        s = self.sums
        s["loss"] += float(loss.detach()) * len(y)
        s["adv_correct"] += int((logits_adv.detach().argmax(1) == y).sum())
        s["clean_correct"] += clean_correct
        s["clean_seen"] += clean_seen
        s["seen"] += len(y)

    # -- evaluation --

    def _accuracies(self, view: _Indexed, steps: int, n: int | None = None, desc: str = "") -> dict[str, Any]:
        """Clean and PGD-``steps`` accuracy (eval mode) of the first ``n`` examples (classes
        interleaved when the data is stored by class) through :func:`binprune.evaluate.evaluate`."""
        from .evaluate import evaluate

        attacks = ("clean", "pgd") if self.config.eps > 0 else ("clean",)
        n = None if n is None or n >= len(view) else n
        result = evaluate(self.model, view.tensors(), eps=self.config.eps, attacks=attacks, pgd_steps=steps,
                          n_examples=n, seed=stable_seed(self.config.seed, desc), device=self.device, fast=False,
                          progress=self.progress and desc == "test")
        acc = result["accuracy"]
        return {"clean": acc["clean"], "robust": acc.get("pgd", acc["clean"]),
                "n": result["data"]["n_examples"], "selection": result["data"]["selection"]}

    # -- the loop --

    def run(self) -> TrainResult:
        cfg = self.config
        self._t0 = time.perf_counter()
        if self.rank == 0 and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", self._config_record())
        while self.epoch < cfg.epochs:
            bar = _bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}", self.progress, initial=self.next_batch)
            t_epoch, seen_at_start = time.perf_counter(), self.sums["seen"]
            batches = iterate_batches(self.train_view, self.per_rank_batch, shuffle=True, seed=cfg.seed,
                                      epoch=self.epoch, rank=self.rank, world_size=self.world, drop_last=True,
                                      start_batch=self.next_batch, augment=self.augment)
            for x, y, idx in batches:
                self._train_step(x, y, idx, self.next_batch)
                self.next_batch += 1
                if bar is not None:
                    s = self.sums
                    rate = (s["seen"] - seen_at_start) * self.world / max(time.perf_counter() - t_epoch, 1e-9)
                    bar.set_postfix(loss=f"{s['loss'] / s['seen']:.3f}", adv=f"{s['adv_correct'] / s['seen']:.3f}",
                                    clean=f"{s['clean_correct'] / max(s['clean_seen'], 1):.3f}", img_s=f"{rate:.0f}")
                    bar.update(1)
                if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 \
                        and self.next_batch < self.steps_per_epoch:
                    self._save_last()
            if bar is not None:
                bar.close()
            self._end_epoch(time.perf_counter() - t_epoch, (self.sums["seen"] - seen_at_start) * self.world)
        return self._finish()

    def _end_epoch(self, seconds: float, images_timed: float) -> None:
        """Log, validate, select, checkpoint. ``seconds`` and ``images_timed`` cover the part of the
        epoch run by this process (after a resume, not the part done before the interruption)."""
        cfg = self.config
        sums = dict(self.sums)
        if self.world > 1:
            t = torch.tensor([sums[k] for k in _SUMS], dtype=torch.float64)
            dist.all_reduce(t)
            sums = dict(zip(_SUMS, t.tolist()))
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "lr": learning_rate(cfg, self.global_step - 1, self.total_steps),
            "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_adv_acc": sums["adv_correct"] / max(sums["seen"], 1),
            "train_clean_acc": sums["clean_correct"] / sums["clean_seen"] if sums["clean_seen"] else None,
            "seconds": seconds,
            "images_per_second": images_timed / seconds if seconds > 0 else None,
        }
        if self.val is not None:
            val_acc = self._accuracies(self.val, cfg.effective_val_steps, desc="validation")
            clean, robust = val_acc["clean"], val_acc["robust"]
            record.update(val_clean_acc=clean, val_robust_acc=robust)
            score = robust if cfg.eps > 0 else clean
            if self.best is None or score > self.best["score"]:
                self.best = {"epoch": self.epoch + 1, "score": score, "val_clean_acc": clean, "val_robust_acc": robust}
                if self.rank == 0 and self.out_dir is not None:
                    save_checkpoint(self.out_dir / "best.pt", self.model, epoch=self.epoch + 1, best=self.best,
                                    config=self._config_record())
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.history.append(record)
        self.epoch += 1
        self.next_batch = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)
        if self.rank == 0 and self.out_dir is not None:
            lines = "".join(json.dumps(r) + "\n" for r in self.history)
            atomic_write_bytes(self.out_dir / "metrics.jsonl", lines.encode())
        self._save_last()
        if self.log_epochs:
            val = (f", val clean {record['val_clean_acc']:.3f} robust {record['val_robust_acc']:.3f}"
                   if self.val is not None else "")
            print(f"epoch {record['epoch']}: loss {record['train_loss']:.3f}, adv acc {record['train_adv_acc']:.3f}{val}",
                  flush=True)

    def _finish(self) -> TrainResult:
        cfg = self.config
        if self.best is not None:
            best_state = self._best_state
            if best_state is None and self.out_dir is not None and (self.out_dir / "best.pt").is_file():
                best_state = load_checkpoint(self.out_dir / "best.pt")["model"]
            if best_state is not None:
                load_state_dict_strict(self.model, best_state, source="best checkpoint")
        seconds = self.elapsed + (time.perf_counter() - self._t0)
        report = sparsity_report(self.model)
        metrics: dict[str, Any] = {
            "clean_acc": None, "robust_acc": None,
            "robust_attack": f"PGD-{cfg.test_pgd_steps} (Linf, eps={cfg.eps}, step 2.5*eps/{cfg.test_pgd_steps}, random start)",
            "attack": cfg.attack, "eps": cfg.eps,
            "sparsity": report.sparsity, "kept_params": report.kept_params, "total_params": report.total_params,
            "epochs": cfg.epochs, "seconds": seconds, "seed": cfg.seed,
            "selected_epoch": self.best["epoch"] if self.best else cfg.epochs,
            "val_robust_acc": self.best["val_robust_acc"] if self.best else None,
            "test_examples": None,
            "config": self._config_record(),
        }
        if self.test is not None and self.rank == 0:
            t = time.perf_counter()
            test = self._accuracies(self.test, cfg.test_pgd_steps, n=cfg.test_examples, desc="test")
            metrics.update(clean_acc=test["clean"], robust_acc=test["robust"], test_examples=test["n"],
                           test_selection=test["selection"], eval_seconds=time.perf_counter() - t)
        if self.rank == 0 and self.out_dir is not None:
            write_json(self.out_dir / "metrics.json", metrics)
            _plot_curves(self.history, self.out_dir / "curves.png")
        if self.world > 1:
            dist.barrier()
        return TrainResult(self.model, metrics, self.out_dir, list(self.history))


def _bar(total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training curves as a PNG (skipped quietly when matplotlib is unavailable)."""
    if not history:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_acc.plot(epochs, [r["train_adv_acc"] for r in history], marker="o", label="train (adversarial)")
    if history[0].get("val_robust_acc") is not None:
        ax_acc.plot(epochs, [r["val_robust_acc"] for r in history], marker="o", label="validation (PGD)")
        ax_acc.plot(epochs, [r["val_clean_acc"] for r in history], marker="o", label="validation (clean)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    train_data: Any,
    *,
    eps: float,
    epochs: int,
    test_data: Any = None,
    attack: str | Attack = "pgd",
    alpha: float | None = None,
    steps: int = 10,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    val_fraction: float = 0.02,
    trades_beta: float = 6.0,
    carry_perturbation: bool = False,
    attack_bn: str = "train",
    augment: str | None = None,
    test_pgd_steps: int = 20,
    test_examples: int | None = None,
    train_examples: int | None = None,
    clean_acc_every: int = 10,
    val_steps: int | None = None,
    checkpoint_every: int = 0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool | str = True,
    step_hook: StepHook | None = None,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Adversarially train ``model``'s trainable parameters (the scores of a supermask model).

    Args:
        model: a model taking inputs in [0, 1]; trained in place.
        train_data: an :class:`~binprune.data.ImageTensorDataset`, any dataset of ``(image, label)``
            or an ``(images, labels)`` pair of tensors in [0, 1]. ``val_fraction`` of it is held out
            (seeded) for model selection.
        eps: Linf budget of the training attack (pixel units; 0 with ``attack="none"`` is standard training).
        epochs: passes over the training split.
        test_data: if given, the returned model is evaluated on it: clean and PGD-``test_pgd_steps``
            accuracy on the first ``test_examples`` examples (classes interleaved when the data is
            stored sorted by class, as :func:`binprune.evaluate.evaluate` does).
        attack: ``"pgd"`` (Madry et al.), ``"fast"`` (FGSM with random start, step 1.25 eps; with
            ``carry_perturbation`` each example's perturbation carries over to the next epoch),
            ``"trades"`` (TRADES loss, beta ``trades_beta``, TPGD inner maximization), ``"none"``, or
            a ``Attack`` built on ``model``.
        alpha: attack step size; default 2.5 * eps / steps (1.25 * eps for ``"fast"``).
        steps: attack iterations (PGD / TRADES).
        batch_size: global batch size (split across processes when distributed).
        lr, momentum, weight_decay: SGD settings; ``schedule`` is ``"cosine"``, ``"step"`` (x0.1 at
            50% and 75%) or ``"constant"``, per step, after ``warmup_epochs`` of linear warm-up.
        attack_bn: batch-norm mode while attacks run: ``"train"`` (batch statistics, running
            statistics frozen) or ``"eval"``; see :mod:`binprune.adversary`.
        augment: ``"crop_flip"`` or ``"none"``; default: the dataset's own (``crop_flip`` for CIFAR).
        train_examples: use only N training examples, a seeded random subset (quick runs).
        clean_acc_every: measure clean batch accuracy every N steps (one extra forward pass).
        checkpoint_every: also checkpoint every N optimizer steps (0: once per epoch).
        out_dir: where ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``metrics.json``, ``config.json`` and
            ``curves.png`` go; ``None`` writes nothing.
        resume: continue from ``out_dir/last.pt`` (same settings required).
        progress: ``True``: progress bars and one line per epoch; ``"epochs"``: the lines only;
            ``False``: silent.
        step_hook: called after every optimizer step (baselines use it for projections).
        extra_config: plain values recorded with the config (and checked on resume).

    Returns:
        :class:`TrainResult` with the model (best validation epoch) and metrics (accuracies as
        fractions in [0, 1], seconds, sparsity).

    Example:
        >>> net = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", in_channels=1))
        >>> result = binprune.train(net, load_dataset("fashion-mnist"), eps=0.1, epochs=2, attack="fast")
    """
    attack_name = attack if isinstance(attack, str) else "custom"
    config = TrainConfig(
        eps=eps, epochs=epochs, attack=attack_name if attack_name != "custom" else "pgd", alpha=alpha, steps=steps,
        batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        warmup_epochs=warmup_epochs, val_fraction=val_fraction, trades_beta=trades_beta,
        carry_perturbation=carry_perturbation, attack_bn=attack_bn, augment=augment, seed=seed,
        clean_acc_every=clean_acc_every, val_steps=val_steps, test_pgd_steps=test_pgd_steps,
        test_examples=test_examples, train_examples=train_examples,
    )
    config.validate()
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    extra = dict(extra_config or {})
    if attack_name == "custom":
        extra["custom_attack"] = type(attack).__name__
    dev = resolve_device(device)
    if dist.is_available() and dist.is_initialized() and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    with torch.random.fork_rng(devices=_rng_devices(dev)):
        trainer = _Trainer(model, train_data, test_data, config, out_dir=Path(out_dir) if out_dir else None,
                           resume=resume, device=dev, progress=progress,
                           attack=None if isinstance(attack, str) else attack, step_hook=step_hook, extra_config=extra,
                           checkpoint_every=checkpoint_every)
        return trainer.run()
