"""The CPU-testable parts of benchmarks/gpu_check.sh: the packed data file's round trip, its size
limit, the script's argument handling, and a toy-sized run of the whole check on the CPU."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_bundle  # noqa: E402
import gpu_check  # noqa: E402

from binprune.data import load_dataset  # noqa: E402


def _image_folder(root: Path, per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    src = _image_folder(tmp_path_factory.mktemp("cifar"))
    out = tmp_path_factory.mktemp("bundle") / "cifar10-u8.npz"
    info = gpu_bundle.pack(src, out, n_train=20, n_test=10, seed=3)
    return src, out, info


def test_packed_data_round_trip(packed):
    src, out, info = packed
    assert info["bytes"] < 40 * 2**20 and info["train"] == 20
    train, test = gpu_bundle.load(out)
    full_train, full_test = load_dataset("cifar10", src), load_dataset("cifar10", src, split="test")
    pick = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(3))[:20].sort().values
    assert torch.equal(train.images, full_train.images[pick]) and torch.equal(train.labels, full_train.labels[pick])
    assert train.images.dtype == torch.uint8 and train.augment == "crop_flip"
    assert test.labels.tolist() == list(range(10))  # classes interleaved
    order = torch.from_numpy(gpu_bundle.interleaved_order(full_test.labels.numpy())[:10])
    assert torch.equal(test.images, full_test.images[order])
    assert train.mean == full_train.mean and train.classes == full_train.classes


def test_pack_refuses_more_than_40_mib_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="over the 40 MiB limit: lower --train"):
        gpu_bundle.pack(tmp_path, tmp_path / "x.npz", n_train=50_000, n_test=1_000)
    with pytest.raises(FileNotFoundError, match="gpu_prepare.sh"):
        gpu_bundle.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a binprune-cifar10-u8-v1 file"):
        gpu_bundle.load(tmp_path / "other.npz")


@pytest.mark.parametrize("argv, message", [
    (["--sections", "train,bogus"], "unknown or no section"),
    (["--sections", "eval"], "add train to --sections"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--train-seconds", "0"], "must be > 0"),
])
def test_gpu_check_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args([*argv, "--device", "cpu"])
    assert message in capsys.readouterr().err


def test_gpu_check_without_gpu_says_how_to_try_it(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        gpu_check.parse_args([])
    assert "--device cpu --smoke" in capsys.readouterr().err


def test_gpu_check_smoke_sizes():
    args = gpu_check.parse_args(["--device", "cpu", "--smoke"])
    assert args.sections == ["throughput", "train", "eval"]
    assert args.batch_size <= 8 and args.eval_examples <= 16 and args.max_epochs == 1


def test_gpu_check_shell_script_reports_missing_bundle(tmp_path):
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "GPU_BUNDLE": str(tmp_path / "none"),
                                 "PYTHON": sys.executable, "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "gpu_prepare.sh" in result.stderr


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(packed, tmp_path):
    _, data, _ = packed
    record = gpu_check.main(["--device", "cpu", "--smoke", "--data", str(data), "--out", str(tmp_path)])
    cases = record["throughput"]["cases"]
    assert set(cases) == {"supermask/fp32", "supermask/bf16", "dense/fp32", "dense/bf16"}
    assert all(c["images_per_second"] > 0 for c in cases.values())
    assert record["train"]["epochs"] == 1 and 0 <= record["eval"]["accuracy"]["pgd"] <= 1
    assert (tmp_path / "gpu_check_smoke.json").is_file()
