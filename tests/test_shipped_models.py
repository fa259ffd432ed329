"""The models in models/ load, are what their notes say, and still classify as recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import binprune
from binprune.data import load_dataset
from binprune.stats import wilson_interval

from .conftest import requires_fashion_mnist

MODELS = Path(__file__).resolve().parent.parent / "models"
REPO = MODELS.parent


@pytest.mark.parametrize("name, kept, total", [("quickstart", 11_733, 1_173_280),
                                               ("cifar10-resnet18", 111_644, 11_164_352)])
def test_shipped_model_loads_with_the_documented_size(name, kept, total):
    path = MODELS / f"{name}.bpk"
    assert path.stat().st_size < 200_000  # kilobytes, as the notes say
    model = binprune.load_model(path)
    report = binprune.sparsity_report(model)
    assert (report.kept_params, report.total_params) == (kept, total)
    shape = (2, 1, 28, 28) if name == "quickstart" else (2, 3, 32, 32)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert torch.equal(out, binprune.load_model(path)(x).detach())  # regenerated weights: same every load


@requires_fashion_mnist
def test_quickstart_model_still_has_its_recorded_accuracy():
    """A wrong weight regeneration or mask decoding gives chance accuracy, not a small drift."""
    recorded = json.loads((MODELS / "quickstart.train.json").read_text())["accuracy"]["clean"]
    model = binprune.load_model(MODELS / "quickstart.bpk")
    test = load_dataset("fashion-mnist", split="test")
    x, y = test.images[:1000].float() / 255.0, test.labels[:1000]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    lo, hi = wilson_interval(int(round(accuracy * 1000)), 1000, confidence=0.999)
    assert lo <= recorded <= hi, (accuracy, recorded)


@pytest.mark.slow
@requires_fashion_mnist
def test_cli_inspects_and_evaluates_a_shipped_model(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "binprune", "inspect", str(MODELS / "quickstart.bpk"),
                          "--out", str(tmp_path / "inspect")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "11,733 of 1,173,280 weights kept" in run.stdout
    assert (tmp_path / "inspect" / "masks.png").is_file()
    run = subprocess.run([sys.executable, "-m", "binprune", "eval", str(MODELS / "quickstart.bpk"), "--dataset", "fashion-mnist", "--attacks", "clean",
                          "--n-examples", "200", "--no-progress", "--out", str(tmp_path / "eval")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr  # clean accuracy alone needs no --eps
    assert "sanity checks skipped" in run.stderr and "clean accuracy only" in run.stdout
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["accuracy"]["clean"] > 0.7
