"""Time of adversarial training steps and evaluation attacks on this machine: the default code path
against the alternatives binprune offers, measured interleaved in one run (medians).

Training steps (attack + forward + backward + SGD step, batch norm in train mode during the
attack, as ``binprune.train`` does) of the quickstart network (``small_cnn`` on 1x28x28, binary
supermask 99% sparse, p = 0.1, LBN) and of a reduced-width CIFAR ResNet-18, with the fast attack
(FGSM, random start) and PGD-10. Variants:

* ``default``: float32, contiguous tensors (what ``binprune.train`` runs unless told otherwise);
* ``channels_last``: ``TrainConfig.channels_last`` (model and batches in channels-last format);
* ``bf16``: ``TrainConfig.amp = "bf16"`` (autocast of the forward passes);
* ``compile`` (only with ``--compile``): ``torch.compile`` of the model (its compile time is
  reported separately).

Evaluation (eval mode, frozen parameters, as ``binprune.evaluate`` does): PGD-20 and AutoAttack's
APGD-CE (``--apgd-iterations``) on one batch, default vs channels-last, and the clean pass under
``torch.no_grad`` vs ``torch.inference_mode``. A profile of the quickstart training step (share of
time per operator) and images/s of the quickstart presets' training steps (``--preset-pairs``)
complete the JSON, written to ``benchmarks/results/speed.json`` with the machine's load average.

    python benchmarks/speed.py [--repeats 5] [--threads 1] [--compile] [--out benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binprune  # noqa: E402
from binprune.adversary import make_attack, run_attack  # noqa: E402
from binprune.doctor import cpu_features  # noqa: E402
from binprune.training.trainer import autocast_context  # noqa: E402
from binprune.utils import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def quickstart_net(width_factor: float = 1.0, sparsity: float = 0.99, p: float = 0.1) -> torch.nn.Module:
    model = binprune.create_model("small_cnn", in_channels=1, mean=[0.2860], std=[0.3530],
                                  width_factor=width_factor, seed=0)
    return binprune.convert_to_binary_supermask(model, sparsity=sparsity, p=p, seed=0)


def resnet_net(width_factor: float) -> torch.nn.Module:
    model = binprune.create_model("resnet18", num_classes=10, width_factor=width_factor, seed=0)
    return binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, seed=0)


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str, eps: float,
               amp: str = "none", channels_last: bool = False) -> Callable[[], None]:
    """One training step as ``Trainer._train_step`` computes it (without its bookkeeping)."""
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    adversary = make_attack(attack, model, eps=eps, steps=10, bn_mode="train")

    def step() -> None:
        with autocast_context(x.device, amp):
            x_adv = run_attack(adversary, model, x, y, bn_mode="train")
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def eval_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, apgd_iterations: int,
               channels_last: bool) -> dict[str, Callable[[], None]]:
    """PGD-20 and APGD-CE on one batch, and the clean pass, with frozen parameters in eval mode."""
    import torchattacks

    from pyautoattack.autopgd_base import APGDAttack

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    pgd = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
    pgd.set_model_training_mode(model_training=False)
    apgd = APGDAttack(model, norm="Linf", eps=eps, n_iter=apgd_iterations, n_restarts=1, loss="ce", seed=0,
                      device=x.device)

    def clean_no_grad() -> None:
        with torch.no_grad():
            model(x).argmax(1)

    def clean_inference_mode() -> None:
        with torch.inference_mode():
            model(x).argmax(1)

    return {"pgd20": lambda: pgd(x, y), "apgd_ce": lambda: apgd.perturb(x, y),
            "clean_no_grad": clean_no_grad, "clean_inference_mode": clean_inference_mode}


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, label: str) -> dict[str, list[float]]:
    """Run every case once as warm-up, then ``repeats`` rounds of all cases in turn."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(repeats + 1):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
        if round_:
            print(f"{label} round {round_}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()), flush=True)
    return times


def summarize(times: dict[str, list[float]], batch: int, reference: str) -> dict:
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"seconds_median": median, "images_per_second": {n: batch / s for n, s in median.items()},
            "speedup_vs_" + reference: {n: median[reference] / s for n, s in median.items()},
            "seconds_all": times}


def profile_step(step: Callable[[], None], rows: int = 12) -> dict:
    """Share of the step's CPU time per operator (self time), from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"top_operators_self_time_share": {e.key: e.self_cpu_time_total / total for e in events[:rows]},
            "steps_profiled": 2, "total_self_cpu_seconds": total / 1e6}


def train_section(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    out = {}
    nets = {"quickstart_small_cnn": (quickstart_net, (1, 28, 28), 0.1),
            f"resnet18_w{args.resnet_width}": (lambda: resnet_net(args.resnet_width), (3, 32, 32), 8 / 255)}
    for net_name, (build, shape, eps) in nets.items():
        x = torch.rand(args.batch_size, *shape)
        y = torch.randint(0, 10, (args.batch_size,))
        for attack in ("fast", "pgd"):
            base = build()
            cases = {"default": train_step(copy.deepcopy(base), x, y, attack=attack, eps=eps),
                     "channels_last": train_step(copy.deepcopy(base), x, y, attack=attack, eps=eps, channels_last=True),
                     "bf16": train_step(copy.deepcopy(base), x, y, attack=attack, eps=eps, amp="bf16")}
            compile_seconds = None
            if args.compile:
                compiled = copy.deepcopy(base)
                step = train_step(torch.compile(compiled), x, y, attack=attack, eps=eps)
                start = time.perf_counter()
                step()
                compile_seconds = time.perf_counter() - start
                cases["compile"] = step
            label = f"{net_name} {attack}"
            out[f"{net_name}/{attack}"] = {**summarize(interleaved(cases, args.repeats, label), args.batch_size,
                                                       "default"),
                                            "compile_seconds_first_step": compile_seconds}
    return out


def eval_section(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    base = quickstart_net()
    cases = {}
    for layout in ("default", "channels_last"):
        for name, fn in eval_steps(copy.deepcopy(base), x, y, 0.1, args.apgd_iterations,
                                   layout == "channels_last").items():
            if layout == "channels_last" and name.startswith("clean"):
                continue
            cases[f"{name}/{layout}"] = fn
    times = interleaved(cases, args.repeats, "eval")
    result = summarize(times, args.batch_size, "pgd20/default")
    med = result["seconds_median"]
    result["ratios"] = {
        "pgd20_channels_last_speedup": med["pgd20/default"] / med["pgd20/channels_last"],
        "apgd_ce_channels_last_speedup": med["apgd_ce/default"] / med["apgd_ce/channels_last"],
        "clean_inference_mode_speedup_vs_no_grad": med["clean_no_grad/default"] / med["clean_inference_mode/default"],
    }
    return result


def preset_section(args: argparse.Namespace) -> dict:
    """Images/s of the quickstart training step (carried fast attack) at each preset's width and
    batch size, interleaved: what a change of preset costs or saves per image."""
    torch.manual_seed(0)
    cases, batches = {}, {}
    for spec in args.preset_pairs:
        width, sparsity, batch = (float(v) for v in spec.split(":"))
        batch = int(batch)
        x = torch.rand(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))
        name = f"width{width:g}_sparsity{sparsity:g}_batch{batch}"
        cases[name] = train_step(quickstart_net(width, sparsity), x, y, attack="fast", eps=0.1)
        batches[name] = batch
    times = interleaved(cases, args.repeats, "presets")
    median = {n: statistics.median(t) for n, t in times.items()}
    return {"images_per_second": {n: batches[n] / s for n, s in median.items()}, "seconds_median": median,
            "seconds_all": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case (after one warm-up round)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resnet-width", type=float, default=0.25)
    parser.add_argument("--apgd-iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--preset-pairs", nargs="*", default=["1:0.99:128", "0.5:0.95:128"],
                        help="quickstart training steps to compare, as width:sparsity:batch")
    parser.add_argument("--sections", default="train,eval,presets,profile")
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    unknown = sections - {"train", "eval", "presets", "profile"}
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}: choose from train, eval, presets, profile")
    load_before = os.getloadavg()
    started = time.perf_counter()
    result: dict = {
        "description": "seconds per adversarial training step and per evaluation attack batch on this machine: "
                       "default code path vs alternatives, interleaved rounds, medians",
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(), **cpu_features()},
        "config": {"batch_size": args.batch_size, "repeats": args.repeats, "resnet_width": args.resnet_width,
                   "apgd_iterations": args.apgd_iterations},
        "load_average_before": load_before,
    }
    if "profile" in sections:
        x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
        result["profile_quickstart_fast_step"] = profile_step(train_step(quickstart_net(), x, y, attack="fast",
                                                                         eps=0.1))
    if "train" in sections:
        result["train_step"] = train_section(args)
    if "eval" in sections:
        result["eval_quickstart"] = eval_section(args)
    if "presets" in sections:
        result["quickstart_presets"] = preset_section(args)
    result["load_average_after"] = os.getloadavg()
    result["wall_seconds"] = time.perf_counter() - started
    write_json(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
