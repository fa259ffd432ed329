"""One view of the examples for training and evaluation: selecting, ordering and batching.

Training (:func:`binprune.train`), evaluation (:func:`binprune.evaluate`) and ``compare`` take
their examples through :class:`ExampleView`, so the seeded subsets and the evaluation orders are
written once:

- :meth:`ExampleView.random_subset`: a seeded random subset (``train_examples``; datasets stored
  by class would otherwise give the first classes only);
- :meth:`ExampleView.split`: a seeded held-out share (validation);
- :func:`evaluation_tensors`: the first ``n`` examples, classes interleaved for data stored
  sorted by class (the RobustBench convention otherwise);
- :func:`select_examples`: ``"first"``, ``"permutation"`` (seeded), ``"interleaved"`` or
  ``"balanced"`` (the same number of each class, seeded) order.

Seeds are derived with :func:`binprune.utils.stable_seed` from the run's seed and a purpose
string, so the same settings always select the same examples.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from .data import iterate_batches
from .utils import stable_seed

__all__ = ["ExampleView", "as_view", "from_loader", "evaluation_tensors", "select_examples", "class_interleaved_order",
           "balanced_indices",
           "check_images", "fingerprint"]


class ExampleView:
    """A uniform ``len`` / ``batch(indices)`` view over datasets, tensor pairs and subsets."""

    def __init__(self, base: Any, indices: torch.Tensor | None = None):
        self.base = base
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else _length(self.base)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the examples at positions ``idx`` of this view."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        real = self.indices[idx] if self.indices is not None else idx
        if hasattr(self.base, "batch"):
            return self.base.batch(real)
        if isinstance(self.base, tuple):
            return self.base[0][real], self.base[1][real]
        items = [self.base[int(i)] for i in real]
        return torch.stack([torch.as_tensor(it[0]) for it in items]), torch.as_tensor([int(it[1]) for it in items])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(torch.arange(len(self)))

    def subset(self, idx: torch.Tensor) -> "ExampleView":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ExampleView(self.base, self.indices[idx] if self.indices is not None else idx)

    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.batch(torch.tensor([0]))[0].shape[1:])

    def random_subset(self, n: int | None, seed: int, purpose: str = "subset") -> "ExampleView":
        """``n`` examples drawn at random (seeded by ``seed`` and ``purpose``), in dataset order;
        the whole view when ``n`` is ``None`` or not smaller."""
        if n is None or n >= len(self):
            return self
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(stable_seed(seed, purpose)))
        return self.subset(pick[:n].sort().values)

    def split(self, fraction: float, seed: int, purpose: str = "val") -> tuple["ExampleView", "ExampleView | None"]:
        """``(rest, held_out)``: ``round(len * fraction)`` examples held out at random (seeded)."""
        n_held = int(round(len(self) * fraction))
        if not n_held:
            return self, None
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(stable_seed(seed, purpose)))
        return self.subset(perm[n_held:].sort().values), self.subset(perm[:n_held].sort().values)

    def batches(self, batch_size: int, **kwargs: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch of ``(images, labels, positions)`` (see :func:`binprune.data.iterate_batches`)."""
        return iterate_batches(self, batch_size, **kwargs)


def fingerprint(view: ExampleView, samples: int = 512) -> str:
    """A SHA-256 over the count, all labels and ``samples`` evenly spaced images of ``view``: cheap,
    and different for a different dataset, split, subset or order (checked when a run resumes)."""
    import hashlib

    n = len(view)
    digest = hashlib.sha256(str(n).encode())
    pick = torch.linspace(0, n - 1, steps=min(samples, n)).round().long().unique()
    x, y = view.batch(pick)
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _length(data: Any) -> int:
    if isinstance(data, tuple):
        if len(data) != 2 or len(data[0]) != len(data[1]):
            raise ValueError("data given as a tuple must be (images, labels) of equal length")
        return len(data[0])
    return len(data)


def from_loader(data: Any) -> Any:
    """A ``DataLoader`` becomes what binprune batches itself: its map-style dataset (binprune's
    seeded order and batch size replace the loader's), or, for an iterable dataset, the
    ``(images, labels)`` tensors of one pass over the loader. Anything else is returned as is."""
    if not isinstance(data, torch.utils.data.DataLoader):
        return data
    if not isinstance(data.dataset, torch.utils.data.IterableDataset):
        return data.dataset
    xs, ys = [], []
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("a DataLoader must yield (images, labels) batches")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("the DataLoader yielded no batch")
    return torch.cat(xs), torch.cat(ys).long()


def as_view(data: Any, name: str) -> ExampleView:
    """Check ``data`` (a dataset of ``(image, label)``, an ``(images, labels)`` pair of float
    images in [0, 1], or a ``DataLoader`` of either: :func:`from_loader`) and view it."""
    if isinstance(data, ExampleView):
        return data
    data = from_loader(data)
    if isinstance(data, list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = tuple(data)
    if not (isinstance(data, tuple) or hasattr(data, "__getitem__")):
        raise TypeError(f"{name} must be a dataset or an (images, labels) pair, got {type(data).__name__}")
    view = ExampleView(data)
    if len(view) == 0:
        raise ValueError(f"{name} is empty")
    x, _ = view.batch(torch.tensor([0]))
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} must hold float images in [0, 1] (normalization belongs inside the model)")
    return view


def check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    """Evaluation inputs: float images in [0, 1] with a batch dimension, 1-D integer labels."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"data must be tensors (images, labels), got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"images must be floats in [0, 1], got dtype {x.dtype}: convert uint8 images with x.float() / 255"
        )
    if x.dim() < 2:
        raise ValueError(f"images must have a batch dimension, got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got dtype {y.dtype} and shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels: they must have the same length")
    if len(x) == 0:
        raise ValueError("no examples to evaluate")
    if torch.isnan(x).any():
        raise ValueError("images contain NaN")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"images must lie in [0, 1] (normalization belongs inside the model), found values in [{lo:.4g}, {hi:.4g}]"
        )
    if int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0, found {int(y.min())}")


def class_interleaved_order(labels: torch.Tensor) -> torch.Tensor:
    """Order that takes one example of each class in turn (file order within a class)."""
    classes, counts = torch.unique_consecutive(labels, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(labels)) - starts
    key = rank * (int(labels.max()) + 1) + labels
    return torch.argsort(key, stable=True)


def _source_info(data: Any) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor | None, int]:
    info: dict[str, Any] = {}
    if isinstance(data, torch.utils.data.DataLoader):
        raise ValueError("internal: DataLoader not unwrapped")
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"data as a sequence must be a pair (images, labels), got {len(data)} items")
        x, y = data
        check_images(x, y)
        info["source"] = "tensors"
        return info, x, y, len(x)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        info["source"] = getattr(data, "name", type(data).__name__)
        if getattr(data, "source", ""):
            info["path"] = str(data.source)
        return info, None, None, len(data)
    raise ValueError(f"data must be a dataset or an (images, labels) pair of tensors, got {type(data).__name__}")


def _take(data: Any, x: torch.Tensor | None, y: torch.Tensor | None, index: Any, n: int,
          order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x is not None:
        return x[index], y[index]
    if hasattr(data, "images") and hasattr(data, "labels") and isinstance(data.images, torch.Tensor):
        xs = data.images[index]
        xs = xs.float().div_(255) if xs.dtype == torch.uint8 else xs.float()
        return xs, data.labels[index].clone()
    indices = range(n) if order is None else order.tolist()
    items = [data[int(i)] for i in indices]
    return (torch.stack([torch.as_tensor(it[0]) for it in items]),
            torch.as_tensor([int(it[1]) for it in items], dtype=torch.long))


def evaluation_tensors(data: Any, n_examples: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The examples to evaluate, as float images in [0, 1] and int64 labels, plus a description.

    ``data`` is an ``(images, labels)`` pair, a :class:`binprune.ImageTensorDataset`, or any
    dataset yielding ``(image, label)``. The first ``n_examples`` are taken in order (the
    RobustBench convention), except for a dataset stored sorted by class (an image-folder tree),
    whose first examples would all be of one class: there, classes are interleaved (one example
    of each class in turn) and the description says so.
    """
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1):
        raise ValueError(f"n_examples must be an integer >= 1, got {n_examples!r}")
    data = from_loader(data)
    info, x, y, total = _source_info(data)
    if n_examples is not None and n_examples > total:
        raise ValueError(f"n_examples={n_examples} but the data holds only {total} examples")
    n = total if n_examples is None else n_examples

    labels_all = getattr(data, "labels", None) if x is None else y
    order = None
    if n < total and isinstance(labels_all, torch.Tensor) and labels_all.dim() == 1 and len(labels_all) == total:
        sorted_by_class = bool((labels_all[1:] >= labels_all[:-1]).all()) and int(labels_all[0]) != int(labels_all[-1])
        if sorted_by_class:
            order = class_interleaved_order(labels_all.cpu())[:n]
    if order is None:
        info["selection"] = f"the first {n} examples in dataset order"
        index: Any = slice(0, n)
    else:
        info["selection"] = (
            f"{n} examples with classes interleaved (the data is stored sorted by class, e.g. an image-folder "
            "tree, so its first examples would all be of one class; within a class, file order)"
        )
        index = order
    x, y = _take(data, x, y, index, n, order)
    y = y.long()
    check_images(x, y)
    info["n_examples"] = int(len(x))
    info["of_total"] = int(total)
    return x.contiguous(), y, info


def _labels(view: ExampleView) -> torch.Tensor:
    base = view.base
    labels = getattr(base, "labels", None) if not isinstance(base, tuple) else base[1]
    if isinstance(labels, torch.Tensor) and labels.dim() == 1 and len(labels) == _length(base):
        labels = labels.long()
        return labels[view.indices] if view.indices is not None else labels
    return view.tensors()[1].long()


def balanced_indices(labels: torch.Tensor, n: int, seed: int, purpose: str = "balanced") -> torch.Tensor:
    """Positions of ``n`` examples, ``n // C`` of each of the ``C`` classes present (the first
    ``n % C`` classes one more), drawn at random within each class (seeded by ``seed``,
    ``purpose`` and the class) and interleaved (one of each class in turn), so that every prefix
    is balanced too. ``ValueError`` when a class has too few examples."""
    classes = torch.unique(labels)
    per_class, extra = divmod(n, len(classes))
    picks = []
    for rank, c in enumerate(classes.tolist()):
        members = (labels == c).nonzero().flatten()
        want = per_class + (1 if rank < extra else 0)
        if want > len(members):
            raise ValueError(f"a class-balanced selection of {n} examples needs {want} of class {c}, which has only "
                             f"{len(members)}: ask for at most {len(members) * len(classes)} examples")
        gen = torch.Generator().manual_seed(stable_seed(seed, purpose, c))
        picks.append(members[torch.randperm(len(members), generator=gen)[:want]])
    rank = torch.cat([torch.arange(len(p)) for p in picks])
    chosen = torch.cat(picks)
    key = rank * len(classes) + torch.cat([torch.full((len(p),), i) for i, p in enumerate(picks)])
    return chosen[torch.argsort(key, stable=True)]


def select_examples(data: Any, n: int, order: str, seed: int, purpose: str = "compare-eval"
                    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``n`` examples of ``data`` as tensors, plus a description: ``"first"`` (file order),
    ``"permutation"`` (the first ``n`` of a permutation seeded by ``seed`` and ``purpose``) or
    ``"interleaved"`` (as :func:`evaluation_tensors`) or ``"balanced"`` (:func:`balanced_indices`)."""
    if order == "interleaved":
        return evaluation_tensors(data, n)
    view = as_view(data, "data")
    n = min(n, len(view))
    if order == "permutation":
        gen = torch.Generator().manual_seed(stable_seed(seed, purpose))
        idx = torch.randperm(len(view), generator=gen)[:n]
        selection = f"the first {n} test images of a seeded permutation of the test set (seed {seed})"
    elif order == "balanced":
        labels = _labels(view)
        idx = balanced_indices(labels, n, seed, purpose)
        counts = torch.bincount(labels[idx]).tolist()
        selection = (f"{n} test images, class-balanced ({min(c for c in counts if c)}-{max(counts)} per class), drawn "
                     f"at random within each class (seed {seed}), classes interleaved")
    elif order == "first":
        idx = torch.arange(n)
        selection = f"the first {n} test images in file order"
    else:
        raise ValueError(f"unknown order {order!r}: choose 'first', 'permutation', 'interleaved' or 'balanced'")
    x, y = view.batch(idx)
    return x, y, {"selection": selection, "n_examples": int(n), "of_total": len(view)}
