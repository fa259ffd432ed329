"""The example scripts run end to end (with tiny settings)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import requires_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


def _run(script, *args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "examples" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@requires_fashion_mnist
def test_wrap_torchvision_model_example(tmp_path):
    proc = _run("wrap_torchvision_model.py", "--train-examples", "200", "--test-examples", "20",
                "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PGD-20 accuracy" in proc.stdout and "outputs identical" in proc.stdout
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_robustbench_example_offline(tmp_path):
    for label, cls in enumerate(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                 "truck"]):
        folder = tmp_path / "cifar" / "test" / cls
        folder.mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 20 * label, dtype=np.uint8)).save(folder / "0000.png")
    proc = _run("robustbench_wrap_and_evaluate.py", "--data-dir", str(tmp_path / "cifar"), "--n-examples", "4",
                "--pgd-steps", "1", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "zoo model: clean" in proc.stdout and "binary supermask" in proc.stdout
