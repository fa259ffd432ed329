"""The ``binprune`` command. This is the only module that parses arguments.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its arguments and a
``_run_<name>(args)`` function that calls the library. Errors a user can fix (bad values, missing
files, mismatched checkpoints) are printed as one line, ``binprune: error: ...``, with exit
status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .checkpoint import CheckpointError

# --- shared argument types ----------------------------------------------------------------------


def _fraction_below_one(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1)")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


# --- subcommands ---------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (what was wrong, where to look), without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="binprune",
        description=(
            "Robust binary subnetworks by pruning randomly-initialized networks: train masks "
            "adversarially, evaluate with PGD/AutoAttack, export kilobyte models, compare baselines."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'binprune COMMAND --help' for the options of each command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"binprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_eval, _add_export, _add_inspect, _add_compare):
        add(sub)
    return parser


# --- train -------------------------------------------------------------------------------------

# Defaults for options that neither the command line nor a preset set.
TRAIN_DEFAULTS = {
    "dataset": None, "data_dir": None, "arch": "small_cnn", "width_factor": 1.0, "num_classes": None,
    "dense": False, "sparsity": 0.99, "p": 0.1, "allocation": "adaptive", "init": "binary", "last_bn": True,
    "attack": "pgd", "eps": None, "alpha": None, "steps": 10, "epochs": None, "batch_size": 128, "lr": 0.1,
    "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 0.0, "val_fraction": 0.02,
    "carry_perturbation": False, "attack_bn": "train", "augment": None, "train_examples": None,
    "test_examples": None, "test_pgd_steps": 20, "checkpoint_every": 0, "seed": 0, "device": "auto",
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .adversary import BN_MODES, TRAIN_ATTACKS
    from .data import AUGMENTATIONS, DATASETS
    from .init import WEIGHT_INITS
    from .models import list_models
    from .presets import TRAIN_PRESETS
    from .sparsity import ALLOCATIONS
    from .train import SCHEDULES

    presets = "; ".join(f"{k}: {v['description']}" for k, v in TRAIN_PRESETS.items())
    p = sub.add_parser(
        "train", help="train a supermask (or dense) model adversarially",
        description="Adversarially train the masks of a binary supermask network (or, with --dense, the weights "
                    "of an ordinary one), checkpointing every epoch, then report clean and PGD-20 test accuracy.",
        epilog=f"Presets (--preset): {presets}. Options given explicitly override the preset. "
               "Multi-process: torchrun --nproc_per_node N -m binprune.cli train ...",
    )
    g = p.add_argument_group("data and model")
    g.add_argument("--preset", choices=sorted(TRAIN_PRESETS), help="a named configuration (see below)")
    g.add_argument("--dataset", choices=DATASETS, help="dataset (default: from the preset)")
    g.add_argument("--data-dir", help="folder with the dataset (fashion-mnist: defaults to the Debian package's folder)")
    g.add_argument("--arch", choices=list_models(), help=f"architecture (default: {TRAIN_DEFAULTS['arch']})")
    g.add_argument("--width-factor", type=_positive_float, help="multiply every layer's width (default: 1)")
    g.add_argument("--num-classes", type=_positive_int, help="logits size (default: the dataset's class count)")
    g.add_argument("--dense", action="store_true", default=None, help="train the weights of the dense model instead (AT baseline)")
    g = p.add_argument_group("supermask")
    g.add_argument("--sparsity", type=_fraction_below_one, help="fraction of weights removed, in [0, 1) (default: 0.99)")
    g.add_argument("--p", type=_non_negative_float, help="adaptive allocation exponent (default: 0.1)")
    g.add_argument("--allocation", choices=ALLOCATIONS, help="per-layer keep ratios (default: adaptive)")
    g.add_argument("--init", choices=WEIGHT_INITS, help="fixed weight scheme (default: binary)")
    g.add_argument("--last-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm over the logits (default: on)")
    g = p.add_argument_group("adversarial training")
    g.add_argument("--attack", choices=TRAIN_ATTACKS, help="training attack (default: pgd)")
    g.add_argument("--eps", type=_non_negative_float, help="Linf budget in pixel units, e.g. 0.1 or 0.0314")
    g.add_argument("--alpha", type=_positive_float, help="attack step (default: 2.5*eps/steps; fast: 1.25*eps)")
    g.add_argument("--steps", type=_positive_int, help="attack iterations (default: 10)")
    g.add_argument("--carry-perturbation", action=argparse.BooleanOptionalAction, default=None,
                   help="fast attack: start from each example's previous perturbation")
    g.add_argument("--attack-bn", choices=BN_MODES, help="batch-norm mode while attacks run (default: train)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=_positive_int, help="training epochs")
    g.add_argument("--batch-size", type=_positive_int, help="global batch size (default: 128)")
    g.add_argument("--lr", type=_positive_float, help="SGD learning rate (default: 0.1)")
    g.add_argument("--momentum", type=_fraction_below_one, help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=_non_negative_float, help="SGD weight decay (default: 5e-4)")
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default: cosine)")
    g.add_argument("--warmup-epochs", type=_non_negative_float, help="linear warm-up epochs (default: 0)")
    g.add_argument("--val-fraction", type=_fraction_below_one, help="held-out share of the training set for model selection (default: 0.02)")
    g.add_argument("--augment", choices=AUGMENTATIONS, help="augmentation (default: crop_flip for CIFAR, none otherwise)")
    g.add_argument("--train-examples", type=_positive_int, help="use only N training examples (a seeded random subset)")
    g.add_argument("--seed", type=_non_negative_int, help="seed of weights, scores, data order and attacks (default: 0)")
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--test-examples", type=_positive_int, help="evaluate on the first N test examples, classes interleaved for data stored by class (default: all)")
    g.add_argument("--test-pgd-steps", type=_positive_int, help="PGD steps of the final test (default: 20)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--checkpoint-every", type=_non_negative_int, help="also checkpoint every N steps (default: per epoch)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    p.set_defaults(run=_run_train)


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _resolve_train_options(args: argparse.Namespace) -> dict:
    from .presets import train_preset

    options = dict(TRAIN_DEFAULTS)
    if args.preset:
        options.update(train_preset(args.preset))
    options.update({k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None})
    if options["dataset"] is None:
        raise ValueError("no dataset: pass --dataset (fashion-mnist, cifar10, cifar100, imagefolder) or --preset")
    if options["eps"] is None:
        raise ValueError("no attack budget: pass --eps (e.g. 0.1 for Fashion-MNIST, 0.0314 for CIFAR-10) or --preset")
    if options["epochs"] is None:
        raise ValueError("no epoch count: pass --epochs or --preset")
    if options["data_dir"] is not None and not os.path.isdir(options["data_dir"]):
        raise FileNotFoundError(f"--data-dir {options['data_dir']} does not exist or is not a folder")
    return options


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .convert import convert_to_binary_supermask
    from .data import load_dataset
    from .models import create_model
    from .train import init_distributed_from_env, train

    o = _resolve_train_options(args)
    out = Path(args.out)
    if (out / "last.pt").exists() and not args.resume:
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    rank, _ = init_distributed_from_env(o["device"])
    train_set = load_dataset(o["dataset"], o["data_dir"], split="train")
    test_set = load_dataset(o["dataset"], o["data_dir"], split="test")
    num_classes = o["num_classes"] or train_set.num_classes
    model = create_model(o["arch"], num_classes=num_classes, in_channels=train_set.in_channels,
                         mean=train_set.mean, std=train_set.std, width_factor=o["width_factor"])
    if not o["dense"]:
        model = convert_to_binary_supermask(model, sparsity=o["sparsity"], allocation=o["allocation"], p=o["p"],
                                            init=o["init"], last_bn=o["last_bn"], seed=o["seed"])
    result = train(
        model, train_set, test_data=test_set, eps=o["eps"], epochs=o["epochs"], attack=o["attack"], alpha=o["alpha"],
        steps=o["steps"], batch_size=o["batch_size"], lr=o["lr"], momentum=o["momentum"],
        weight_decay=o["weight_decay"], schedule=o["schedule"], warmup_epochs=o["warmup_epochs"],
        val_fraction=o["val_fraction"], carry_perturbation=o["carry_perturbation"], attack_bn=o["attack_bn"],
        augment=o["augment"], train_examples=o["train_examples"], test_examples=o["test_examples"],
        test_pgd_steps=o["test_pgd_steps"], checkpoint_every=o["checkpoint_every"], out_dir=out,
        resume=args.resume, seed=o["seed"], device=o["device"], progress="epochs" if args.no_progress else True,
        extra_config={"dataset": o["dataset"], "arch": o["arch"], "width_factor": o["width_factor"],
                      "dense": bool(o["dense"]), "preset": args.preset},
    )
    if rank == 0:
        m = result.metrics
        rows = [
            ("dataset", f"{o['dataset']} ({m['test_examples']} test images)"),
            ("model", f"{o['arch']} x{o['width_factor']}, " + ("dense" if o["dense"] else
                      f"binary supermask, sparsity {o['sparsity']}, {o['allocation']} p={o['p']}, LBN {'on' if o['last_bn'] else 'off'}")),
            ("kept parameters", f"{m['kept_params']:,} of {m['total_params']:,} ({1 - m['sparsity']:.2%})"),
            ("training", f"{o['attack']} eps={o['eps']:.4g}, {o['epochs']} epochs, {m['seconds']:.0f} s"),
            ("clean accuracy", f"{m['clean_acc']:.4f}"),
            (f"PGD-{o['test_pgd_steps']} accuracy", f"{m['robust_acc']:.4f}"),
            ("results", str(out / "metrics.json")),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


# --- eval ---------------------------------------------------------------------------------------


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .data import DATASETS
    from .evaluate import ATTACKS, NORMS

    p = sub.add_parser(
        "eval", help="evaluate a checkpoint: clean, PGD, AutoAttack, sanity checks",
        description="Evaluate a checkpoint (or packed .bpk file) on a test set: clean accuracy, PGD, AutoAttack "
                    "(standard by default), then sanity checks against gradient masking; write everything to JSON. "
                    "With --robustbench: RobustBench's protocol and a leaderboard entry.",
        epilog=f"Attacks (--attacks, comma-separated): {', '.join(ATTACKS)}. Accuracies are fractions in [0, 1], "
               "times in seconds. See docs/EVALUATION.md.",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    g = p.add_argument_group("data and threat model")
    g.add_argument("--dataset", choices=DATASETS, help="test set to evaluate on")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder with the dataset (fashion-mnist: defaults to the Debian package's folder)")
    g.add_argument("--eps", type=_non_negative_float,
                   help="attack budget in pixel units, e.g. 0.1 (default: RobustBench's for cifar10/cifar100)")
    g.add_argument("--norm", choices=NORMS, default="Linf", help="threat model (default: Linf)")
    g.add_argument("--n-examples", type=_positive_int, metavar="N",
                   help="evaluate the first N test examples (default: all; 10000 with --robustbench)")
    g = p.add_argument_group("attacks")
    g.add_argument("--attacks", default="clean,pgd,autoattack", metavar="LIST",
                   help="comma-separated attacks (default: clean,pgd,autoattack)")
    g.add_argument("--pgd-steps", type=_positive_int, default=20, metavar="N", help="PGD steps (default: 20)")
    g.add_argument("--pgd-restarts", type=_positive_int, default=1, metavar="N", help="PGD random restarts (default: 1)")
    g.add_argument("--seed", type=_non_negative_int, default=0, help="seed of PGD starts and AutoAttack (default: 0)")
    g.add_argument("--no-sanity-checks", action="store_true", help="skip the sanity checks (run by default)")
    g.add_argument("--sanity-examples", type=_positive_int, metavar="N",
                   help="examples for the PGD-based sanity checks (default: min(N, 1000))")
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
    g.add_argument("--batch-size", type=_positive_int, default=256, metavar="N", help="examples per forward pass (default: 256)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--out", metavar="PATH", help="write the results JSON here (default: print it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_eval)


def _load_eval_model(path: str, device, arch: str | None, dataset: str, norm: str):
    """The checkpoint's model; with --robustbench-arch the zoo architecture is its base model,
    and a file that is not a binprune checkpoint is read as a RobustBench zoo checkpoint."""
    from pathlib import Path

    from .checkpoint import load_model
    from .leaderboard import load_robustbench_model, robustbench_architecture

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    base = robustbench_architecture(arch, dataset, norm) if arch else None
    try:
        return load_model(path, base_model=base, device=device)
    except CheckpointError:
        if not arch:
            raise
        return load_robustbench_model(arch, dataset, norm, checkpoint=path, device=device)


def _eval_summary(results: dict, sanity: dict | None, entry_path: str | None) -> str:
    s = results["settings"]
    rows = [("examples", f"{s['n_examples']} ({results['data'].get('selection', '')})"),
            ("threat model", f"{s['norm']} eps={s['eps']:.4g}"),
            ("model", results["model"].get("form", ""))]
    for name, acc in results["accuracy"].items():
        label = f"pgd-{s['pgd_steps']}" + (f" x{s['pgd_restarts']}" if s["pgd_restarts"] > 1 else "") if name == "pgd" else name
        rows.append((f"{label} accuracy", f"{acc:.4f}"))
    for name, detail in results["attacks"].items():
        for text in detail.get("autoattack_warnings", []):
            rows.append((f"{name} warning", text))
    if sanity is not None:
        failed = [c for c in sanity["checks"] if not c["passed"]]
        rows.append(("sanity checks", f"{sanity['n_passed']}/{sanity['n_checks']} passed"
                     + (f"; FAILED: {', '.join(c['name'] for c in failed)}" if failed else "")))
    if entry_path:
        rows.append(("leaderboard entry", entry_path))
    rows.append(("time", f"{results['time_s'] + (sanity['time_s'] if sanity else 0):.0f} s"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from .evaluate import _check_attacks, evaluate
    from .leaderboard import STANDARD_EPS, load_benchmark_data, run_robustbench_protocol
    from .sanity import sanity_checks
    from .utils import resolve_device, write_json

    if args.dataset is None:
        raise ValueError("no dataset: pass --dataset (fashion-mnist, cifar10, cifar100, imagefolder)")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist or is not a folder")
    eps = args.eps
    if eps is None:
        if (args.dataset, args.norm) not in STANDARD_EPS:
            raise ValueError(f"no attack budget: pass --eps (e.g. 0.1 for Fashion-MNIST); {args.dataset} has no "
                             "RobustBench standard")
        eps = STANDARD_EPS[(args.dataset, args.norm)]
    if eps == 0 and not args.no_sanity_checks:
        raise ValueError("--eps 0 leaves nothing to attack: pass --eps > 0 (or --no-sanity-checks for a clean-only run)")
    attacks = _check_attacks(args.attacks)
    if args.robustbench and not args.model_name:
        raise ValueError("--robustbench needs --model-name (the leaderboard entry's name)")
    if args.robustbench and set(attacks) - {"clean", "pgd", "autoattack"}:
        raise ValueError(f"--robustbench runs AutoAttack standard (plus clean and PGD): drop "
                         f"{', '.join(sorted(set(attacks) - {'clean', 'pgd', 'autoattack'}))} from --attacks")
    device = resolve_device(args.device)
    progress = not args.no_progress
    model = _load_eval_model(args.checkpoint, device, args.robustbench_arch, args.dataset, args.norm)

    entry_path = None
    if args.robustbench:
        n = args.n_examples or 10000
        record = run_robustbench_protocol(
            model, dataset=args.dataset, threat_model=args.norm, n_examples=n, data_dir=args.data_dir, eps=eps,
            batch_size=args.batch_size, device=device, model_name=args.model_name, out_dir=args.leaderboard_dir,
            seed=args.seed, progress=progress,
        )
        results, entry_path = record["evaluation"], record["entry_path"]
        if "pgd" in attacks or not args.no_sanity_checks:  # the attack-order check needs PGD
            x, y, _ = load_benchmark_data(args.dataset, args.data_dir, n)
            data = (x, y)
            pgd = evaluate(model, data, eps=eps, norm=args.norm, attacks=("clean", "pgd"), batch_size=args.batch_size,
                           device=device, seed=args.seed, pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                           progress=progress)
            results["accuracy"]["pgd"] = pgd["accuracy"]["pgd"]
            results["attacks"]["pgd"] = pgd["attacks"]["pgd"]
            results["settings"].update(pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts)
            results["settings"]["attacks"].append("pgd")
    else:
        from .data import load_dataset

        data = load_dataset(args.dataset, args.data_dir, split="test")
        results = evaluate(model, data, eps=eps, norm=args.norm, attacks=attacks, n_examples=args.n_examples,
                           batch_size=args.batch_size, device=device, seed=args.seed, pgd_steps=args.pgd_steps,
                           pgd_restarts=args.pgd_restarts, progress=progress)

    sanity = None
    if not args.no_sanity_checks:
        sanity_n = args.sanity_examples or min(results["settings"]["n_examples"], 1000)
        sanity_n = min(sanity_n, results["settings"]["n_examples"])
        sanity = sanity_checks(model, data, eps, norm=args.norm, results=results, n_examples=sanity_n,
                               batch_size=args.batch_size, device=device, seed=args.seed, pgd_steps=args.pgd_steps,
                               progress=progress)
    arguments = {k: v for k, v in vars(args).items() if k != "run"}
    output = {"command": "binprune eval", "arguments": arguments, "checkpoint": str(args.checkpoint),
              "dataset": args.dataset, **results,
              "sanity_checks": sanity, "leaderboard_entry": entry_path}
    if args.out:
        write_json(args.out, output)
    else:
        print(json.dumps(output, indent=2, default=str))
    print(_eval_summary(results, sanity, entry_path) + (f"\nresults written to {args.out}" if args.out else ""),
          file=sys.stderr if not args.out else sys.stdout)
    if args.strict and sanity is not None and not sanity["passed"]:
        return 1
    return 0


# --- export -------------------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a packed kilobyte-sized model file",
        description="Write a supermask checkpoint as a packed .bpk file: the model's recipe and seed, each mask "
                    "coded close to log2 C(n, k) bits, batch-norm statistics and a checksum (weights are "
                    "regenerated from the seed when loading). Prints the size under each encoding.",
        epilog="The file loads with binprune.load_packed(path) or any command taking a checkpoint. "
               "Format: docs/PACKED_FORMAT.md.",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    p.add_argument("-o", "--output", required=True, help="packed file to write, e.g. model.bpk")
    p.add_argument("--footprint-json", metavar="PATH", help="also write the size accounting (bytes, bits per parameter) as JSON")
    p.set_defaults(run=_run_export)


def _footprint_table(fp: dict) -> str:
    labels = {
        "packed_file": "packed file", "masks": "masks alone", "bound": "bound sum log2 C(n,k)",
        "paper_bitmap_sign": "bitmap + sign bits", "state_dict": "state_dict (torch.save)",
        "dense_fp32": "dense float32",
    }
    lines = [f"{'encoding':<24} {'bytes':>14} {'bits/param':>11}"]
    for key, label in labels.items():
        lines.append(f"{label:<24} {fp['bytes'][key]:>14,.0f} {fp['bits_per_param'][key]:>11.4f}")
    ratio = f"{fp['masks_to_bound']:.4f}x" if fp["masks_to_bound"] is not None else "n/a (bound 0)"
    lines.append(f"({fp['original_params']:,} original parameters, {fp['kept_weights']:,} weights kept; "
                 f"masks at {ratio} the bound)")
    return "\n".join(lines)


def _run_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .export import footprint, save_packed
    from .utils import write_json

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} is a folder; give a file name such as {os.path.join(args.output, 'model.bpk')}")
    model = load_model(args.checkpoint)
    fp = footprint(model)
    size = save_packed(model, args.output)
    if args.footprint_json:
        write_json(args.footprint_json, {"checkpoint": args.checkpoint, "packed_file": args.output, "units": {
            "bytes": "bytes", "bits_per_param": "bits per original parameter"}, **fp})
    print(f"wrote {args.output} ({size:,} bytes)")
    print(_footprint_table(fp))
    return 0


# --- inspect ------------------------------------------------------------------------------------


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="analyze mask structure and write plots",
        description="Measure the structure of a supermask model's masks (empty output/input channels, empty "
                    "kernels, kept weights per kernel, alignment of pruned channels between connected layers), "
                    "each against its expectation for a random mask with the same counts. Writes analysis.json "
                    "and PNG plots into --out.",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    p.add_argument("--out", required=True, help="folder for analysis.json and the plots")
    p.add_argument("--mask-images", type=_non_negative_int, default=4,
                   help="layers shown as mask images in masks.png (default: 4)")
    p.set_defaults(run=_run_inspect)


def _inspect_summary(summary: dict) -> str:
    def ratio(value) -> str:
        return f"{value:.1f}x" if value is not None else "n/a"

    rows = [f"{summary['layers']} masked layers, {summary['kept']:,} of {summary['total']:,} weights kept"]
    for key, label in (("output_channels", "empty output channels"), ("input_channels", "empty input channels"),
                       ("kernels", "empty kernels")):
        rows.append(f"{label:<22} {summary[f'empty_{key}']:>9,}   random mask: {summary[f'empty_{key}_expected_random']:>11,.1f}"
                    f"   ({ratio(summary[f'empty_{key}_ratio_to_random'])})")
    rows.append(f"{'aligned pruned channels':<22} {summary['aligned_channels']:>9,}   independent: "
                f"{summary['aligned_channels_expected_independent']:>11,.1f}   "
                f"({ratio(summary['aligned_channels_ratio_to_independent'])})")
    return "\n".join(rows)


def _run_inspect(args: argparse.Namespace) -> int:
    from .analysis import write_inspection
    from .checkpoint import load_model

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder")
    model = load_model(args.checkpoint)
    result = write_inspection(model, args.out, mask_images=args.mask_images)
    print(_inspect_summary(result["summary"]))
    print(f"wrote {', '.join(os.path.basename(p) for p in result['files'].values())} to {args.out}")
    return 0


# --- compare ------------------------------------------------------------------------------------


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .baselines.compare import DEFAULT_METHODS, METHODS, PRESETS, list_presets

    presets = "; ".join(f"{k}: {PRESETS[k].description}" for k in list_presets())
    p = sub.add_parser(
        "compare", help="train and evaluate binprune and its baselines under one protocol",
        description="Train and evaluate binprune and its baselines (dense AT in full precision and binary, at full "
                    "size and small; HYDRA; ATMC; RST) with the same data, architecture, attack, seed and epochs per "
                    "phase, then write DIR/table.json, DIR/table.md and DIR/table.png. Re-running with the same --out "
                    "skips finished methods and resumes unfinished ones.",
        epilog=f"Presets: {presets}. Methods: {', '.join(METHODS)} (default: {', '.join(DEFAULT_METHODS)}). "
               "See docs/BASELINES.md.",
    )
    p.add_argument("--preset", required=True, metavar="NAME", help=f"one of: {', '.join(list_presets())}")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="methods to run, in table order (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (re-use it to resume)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g = p.add_argument_group("shorter runs (recorded in the table; every method gets the same)")
    g.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs per phase instead of the preset's")
    g.add_argument("--train-examples", type=_positive_int, metavar="N", help="training examples instead of the preset's")
    g.add_argument("--eval-examples", type=_positive_int, metavar="N", help="evaluated test images instead of the preset's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from .baselines.compare import compare

    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist or is not a folder")
    table = compare(
        args.preset, args.out, methods=args.methods, data_dir=args.data_dir, device=args.device,
        overrides={"epochs": args.epochs, "train_examples": args.train_examples, "eval_examples": args.eval_examples},
        progress=not args.no_progress, log=lambda line: print(line, flush=True),
    )
    pending = table.get("pending_methods") or []
    print(f"{len(table['rows'])} method(s) in {os.path.join(args.out, 'table.md')}"
          + (f"; not finished: {', '.join(pending)}" if pending else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        if os.environ.get("BINPRUNE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"binprune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
