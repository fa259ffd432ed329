"""The install scenarios of scripts/install_matrix.py: a fresh environment, one with timm 1.0.20,
and one with robustbench and AutoAttack installed from their sources. Each keeps every package it
had (version and files) and binprune works in it; robustbench's extra next to timm 1.0.20 is
refused by scripts/install.sh instead of downgrading timm. Needs pip and PyPI the first time
(wheels are cached in .cache/install-matrix)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_install_scenarios_change_nothing_the_user_had(tmp_path):
    pytest.importorskip("packaging")
    out = tmp_path / "matrix.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_matrix.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=1800)
    if not out.exists():
        pytest.fail(f"the install matrix did not finish:\n{run.stderr[-3000:]}")
    report = json.loads(out.read_text())
    problems = {s["scenario"]: s["problems"] for s in report["scenarios"]}
    assert report["passed"], problems
    by_name = {s["scenario"]: s for s in report["scenarios"]}
    assert set(by_name) == {"fresh", "timm", "source"}
    assert by_name["timm"]["user_packages"]["timm"] == "1.0.20"
    assert by_name["timm"]["robustbench_extra"]["exit"] == 1
    source = by_name["source"]["works"]["robustbench"]
    assert source["zoo_model"] == "WideResNet" and source["autoattack"]["package"] == "autoattack"
    for scenario in by_name.values():
        assert scenario["works"]["doctor_exit"] == 0 and 0 <= scenario["works"]["accuracy"]["clean"] <= 1
        assert not any(name.startswith(("torchattacks", "requests", "urllib3")) for name in scenario["added"])
