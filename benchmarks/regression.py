"""Does this checkout compute what an earlier commit computed? Runs the same short training with
the earlier commit's code and with this checkout's, on this machine, and compares the trained
tensors bit for bit and the per-epoch numbers.

Two runs, each shortened so the check takes minutes on 2 CPU cores (one thread each):
``binprune train --preset quickstart`` and the binprune row of ``binprune compare --preset
fmnist-cpu``. Floating-point results depend on the CPU (its vector instructions choose the
kernels), so numbers committed from another machine are compared here by re-running the earlier
code, not by reading its files.

    python benchmarks/regression.py --old 47a4a6c [--out benchmarks/results/regression.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binprune.utils import write_json  # noqa: E402

TRAIN = ["train", "--preset", "quickstart", "--epochs", "2", "--train-examples", "3000", "--test-examples", "500",
         "--no-progress"]
# --eval-examples: the flag 0.1 knows (0.2 calls it --test-examples and still accepts the old name)
COMPARE = ["compare", "--preset", "fmnist-cpu", "--methods", "binprune-p0.1", "--epochs", "2",
           "--train-examples", "3000", "--eval-examples", "20", "--no-progress"]


def run(code: Path, module: str, argv: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", module, *argv, "--out", str(out)], cwd=code, env=env, check=True,
                   capture_output=True)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def epochs(path: Path) -> list[dict]:
    """Per-epoch numbers under one naming (0.1 wrote train_adv_acc / val_robust_acc)."""
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        adv = r["train_accuracy"]["adversarial"] if "train_accuracy" in r else r["train_adv_acc"]
        val = r["val_accuracy"]["pgd"] if "val_accuracy" in r else r.get("val_robust_acc")
        rows.append({"epoch": r["epoch"], "train_loss": r["train_loss"], "train_adv": adv, "val_pgd": val})
    return rows


def same(a: Path, b: Path, checkpoint: str, history: str) -> dict:
    ta, tb = tensors(a / checkpoint), tensors(b / checkpoint)
    equal = set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    ea, eb = epochs(a / history), epochs(b / history)
    return {"tensors_bit_identical": equal, "tensors_compared": len(ta), "epochs_identical": ea == eb,
            "old_epochs": ea, "new_epochs": eb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the earlier commit (e.g. 47a4a6c)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "regression.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="binprune-regression-"))
    try:
        old = work / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.old], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        results = {}
        run(old, "binprune.cli", TRAIN, work / "train-old")
        run(ROOT, "binprune", TRAIN, work / "train-new")
        results["train_quickstart"] = {"command": "binprune " + " ".join(TRAIN),
                                       **same(work / "train-old", work / "train-new", "last.pt", "metrics.jsonl")}
        run(old, "binprune.cli", COMPARE, work / "compare-old")
        run(ROOT, "binprune", COMPARE, work / "compare-new")
        phase = Path("phases") / "bp-p0.1"
        results["compare_binprune_row"] = {
            "command": "binprune " + " ".join(COMPARE),
            **same(work / "compare-old" / phase, work / "compare-new" / phase, "final.pt", "metrics.jsonl")}
        for name in ("compare-old", "compare-new"):
            row = json.loads((work / name / "methods" / "binprune-p0.1.json").read_text())["row"]
            results["compare_binprune_row"][f"{name.split('-')[1]}_accuracy"] = row["accuracy"]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        write_json(args.out, {"description": __doc__.splitlines()[0], "old_commit": args.old, "new_commit": commit,
                              "machine": {"processor": platform.processor() or platform.machine(),
                                          "torch": torch.__version__, "threads": 1},
                              **results})
        print(json.dumps({k: {kk: v[kk] for kk in ("tensors_bit_identical", "epochs_identical")}
                          for k, v in results.items()}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
