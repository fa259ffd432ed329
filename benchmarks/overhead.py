"""Time of one adversarial training step: supermask vs dense vs re-sorting masks on every forward.

One step = PGD-10 attack (batch-norm in train mode, running statistics frozen) + forward +
backward + SGD step, exactly as ``binprune.train`` does it. Variants, all on the same
CIFAR-sized ResNet-18 (reduced width by default, for CPU):

* ``dense``: the ordinary model, weights trained;
* ``supermask``: binary supermask (99% sparse, p = 0.1), scores trained, masks cached until the
  scores change (binprune's implementation);
* ``resort_every_forward``: the same supermask, but every forward pass recomputes the masks with
  a full sort, as a mask implementation without caching would.

Steps are interleaved (dense, supermask, resort, dense, ...) so that machine noise hits all
variants alike; the medians and their ratios are written to ``benchmarks/results/overhead.json``.

    python benchmarks/overhead.py [--width-factor 0.25] [--batch-size 128] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import binprune
from binprune.adversary import make_attack, run_attack
from binprune.supermask import TopKMask, masked_tensors
from binprune.utils import resolve_device, write_json

RESULTS = Path(__file__).resolve().parent / "results"


class ResortEveryForward(TopKMask):
    """Recomputes the mask with a full sort on every access: the uncached baseline."""

    def mask(self) -> torch.Tensor:
        k = self.current_keep_count()
        order = torch.sort(self.scores.detach().abs().flatten(), descending=True).indices
        mask = torch.zeros(self.scores.numel(), dtype=torch.bool, device=self.scores.device)
        mask[order[:k]] = True
        mask = mask.view_as(self.scores)
        self._mask_cache = (None, mask, None)
        return mask

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return weight.detach() * self.mask()


def build_variants(width_factor: float, seed: int) -> dict[str, torch.nn.Module]:
    def base():
        return binprune.create_model("resnet18", num_classes=10, width_factor=width_factor)

    dense = base()
    supermask = binprune.convert_to_binary_supermask(base(), sparsity=0.99, p=0.1, seed=seed)
    resort = binprune.convert_to_binary_supermask(base(), sparsity=0.99, p=0.1, seed=seed)
    for mt in masked_tensors(resort):
        mt.mask.__class__ = ResortEveryForward
    return {"dense": dense, "supermask": supermask, "resort_every_forward": resort}


def make_step(model: torch.nn.Module, device: torch.device, eps: float, steps: int):
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    attack = make_attack("pgd", model, eps=eps, steps=steps, bn_mode="train")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x_adv = run_attack(attack, model, x, y, bn_mode="train")
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-factor", type=float, default=0.25, help="ResNet-18 width multiplier (1 = full)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS / "overhead.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    steps = {name: make_step(model, device, 8 / 255, args.steps) for name, model in build_variants(args.width_factor, 0).items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.repeats + 1):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(x, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat > 0:  # the first round is warm-up
                times[name].append(time.perf_counter() - start)
        print(f"round {repeat}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items() if t), flush=True)

    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "description": "seconds per adversarial training step (PGD attack + forward + backward + SGD step)",
        "config": {
            "model": f"CIFAR ResNet-18, width_factor={args.width_factor}", "batch_size": args.batch_size,
            "attack": f"PGD-{args.steps}, eps=8/255, batch norm in train mode", "supermask": "sparsity 0.99, p=0.1",
            "repeats": args.repeats, "device": str(device), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        },
        "seconds_median": median,
        "seconds_all": times,
        "ratio_supermask_to_dense": median["supermask"] / median["dense"],
        "ratio_resort_to_dense": median["resort_every_forward"] / median["dense"],
        "ratio_resort_to_supermask": median["resort_every_forward"] / median["supermask"],
    }
    write_json(args.out, result)
    print(f"supermask/dense = {result['ratio_supermask_to_dense']:.3f}, "
          f"resort/dense = {result['ratio_resort_to_dense']:.3f}  -> {args.out}")


if __name__ == "__main__":
    main()
