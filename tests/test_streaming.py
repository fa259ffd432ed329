"""Image folders too large to decode whole are streamed from disk, with the same examples."""

import numpy as np
import pytest
import torch
from PIL import Image

import binprune
from binprune import data as bdata
from binprune.views import evaluation_tensors


def _folder(root, size=40, n=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_a_large_folder_streams_and_matches_the_in_memory_copy(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    in_memory = bdata.load_dataset("imagefolder", root, split="train")
    monkeypatch.setattr(bdata, "IN_MEMORY_IMAGE_BYTES", 0)  # as if the folder were ImageNet-sized
    streamed = bdata.load_dataset("imagefolder", root, split="train")
    assert isinstance(streamed, bdata.ImageFolderDataset) and isinstance(in_memory, bdata.ImageTensorDataset)
    assert not hasattr(streamed, "images")  # nothing decoded up front
    assert (len(streamed), streamed.in_channels, streamed.num_classes) == (6, 3, 2)
    idx = torch.tensor([5, 0, 3])
    x, y = streamed.batch(idx)
    x_ref, y_ref = in_memory.batch(idx)
    assert x.shape == (3, 3, 40, 48) and torch.equal(x, x_ref) and torch.equal(y, y_ref)
    sub = streamed.subset(torch.tensor([1, 4]))
    assert torch.equal(sub.batch(torch.arange(2))[0], in_memory.batch(torch.tensor([1, 4]))[0])
    # evaluation takes the examples class-interleaved, as from memory
    x1, y1, _ = evaluation_tensors(streamed, 4)
    x2, y2, _ = evaluation_tensors(in_memory, 4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_an_odd_sized_image_is_named(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(root / "train" / "dog" / "odd.png")
    monkeypatch.setattr(bdata, "IN_MEMORY_IMAGE_BYTES", 0)
    streamed = bdata.load_dataset("imagefolder", root, split="train")
    with pytest.raises(ValueError, match="odd.png has shape"):
        streamed.batch(torch.arange(len(streamed)))
