"""``binprune.train``: adversarial training of masks (or of ordinary weights) under a config."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..adversary import is_attack, rng_devices
from ..config import TrainConfig
from ..logs import console_messages
from ..results import TrainResult
from ..utils import atomic_write_bytes, resolve_device
from .distributed import dist_info
from .runfolder import RunFolder
from .trainer import StepHook, Trainer, TrainerOptions

__all__ = ["train", "resolve_train_config"]

# Keyword names of earlier releases: accepted for one release, with a warning.
_RENAMED = {"steps": "attack_steps", "val_steps": "val_pgd_steps"}
_warned: set[str] = set()


def _warn_renamed(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(f"train({old}=...) is deprecated: use {new}=...", DeprecationWarning, stacklevel=4)


def resolve_train_config(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` (default: :class:`TrainConfig`'s defaults) with ``settings`` applied, validated.

    Unknown setting names raise; the names of earlier releases (``steps``, ``val_steps``) are
    accepted with a ``DeprecationWarning``.
    """
    settings = dict(settings)
    for old, new in _RENAMED.items():
        if old in settings:
            _warn_renamed(old, new)
            if new in settings:
                raise ValueError(f"pass {new}= only (it replaces {old}=)")
            settings[new] = settings.pop(old)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TypeError(f"train() got unknown setting(s) {', '.join(unknown)}; settings are TrainConfig's fields: "
                        f"{', '.join(sorted(names))}")
    base = config if config is not None else TrainConfig()
    if not isinstance(base, TrainConfig):
        raise TypeError(f"config must be a binprune.TrainConfig, got {type(base).__name__}")
    resolved = dataclasses.replace(base, **settings)
    resolved.validate()
    return resolved


def train(
    model: nn.Module,
    train_data: Any,
    config: TrainConfig | None = None,
    *,
    test_data: Any = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "auto",
    progress: bool | str = True,
    step_hook: StepHook | None = None,
    extra_config: dict[str, Any] | None = None,
    run_files: dict[str, bytes] | None = None,
    **settings: Any,
) -> TrainResult:
    """Adversarially train ``model``'s trainable parameters (the scores of a supermask model).

    Args:
        model: a model taking inputs in [0, 1]; trained in place.
        train_data: an :class:`~binprune.data.ImageTensorDataset`, any dataset of ``(image, label)``
            or an ``(images, labels)`` pair of tensors in [0, 1]. ``val_fraction`` of it is held
            out (seeded) for model selection.
        config: a :class:`binprune.TrainConfig`; ``settings`` (its field names, e.g. ``eps=0.1,
            epochs=4, attack="fast"``) override it. ``eps`` and ``epochs`` have no default.
            ``attack`` may also be an attack instance built on ``model`` (binprune's, e.g.
            :class:`binprune.adversary.LinfPGD`, or a torchattacks ``Attack``).
        test_data: if given, the returned model is evaluated on it: clean and
            PGD-``test_pgd_steps`` accuracy on the first ``test_examples`` examples (classes
            interleaved when the data is stored sorted by class).
        out_dir: where ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``metrics.json``,
            ``config.json`` and ``curves.png`` go; ``None`` writes nothing. The folder must be new,
            empty or a binprune run; the run holds a lock on it while it writes (see
            :mod:`binprune.training.runfolder`).
        resume: continue from ``out_dir/last.pt`` (same settings and data required).
        overwrite: replace the run in ``out_dir`` (its own files only); without ``resume`` or
            ``overwrite``, a folder holding a run's checkpoints is refused.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        progress: ``True``: progress bars and one line per epoch; ``"epochs"``: the lines only;
            ``False``: silent.
        step_hook: called after every optimizer step (methods use it for projections).
        extra_config: plain values recorded with the config (and checked on resume).
        run_files: more files to write into ``out_dir`` once the run holds it (the CLI's
            ``config.yaml``), as ``{name: content}``.

    Returns:
        :class:`binprune.results.TrainResult`: the model (best validation epoch), its test
        evaluation, the per-epoch history and the run's facts; ``to_dict()`` is ``metrics.json``.

    Example:
        >>> net = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", in_channels=1))
        >>> result = binprune.train(net, binprune.load_dataset("fashion-mnist"), eps=0.1, epochs=2, attack="fast")
        >>> result.accuracy  # {'clean': ..., 'pgd': ...} when test_data is given
    """
    custom_attack = settings.pop("attack") if is_attack(settings.get("attack")) else None
    extra = dict(extra_config or {})
    if custom_attack is not None:
        extra["custom_attack"] = type(custom_attack).__name__
    cfg = resolve_train_config(config, settings)
    dev = resolve_device(device)
    if dist.is_available() and dist.is_initialized() and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    options = TrainerOptions(out_dir=Path(out_dir) if out_dir else None, resume=resume, device=dev, progress=progress,
                             attack=custom_attack, step_hook=step_hook, extra_config=extra)
    folder = RunFolder(out_dir, resume=resume, overwrite=overwrite) if out_dir and dist_info()[0] == 0 else None
    if folder is not None:
        folder.check()  # before any work: a folder we may not write into is refused at once
    with folder if folder is not None else contextlib.nullcontext(), torch.random.fork_rng(devices=rng_devices(dev)), \
            console_messages(progress in (True, "epochs")):
        if folder is not None:
            for name, content in (run_files or {}).items():
                atomic_write_bytes(folder.path / name, content)
        return Trainer(model, train_data, test_data, cfg, options).run()
