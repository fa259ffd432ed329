import json
import os

import pytest

import binprune
from binprune.cli import main
from binprune.experiments.compare import compare, list_presets, resolve_preset
from binprune.methods import Method, Phase, list_methods, register_method, unregister_method
from binprune.results import ComparisonRow

from .conftest import requires_fashion_mnist

# One method of each kind; the "tiny" preset has a 2-stage network and a cut-down AutoAttack.
SMOKE_METHODS = ["at-binary-small", "hydra-binary", "hydra-fp", "atmc-binary", "binprune-p0.1"]
SMOKE_OVERRIDES = ["--train-examples", "128", "--test-examples", "8"]


def test_presets_and_methods_are_consistent():
    for name in list_presets(include_hidden=True):
        assert set(resolve_preset(name).methods) <= set(list_methods())
    for name in ("fmnist-cpu", "cifar10-cpu", "cifar10-gpu"):
        p = resolve_preset(name)
        assert p.sparsity == 0.99 and p.autoattack_options is None  # standard AutoAttack
    assert resolve_preset("cifar10-gpu").attack == "pgd" and resolve_preset("cifar10-gpu").epochs >= 100
    assert resolve_preset("tiny", {"epochs": 3}).epochs == 3
    with pytest.raises(ValueError, match="only epochs"):
        resolve_preset("tiny", {"lr": 1.0})


@pytest.mark.slow
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
    assert row["label"] == "HYDRA (binary), uniform" and row["sparsity"] > 0.9 and row["stored_bytes"] > 0
    assert set(row["accuracy"]) == {"clean", "pgd", "autoattack"}
    # HYDRA's 100 / 20 / 100 split of the one-epoch budget
    assert [p["name"] for p in row["phases"]] == ["hydra-pretrain-trades-e0.4545", "hydra-prune-uniform-trades-e0.09091",
                                                  "hydra-ft-binary-uniform-trades-e0.4545"]
    assert "| HYDRA (binary), uniform | uniform | binary |" in (out / "table.md").read_text()
    assert any(n.startswith("Budget: equal") for n in table["notes"])
    import csv

    with open(out / "table.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))  # the same table as CSV, beside table.md
    assert [r["method"] for r in csv_rows] == SMOKE_METHODS[:2]
    assert float(csv_rows[1]["pgd"]) == row["accuracy"]["pgd"] and float(csv_rows[1]["sparsity"]) == row["sparsity"]
    finished = {m: os.stat(out / "methods" / f"{m}.json").st_mtime_ns for m in SMOKE_METHODS[:2]}
    capsys.readouterr()

    # Re-run with more methods: finished ones are skipped, shared phases reused, new ones added.
    assert main([*args, "--methods", *SMOKE_METHODS]) == 0
    log = capsys.readouterr().out
    assert "at-binary-small: finished earlier, skipped" in log and "hydra-binary: finished earlier, skipped" in log
    assert "phase hydra-pretrain-trades-e0.4545: done" in log  # HYDRA (FP) reuses the shared phases
    assert "phase hydra-prune-uniform-trades-e0.09091: done" in log
    assert {m: os.stat(out / "methods" / f"{m}.json").st_mtime_ns for m in SMOKE_METHODS[:2]} == finished
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == SMOKE_METHODS
    atmc = table["rows"][3]
    assert atmc["sparsity"] >= 0.99 - 1e-9
    assert not table["pending_methods"]

    # Other settings in the same folder are refused.
    with pytest.raises(ValueError, match="different settings"):
        compare("tiny", out, methods=["at-fp"], overrides={"epochs": 2, "train_examples": 128, "test_examples": 8},
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


def test_resolve_preset_reads_the_yaml_presets_and_overrides():
    tiny = resolve_preset("tiny")
    assert tiny.name == "tiny" and tiny.test_examples == 16 and tiny.autoattack_options is not None
    assert "tiny" not in list_presets() and "tiny" in list_presets(include_hidden=True)
    assert resolve_preset(tiny, {"test_examples": 4, "epochs": None}).test_examples == 4
    assert tiny.test_examples == 16  # the config given is not modified
    with pytest.warns(DeprecationWarning, match="eval_examples"):
        assert resolve_preset("tiny", {"eval_examples": 5}).test_examples == 5
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        resolve_preset("tiny", {"epochs": 0})
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        resolve_preset("nope")


def test_cifar10_without_a_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data_dir.*--data-dir"):
        compare("cifar10-cpu", tmp_path / "c", methods=["at-fp"], progress=False, log=lambda line: None)


class _UniformMasks(Method):
    """A user's method: a binprune supermask at 90% sparsity, uniform allocation."""

    label, strategy, precision = "user masks (uniform, 90%)", "uniform", "binary"

    def phases(self, ctx):
        def build(base):
            return binprune.convert_to_binary_supermask(base, sparsity=0.9, allocation="uniform", seed=ctx.config.seed)

        return [Phase("user-uniform-0.9", start=ctx.base_model, build=build, lr=ctx.config.lr)]


@pytest.mark.slow
@requires_fashion_mnist
def test_a_user_registered_method_runs_in_compare(tmp_path):
    register_method("user-uniform-0.9")(_UniformMasks)
    try:
        table = compare("tiny", tmp_path / "u", methods=["user-uniform-0.9", "binprune-p1.0"], device="cpu",
                        overrides={"train_examples": 128, "test_examples": 8}, progress=False, log=lambda line: None)
    finally:
        unregister_method("user-uniform-0.9")
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ["user-uniform-0.9", "binprune-p1.0"]
    mine = rows["user-uniform-0.9"]
    assert mine["label"] == "user masks (uniform, 90%)" and mine["strategy"] == "uniform"
    assert mine["sparsity"] == pytest.approx(0.9, abs=0.01) and rows["binprune-p1.0"]["sparsity"] > 0.98
    assert mine["stored_bytes"] > 0 and [p["name"] for p in mine["phases"]] == ["user-uniform-0.9"]
    assert set(mine["accuracy"]) == {"clean", "pgd", "autoattack"}
    assert "| user masks (uniform, 90%) | uniform | binary |" in (tmp_path / "u" / "table.md").read_text()
    saved = json.loads((tmp_path / "u" / "methods" / "user-uniform-0.9.json").read_text())
    assert saved["size"]["formula"].startswith("size of the packed .bpk file")
    assert saved["row"] == ComparisonRow.from_dict(saved["row"]).to_dict()


@requires_fashion_mnist
def test_a_killed_evaluation_resumes_from_its_saved_chunks(tmp_path):
    import dataclasses

    config = dataclasses.replace(resolve_preset("tiny", {"train_examples": 128, "test_examples": 8}), eval_chunk=3)
    assert config.protocol()["eval_chunk"] == 3 and "eval_chunk" not in resolve_preset("tiny").protocol()
    out = tmp_path / "c"
    lines: list[str] = []
    compare(config, out, methods=["at-binary-small"], device="cpu", progress=False, log=lines.append)
    chunks = sorted(p.name for p in (out / "evaluations" / "at-binary-small").glob("chunk-*.json"))
    assert len(chunks) == 3  # 3 + 3 + 2 test images
    first = json.loads((out / "methods" / "at-binary-small.json").read_text())
    assert first["evaluation"]["settings"]["chunk_examples"] == 3
    assert any("evaluated in chunks of 3" in n for n in json.loads((out / "table.json").read_text())["notes"])
    # killed after two chunks: the method's result and the last chunk are missing
    (out / "methods" / "at-binary-small.json").unlink()
    (out / "evaluations" / "at-binary-small" / chunks[-1]).unlink()
    lines.clear()
    compare(config, out, methods=["at-binary-small"], device="cpu", progress=False, log=lines.append)
    assert any("chunks [[0, 3], [3, 6]] reused" in line for line in lines)
    again = json.loads((out / "methods" / "at-binary-small.json").read_text())
    assert again["row"]["accuracy"] == first["row"]["accuracy"]
    for attack, result in first["evaluation"]["attacks"].items():
        assert again["evaluation"]["attacks"][attack]["robust_flags"] == result["robust_flags"]
