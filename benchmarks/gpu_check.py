"""A five-minute check of binprune on one GPU (run by ``benchmarks/gpu_check.sh``).

1. ``throughput``: images/s of one adversarial training step (fast attack: FGSM from a random
   start, then forward, backward and SGD step) of a CIFAR ResNet-18, binary supermask (99%
   sparse, p = 0.1, LBN) vs dense, each at float32 and under bf16 autocast (channels-last,
   cuDNN autotuning on).
2. ``train``: a short CIFAR-10 fast-attack run of the supermask ResNet-18 on the packed subset
   (as many epochs as fit in ``--train-seconds`` at the measured speed), with bf16 autocast.
3. ``eval``: clean, PGD-20 and AutoAttack (standard) accuracy of that model on the packed test
   images (1,000), in float32.

Each section's results are written to ``<out>/gpu_check.json`` as soon as it finishes, so a run
cut short keeps what it measured. ``--device cpu --smoke`` runs the same code at toy sizes.

    python benchmarks/gpu_check.py --data .gpu-bundle/cifar10-u8.npz [--out benchmarks/results/gpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import binprune  # noqa: E402
from binprune.adversary import make_attack, run_attack  # noqa: E402
from binprune.training.trainer import autocast_context  # noqa: E402
from binprune.utils import write_json  # noqa: E402

SECTIONS = ("throughput", "train", "eval")
EPS = 8 / 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / ".gpu-bundle" / "cifar10-u8.npz"),
                        help="packed CIFAR-10 subset (benchmarks/gpu_bundle.py data)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--width-factor", type=float, default=1.0, help="ResNet-18 width (1 = the paper's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per throughput case")
    parser.add_argument("--train-seconds", type=float, default=100.0, help="time budget of the short run")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--amp", default="bf16", choices=("none", "bf16"), help="autocast of the short run")
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="toy sizes (to test the script on a CPU)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"unknown or no section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    if "eval" in sections and "train" not in sections:
        parser.error("the eval section evaluates the model of the train section: add train to --sections")
    for name in ("batch_size", "steps", "max_epochs", "eval_examples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.width_factor <= 0 or args.train_seconds <= 0:
        parser.error("--width-factor and --train-seconds must be > 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU (torch.cuda.is_available() is False); "
                     "use --device cpu --smoke to try the script on a CPU")
    if args.smoke:
        args.width_factor, args.batch_size, args.steps = min(args.width_factor, 0.0625), min(args.batch_size, 8), 2
        args.train_seconds, args.max_epochs, args.eval_examples = min(args.train_seconds, 5.0), 1, min(args.eval_examples, 16)
    args.sections = sections
    return args


def build(width_factor: float, dense: bool, mean=None, std=None) -> torch.nn.Module:
    model = binprune.create_model("resnet18", num_classes=10, width_factor=width_factor, mean=mean, std=std, seed=0)
    return model if dense else binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, seed=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(args: argparse.Namespace, device: torch.device) -> dict:
    """Images/s of the fast-attack training step, supermask vs dense, float32 vs bf16."""
    x = torch.rand(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    results = {}
    for kind in ("supermask", "dense"):
        for amp in ("none", "bf16"):
            model = build(args.width_factor, kind == "dense").to(device).to(memory_format=torch.channels_last).train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
            attack = make_attack("fast", model, eps=EPS, bn_mode="train")

            def step() -> None:
                with autocast_context(device, amp):
                    x_adv = run_attack(attack, model, x, y, bn_mode="train")
                    model.train()
                    loss = F.cross_entropy(model(x_adv), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            for _ in range(3):  # warm-up, cuDNN autotuning
                step()
            times = []
            for _ in range(args.steps):
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            results[f"{kind}/{'fp32' if amp == 'none' else 'bf16'}"] = {
                "images_per_second": args.batch_size / median, "seconds_median": median}
            del model, optimizer, attack
    fp = {k: v["images_per_second"] for k, v in results.items()}
    return {"cases": results, "ratios": {
        "supermask_to_dense_fp32": fp["supermask/fp32"] / fp["dense/fp32"],
        "supermask_to_dense_bf16": fp["supermask/bf16"] / fp["dense/bf16"],
        "bf16_to_fp32_supermask": fp["supermask/bf16"] / fp["supermask/fp32"]},
        "step": "fast attack (FGSM, random start) + forward + backward + SGD, batch norm in train mode",
        "batch_size": args.batch_size, "width_factor": args.width_factor, "timed_steps": args.steps}


def short_run(args: argparse.Namespace, device: torch.device, train_set, images_per_second: float | None):
    """Train the supermask ResNet-18 for as many epochs as fit in ``--train-seconds``."""
    per_epoch = len(train_set) * 0.98 / images_per_second if images_per_second else None
    epochs = max(1, min(args.max_epochs, int(args.train_seconds / per_epoch))) if per_epoch else 1
    model = build(args.width_factor, False, train_set.mean, train_set.std)
    started = time.perf_counter()
    result = binprune.train(model, train_set, eps=EPS, epochs=epochs, attack="fast", batch_size=min(128, args.batch_size),
                            lr=0.1, amp=args.amp, channels_last=True, cudnn_benchmark=True, val_pgd_steps=10,
                            progress="epochs", device=device)
    seconds = time.perf_counter() - started
    record = {"epochs": epochs, "train_examples": len(train_set), "seconds": seconds, "amp": args.amp,
              "images_per_second": [h["images_per_second"] for h in result.history],
              "val_accuracy": result.facts.get("val_accuracy"), "sparsity": result.facts["sparsity"],
              "kept_params": result.facts["kept_params"]}
    return result.model, record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    out_dir = Path(args.out)
    out_path = out_dir / ("gpu_check_smoke.json" if args.smoke else "gpu_check.json")
    from gpu_bundle import load

    train_set, test_set = load(args.data) if ("train" in args.sections or "eval" in args.sections) else (None, None)
    if args.smoke and train_set is not None:
        train_set, test_set = train_set.subset(torch.arange(min(64, len(train_set)))), test_set
    record: dict = {
        "description": "binprune on one GPU: training-step throughput, a short CIFAR-10 fast-attack run, "
                       "PGD-20 and AutoAttack on the packed test images",
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                    "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()},
        "args": {k: v for k, v in vars(args).items()}, "data": args.data,
    }
    started = time.perf_counter()
    if "throughput" in args.sections:
        record["throughput"] = throughput(args, device)
        write_json(out_path, record)
    if "train" in args.sections:
        speed = record.get("throughput", {}).get("cases", {}).get(f"supermask/{'fp32' if args.amp == 'none' else 'bf16'}")
        model, record["train"] = short_run(args, device, train_set, speed["images_per_second"] if speed else None)
        write_json(out_path, record)
        if "eval" in args.sections:
            attacks = ("clean", "pgd", "autoattack") if not args.smoke else ("clean", "pgd")
            n_eval = min(args.eval_examples, len(test_set))
            report = binprune.evaluate(model, test_set, eps=EPS, attacks=attacks, n_examples=n_eval,
                                       pgd_steps=20, device=device, progress=False)
            record["eval"] = {"accuracy": report.accuracy, "n_examples": n_eval,
                              "seconds": {name: r.seconds for name, r in report.attacks.items()}}
    record["wall_seconds"] = time.perf_counter() - started
    write_json(out_path, record)
    print(f"-> {out_path}")
    return record


if __name__ == "__main__":
    main()
