import json
import os

import pytest

from binprune.baselines.compare import METHODS, PRESETS, compare, resolve_preset
from binprune.cli import main

from .conftest import requires_fashion_mnist

# One method of each kind; the "tiny" preset has a 2-stage network and a cut-down AutoAttack.
SMOKE_METHODS = ["at-binary-small", "hydra-binary", "atmc-binary", "binprune-p0.1"]
SMOKE_OVERRIDES = ["--train-examples", "128", "--eval-examples", "8"]


def test_presets_and_methods_are_consistent():
    for preset in PRESETS.values():
        assert set(preset.methods) <= set(METHODS)
    for name in ("fmnist-cpu", "cifar10-cpu", "cifar10-gpu"):
        p = PRESETS[name]
        assert p.sparsity == 0.99 and p.autoattack_options is None  # standard AutoAttack
    assert PRESETS["cifar10-gpu"].attack == "pgd" and PRESETS["cifar10-gpu"].epochs >= 100
    assert resolve_preset("tiny", {"epochs": 3}).epochs == 3
    with pytest.raises(ValueError, match="only epochs"):
        resolve_preset("tiny", {"lr": 1.0})


@requires_fashion_mnist
def test_compare_writes_the_table_and_skips_finished_methods(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--preset", "tiny", "--out", str(out), "--device", "cpu", "--no-progress", *SMOKE_OVERRIDES]
    assert main([*args, "--methods", *SMOKE_METHODS[:2]]) == 0
    for name in ("table.json", "table.md", "table.png"):
        assert (out / name).is_file()
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == SMOKE_METHODS[:2]
    row = table["rows"][1]
    assert row["label"] == "HYDRA (binary)" and row["sparsity"] > 0.9 and row["stored_bytes"] > 0
    assert set(row["accuracy"]) == {"clean", "pgd", "autoattack"}
    assert [p["name"] for p in row["phases"]] == ["dense-fp", "hydra-prune-uniform", "hydra-ft-binary-uniform"]
    assert "| HYDRA (binary) | uniform | binary |" in (out / "table.md").read_text()
    finished = {m: os.stat(out / "methods" / f"{m}.json").st_mtime_ns for m in SMOKE_METHODS[:2]}
    capsys.readouterr()

    # Re-run with more methods: finished ones are skipped, shared phases reused, new ones added.
    assert main([*args, "--methods", *SMOKE_METHODS]) == 0
    log = capsys.readouterr().out
    assert "at-binary-small: finished earlier, skipped" in log and "hydra-binary: finished earlier, skipped" in log
    assert "phase dense-fp: done" in log  # ATMC starts from the shared pre-trained model
    assert {m: os.stat(out / "methods" / f"{m}.json").st_mtime_ns for m in SMOKE_METHODS[:2]} == finished
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == SMOKE_METHODS
    atmc = table["rows"][2]
    assert atmc["sparsity"] >= 0.99 - 1e-9
    assert not table["pending_methods"]

    # Other settings in the same folder are refused.
    with pytest.raises(ValueError, match="different settings"):
        compare("tiny", out, methods=["at-fp"], overrides={"epochs": 2, "train_examples": 128, "eval_examples": 8},
                progress=False, log=lambda line: None)


@pytest.mark.parametrize("extra, message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "tiny", "--methods", "at-fp", "magic"], "unknown method(s) magic"),
])
def test_compare_cli_errors_exit_2_with_one_line(tmp_path, capsys, extra, message):
    assert main(["compare", "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("binprune: error:") and message in err
    assert not (tmp_path / "x").exists()
