"""``binprune eval``: clean, PGD and AutoAttack accuracy of a checkpoint, sanity checks, and the
RobustBench protocol."""

from __future__ import annotations

import argparse
import logging
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import DATASETS, EvalConfig, SanityConfig, check_linf_eps, config_from_dict
from .common import add_arch_flag, add_config_flags, given_values, register_arch, summary_table

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a checkpoint: clean, PGD, AutoAttack, sanity checks",
        description="Evaluate a checkpoint (or packed .bpk file) on a test set: clean accuracy, PGD, AutoAttack "
                    "(standard by default), then sanity checks against gradient masking; write everything to JSON. "
                    "With --robustbench: RobustBench's protocol and a leaderboard entry.",
        epilog="Accuracies are fractions in [0, 1], times in seconds. See docs/EVALUATION.md.",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    add_arch_flag(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, help="test set to evaluate on")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder with the dataset (fashion-mnist: defaults to the Debian package's folder)")
    eval_names = add_config_flags(p.add_argument_group("threat model and attacks"), EvalConfig)
    g = p.add_argument_group("sanity checks")
    sanity_names = add_config_flags(g, SanityConfig, dest_prefix="sanity_")
    g.add_argument("--no-sanity-checks", action="store_true", help="skip the sanity checks (run by default)")
    g.add_argument("--surrogate", metavar="CHECKPOINT",
                   help="a model trained on the same data (e.g. dense AT); enables the transfer check: PGD examples "
                        "crafted on it must not break more examples than the white-box attack")
    g.add_argument("--strict", action="store_true", help="exit with status 1 if a sanity check fails")
    g = p.add_argument_group("RobustBench")
    g.add_argument("--robustbench", action="store_true",
                   help="run RobustBench's protocol (cifar10/cifar100, first N test images, standard eps, "
                        "AutoAttack standard) and write a leaderboard entry")
    g.add_argument("--model-name", metavar="NAME", help="name of the leaderboard entry (required with --robustbench)")
    g.add_argument("--leaderboard-dir", default="model_info", metavar="DIR",
                   help="where the entry goes, as <dir>/<dataset>/<norm>/<name>.json (default: model_info)")
    g.add_argument("--robustbench-arch", metavar="NAME",
                   help="the checkpoint's base architecture is this RobustBench model-zoo entry (for converted zoo "
                        "models, or a zoo checkpoint file itself)")
    g = p.add_argument_group("run and output")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--out", metavar="DIR", help="write the results to DIR/eval.json (default: print them); "
                                                  "like every command's --out, a folder")
    g.add_argument("--resume-dir", metavar="DIR",
                   help="save each chunk's results (--chunk-examples) in DIR as it finishes; re-running with the "
                        "same DIR evaluates only the missing chunks (a killed AutoAttack run resumes)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run, eval_names=eval_names, sanity_names=sanity_names)


def _load_eval_model(path: str, device: Any, arch: str | None, dataset: str, norm: str) -> Any:
    """The checkpoint's model; with --robustbench-arch the zoo architecture is its base model,
    and a file that is not a binprune checkpoint is read as a RobustBench zoo checkpoint."""
    from ..checkpoint import CheckpointError
    from ..evaluation import load_robustbench_model, robustbench_architecture
    from ..loading import load_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    base = robustbench_architecture(arch, dataset, norm) if arch else None
    try:
        return load_model(path, base_model=base, device=device)
    except CheckpointError:
        if not arch:
            raise
        return load_robustbench_model(arch, dataset, norm, checkpoint=path, device=device)


def _eval_config(args: argparse.Namespace) -> EvalConfig:
    from ..evaluation import STANDARD_EPS, check_attacks

    config = config_from_dict(EvalConfig, given_values(args, args.eval_names), where="eval options")
    config.attacks = tuple(check_attacks(config.attacks))
    clean_only = set(config.attacks) == {"clean"}
    if config.eps is None and clean_only and not args.robustbench:
        return config  # clean accuracy needs no attack budget (and the sanity checks are skipped)
    if config.eps is None:
        if (args.dataset, config.norm) not in STANDARD_EPS:
            raise ValueError(f"no attack budget: pass --eps (e.g. 0.1 for Fashion-MNIST; {args.dataset} has no "
                             "RobustBench standard), or --attacks clean for clean accuracy only")
        config.eps = STANDARD_EPS[(args.dataset, config.norm)]
    if config.norm == "Linf":
        check_linf_eps(config.eps)
    if config.eps == 0 and not args.no_sanity_checks:
        raise ValueError("--eps 0 leaves nothing to attack: pass --eps > 0 (or --no-sanity-checks for a clean-only run)")
    if args.robustbench and not args.model_name:
        raise ValueError("--robustbench needs --model-name (the leaderboard entry's name)")
    extra = set(config.attacks) - {"clean", "pgd", "autoattack"}
    if args.robustbench and extra:
        raise ValueError(f"--robustbench runs AutoAttack standard (plus clean and PGD): drop "
                         f"{', '.join(sorted(extra))} from --attacks")
    return config


def _robustbench(args: argparse.Namespace, model: Any, config: EvalConfig, device: Any, progress: bool
                 ) -> tuple[Any, Any, str | None]:
    """RobustBench's protocol, plus PGD on the same examples when asked for (or for the checks)."""
    from ..evaluation import evaluate, load_benchmark_data, run_robustbench_protocol

    n = config.n_examples or 10000
    record = run_robustbench_protocol(
        model, dataset=args.dataset, threat_model=config.norm, n_examples=n, data_dir=args.data_dir, eps=config.eps,
        batch_size=config.batch_size, device=device, model_name=args.model_name, out_dir=args.leaderboard_dir,
        seed=config.seed, progress=progress)
    report = record["evaluation"]
    x, y, _ = load_benchmark_data(args.dataset, args.data_dir, n)
    if "pgd" in config.attacks or not args.no_sanity_checks:  # the attack-order check needs PGD
        pgd = evaluate(model, (x, y), config, attacks=("clean", "pgd"), n_examples=None, device=device,
                       progress=progress)
        report = report.merged(pgd)
    return report, (x, y), record["entry_path"]


def _summary(report: Any, sanity: dict | None, entry_path: str | None) -> str:
    s = report.settings
    rows = [("examples", f"{report.n_examples} ({report.data.get('selection', '')})"),
            ("threat model", "none (clean accuracy only)" if s["eps"] is None else f"{s['norm']} eps={s['eps']:.4g}"),
            ("model", report.model.get("form", ""))]
    for name, acc in report.accuracy.items():
        label = name
        if name == "pgd":
            label = f"pgd-{s['pgd_steps']}" + (f" x{s['pgd_restarts']}" if s["pgd_restarts"] > 1 else "")
        rows.append((f"{label} accuracy", f"{acc:.4f}"))
    for text in report.model.get("warnings", []):
        rows.append(("model warning", text))
    for name, result in report.attacks.items():
        for text in result.details.get("autoattack_warnings", []):
            rows.append((f"{name} warning", text))
    if sanity is not None:
        failed = [c for c in sanity["checks"] if not c["passed"]]
        skipped = [c["name"] for c in sanity.get("skipped", [])]
        rows.append(("sanity checks", f"{sanity['n_passed']}/{sanity['n_checks']} passed"
                     + (f"; FAILED: {', '.join(c['name'] for c in failed)}" if failed else "")
                     + (f"; skipped: {', '.join(skipped)}" if skipped else "")))
    if entry_path:
        rows.append(("leaderboard entry", entry_path))
    rows.append(("time", f"{report.seconds + (sanity['time_s'] if sanity else 0):.0f} s"))
    return summary_table(rows)


def _results_path(out: str | None) -> str | None:
    """``--out DIR`` -> ``DIR/eval.json``; a path ending in ``.json`` is the file itself (the form of
    binprune 0.1, deprecated)."""
    if out is None:
        return None
    if out.endswith(".json") and not os.path.isdir(out):
        logging.getLogger("binprune").warning("--out FILE.json is deprecated: pass a folder (results go to "
                                              "FOLDER/eval.json)")
        return out
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder: pass a folder (results go to FOLDER/eval.json)")
    return os.path.join(out, "eval.json")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, sanity_checks
    from ..utils import resolve_device, write_json

    if args.dataset is None:
        raise ValueError("no dataset: pass --dataset (fashion-mnist, cifar10, cifar100, imagefolder)")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist or is not a folder")
    out_file = _results_path(args.out)
    if out_file is not None:
        from ..utils import check_output_path

        check_output_path(out_file, inputs=[args.checkpoint])  # before an hour of AutoAttack, not after
    if args.resume_dir is not None and args.robustbench:
        raise ValueError("--resume-dir applies to the plain evaluation, not to --robustbench (RobustBench's own "
                         "protocol runs in one piece)")
    if args.surrogate is not None and not os.path.isfile(args.surrogate):
        raise FileNotFoundError(f"--surrogate {args.surrogate} does not exist")
    config = _eval_config(args)
    device = resolve_device(args.device)
    progress = not args.no_progress
    register_arch(args.arch)
    model = _load_eval_model(args.checkpoint, device, args.robustbench_arch, args.dataset, config.norm)
    entry_path = None
    if args.robustbench:
        report, data, entry_path = _robustbench(args, model, config, device, progress)
    else:
        from ..data import load_dataset

        data = load_dataset(args.dataset, args.data_dir, split="test")
        report = evaluate(model, data, config, device=device, progress=progress, resume_dir=args.resume_dir)
    sanity = None
    if config.eps is None:
        print("sanity checks skipped: they attack the model, and a clean-only run has no attack budget (--eps)",
              file=sys.stderr)
    elif not args.no_sanity_checks:
        settings = given_values(args, args.sanity_names)
        settings["n_examples"] = min(settings.get("n_examples") or min(report.n_examples, 1000), report.n_examples)
        surrogate = None
        if args.surrogate:
            from ..loading import load_model

            surrogate = load_model(args.surrogate, device=device)
        sanity = sanity_checks(model, data, config.eps, norm=config.norm, results=report, device=device,
                               seed=config.seed, pgd_steps=config.pgd_steps, batch_size=config.batch_size,
                               progress=progress, surrogate=surrogate, **settings)
    arguments = {k: v for k, v in vars(args).items() if k not in ("run", "eval_names", "sanity_names")}
    output = {"command": "binprune eval", "arguments": arguments, "checkpoint": str(args.checkpoint),
              "dataset": args.dataset, **report.to_dict(), "sanity_checks": sanity, "leaderboard_entry": entry_path}
    if out_file:
        write_json(out_file, output)
    else:
        print(json.dumps(output, indent=2, default=str))
    print(_summary(report, sanity, entry_path) + (f"\nresults written to {out_file}" if out_file else ""),
          file=sys.stderr if not out_file else sys.stdout)
    if args.strict and sanity is not None and not sanity["passed"]:
        return 1
    return 0
