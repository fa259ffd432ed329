"""``binprune train``: train a supermask (or dense) model adversarially."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..config import (
    DataConfig, ModelConfig, RunConfig, TrainConfig, config_from_dict, config_to_dict, dump_yaml, list_presets,
    load_preset, load_yaml,
)
from .common import add_config_flags, given_values, register_arch, summary_table

__all__ = ["add_parser", "resolve_run_config", "run"]



def add_parser(sub: Any) -> None:
    presets = ", ".join(list_presets("train"))
    p = sub.add_parser(
        "train", help="train a supermask (or dense) model adversarially",
        description="Adversarially train the masks of a binary supermask network (or, with --dense, the weights "
                    "of an ordinary one), checkpointing every epoch, then report clean and PGD test accuracy. "
                    "Settings come from the defaults, then --preset or --config, then the flags given.",
        epilog=f"Presets (--preset): {presets} (binprune/presets/train/*.yaml). Every run saves its settings as "
               "OUT/config.yaml; '--config OUT/config.yaml' replays it. Multi-process: "
               "torchrun --nproc_per_node N -m binprune train ...",
    )
    g = p.add_argument_group("run files")
    g.add_argument("--preset", choices=list_presets("train"), help="a named configuration shipped with binprune")
    g.add_argument("--config", metavar="FILE", help="a YAML configuration (e.g. a run's config.yaml)")
    names = {
        "data": add_config_flags(p.add_argument_group("data"), DataConfig),
        "model": add_config_flags(p.add_argument_group("model and supermask"), ModelConfig),
        "train": add_config_flags(p.add_argument_group("adversarial training and test"), TrainConfig),
    }
    g = p.add_argument_group("run and output")
    g.add_argument("--steps", dest="attack_steps_deprecated", type=int, help=argparse.SUPPRESS)
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out (its own files only)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    p.set_defaults(run=run, config_sections=names)


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then the preset or config file, then the flags given; validated."""
    if args.preset and args.config:
        raise ValueError("pass --preset or --config, not both")
    values: dict[str, Any] = {}
    if args.preset:
        values = load_preset("train", args.preset)
    elif args.config:
        values = load_yaml(args.config)
    where = f"preset {args.preset}" if args.preset else (args.config or "settings")
    run_config = config_from_dict(RunConfig, values, where=where)
    if getattr(args, "attack_steps_deprecated", None) is not None:
        logging.getLogger("binprune").warning("--steps is deprecated, use --attack-steps")
        if args.attack_steps is None:
            args.attack_steps = args.attack_steps_deprecated
    for section, names in args.config_sections.items():
        given = given_values(args, names)
        if given:
            current = config_to_dict(getattr(run_config, section))
            setattr(run_config, section, config_from_dict(type(getattr(run_config, section)), {**current, **given}))
    if args.device is not None:
        run_config.device = args.device
    register_arch(getattr(args, "arch", None))
    from ..models import check_architecture

    check_architecture(run_config.model.arch)
    run_config.validate()
    return run_config


def _check_out(out: Path, run_config: RunConfig, resume: bool, overwrite: bool) -> str:
    """The run's config.yaml text; refuse to mix two runs in one folder (before any work)."""
    from ..training import RunFolder

    from ..utils import check_output_path

    text = dump_yaml(config_to_dict(run_config))
    RunFolder(out, resume=resume, overwrite=overwrite).check()
    check_output_path(out / "config.yaml")
    saved = out / "config.yaml"
    if resume and saved.is_file():
        before, now = config_from_dict(RunConfig, load_yaml(saved)).record(), run_config.record()
        diffs = [f"{section}.{k}: {before[section].get(k)!r} in {saved} vs {now[section].get(k)!r} now"
                 for section in now for k in now[section] if before[section].get(k) != now[section].get(k)]
        if diffs:
            raise ValueError(f"{out} was made with a different configuration ({'; '.join(diffs[:6])}): resume with "
                             f"'binprune train --config {saved} --out {out} --resume'")
    return text


def _build_model(run_config: RunConfig, train_set: Any) -> Any:
    import torch

    from ..convert import convert_to_binary_supermask
    from ..models import create_model

    from ..zoo import brings_normalization, is_external

    m = run_config.model
    if is_external(m.arch) and m.width_factor != 1.0:
        raise ValueError(f"--width-factor applies to binprune's own architectures, not {m.arch}: leave it at 1")
    if m.num_classes is not None and m.num_classes < train_set.num_classes:
        raise ValueError(f"--num-classes {m.num_classes} is below the {train_set.num_classes} classes of "
                         f"{run_config.data.dataset}: pass at least {train_set.num_classes}, or leave it out")
    own = brings_normalization(m.arch)  # timm's pretrained_cfg, RobustBench's in-model normalization
    options = dict(m.arch_kwargs) if is_external(m.arch) else {"width_factor": m.width_factor, **m.arch_kwargs}
    model = create_model(m.arch, num_classes=m.num_classes or train_set.num_classes, in_channels=train_set.in_channels,
                         mean=None if own else train_set.mean, std=None if own else train_set.std,
                         seed=run_config.train.seed, **options)
    if m.dense:
        return model
    example = train_set.batch(torch.arange(min(2, len(train_set))))[0] if len(train_set) >= 2 else None
    return convert_to_binary_supermask(model, sparsity=m.sparsity, allocation=m.allocation, p=m.p, init=m.init,
                                       last_bn=m.last_bn, seed=run_config.train.seed,
                                       connect_channels=m.connect_channels, example_input=example)


def _summary(run_config: RunConfig, result: Any, out: Path) -> str:
    m, t, facts = run_config.model, run_config.train, result.facts
    kind = "dense" if m.dense else (f"binary supermask, sparsity {m.sparsity}, {m.allocation} p={m.p}, "
                                    f"LBN {'on' if m.last_bn else 'off'}")
    rows = [
        ("dataset", f"{run_config.data.dataset} ({result.test.n_examples if result.test else 0} test images)"),
        ("model", f"{m.arch} x{m.width_factor}, {kind}"),
        ("kept parameters", f"{facts['kept_params']:,} of {facts['total_params']:,} "
                            f"({facts['kept_params'] / facts['total_params']:.2%})"),
        ("training", f"{t.attack} eps={t.eps:.4g}, {t.epochs} epochs, {facts['seconds']:.0f} s"),
    ]
    for name, value in result.accuracy.items():
        label = f"PGD-{t.test_pgd_steps}" if name == "pgd" else name
        rows.append((f"{label} accuracy", f"{value:.4f}"))
    rows.append(("results", str(out / "metrics.json")))
    return summary_table(rows)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..training import init_distributed_from_env, train
    run_config = resolve_run_config(args)
    out = Path(args.out)
    config_text = _check_out(out, run_config, args.resume, args.overwrite)
    rank, _ = init_distributed_from_env(run_config.device)
    d = run_config.data
    train_set = load_dataset(d.dataset, d.data_dir, split="train")
    test_set = load_dataset(d.dataset, d.data_dir, split="test")
    model = _build_model(run_config, train_set)
    result = train(
        model, train_set, run_config.train, test_data=test_set, out_dir=out, resume=args.resume,
        overwrite=args.overwrite, device=run_config.device, progress="epochs" if args.no_progress else True,
        extra_config={"dataset": d.dataset, "model": config_to_dict(run_config.model)},
        run_files={"config.yaml": config_text.encode()},
    )
    if rank == 0:
        print(_summary(run_config, result, out))
    return 0
