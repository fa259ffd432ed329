"""Leaderboard-ready output: the entry names the real architecture, and export --format robustbench
writes a model file and a loader that give the same logits with binprune not importable."""

import json
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

import binprune
from binprune.cli import main
from binprune.evaluation.robustbench import MODELINFO_FIELDS, architecture_name


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_entry_names_the_wrapped_architecture():
    wrapped = nn.Sequential(OrderedDict(normalize=binprune.Normalize([0.5] * 3, [0.5] * 3), net=TinyNet()))
    assert architecture_name(wrapped) == "TinyNet"
    assert architecture_name(binprune.convert_to_binary_supermask(wrapped, sparsity=0.5)) == "TinyNet (binary supermask)"
    built = binprune.create_model("resnet18", width_factor=0.25)
    assert architecture_name(binprune.convert_to_binary_supermask(built, sparsity=0.5)) == "resnet18 (binary supermask)"


@pytest.mark.slow
def test_export_robustbench_loads_without_binprune(tmp_path):
    torch.manual_seed(0)
    model = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", in_channels=3, widths=(8, 16),
                                                                       seed=0), sparsity=0.8, seed=0)
    with torch.no_grad():  # batch norms with statistics of their own, as after training
        model.train()
        model(torch.rand(16, 3, 16, 16))
    model.eval()
    binprune.save_checkpoint(tmp_path / "net.pt", model)
    out = tmp_path / "rb"
    assert main(["export", str(tmp_path / "net.pt"), "--format", "robustbench", "-o", str(out), "--input-shape",
                 "3", "16", "16", "--model-name", "Tiny2026"]) == 0
    info = json.loads((out / "Tiny2026.json").read_text())
    assert list(info)[:len(MODELINFO_FIELDS)] == list(MODELINFO_FIELDS)
    assert info["architecture"] == "small_cnn (binary supermask)" and info["name"] == "Tiny2026"
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "expected.pt")
    code = (
        "import sys\n"
        "sys.modules['binprune'] = None  # binprune cannot be imported in this process\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "import torch\n"
        "from loader import load_model\n"
        "model = load_model('cpu').eval()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}); expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = model(x)\n"
        "assert sys.modules['binprune'] is None\n"
        "print(float((out - expected).abs().max()), tuple(model(x[:1]).shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    diff, shape = run.stdout.split(" ", 1)
    assert float(diff) == 0.0 and shape.strip() == "(1, 10)"
