"""The comparison protocol: headline rows, seeds, width sweeps, parallel workers."""

import dataclasses
import json
import shutil

import pytest

from binprune.cli import main
from binprune.config import CompareConfig
from binprune.experiments.compare import compare, resolve_preset, table_statistics
from binprune.experiments.protocol import (evaluation_attacks, seed_markdown, seed_summary, table_attacks,
                                          width_paired_tests)
from binprune.experiments.sweeps import scaled_widths
from tests.conftest import requires_fashion_mnist


def test_presets_name_their_headline_rows_and_enough_balanced_test_images():
    fmnist, cifar, width = resolve_preset("fmnist-cpu"), resolve_preset("cifar10-cpu"), resolve_preset("fmnist-width")
    headline = ("binprune-p0.1", "hydra-binary-p0.1", "at-binary-small", "at-fp")
    assert fmnist.headline_methods == headline and cifar.headline_methods == headline
    assert fmnist.test_examples >= 1000 and cifar.test_examples >= 500
    assert fmnist.eval_order == cifar.eval_order == width.eval_order == "balanced"
    assert len(fmnist.seeds) == 2 and fmnist.seed not in fmnist.seeds
    assert width.sparsity == 0.99 and len(width.width_factors) >= 2
    assert set(width.methods) == set(width.headline_methods) == {"binprune-p0.1", "hydra-binary-p0.1", "at-binary-small"}
    assert evaluation_attacks(fmnist, "at-fp") == ("clean", "pgd", "autoattack-apgd", "autoattack")
    assert evaluation_attacks(fmnist, "rst") == ("clean", "pgd", "autoattack-apgd")
    assert evaluation_attacks(resolve_preset("tiny"), "rst") == ("clean", "pgd", "autoattack")


def test_later_settings_leave_the_protocol_of_earlier_folders_unchanged():
    config = CompareConfig(name="x")
    assert not {"headline_methods", "seeds", "data_seed", "width_factors", "workers"} & set(config.protocol())
    assert dataclasses.replace(config, seeds=(1,)).protocol()["seeds"] == [1]
    for bad in ({"seeds": (0,)}, {"width_factors": (0,)}, {"workers": 0}, {"data_seed": -1}):
        with pytest.raises(ValueError):
            dataclasses.replace(config, **bad).validate()


def test_paired_tests_use_only_the_attacks_both_rows_ran():
    rows = [{"method": "binprune-p0.1", "accuracy": {"clean": .5, "pgd": .4, "autoattack-apgd": .3, "autoattack": .3}},
            {"method": "rst", "accuracy": {"clean": .5, "pgd": .2, "autoattack-apgd": .1}}]
    flags = {"binprune-p0.1": {"pgd": [1] * 8 + [0] * 2, "autoattack-apgd": [1] * 6 + [0] * 4},
             "rst": {"pgd": [0] * 10, "autoattack-apgd": [0] * 10}}
    stats = table_statistics(rows, flags)
    assert [c["attack"] for c in stats["comparisons"]] == ["pgd", "autoattack-apgd"]
    assert stats["comparisons"][0]["reference_only_robust"] == 8
    assert table_attacks(rows) == ("clean", "pgd", "autoattack-apgd", "autoattack")


def test_seed_summary_gives_mean_and_sample_spread():
    tables = [{"rows": [{"method": "m", "label": "M", "accuracy": {"clean": c, "autoattack": a}}]}
              for c, a in ((0.5, 0.2), (0.6, 0.3), (0.7, 0.4))]
    summary = seed_summary([0, 1, 2], tables, ["m", "absent"])
    aa = summary["methods"]["m"]["accuracy"]["autoattack"]
    assert aa["mean"] == pytest.approx(0.3) and aa["sd"] == pytest.approx(0.1) and aa["seeds"] == [0, 1, 2]
    assert "absent" not in summary["methods"]
    assert any("0.3000 ± 0.1000" in line for line in seed_markdown(summary))


def test_width_paired_tests_compare_each_width_with_the_widest_and_correct_together():
    rows = [{"method": m, "label": m.upper(), "width_factor": f} for m in ("a", "b") for f in (0.5, 1, 0.75)]
    wide = [1] * 40 + [0] * 10
    flags = {("a", 1): wide, ("a", 0.75): [1] * 38 + [0] * 12, ("a", 0.5): [0] * 30 + [1] * 10 + [0] * 10,
             ("b", 1): wide, ("b", 0.75): wide, ("b", 0.5): None}
    paired = width_paired_tests(rows, flags)
    by = {(c["method"], c["width_factor"]): c for c in paired["comparisons"]}
    assert set(by) == {("a", 0.5), ("a", 0.75), ("b", 0.5), ("b", 0.75)}
    assert all(c["reference_width_factor"] == 1 for c in by.values())
    far = by[("a", 0.5)]  # 30 images robust only at x1, none only at x0.5: p = 2 * 0.5**30
    assert (far["narrower_only_robust"], far["wider_only_robust"]) == (0, 30)
    assert far["wider_minus_narrower"] == pytest.approx(0.6)
    assert far["p_value"] == pytest.approx(2 * 0.5 ** 30) and far["p_holm"] == pytest.approx(3 * far["p_value"])
    assert far["significant"] is True
    near = by[("a", 0.75)]  # 2 discordant images: not a finding
    assert near["wider_only_robust"] == 2 and near["significant"] is False
    assert by[("b", 0.75)]["p_value"] == 1.0 and by[("b", 0.5)]["p_value"] is None and paired["n_tested"] == 3
    assert "n/a" in by[("b", 0.5)]["note"]


@pytest.mark.slow
@requires_fashion_mnist
def test_parallel_workers_give_the_serial_results_and_seeds_are_summarized(tmp_path):
    config = dataclasses.replace(resolve_preset("tiny"), headline_methods=("binprune-p0.1",))
    methods = ["at-binary-small", "binprune-p0.1"]
    lines = []
    serial = compare(dataclasses.replace(config, seeds=(1,)), tmp_path / "serial", methods=methods, progress=False,
                     log=lines.append)
    started = [line.split("]")[1].split(":")[0].strip() for line in lines if line.startswith("[")]
    assert started[:2] == ["binprune-p0.1", "at-binary-small"]  # the headline row runs first
    assert [r["method"] for r in serial["rows"]] == methods  # the table keeps the given order
    compare(config, tmp_path / "parallel", methods=methods, progress=False, log=lambda line: None, workers=2)
    for name in methods:
        a, b = (json.loads((tmp_path / run / "methods" / f"{name}.json").read_text()) for run in ("serial", "parallel"))
        assert a["row"]["accuracy"] == b["row"]["accuracy"]
        assert {k: v["robust_flags"] for k, v in a["evaluation"]["attacks"].items()} == \
               {k: v["robust_flags"] for k, v in b["evaluation"]["attacks"].items()}
    summary = serial["seed_summary"]["methods"]
    assert list(summary) == ["binprune-p0.1"]
    # the extra seed runs the APGD pair, not AutoAttack standard (the main seed runs both)
    assert summary["binprune-p0.1"]["accuracy"]["autoattack-apgd"]["seeds"] == [0, 1]
    assert summary["binprune-p0.1"]["accuracy"]["autoattack"]["seeds"] == [0]
    seed_table = (tmp_path / "serial" / "table.md").read_text().split("Training seeds")[1]
    assert "APGD-CE + APGD-T" in seed_table.splitlines()[2] and "AutoAttack |" not in seed_table.splitlines()[2]
    assert (tmp_path / "serial" / "seeds" / "seed-1" / "methods" / "binprune-p0.1.json").is_file()
    assert "autoattack" not in serial["rows"][0]["accuracy"] and "autoattack" in serial["rows"][1]["accuracy"]


@pytest.mark.slow
@requires_fashion_mnist
def test_the_width_sweep_writes_its_table_and_plot(tmp_path):
    out = tmp_path / "w"
    assert main(["compare", "--preset", "tiny-width", "--out", str(out), "--no-progress"]) == 0
    table = json.loads((out / "widths.json").read_text())
    assert table["width_factors"] == [1, 2] and table["widths"] == {"1": [4, 8], "2": [8, 16]}
    assert len(table["rows"]) == 4 and {r["width_factor"] for r in table["rows"]} == {1, 2}
    assert all(r["interval95"] is not None for r in table["rows"])
    assert table["paired"]["n_tested"] == 2  # each method at x1 against itself at x2, from the saved flags
    assert {(c["method"], c["width_factor"], c["reference_width_factor"]) for c in table["paired"]["comparisons"]} \
        == {("binprune-p0.1", 1, 2), ("at-binary-small", 1, 2)}
    assert "x1 vs x2" in (out / "widths.md").read_text()
    assert (out / "widths.png").stat().st_size > 0 and "| binprune" in (out / "widths.md").read_text()
    assert (out / "width-x2" / "methods" / "binprune-p0.1.json").is_file()


@pytest.mark.slow
@requires_fashion_mnist
def test_reuse_copies_finished_rows_only_under_the_same_settings(tmp_path):
    config = resolve_preset("tiny")
    compare(config, tmp_path / "a", methods=["binprune-p0.1"], progress=False, log=lambda line: None)
    lines = []
    other = dataclasses.replace(config, name="another-name")  # names do not change numbers
    compare(other, tmp_path / "b", methods=["binprune-p0.1"], progress=False, log=lines.append,
            reuse_from=tmp_path / "a")
    a, b = (json.loads((tmp_path / d / "methods" / "binprune-p0.1.json").read_text()) for d in "ab")
    assert b.pop("reused_from").endswith("binprune-p0.1.json") and a == b
    assert any("reused the finished result" in line for line in lines)
    assert not (tmp_path / "b" / "phases").exists()  # nothing trained
    lines.clear()
    compare(dataclasses.replace(config, epochs=config.epochs + 1), tmp_path / "c", methods=["binprune-p0.1"],
            progress=False, log=lines.append, reuse_from=tmp_path / "a")
    assert any("nothing reused" in line and "epochs" in line for line in lines)
    assert "reused_from" not in json.loads((tmp_path / "c" / "methods" / "binprune-p0.1.json").read_text())
    lines.clear()
    a_data = json.loads((tmp_path / "a" / "table.json").read_text())["data"]["data_dir"]
    shutil.copytree(a_data, tmp_path / "elsewhere")  # the same files in another folder: not known to be the same
    compare(config, tmp_path / "e", methods=["binprune-p0.1"], progress=False, log=lines.append,
            reuse_from=tmp_path / "a", data_dir=str(tmp_path / "elsewhere"))
    assert any("nothing reused" in line and "data" in line for line in lines)
    with pytest.raises(ValueError, match="not a comparison folder"):
        compare(config, tmp_path / "d", methods=["binprune-p0.1"], progress=False, log=lambda line: None,
                reuse_from=tmp_path / "c" / "methods")


def test_the_width_sweeps_1x_column_can_reuse_the_fmnist_table():
    """scripts/regenerate_tables.sh passes --reuse-from compare-fmnist-cpu to the width sweep: its
    1x column must have fmnist-cpu's result-changing settings, or it would be trained again."""
    from binprune.experiments.compare import _REUSE_IGNORED

    fmnist, width = resolve_preset("fmnist-cpu"), resolve_preset("fmnist-width")
    assert 1 in width.width_factors
    one = dataclasses.replace(width, arch_kwargs={**width.arch_kwargs, "widths": scaled_widths(width, 1)},
                              width_factors=())
    ours, theirs = one.protocol(), fmnist.protocol()
    assert {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)} <= set(_REUSE_IGNORED)
    assert all(evaluation_attacks(one, m) == evaluation_attacks(fmnist, m) for m in width.methods)
