"""Files written by binprune 0.1 (checkpoint format version 1) still load and compute the same
outputs, and renamed public names keep working for one release with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import binprune
from binprune.config import TrainConfig
from binprune.training import resolve_train_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURES / "v1_expected_outputs.pt", weights_only=True)


@pytest.mark.parametrize("name, key", [("v1_supermask.pt", "supermask"), ("v1_supermask.bpk", "supermask"),
                                       ("v1_binary_weights.pt", "binary_weights"), ("v1_hydra.pt", "hydra")])
def test_version_1_files_load_with_the_same_outputs(name, key, expected):
    model = binprune.load_model(FIXTURES / name)
    with torch.no_grad():
        out = model(expected["input"])
    assert torch.allclose(out, expected[key], atol=1e-6), (out - expected[key]).abs().max()


def test_a_version_1_model_keeps_its_spec_through_a_new_checkpoint(tmp_path):
    model = binprune.load_model(FIXTURES / "v1_supermask.pt")
    spec = binprune.model_spec(model)
    assert spec["transform"]["name"] == "supermask" and spec["recipe"]["arch"] == "small_cnn"
    binprune.save_checkpoint(tmp_path / "again.pt", torch.nn.Sequential(model))  # a wrapper keeps the spec
    again = binprune.load_model(tmp_path / "again.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(again(x), model(x))


def test_renamed_train_settings_warn_once_and_still_work():
    import binprune.training.api as api

    api._warned.clear()  # noqa: SLF001 (test isolation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = resolve_train_config(None, {"eps": 0.1, "epochs": 1, "steps": 3, "val_steps": 2})
        resolve_train_config(None, {"eps": 0.1, "epochs": 1, "steps": 3})
    assert first == TrainConfig(eps=0.1, epochs=1, attack_steps=3, val_pgd_steps=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert sum("steps=" in m and "val_steps" not in m for m in messages) == 1
    assert sum("val_steps" in m for m in messages) == 1
    with pytest.raises(TypeError, match="unknown setting"):
        resolve_train_config(None, {"eps": 0.1, "epochs": 1, "epoch": 3})


@pytest.mark.parametrize("module, name", [("binprune.sanity", "sanity_checks"),
                                          ("binprune.leaderboard", "run_robustbench_protocol")])
def test_moved_modules_keep_a_deprecated_alias(module, name):
    import importlib
    import sys

    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        alias = importlib.import_module(module)
    assert getattr(alias, name) is getattr(binprune.evaluation, name)
