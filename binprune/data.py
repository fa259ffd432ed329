"""Datasets from local folders, held in memory as uint8 tensors, and fast batch iteration.

Small image datasets (Fashion-MNIST, CIFAR) fit in memory many times over; decoding them once and
slicing tensors is much faster on a 2-core machine than a per-image ``DataLoader`` pipeline.
Images come out as floats in [0, 1]; normalization is the model's first module.

Sources, all local (nothing is downloaded):

* ``fashion-mnist``: the four IDX files (``.gz`` or not), as installed by the Debian package
  ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist`` or in torchvision's layout
  ``<root>/FashionMNIST/raw``; the environment variable ``BINPRUNE_FASHION_MNIST`` names another
  default folder.
* ``cifar10`` / ``cifar100``: torchvision's format (``cifar-10-batches-py`` /
  ``cifar-100-python``), or an image-folder tree ``<root>/{train,test}/<class>/*.png|jpg``.
* ``imagefolder``: any ``<root>/{train,test}/<class>/<image>`` tree of same-sized images.
"""

from __future__ import annotations

import gzip
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ImageTensorDataset", "ImageFolderDataset", "load_dataset", "DATASETS", "iterate_batches", "augment_batch",
    "DEFAULT_FASHION_MNIST_DIR", "split_train_val", "num_batches", "epoch_order", "CROP_PADDING", "crop_flip_params",
    "crop_flip", "uncrop_flip", "augmentation_generator",
]

from .config import AUGMENTATIONS, DATASETS, IN_MEMORY_IMAGE_BYTES  # noqa: E402  (names defined once)
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class ImageTensorDataset(torch.utils.data.Dataset):
    """Images as a uint8 tensor ``(N, C, H, W)`` with int64 labels, plus what a model needs to
    know about them (normalization statistics, class names, the default augmentation)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}: choose one of {', '.join(AUGMENTATIONS)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    def batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float, [0, 1]) and labels at ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx].float().div_(255), self.labels[idx]

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples (all by default), in order, as float images and labels."""
        n = len(self) if n is None else min(n, len(self))
        return self.images[:n].float().div_(255), self.labels[:n].clone()

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageTensorDataset":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensorDataset(self.images[idx], self.labels[idx], self.classes, self.name, self.mean,
                                  self.std, self.augment, self.source)


def split_train_val(dataset: ImageTensorDataset, val_fraction: float, seed: int) -> tuple[ImageTensorDataset, ImageTensorDataset | None]:
    """A seeded random split of the training set into (train, validation)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(dataset) * val_fraction))
    if n_val == 0:
        return dataset, None
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(dataset), generator=gen)
    return dataset.subset(perm[n_val:].sort().values), dataset.subset(perm[:n_val].sort().values)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, split: str = "train"
                 ) -> ImageTensorDataset | ImageFolderDataset:
    """Load a dataset split from a local folder (see the module docstring for layouts). An image
    folder whose decoded images would exceed :data:`binprune.config.IN_MEMORY_IMAGE_BYTES` is
    streamed from disk (:class:`ImageFolderDataset`) instead of decoded into memory.

    Raises ``FileNotFoundError`` saying where it looked and how to get the data.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_dir, split)
    if name in ("cifar10", "cifar100"):
        if data_dir is None:
            raise FileNotFoundError(
                f"{name} needs a data directory: pass data_dir (--data-dir) pointing at torchvision's "
                f"'{'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'}' folder (or its parent), "
                "or at an image-folder tree with train/ and test/"
            )
        return _load_cifar(name, Path(data_dir), split)
    if name == "imagefolder":
        if data_dir is None:
            raise FileNotFoundError("imagefolder needs a data directory holding train/<class>/ and test/<class>/")
        ds = _load_image_folder(Path(data_dir), split, name="imagefolder")
        return ds
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


# --- Fashion-MNIST -------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data, found {body.size}")
    return body.reshape(dims)


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for candidate in (d / f"{stem}.gz", d / stem):
            if candidate.is_file():
                return candidate
    return None


def _load_fashion_mnist(data_dir: str | os.PathLike | None, split: str) -> ImageTensorDataset:
    if data_dir is not None:
        roots = [Path(data_dir)]
    else:
        env = os.environ.get("BINPRUNE_FASHION_MNIST")
        roots = ([Path(env)] if env else []) + [DEFAULT_FASHION_MNIST_DIR]
    dirs = [d for r in roots for d in (r, r / "FashionMNIST" / "raw", r / "raw")]
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        looked = ", ".join(str(d) for d in dirs)
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]) "
            f"not found; looked in: {looked}. Install them with 'apt-get install dataset-fashion-mnist' "
            "(Debian/Ubuntu) or pass the folder that holds them as data_dir / --data-dir."
        )
    images = torch.from_numpy(_read_idx(images_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(labels_path).astype(np.int64))
    mean, std = _STATS["fashion-mnist"]
    return ImageTensorDataset(images, labels, list(_FMNIST_CLASSES), "fashion-mnist", mean, std, "none",
                              str(images_path.parent))


# --- CIFAR ---------------------------------------------------------------------------------------

def _load_cifar(name: str, root: Path, split: str) -> ImageTensorDataset:
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    for base in (root / folder, root):
        if (base / ("batches.meta" if name == "cifar10" else "meta")).is_file():
            return _load_cifar_pickles(name, base, split)
    if (root / split).is_dir():
        ds = _load_image_folder(root, split, name=name)
        expected = 10 if name == "cifar10" else 100
        if ds.num_classes != expected:
            raise ValueError(f"{root / split} has {ds.num_classes} class folders; {name} has {expected}")
        mean, std = _STATS[name]
        ds.mean, ds.std = mean, std
        return ds
    raise FileNotFoundError(
        f"{name} not found under {root}: expected torchvision's '{folder}' folder (with its batch files) "
        f"there or in {root / folder}, or an image-folder tree {root}/{split}/<class>/*.png|jpg"
    )


def _load_cifar_pickles(name: str, base: Path, split: str) -> ImageTensorDataset:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_file, label_key, names_key = "batches.meta", b"labels", b"label_names"
    else:
        files = ["train"] if split == "train" else ["test"]
        meta_file, label_key, names_key = "meta", b"fine_labels", b"fine_label_names"
    chunks, labels = [], []
    for f in files:
        path = base / f
        if not path.is_file():
            raise FileNotFoundError(f"{name} batch file {path} is missing")
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="bytes")
        chunks.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])
    with open(base / meta_file, "rb") as fh:
        meta = pickle.load(fh, encoding="bytes")
    classes = [c.decode() for c in meta[names_key]]
    mean, std = _STATS[name]
    return ImageTensorDataset(torch.from_numpy(np.concatenate(chunks)), torch.tensor(labels, dtype=torch.long),
                              classes, name, mean, std, "crop_flip", str(base))


# --- image folders -------------------------------------------------------------------------------

def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)


class ImageFolderDataset(torch.utils.data.Dataset):
    """An image-folder split read from disk batch by batch (nothing held in memory but the file
    list): what :func:`load_dataset` returns for a folder too large to decode whole
    (:data:`binprune.config.IN_MEMORY_IMAGE_BYTES`). Same interface as :class:`ImageTensorDataset`
    (``batch``, ``tensors``, ``subset``, ``labels``, ``mean``/``std``, ``augment``); every image
    must have the size of the first one."""

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, classes: list[str], name: str,
                 mean: tuple[float, ...], std: tuple[float, ...], augment: str = "none", source: str = "",
                 shape: tuple[int, int, int] | None = None):
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = list(files)
        self.labels = labels
        self.classes, self.name, self.mean, self.std, self.augment, self.source = classes, name, mean, std, augment, source
        self.shape = shape if shape is not None else tuple(self._decode_one(0).shape)

    def _decode_one(self, index: int) -> torch.Tensor:
        array = np.array(_decode(self.files[index]))  # a writable copy for torch
        image = torch.from_numpy(array).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)
        if getattr(self, "shape", None) is not None and tuple(image.shape) != self.shape:
            raise ValueError(f"{self.files[index]} has shape {tuple(image.shape)} but the folder's images are "
                             f"{self.shape}: resize the images to one size first")
        return image

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._decode_one(int(index)).float().div_(255), int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.shape[0]

    def batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(self._decode_one, idx.tolist()))
        stacked = torch.stack(images) if images else torch.empty(0, *self.shape, dtype=torch.uint8)
        return stacked.float().div_(255), self.labels[idx]

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self) if n is None else min(n, len(self))
        return self.batch(torch.arange(n))

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageFolderDataset":
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return ImageFolderDataset([self.files[i] for i in idx.tolist()], self.labels[idx], self.classes, self.name,
                                  self.mean, self.std, self.augment, self.source, self.shape)


def _load_image_folder(root: Path, split: str, *, name: str,
                       memory_limit: int | None = None) -> ImageTensorDataset | ImageFolderDataset:
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir} does not exist: an image-folder dataset needs {root}/{split}/<class>/<images>")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class sub-folders")
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (split_dir / cls).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise FileNotFoundError(f"{split_dir} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    first = _decode(files[0])
    limit = IN_MEMORY_IMAGE_BYTES if memory_limit is None else memory_limit
    if first.nbytes * len(files) > limit:  # streamed: only the file list stays in memory
        channels = 1 if first.ndim == 2 else first.shape[2]
        return ImageFolderDataset(files, torch.tensor(labels, dtype=torch.long), classes, name, (0.5,) * channels,
                                  (0.5,) * channels, "none", str(split_dir))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(_decode, files, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images under {split_dir} have different sizes {sorted(shapes)[:4]}: resize them first")
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked).unsqueeze(1) if stacked.ndim == 3 else torch.from_numpy(stacked).permute(0, 3, 1, 2)
    channels = images.shape[1]
    mean, std = (0.5,) * channels, (0.5,) * channels
    augment = "crop_flip" if images.shape[-1] == 32 and images.shape[-2] == 32 and channels == 3 else "none"
    return ImageTensorDataset(images.contiguous(), torch.tensor(labels, dtype=torch.long), classes, name, mean, std,
                              augment, str(split_dir))


# --- batches -------------------------------------------------------------------------------------

#: zero padding of the ``crop_flip`` augmentation, in pixels on every side
CROP_PADDING = 4


def crop_flip_params(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``crop_flip`` for ``n`` images: ``(offsets, flips)``, ``offsets[i] =
    (dy, dx)`` of the crop in the padded image (0 to ``2 * CROP_PADDING``) and ``flips[i]`` whether
    the crop is mirrored. :func:`augment_batch` draws exactly these, so a caller holding the same
    generator state gets the augmentation a batch received (the carried fast attack needs it)."""
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, padded: bool = False,
              fill: float = 0.0) -> torch.Tensor:
    """Apply given crops and flips. ``padded=True``: ``images`` are already padded (``H + 2 *
    CROP_PADDING`` high), as the carried perturbation buffer is."""
    if not padded:
        pad = CROP_PADDING
        images = F.pad(images, (pad, pad, pad, pad), value=fill)
    n, _, hp, wp = images.shape
    h, w = hp - 2 * CROP_PADDING, wp - 2 * CROP_PADDING
    out = images.new_empty(n, images.shape[1], h, w)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = images[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def uncrop_flip(values: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`crop_flip` on padded tensors: ``into`` (padded, ``(n, C, H + 2p,
    W + 2p)``) with each crop window replaced by the un-flipped ``values`` (``(n, C, H, W)``);
    outside the window ``into`` is kept. Returns a new tensor."""
    out = into.clone()
    h, w = values.shape[-2:]
    for i in range(values.shape[0]):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i, :, dy:dy + h, dx:dx + w] = values[i].flip(-1) if flips[i] else values[i]
    return out


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4 pixels of zero padding plus horizontal flip (``"crop_flip"``), or
    nothing (``"none"``). Randomness comes only from ``generator`` (:func:`crop_flip_params`)."""
    if kind == "none":
        return images
    if kind != "crop_flip":
        raise ValueError(f"unknown augmentation {kind!r}: choose one of {', '.join(AUGMENTATIONS)}")
    offsets, flips = crop_flip_params(images.shape[0], generator)
    return crop_flip(images, offsets, flips)


def augmentation_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The generator that augments batch ``batch`` of epoch ``epoch`` (:func:`iterate_batches`)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + batch)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The example order of one epoch: a function of (seed, epoch) only, so a resumed run sees
    exactly the batches an uninterrupted run would."""
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def iterate_batches(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    start_batch: int = 0,
    augment: str = "none",
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels, indices)`` batches of one epoch.

    With ``world_size > 1`` each rank gets every ``world_size``-th example of the epoch order
    (padded so ranks have equal counts, as ``DistributedSampler`` does). ``start_batch`` skips
    batches already done (resuming mid-epoch). Augmentation is seeded by (seed, epoch, batch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_order(len(dataset), seed=seed, epoch=epoch, shuffle=shuffle)
    if world_size > 1:
        per_rank = -(-len(order) // world_size)
        order = torch.cat([order, order[: per_rank * world_size - len(order)]])
        order = order[rank::world_size]
    n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    for b in range(start_batch, n_batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        if hasattr(dataset, "batch"):
            x, y = dataset.batch(idx)
        else:
            items = [dataset[int(i)] for i in idx]
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            y = torch.as_tensor([int(it[1]) for it in items])
        if augment != "none":
            x = augment_batch(x, augment, augmentation_generator(seed, epoch, b))
        yield x, y, idx


def num_batches(n: int, batch_size: int, *, world_size: int = 1, drop_last: bool = False) -> int:
    per_rank = -(-n // world_size)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)
