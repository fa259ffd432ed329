""":func:`evaluate`: clean and robust accuracy of a model, with the settings that produced them.

All attacks work in pixel space (inputs in [0, 1], normalization inside the model). Robust
accuracy is the fraction of examples classified correctly *and* still correctly under the
attack, the definition AutoAttack and RobustBench use. The attacks come from the registry of
:mod:`binprune.evaluation.attacks`; the defaults from :class:`binprune.config.EvalConfig`.

Determinism: every random start is seeded from ``seed`` (and the batch), AutoAttack gets
``seed`` explicitly, and the caller's global RNG is restored afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import torch
from torch import nn

from ..config import EvalConfig
from ..results import AttackResult, EvalReport
from ..utils import resolve_device
from ..views import evaluation_tensors
from .attacks import ATTACKS, AttackContext, check_attacks
from .chunks import ChunkStore, evaluation_fingerprint, run_in_chunks
from .confirm import AttackForm, equivalent_model
from .model import describe_model, frozen_parameters, output_warnings, prepare_model, preserved_modes
from .progress import ProgressCallback, ProgressReporter
from .validation import check_eps, check_norm, check_positive_int, check_seed, with_settings

__all__ = ["evaluate", "eval_config", "package_versions"]

_AUTOATTACK_OPTIONS = ("attacks", "iterations", "square_queries")


def eval_config(config: EvalConfig | None = None, **settings: Any) -> EvalConfig:
    """``config`` with ``settings`` applied, checked, and normalized (attack names as a tuple with
    ``"clean"`` first, ``eps`` a float, ``autoattack_options`` a dict or ``None``)."""
    cfg = with_settings(EvalConfig, config, settings, "evaluation")
    names = check_attacks(cfg.attacks)
    norm = check_norm(cfg.norm)
    if cfg.eps is None and set(names) != {"clean"}:  # clean accuracy alone needs no budget
        raise ValueError("no attack budget: pass eps (in pixel units, e.g. 8/255 for L-inf, 0.5 for L2), or "
                         "attacks=('clean',) for clean accuracy only")
    eps = None if cfg.eps is None else check_eps(cfg.eps, user_linf=norm == "Linf")
    check_positive_int(cfg.batch_size, "batch_size")
    check_positive_int(cfg.pgd_steps, "pgd_steps")
    check_positive_int(cfg.pgd_restarts, "pgd_restarts")
    alpha = cfg.pgd_alpha
    if alpha is not None and (isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and alpha > 0)):
        raise ValueError(f"pgd_alpha must be a number > 0, got {alpha!r}")
    check_seed(cfg.seed)
    options = dict(cfg.autoattack_options or {})
    unknown = set(options) - set(_AUTOATTACK_OPTIONS)
    if unknown:
        raise ValueError(f"unknown autoattack_options {sorted(unknown)}: use {', '.join(_AUTOATTACK_OPTIONS)}")
    if not (isinstance(cfg.compact_tolerance, (int, float)) and not isinstance(cfg.compact_tolerance, bool)
            and cfg.compact_tolerance > 0):
        raise ValueError(f"compact_tolerance must be a number > 0, got {cfg.compact_tolerance!r}")
    if cfg.chunk_examples is not None:
        check_positive_int(cfg.chunk_examples, "chunk_examples")
    if cfg.compact_engine not in ("dense", "sparse"):
        raise ValueError(f"compact_engine must be 'dense' or 'sparse', got {cfg.compact_engine!r}")
    if "autoattack-custom" in names and not options.get("attacks"):
        raise ValueError("'autoattack-custom' needs autoattack_options={'attacks': [...]} naming AutoAttack's attacks")
    ordered = ("clean",) + tuple(a for a in names if a != "clean")
    return dataclasses.replace(cfg, eps=eps, norm=norm, attacks=ordered, autoattack_options=options or None)


def package_versions() -> dict[str, str]:
    """Versions of the packages whose code produced the numbers."""
    import pyautoattack

    import binprune

    return {"binprune": binprune.__version__, "torch": torch.__version__, "pyautoattack": pyautoattack.__version__}


def _attack_form(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, device: torch.device,
                 info: dict) -> AttackForm | None:
    """The faster equivalent the attacks run on (``None``: the model itself); recorded in ``info``."""
    if not (cfg.fast and cfg.attack_compact):
        info["attack_form"] = {"attacked": "model", "reason": "fast=False" if not cfg.fast else "attack_compact=False"}
        return None
    if not any(name != "clean" for name in cfg.attacks):
        return None
    form, info["attack_form"] = equivalent_model(model, x, y, tolerance=float(cfg.compact_tolerance),
                                                 engine=cfg.compact_engine, batch_size=cfg.batch_size, device=device)
    return form


def _run_attacks(ctx: AttackContext, names: tuple[str, ...]) -> dict[str, AttackResult]:
    """Clean first (its flags are the others' starting point), then each named attack."""
    results = {"clean": ATTACKS["clean"](ctx)}
    ctx.clean = results["clean"].robust
    for name in names:
        if name != "clean":
            ctx.earlier = dict(results)
            result = ATTACKS[name](ctx)
            if result.robust is not None and len(result.robust) != ctx.n:
                raise ValueError(f"attack {name!r} returned {len(result.robust)} flags for {ctx.n} examples")
            results[name] = result
    return results


def _chunk_store(resume_dir: str | os.PathLike | None, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 cfg: EvalConfig, record: dict[str, Any]) -> ChunkStore | None:
    if resume_dir is None:
        return None
    # the settings that change results, the model and the examples: a saved chunk of any other
    # evaluation is refused rather than used. The batch size counts: random starts are drawn per
    # batch of the examples still standing.
    keyed = {k: v for k, v in record.items() if k != "device"}
    fingerprint = evaluation_fingerprint(model, x, y, {**keyed, "fast": cfg.fast})
    return ChunkStore(resume_dir, fingerprint, cfg.attacks)


def evaluate(model: nn.Module, data: Any, config: EvalConfig | None = None, *, device: str | torch.device = "auto",
             progress: bool | ProgressCallback | None = True, resume_dir: str | os.PathLike | None = None,
             **settings: Any) -> EvalReport:
    """Clean and robust accuracy of ``model`` on ``data``, with the settings that produced them.

    Args:
        model: any classifier returning logits (a supermask model, a finalized one, a
            RobustBench model, ...). It is moved to ``device``; its train/eval modes and
            ``requires_grad`` flags are restored on exit.
        data: an ``(images, labels)`` pair of tensors in [0, 1], a
            :class:`binprune.ImageTensorDataset` or any dataset of ``(image, label)``; see
            :func:`binprune.views.evaluation_tensors` for which examples are used.
        config: the settings (:class:`binprune.config.EvalConfig`); ``eps`` has no default.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        progress: ``True`` shows progress bars on stderr; a callable receives event dicts.
        resume_dir: a folder where each chunk's results (``chunk_examples``) are saved as it
            finishes; re-running with it computes only the missing chunks. A chunk saved there by
            another model, other examples or other settings raises ``ValueError``.
        **settings: :class:`~binprune.config.EvalConfig` fields overriding ``config`` (``eps``,
            ``attacks``, ``n_examples``, ``pgd_steps``, ...); other names raise ``ValueError``.

    Returns:
        An :class:`binprune.results.EvalReport`: one :class:`~binprune.results.AttackResult`
        per attack (with per-example robust flags), settings, data selection, model form and
        package versions; ``report["accuracy"]["pgd"]`` reads it as a dict.

    Example:
        >>> report = binprune.evaluate(model, test, eps=0.1, n_examples=1000)
        >>> report.accuracy  # {'clean': ..., 'pgd': ..., 'autoattack': ...}
    """
    cfg = eval_config(config, **settings)
    dev = resolve_device(device)
    x, y, data_info = evaluation_tensors(data, cfg.n_examples)
    reporter = ProgressReporter(progress)
    started = time.perf_counter()
    record = {"eps": cfg.eps, "norm": cfg.norm, "attacks": list(cfg.attacks), "n_examples": len(x),
              "batch_size": cfg.batch_size, "device": str(dev), "seed": cfg.seed, "pgd_steps": cfg.pgd_steps,
              "pgd_restarts": cfg.pgd_restarts, "autoattack_options": cfg.autoattack_options,
              "attack_compact": bool(cfg.fast and cfg.attack_compact), "compact_tolerance": cfg.compact_tolerance,
              "compact_engine": cfg.compact_engine}
    if cfg.chunk_examples is not None:
        record["chunk_examples"] = cfg.chunk_examples
    store = _chunk_store(resume_dir, model, x, y, cfg, record)
    with preserved_modes(model):
        eval_model, model_info = prepare_model(model, x[:cfg.batch_size], device=dev, fast=cfg.fast)
        describe_model(model, model_info)
        model_info["warnings"] = output_warnings(eval_model, x[:cfg.batch_size], dev)
        form = _attack_form(eval_model, x, y, cfg, dev, model_info)
        with frozen_parameters(eval_model):
            def run_chunk(start: int, end: int) -> dict[str, AttackResult]:
                part = None if form is None else dataclasses.replace(form, clean=form.clean[start:end])
                ctx = AttackContext(model=eval_model, x=x[start:end], y=y[start:end], config=cfg, device=dev,
                                    progress=reporter, form=part)
                return _run_attacks(ctx, cfg.attacks)

            results, loaded, earlier_seconds = run_in_chunks(len(x), cfg.chunk_examples, run_chunk, store,
                                                             cfg.attacks)
    if store is not None:
        record["resumed_chunks"] = loaded
    # the time of the whole evaluation: this run's, and that of the chunks earlier runs computed
    return EvalReport(attacks=results, settings=record, data=data_info, model=model_info,
                      versions=package_versions(), seconds=time.perf_counter() - started + earlier_seconds)
