"""What ``benchmarks/gpu_check.sh`` needs on a GPU machine without network, prepared beforehand on
a machine that has the data and the packages (``benchmarks/gpu_prepare.sh`` calls this).

* ``data``: a CIFAR-10 subset as one compact uint8 file (``.npz``, no pickled objects): the first
  ``--train`` training images of a seeded permutation and the first ``--test`` test images with
  the classes interleaved, exactly as binprune decodes them (``binprune.load_dataset``), so the GPU
  run trains and tests on the same pixels. 10,000 + 1,000 images take 33.8 MB.
* ``wheels``: the Python packages binprune needs, as wheel files (``pip download``), for an
  offline ``pip install --no-index --find-links``.

    python benchmarks/gpu_bundle.py data --src ../shared/data/cifar10-jpeg --out .gpu-bundle/cifar10-u8.npz
    python benchmarks/gpu_bundle.py wheels --out .gpu-bundle/wheels [--python-version 3.11]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_BYTES = 40 * 1024 * 1024
FORMAT = "binprune-cifar10-u8-v1"


def interleaved_order(labels: np.ndarray) -> np.ndarray:
    """Indices taking one example of each class in turn (class 0, 1, ..., 9, 0, 1, ...)."""
    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    longest = max(len(p) for p in per_class)
    return np.array([p[i] for i in range(longest) for p in per_class if i < len(p)], dtype=np.int64)


def pack(src: str | Path, out: str | Path, *, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0) -> dict:
    """Decode CIFAR-10 from ``src`` and write the subset to ``out``; returns what was written."""
    import torch

    from binprune.data import load_dataset

    if n_train < 1 or n_test < 1:
        raise ValueError(f"--train and --test must be >= 1, got {n_train} and {n_test}")
    raw_bytes = (n_train + n_test) * 3 * 32 * 32
    if raw_bytes > MAX_BYTES:
        raise ValueError(f"{n_train} + {n_test} images take {raw_bytes / 2**20:.1f} MiB, over the 40 MiB limit: "
                         "lower --train")
    train, test = load_dataset("cifar10", src), load_dataset("cifar10", src, split="test")
    if n_train > len(train) or n_test > len(test):
        raise ValueError(f"{src} holds {len(train)} training and {len(test)} test images; asked for {n_train} and {n_test}")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n_train].sort().values.numpy()
    test_pick = interleaved_order(test.labels.numpy())[:n_test]
    arrays = {
        "format": np.array(FORMAT), "classes": np.array(train.classes), "mean": np.array(train.mean),
        "std": np.array(train.std), "seed": np.array(seed),
        "train_images": train.images.numpy()[pick], "train_labels": train.labels.numpy()[pick].astype(np.uint8),
        "test_images": test.images.numpy()[test_pick], "test_labels": test.labels.numpy()[test_pick].astype(np.uint8),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return {"path": str(out), "bytes": out.stat().st_size, "train": n_train, "test": n_test}


def load(path: str | Path) -> tuple:
    """``(train, test)`` as ``binprune.data.ImageTensorDataset`` from a file written by :func:`pack`."""
    import torch

    from binprune.data import ImageTensorDataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: prepare it with benchmarks/gpu_prepare.sh on a machine "
                                "that has the CIFAR-10 images")
    with np.load(path, allow_pickle=False) as f:
        if "format" not in f.files or str(f["format"]) != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file: prepare it with benchmarks/gpu_prepare.sh")
        classes, mean, std = [str(c) for c in f["classes"]], tuple(float(v) for v in f["mean"]), tuple(float(v) for v in f["std"])
        parts = []
        for split in ("train", "test"):
            images = torch.from_numpy(np.ascontiguousarray(f[f"{split}_images"]))
            labels = torch.from_numpy(f[f"{split}_labels"].astype(np.int64))
            parts.append(ImageTensorDataset(images, labels, classes, "cifar10", mean, std, "crop_flip", str(path)))
    return parts[0], parts[1]


def download_wheels(out: str | Path, python_version: str | None = None, extra: list[str] | None = None) -> list[str]:
    """``pip download`` binprune's dependencies (from ``pyproject.toml``) as wheels into ``out``."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    cmd = [sys.executable, "-m", "pip", "download", "--dest", str(out), "--only-binary=:all:", *deps, *(extra or [])]
    if python_version:
        cmd += ["--python-version", python_version]
    Path(out).mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True)
    (Path(out) / "requirements.txt").write_text("\n".join(deps + list(extra or [])) + "\n")
    return cmd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="pack a CIFAR-10 subset as one uint8 .npz file")
    data.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    data.add_argument("--out", default=str(ROOT / ".gpu-bundle" / "cifar10-u8.npz"))
    data.add_argument("--train", type=int, default=10_000)
    data.add_argument("--test", type=int, default=1_000)
    data.add_argument("--seed", type=int, default=0)
    wheels = sub.add_parser("wheels", help="download the packages as wheel files")
    wheels.add_argument("--out", default=str(ROOT / ".gpu-bundle" / "wheels"))
    wheels.add_argument("--python-version", default=None, help="the GPU machine's Python, e.g. 3.11")
    args = parser.parse_args(argv)
    try:
        if args.command == "data":
            print(pack(args.src, args.out, n_train=args.train, n_test=args.test, seed=args.seed))
        else:
            download_wheels(args.out, args.python_version)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"gpu_bundle.py {args.command}: error: {exc}\n")


if __name__ == "__main__":
    main()
