"""Smaller points of a good guest: DataLoader inputs, models pruned with torch.nn.utils.prune, the
"binprune" logger, CSV beside tables."""

import csv
import logging

import pytest
import torch
from torch.nn.utils import prune
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import binprune
from binprune.training.curves import history_csv


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 4


def _net():
    return binprune.convert_to_binary_supermask(
        binprune.create_model("small_cnn", in_channels=1, num_classes=4, widths=(4, 8), seed=0), sparsity=0.5, seed=0)


def test_dataloaders_are_accepted_by_evaluate_and_train(tmp_path):
    x, y = _data()
    model = _net().eval()
    direct = binprune.evaluate(model, (x, y), eps=0.05, attacks=("clean", "pgd"), pgd_steps=2, device="cpu",
                               progress=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    via_loader = binprune.evaluate(model, loader, eps=0.05, attacks=("clean", "pgd"), pgd_steps=2, device="cpu",
                                   progress=False)
    assert via_loader.accuracy == direct.accuracy

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(x, y))

    streamed = binprune.evaluate(model, DataLoader(Stream(), batch_size=7), eps=0.05, attacks=("clean",),
                                 device="cpu", progress=False)
    assert streamed.accuracy["clean"] == direct.accuracy["clean"]
    result = binprune.train(_net(), DataLoader(TensorDataset(x, y), batch_size=8), eps=0.05, epochs=1, attack="fast",
                            batch_size=8, val_fraction=0, device="cpu", progress=False, out_dir=tmp_path / "run")
    assert result.history and (tmp_path / "run" / "metrics.csv").is_file()
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["epoch"] == "1" and float(rows[0]["train_loss"]) == pytest.approx(result.history[0]["train_loss"])


def test_a_model_pruned_with_torch_prune_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match=r"torch.nn.utils.prune \(0.weight .*prune.remove"):
        binprune.convert_to_binary_supermask(model)
    prune.remove(model[0], "weight")  # folded in: converts
    assert binprune.convert_to_binary_supermask(model, sparsity=0.5) is not None


def test_epoch_lines_go_through_the_binprune_logger(caplog, tmp_path):
    x, y = _data(16)
    with caplog.at_level(logging.INFO, logger="binprune"):
        binprune.train(_net(), (x, y), eps=0.05, epochs=1, attack="fast", batch_size=8, val_fraction=0,
                       device="cpu", progress="epochs")
    records = [r for r in caplog.records if r.name.startswith("binprune") and r.getMessage().startswith("epoch 1:")]
    assert records and records[0].levelno == logging.INFO


def test_history_csv_flattens_nested_values():
    text = history_csv([{"epoch": 1, "train_accuracy": {"adversarial": 0.5}, "lr": [0.1]},
                        {"epoch": 2, "train_accuracy": {"adversarial": 0.6}, "val_accuracy": {"clean": 0.7}}])
    assert text.splitlines() == ["epoch,train_accuracy.adversarial,val_accuracy.clean", "1,0.5,", "2,0.6,0.7"]
