"""The training loop: one adversarial step, validation and selection, checkpoints, exact resume.

Reproducibility: the example order of an epoch depends only on (seed, epoch), augmentation and
the attack's random start only on (seed, epoch, batch), so a run killed at any point and resumed
from its last checkpoint ends with the same numbers as an uninterrupted one (on the same device
and thread count). Checkpoints also carry the RNG states, optimizer, schedule position, running
epoch sums and the per-example perturbation buffer of the carried fast attack.

Distributed: under ``torchrun`` the model is wrapped in ``DistributedDataParallel``
(``SyncBatchNorm`` on CUDA; PyTorch's SyncBatchNorm has no CPU implementation, so on CPU each
process normalizes with its own batch statistics), each process reads its shard of every epoch,
and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..adversary import (
    Attack,
    default_alpha,
    CarriedFGSM,
    attack_bn_mode,
    configure_bn_mode,
    frozen_batchnorm_stats,
    make_attack,
    run_attack,
    trades_loss,
)
from ..checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, model_spec, save_checkpoint
from ..config import TrainConfig
from ..data import CROP_PADDING, augmentation_generator, crop_flip_params, num_batches
from ..results import EvalReport, TrainResult
from ..sparsity import sparsity_report
from ..utils import atomic_write_bytes, stable_seed, write_json
from ..views import ExampleView, as_view, fingerprint, from_loader
from .curves import history_csv, write_curves
from .distributed import dist_info
from .schedule import learning_rate

_log = logging.getLogger(__name__)

__all__ = ["StepHook", "Trainer", "TrainerOptions", "TrainingDiverged", "autocast_context", "cudnn_benchmark",
           "prefetch_to_device"]


class TrainingDiverged(ValueError):
    """The loss or the trained parameters became NaN or infinite: training stopped."""


class StepHook(Protocol):
    """Called after every optimizer step (e.g. ATMC's projection). Its state is checkpointed."""

    def __call__(self, model: nn.Module, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerOptions:
    """How a run is carried out, as opposed to what it computes (:class:`TrainConfig`)."""

    def __init__(self, *, out_dir: Path | None, resume: bool, device: torch.device, progress: bool | str,
                 attack: Attack | None, step_hook: StepHook | None, extra_config: dict[str, Any]):
        if progress not in (True, False, "epochs"):
            raise ValueError(f"progress must be True, False or 'epochs', got {progress!r}")
        self.out_dir, self.resume, self.device, self.progress = out_dir, resume, device, progress
        self.attack, self.step_hook, self.extra_config = attack, step_hook, extra_config


_SUMS = ("loss", "adv_correct", "clean_correct", "clean_seen", "seen")


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (``"bf16"``) on ``device``; a no-op for ``"none"``.

    Under bf16 autocast the convolutions and matrix products run in bfloat16 while the supermask's
    scores, its top-k selection, the masked float32 weight and the straight-through gradient stay
    in float32 (autocast casts the weight at the convolution, and its backward casts the gradient
    back), so the mask is exactly the one float32 training would select from the same scores.
    """
    if amp == "none":
        return contextlib.nullcontext()
    if amp != "bf16":
        raise ValueError(f"unknown amp {amp!r}: choose 'none' or 'bf16'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Any:
    """``torch.backends.cudnn.benchmark`` set for the duration of a run, then restored."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled) or saved
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def prefetch_to_device(batches: Any, device: torch.device) -> Any:
    """Yield ``(x, y, idx)`` with ``x`` and ``y`` on ``device``.

    On CUDA the next batch is copied from pinned memory with ``non_blocking=True`` while the
    current one is being trained on, so host-to-device copies overlap the computation; elsewhere
    batches are moved one at a time (on the CPU this is the identity).
    """
    if device.type != "cuda":
        for x, y, idx in batches:
            yield x.to(device), y.to(device), idx
        return

    def send(batch: tuple) -> tuple:
        x, y, idx = batch
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True), idx

    pending = None
    for batch in batches:
        ready, pending = pending, send(batch)
        if ready is not None:
            yield ready
    if pending is not None:
        yield pending


def _bar(total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


class Trainer:
    """Trains ``model``'s parameters that require gradients on ``train_data`` under ``config``."""

    def __init__(self, model: nn.Module, train_data: Any, test_data: Any, config: TrainConfig,
                 options: TrainerOptions):
        self.config, self.options = config, options
        self.rank, self.world = dist_info()
        self.device, self.out_dir = options.device, options.out_dir
        self.progress = options.progress is True and self.rank == 0  # progress bars
        self.log_epochs = options.progress in (True, "epochs") and self.rank == 0  # one line per epoch
        self.step_hook = options.step_hook
        self.model = model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
        self._t0 = time.perf_counter()
        self._best_state: dict[str, torch.Tensor] | None = None
        self._step_seconds: list[float] = []
        self._every = config.checkpoint_every  # 0 until derived from checkpoint_seconds
        self._setup_data(train_data, test_data)
        self._setup_model()
        self._setup_attack(options.attack)
        self.epoch = self.next_batch = self.global_step = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.elapsed = 0.0
        if options.resume:
            self._resume()

    # -- setup --

    def _setup_data(self, train_data: Any, test_data: Any) -> None:
        train_data = from_loader(train_data)  # a DataLoader: its dataset, batched by binprune (seeded)
        cfg = self.config
        full = as_view(train_data, "train_data").random_subset(cfg.train_examples, cfg.seed, "subset")
        self.train_view, self.val = full.split(cfg.val_fraction, cfg.seed, "val")
        self.test = as_view(test_data, "test_data") if test_data is not None else None
        self.data_record = {"source": str(getattr(train_data, "source", "") or type(train_data).__name__),
                            "n_examples": len(self.train_view), "sha256": fingerprint(self.train_view)}
        self.augment = cfg.augment or getattr(train_data, "augment", "none")
        self.per_rank_batch = max(2, cfg.batch_size // self.world)
        self.steps_per_epoch = num_batches(len(self.train_view), self.per_rank_batch, world_size=self.world,
                                           drop_last=True)
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(self.train_view)} examples, fewer than one batch of "
                             f"{self.per_rank_batch}: lower batch_size")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.budget_epochs is not None:  # a fractional budget: the last epoch is cut short
            self.total_steps = max(1, round(self.steps_per_epoch * cfg.budget_epochs))

    def _setup_model(self) -> None:
        if self.world > 1 and self.config.carry_perturbation:
            raise ValueError("carry_perturbation keeps one buffer per process and is not supported with more than one process")
        self.ddp = None
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world > 1:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        cfg = self.config
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)

    def _setup_attack(self, attack: Attack | None) -> None:
        cfg = self.config
        self.attack_bn = attack_bn_mode(cfg.attack, cfg.attack_bn)
        if attack is not None:
            if getattr(attack, "model", None) is not self.model:
                raise ValueError("the attack instance must be built on the same model object passed to train()")
            attack.set_device(self.device)
            configure_bn_mode(attack, self.attack_bn)
            self.attack = attack
            return
        # The carried perturbation lives in the padded frame when crops are drawn (CarriedFGSM).
        padding = CROP_PADDING if self.augment == "crop_flip" else 0
        self.attack = make_attack(
            cfg.attack, self.model, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps, bn_mode=self.attack_bn,
            num_examples=len(self.train_view), example_shape=self.train_view.example_shape(),
            carry=cfg.carry_perturbation, generator=torch.Generator().manual_seed(stable_seed(cfg.seed, "carry")),
            padding=padding)

    # -- checkpoints --

    def config_record(self) -> dict[str, Any]:
        """What the run's result depends on: the config, the caller's extras and the process count."""
        record = {**self.config.record(), **self.options.extra_config, "world_size": self.world,
                  "train_data": self.data_record}
        # Defaults that changed between versions are recorded resolved, so that resuming a run made
        # under the other default is refused instead of silently switching: the training attack's
        # batch-norm mode (now "eval" for TRADES) and the carried attack's step (now 0.5 eps).
        record["attack_bn"] = self.attack_bn
        if self.config.carry_perturbation and record.get("alpha") is None:
            record["alpha"] = default_alpha(self.config.attack, self.config.eps, self.config.attack_steps, carry=True)
        return record

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
            "rng": _rng_state(), "config": self.config_record(),
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

    def _check_resumable(self, path: Path, ckpt: dict[str, Any]) -> None:
        saved, current = ckpt.get("config", {}), self.config_record()
        diffs = [f"{k}: {saved.get(k)!r} in checkpoint vs {current.get(k)!r} now"
                 for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if diffs:
            raise CheckpointError(f"{path} was made with a different configuration ({'; '.join(diffs[:6])}); "
                                  "use the same settings or a new output directory")
        if ckpt["spec"] != model_spec(self.model):
            raise CheckpointError(f"{path} holds a different model (spec {ckpt['spec']}) than the one given")

    def _resume(self) -> None:
        path = self.out_dir / "last.pt" if self.out_dir is not None else None
        if path is None:
            raise ValueError("resume=True needs out_dir (where the checkpoint is)")
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist (run without --resume to start)")
        ckpt = load_checkpoint(path)
        self._check_resumable(path, ckpt)
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

    def _adversarial_examples(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch: int) -> torch.Tensor:
        if self.attack is None:
            return x
        if isinstance(self.attack, CarriedFGSM):
            crops = None
            if self.attack.padding:  # the crops this batch received (same generator as iterate_batches)
                crops = crop_flip_params(len(idx), augmentation_generator(self.config.seed, self.epoch, batch))
            return run_attack(self.attack, self.model, x, y, idx, crops, bn_mode=self.attack_bn)
        return run_attack(self.attack, self.model, x, y, bn_mode=self.attack_bn)

    def _loss(self, forward: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
              batch: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``(loss, adversarial logits, clean correct, clean seen)`` of one batch."""
        cfg = self.config
        if cfg.attack == "trades":
            logits_clean = forward(x)
            logits_adv = forward(x_adv)
            loss = trades_loss(logits_clean, logits_adv, y, cfg.trades_beta)
            return loss, logits_adv, int((logits_clean.argmax(1) == y).sum()), len(y)
        logits_adv = forward(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if cfg.clean_loss_weight > 0:  # ATMC's objective: w CE(clean) + (1 - w) CE(adversarial)
            logits_clean = forward(x)
            loss = (1 - cfg.clean_loss_weight) * loss + cfg.clean_loss_weight * F.cross_entropy(logits_clean, y)
            return loss, logits_adv, int((logits_clean.detach().argmax(1) == y).sum()), len(y)
        clean_correct = clean_seen = 0
        if batch % cfg.clean_acc_every == 0:
            with torch.no_grad(), frozen_batchnorm_stats(self.model):
                clean_correct = int((self.model(x).argmax(1) == y).sum())
            clean_seen = len(y)
        return loss, logits_adv, clean_correct, clean_seen

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch: int) -> None:
        cfg = self.config
        torch.manual_seed(stable_seed(cfg.seed, "step", self.epoch, batch, self.rank))
        lr = learning_rate(cfg, self.global_step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        try:
            with autocast_context(self.device, cfg.amp):
                x_adv = self._adversarial_examples(x, y, idx, batch)
                self.model.train()
                forward = self.ddp if self.ddp is not None else self.model
                loss, logits_adv, clean_correct, clean_seen = self._loss(forward, x, x_adv, y, batch)
            loss_term = getattr(self.step_hook, "loss_term", None)
            if loss_term is not None:  # a method's penalty inside the loss (ATMC's ADMM term), in float32
                loss = loss + loss_term(self.model)
        except (IndexError, RuntimeError) as exc:
            if "out of bounds" not in str(exc):
                raise
            raise ValueError(f"a label of the training data ({int(y.max())} in this batch) is out of range for the "
                             "model's logits: build the model with num_classes >= the dataset's class count") from exc
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            self._diverged(f"the loss is {loss_value}", lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            self._diverged("a trained parameter is no longer finite", lr)
        self.global_step += 1
        if self.step_hook is not None:
            self.step_hook(self.model, self.global_step)
        s = self.sums
        s["loss"] += loss_value * len(y)
        s["adv_correct"] += int((logits_adv.detach().argmax(1) == y).sum())
        s["clean_correct"] += clean_correct
        s["clean_seen"] += clean_seen
        s["seen"] += len(y)

    def _diverged(self, what: str, lr: float) -> None:
        last = self.out_dir / "last.pt" if self.out_dir is not None else None
        where = (f"the last good checkpoint is {last} (epoch {self.epoch + 1 if self.next_batch else self.epoch}, "
                 "as saved)" if last is not None and last.is_file() else "no checkpoint was written")
        raise TrainingDiverged(f"training diverged at epoch {self.epoch + 1}, step {self.global_step + 1}: {what} "
                               f"(learning rate {lr:g}); {where}. Lower the learning rate and start again")


    # -- evaluation --

    def _evaluate(self, view: ExampleView, steps: int, n: int | None = None, purpose: str = "") -> EvalReport:
        """Clean and PGD-``steps`` accuracy (eval mode) of the first ``n`` examples (classes
        interleaved when the data is stored by class) through :func:`binprune.evaluate`."""
        from ..evaluation import evaluate

        attacks = ("clean", "pgd") if self.config.eps > 0 else ("clean",)
        n = None if n is None or n >= len(view) else n
        return evaluate(self.model, view.tensors(), eps=self.config.eps, attacks=attacks, pgd_steps=steps,
                        n_examples=n, seed=stable_seed(self.config.seed, purpose), device=self.device, fast=False,
                        progress=self.progress and purpose == "test")

    @staticmethod
    def _clean_and_robust(report: EvalReport) -> dict[str, float]:
        acc = report.accuracy
        return {"clean": acc["clean"], "pgd": acc.get("pgd", acc["clean"])}

    # -- the loop --

    def run(self) -> TrainResult:
        """Train the remaining epochs, then select the best validation state and test it."""
        self._t0 = time.perf_counter()
        if self.rank == 0 and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", self.config_record())
        with cudnn_benchmark(self.config.cudnn_benchmark and self.device.type == "cuda"):
            while self.epoch < self.config.epochs:
                self._run_epoch()
        return self._finish()

    def _run_epoch(self) -> None:
        cfg = self.config
        bar = _bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}", self.progress, initial=self.next_batch)
        t_epoch, seen_at_start = time.perf_counter(), self.sums["seen"]
        batches = self.train_view.batches(self.per_rank_batch, shuffle=True, seed=cfg.seed, epoch=self.epoch,
                                          rank=self.rank, world_size=self.world, drop_last=True,
                                          start_batch=self.next_batch, augment=self.augment)
        for x, y, idx in prefetch_to_device(batches, self.device):
            if self.global_step >= self.total_steps:
                break
            t_step = time.perf_counter()
            self._train_step(x, y, idx, self.next_batch)
            self._derive_checkpoint_interval(time.perf_counter() - t_step)
            self.next_batch += 1
            if bar is not None:
                s = self.sums
                rate = (s["seen"] - seen_at_start) * self.world / max(time.perf_counter() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{s['loss'] / s['seen']:.3f}", adv=f"{s['adv_correct'] / s['seen']:.3f}",
                                clean=f"{s['clean_correct'] / max(s['clean_seen'], 1):.3f}", img_s=f"{rate:.0f}")
                bar.update(1)
            if self._every and self.global_step % self._every == 0 and self.next_batch < self.steps_per_epoch:
                self._save_last()
        if bar is not None:
            bar.close()
        self._end_epoch(time.perf_counter() - t_epoch, (self.sums["seen"] - seen_at_start) * self.world)

    def _derive_checkpoint_interval(self, seconds: float, measured_steps: int = 5) -> None:
        """With ``checkpoint_seconds``: after the first steps of this process, checkpoint every N
        steps, N = checkpoint_seconds / mean step time (the slowest process's, when distributed)."""
        if self._every or not self.config.checkpoint_seconds:
            return
        self._step_seconds.append(seconds)
        if len(self._step_seconds) < measured_steps:
            return
        mean = torch.tensor(sum(self._step_seconds) / len(self._step_seconds), dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(mean, op=dist.ReduceOp.MAX)
        self._every = max(1, int(self.config.checkpoint_seconds / max(float(mean), 1e-6)))

    def _epoch_sums(self) -> dict[str, float]:
        sums = dict(self.sums)
        if self.world > 1:
            t = torch.tensor([sums[k] for k in _SUMS], dtype=torch.float64)
            dist.all_reduce(t)
            sums = dict(zip(_SUMS, t.tolist()))
        return sums

    def _validate(self, record: dict[str, Any]) -> None:
        """Validation accuracies into ``record``; keep the best state (by PGD, else clean accuracy)."""
        cfg = self.config
        val = self._clean_and_robust(self._evaluate(self.val, cfg.effective_val_pgd_steps, purpose="validation"))
        record["val_accuracy"] = val
        score = val["pgd"] if cfg.eps > 0 else val["clean"]
        if self.best is None or score > self.best["score"]:
            self.best = {"epoch": self.epoch + 1, "score": score, "val_accuracy": val}
            if self.rank == 0 and self.out_dir is not None:
                save_checkpoint(self.out_dir / "best.pt", self.model, epoch=self.epoch + 1, best=self.best,
                                config=self.config_record())
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _end_epoch(self, seconds: float, images_timed: float) -> None:
        """Log, validate, select, checkpoint. ``seconds`` and ``images_timed`` cover the part of the
        epoch run by this process (after a resume, not the part done before the interruption)."""
        sums = self._epoch_sums()
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "lr": learning_rate(self.config, self.global_step - 1, self.total_steps),
            "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_accuracy": {
                "adversarial": sums["adv_correct"] / max(sums["seen"], 1),
                "clean": sums["clean_correct"] / sums["clean_seen"] if sums["clean_seen"] else None,
            },
            "seconds": seconds,
            "images_per_second": images_timed / seconds if seconds > 0 else None,
        }
        if self.val is not None:
            self._validate(record)
        self.history.append(record)
        self.epoch += 1
        self.next_batch = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)
        if self.rank == 0 and self.out_dir is not None:
            lines = "".join(json.dumps(r) + "\n" for r in self.history)
            atomic_write_bytes(self.out_dir / "metrics.jsonl", lines.encode())
            atomic_write_bytes(self.out_dir / "metrics.csv", history_csv(self.history).encode())
        self._save_last()
        if self.log_epochs:
            val = record.get("val_accuracy")
            val_text = f", val clean {val['clean']:.3f} robust {val['pgd']:.3f}" if val is not None else ""
            _log.info("epoch %d: loss %.3f, adv acc %.3f%s", record["epoch"], record["train_loss"],
                      record["train_accuracy"]["adversarial"], val_text)

    def _restore_best(self) -> None:
        if self.best is None:
            return
        best_state = self._best_state
        if best_state is None and self.out_dir is not None and (self.out_dir / "best.pt").is_file():
            best_state = load_checkpoint(self.out_dir / "best.pt")["model"]
        if best_state is not None:
            load_state_dict_strict(self.model, best_state, source="best checkpoint")

    def _facts(self) -> dict[str, Any]:
        cfg = self.config
        report = sparsity_report(self.model)
        return {
            "test_attack": f"PGD-{cfg.test_pgd_steps} (Linf, eps={cfg.eps}, step 2.5*eps/{cfg.test_pgd_steps}, "
                           "random start)",
            "attack": cfg.attack, "eps": cfg.eps,
            "sparsity": report.sparsity, "kept_params": report.kept_params, "total_params": report.total_params,
            "epochs": cfg.epochs, "optimizer_steps": self.global_step, "seconds": self.elapsed + (time.perf_counter() - self._t0), "seed": cfg.seed,
            "selected_epoch": self.best["epoch"] if self.best else cfg.epochs,
            "val_accuracy": self.best["val_accuracy"] if self.best else None,
            "config": self.config_record(),
        }

    def _finish(self) -> TrainResult:
        self._restore_best()
        facts = self._facts()
        test = None
        if self.test is not None and self.rank == 0:
            test = self._evaluate(self.test, self.config.test_pgd_steps, n=self.config.test_examples, purpose="test")
        result = TrainResult(self.model, test, list(self.history), facts, self.out_dir)
        if self.rank == 0 and self.out_dir is not None:
            write_json(self.out_dir / "metrics.json", result.to_dict())
            write_curves(self.history, self.out_dir / "curves.png")
        if self.world > 1:
            dist.barrier()
        return result
