import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import binprune
from binprune.data import augment_batch, iterate_batches, load_dataset, split_train_val
from binprune.models import Normalize, model_from_recipe
from binprune.spec import find_spec

from .conftest import SHARED_CIFAR, requires_fashion_mnist


@pytest.mark.slow
def test_cifar_resnet_has_cifar_stem_and_torchvision_blocks():
    from torchvision.models.resnet import BasicBlock, ResNet

    model = binprune.create_model("resnet18", num_classes=10)
    assert isinstance(model[0], Normalize)
    net = model.net
    assert isinstance(net, ResNet) and isinstance(net.layer1[0], BasicBlock)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.17e6, rel=0.01)
    slim = binprune.create_model("resnet18", width_factor=0.25)
    assert slim.net.layer4[0].conv1.out_channels == 128
    wide = binprune.create_model("wide_resnet50_2", num_classes=100)
    assert wide(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_create_model_recipe_and_errors():
    model = binprune.create_model("small_cnn", num_classes=5, in_channels=1, mean=[0.3], std=[0.2], widths=[8, 16])
    rebuilt = model_from_recipe(find_spec(model).recipe)
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in model.parameters()]
    assert rebuilt[0].mean.item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown architecture"):
        binprune.create_model("resnet19")
    with pytest.raises(ValueError, match="need 1 values"):
        binprune.create_model("small_cnn", in_channels=1, mean=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(2, 3, 28, 28))
    assert "small_cnn" in binprune.list_models()


@pytest.mark.slow
@requires_fashion_mnist
def test_fashion_mnist_from_debian_package():
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape[1:] == (1, 28, 28) and train.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x, y = test.batch([0, 1])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long
    assert train.augment == "none"


def _write_cifar_pickles(root):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        with open(base / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return base


def test_cifar10_torchvision_format(tmp_path):
    base = _write_cifar_pickles(tmp_path)
    for root in (tmp_path, base):
        train = load_dataset("cifar10", root, split="train")
        assert len(train) == 20 and train.images.shape[1:] == (3, 32, 32)
    test = load_dataset("cifar10", tmp_path, split="test")
    assert test.labels.tolist() == list(range(6)) and test.augment == "crop_flip" and test.classes[3] == "c3"


def test_image_folder_tree(tmp_path):
    for split in ("train", "test"):
        for label, cls in enumerate(["b_cls", "a_cls"]):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((32, 32, 3), 10 * i + label, dtype=np.uint8)).save(d / f"{i:04d}.png")
    ds = load_dataset("imagefolder", tmp_path, split="test")
    assert ds.classes == ["a_cls", "b_cls"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[4, 0, 0, 0].item() == 10 * 1 + 0
    with pytest.raises(ValueError, match="has 2 class folders"):
        load_dataset("cifar10", tmp_path, split="test")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_CIFAR), reason="shared CIFAR-10 JPEG copy not present")
def test_shared_cifar10_jpeg_tree():
    test = load_dataset("cifar10", SHARED_CIFAR, split="test")
    assert len(test) == 10000 and test.classes[0] == "airplane" and test.classes[-1] == "truck"
    assert test.mean[0] == pytest.approx(0.4914)


def test_missing_data_errors_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)looked in: .*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="needs a data directory"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist-3d")
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00" * 5)
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("fashion-mnist", tmp_path, split="test")


def test_batches_cover_epoch_shard_and_resume():
    ds = binprune.ImageTensorDataset(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10), ["x"] * 10,
                                     "toy", (0.5,), (0.5,))
    seen = torch.cat([idx for _, _, idx in iterate_batches(ds, 3, shuffle=True, seed=1, epoch=2)])
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([idx for _, _, idx in iterate_batches(ds, 3, shuffle=True, seed=1, epoch=2, start_batch=2)])
    assert torch.equal(again, seen[6:])
    shards = [torch.cat([i for _, _, i in iterate_batches(ds, 2, shuffle=True, seed=1, rank=r, world_size=3)])
              for r in range(3)]
    assert all(len(s) == 4 for s in shards) and set(torch.cat(shards).tolist()) == set(range(10))
    train, val = split_train_val(ds, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2 and not set(val.labels.tolist()) & set(train.labels.tolist())


def test_augment_crop_flip_is_seeded():
    x = torch.rand(5, 3, 32, 32)
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(augment_batch(x, "none", torch.Generator()), x)


def test_create_model_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8), seed=3)
    c = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8), seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.net.conv0_0.weight, c.net.conv0_0.weight)
    with pytest.raises(ValueError, match="seed"):
        binprune.create_model("small_cnn", in_channels=1, seed=1.5)
