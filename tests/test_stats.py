"""binprune.stats against hand-computed and published values, and the statistics in results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from binprune.results import AttackResult, ComparisonRow, EvalReport, git_commit
from binprune.stats import exact_mcnemar, holm, wilson_interval


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


@pytest.mark.parametrize("k, n, expected", [
    # 0/10 and 10/10: the closed forms [0, z^2/(n+z^2)] and [n/(n+z^2), 1]
    (0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0)),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score without correction)
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval_published_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_interval_formula_and_edges():
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    for k, n in [(3, 7), (117, 200), (1, 1000)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n))
    low99, high99 = wilson_interval(5, 10, confidence=0.99)
    assert low99 < 0.2366 and high99 > 0.7634  # wider at higher confidence
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.5)


def test_exact_mcnemar_hand_computed():
    # b = 0, c = 6: p = 2 * 0.5**6
    result = exact_mcnemar([0] * 6 + [1] * 4, [1] * 10)
    assert result == {"b": 0, "c": 6, "n": 10, "p_value": 0.03125}
    # b = 1, c = 5: p = 2 * (C(6,0) + C(6,1)) / 2**6 = 14/64
    a = [1, 0, 0, 0, 0, 0, 1, 0]
    b = [0, 1, 1, 1, 1, 1, 1, 0]
    assert exact_mcnemar(a, b)["p_value"] == pytest.approx(14 / 64)
    assert exact_mcnemar(b, a)["p_value"] == pytest.approx(14 / 64)  # symmetric
    # no discordant pair: p = 1; b == c: p capped at 1
    assert exact_mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0
    assert exact_mcnemar([1, 0], [0, 1])["p_value"] == 1.0


def test_exact_mcnemar_accepts_tensors_and_arrays_and_large_n():
    a = torch.tensor([True] * 30 + [False] * 70)
    b = np.array([0] * 30 + [1] * 70)
    result = exact_mcnemar(a, b)
    assert result["b"] == 30 and result["c"] == 70
    assert result["p_value"] == pytest.approx(2 * sum(math.comb(100, i) for i in range(31)) / 2 ** 100)
    big = np.arange(20000) % 2 == 0
    assert 0.99 < exact_mcnemar(big, ~big)["p_value"] <= 1.0  # b = c = 10,000: no overflow, p = 1
    with pytest.raises(ValueError, match="same examples"):
        exact_mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        exact_mcnemar([2, 0], [1, 0])


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    result = holm([0.01, 0.04, 0.03, 0.005])
    assert result["adjusted"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert result["reject"] == [True, False, False, True] and result["alpha"] == 0.05
    assert holm([0.5, 0.9])["adjusted"] == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == {"adjusted": [], "reject": [], "alpha": 0.05}
    assert holm([0.02], alpha=0.01)["reject"] == [False]


def test_results_carry_intervals_flags_and_the_commit():
    robust = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    result = AttackResult("pgd", 0.5, 10, 1.0, {"steps": 20}, robust=robust)
    d = result.to_dict()
    assert d["interval95"] == [pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4)]
    assert d["robust_flags"] == [1] * 5 + [0] * 5 and d["steps"] == 20
    report = EvalReport({"pgd": result}, {"n_examples": 10}, versions={"torch": torch.__version__})
    out = report.to_dict()
    assert out["units"]["interval_method"] == "Wilson score, 95%"
    assert out["versions"]["torch"] == torch.__version__ and "git_commit" in out["versions"]
    commit = git_commit()
    assert commit["git_commit"] is None or len(commit["git_commit"]) == 40


def test_comparison_rows_round_trip_with_and_without_examples():
    fields = dict(method="m", label="M", strategy="s", precision="binary", sparsity=0.99, nonzero_weights=1,
                  total_weights=100, stored_bytes=10, accuracy={"clean": 0.5, "pgd": 0.3}, train_seconds=1.0,
                  eval_seconds=1.0)
    old = ComparisonRow(**fields)
    assert "interval95" not in old.to_dict() and ComparisonRow.from_dict(old.to_dict()) == old
    new = ComparisonRow(**fields, n_examples=10)
    d = new.to_dict()
    assert d["interval95"]["clean"] == [pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4)]
    assert ComparisonRow.from_dict(d).to_dict() == d


# --- compare: intervals and paired tests in the table ---------------------------------------------

def _row(method: str, label: str, accuracy: dict, n: int | None) -> dict:
    return ComparisonRow(method=method, label=label, strategy="s", precision="binary", sparsity=0.99,
                         nonzero_weights=1, total_weights=100, stored_bytes=10, accuracy=accuracy, train_seconds=1.0,
                         eval_seconds=1.0, n_examples=n).to_dict()


@pytest.mark.slow
def test_compare_table_reports_intervals_and_holm_corrected_mcnemar(tmp_path):
    import json

    from binprune.experiments.compare import write_table

    n = 40
    reference = {"pgd": [1] * 30 + [0] * 10, "autoattack": [1] * 25 + [0] * 15}
    worse = {"pgd": [1] * 10 + [0] * 30, "autoattack": [1] * 24 + [0] * 16}  # PGD: b = 0, c = 20
    flags = {"binprune-p0.1": reference, "hydra-binary": worse}
    rows = [_row("hydra-binary", "HYDRA (binary)", {"clean": 0.8, "pgd": 0.25, "autoattack": 0.6}, n),
            _row("binprune-p0.1", "binprune (binary, p=0.1, LBN)", {"clean": 0.9, "pgd": 0.75, "autoattack": 0.625}, n),
            _row("at-fp", "AT (FP)", {"clean": 0.9, "pgd": 0.7, "autoattack": 0.6}, None)]  # an older row: no flags
    table = write_table(tmp_path, {"preset": "test", "notes": [], "data": {"eval_class_counts": [4] * 10}}, rows,
                        flags)
    stats = table["statistics"]
    assert stats["reference"] == "binprune-p0.1" and stats["n_tested"] == 2 and stats["alpha"] == 0.05
    found = {(c["method"], c["attack"]): c for c in stats["comparisons"]}
    pgd = found[("hydra-binary", "pgd")]
    assert (pgd["method_only_robust"], pgd["reference_only_robust"]) == (0, 20)
    assert pgd["p_value"] == pytest.approx(2 * 0.5 ** 20)
    assert pgd["p_holm"] == pytest.approx(2 * 2 * 0.5 ** 20) and pgd["significant"] is True  # 2 tests: x2
    aa = found[("hydra-binary", "autoattack")]
    assert aa["p_value"] == 1.0 and aa["significant"] is False  # b = 0, c = 1
    assert found[("at-fp", "pgd")]["p_value"] is None and "n/a" in found[("at-fp", "pgd")]["note"]
    # every row has its intervals, the older one from the table's class counts
    old = next(r for r in table["rows"] if r["method"] == "at-fp")
    assert old["n_examples"] == 40 and old["interval95"]["pgd"] == [pytest.approx(v, abs=1e-6) for v in
                                                                    wilson_interval(28, 40)]
    md = (tmp_path / "table.md").read_text()
    assert "| HYDRA (binary) | s | binary |" in md
    assert "0.2500* [" in md and "| reference |" in md and "| n/a |" in md
    assert "exact McNemar" in md and "Holm" in md and "alpha = 0.05" in md
    assert json.loads((tmp_path / "table.json").read_text())["statistics"] == stats


def test_compare_table_without_any_flags_renders_n_a(tmp_path):
    from binprune.experiments.compare import write_table

    rows = [_row("binprune-p0.1", "binprune", {"clean": 0.5, "pgd": 0.4, "autoattack": 0.3}, 10),
            _row("rst", "RST", {"clean": 0.5, "pgd": 0.4, "autoattack": 0.3}, 10)]
    table = write_table(tmp_path, {"preset": "old", "notes": []}, rows)
    assert table["statistics"]["n_tested"] == 0
    md = (tmp_path / "table.md").read_text()
    assert "Paired tests against binprune: n/a" in md and "| RST | s | binary |" in md


def test_paired_verdicts_use_the_strongest_attack_and_name_the_winner(tmp_path):
    from binprune.experiments.compare import write_table

    n = 40
    reference = {"pgd": [1] * 30 + [0] * 10, "autoattack": [1] * 20 + [0] * 20}
    flags = {"binprune-p0.1": reference,
             # much worse under PGD, tied under AutoAttack: the AutoAttack verdict is the one reported
             "hydra-binary": {"pgd": [0] * 40, "autoattack": [1] * 19 + [0] * 21},
             "at-fp": {"pgd": [1] * 40, "autoattack": [1] * 40},  # robust on 20 more images
             "rst": {"pgd": [0] * 40}}  # no AutoAttack run: its PGD verdict
    rows = [_row("binprune-p0.1", "binprune", {"clean": 0.9, "pgd": 0.75, "autoattack": 0.5}, n),
            _row("hydra-binary", "HYDRA", {"clean": 0.8, "pgd": 0.0, "autoattack": 0.475}, n),
            _row("at-fp", "AT", {"clean": 0.9, "pgd": 1.0, "autoattack": 1.0}, n),
            _row("rst", "RST", {"clean": 0.1, "pgd": 0.0}, n)]
    table = write_table(tmp_path, {"preset": "test", "notes": []}, rows, flags)
    verdicts = {v["method"]: v for v in table["statistics"]["verdicts"]}
    assert (verdicts["hydra-binary"]["attack"], verdicts["hydra-binary"]["outcome"]) == \
           ("autoattack", "no significant difference")
    assert (verdicts["at-fp"]["attack"], verdicts["at-fp"]["outcome"]) == ("autoattack", "method more robust")
    assert verdicts["at-fp"]["accuracy_difference"] == pytest.approx(0.5)
    assert (verdicts["rst"]["attack"], verdicts["rst"]["outcome"]) == ("pgd", "reference more robust")
    md = (tmp_path / "table.md").read_text()
    assert "- AT, AutoAttack: **AT** more robust (+50.0 points" in md
    assert "- RST, PGD-20: **binprune** more robust (-75.0 points" in md
    assert "- HYDRA, AutoAttack: no significant difference (-2.5 points" in md
