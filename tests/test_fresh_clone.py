"""benchmarks/fresh_clone.sh's argument handling: it never replaces an earlier measurement (the
full run, a clone plus `make quickstart`, is a benchmark, not a test)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "fresh_clone.sh"


def test_an_existing_result_file_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "earlier.json"
    out.write_text('{"wall_seconds": 1}')
    missing_repo = tmp_path / "no-such-repo"  # cloning it would fail: the refusal must come first
    run = subprocess.run(["bash", str(SCRIPT), str(missing_repo), str(out)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "earlier measurement" in run.stderr and str(out) in run.stderr
    assert out.read_text() == '{"wall_seconds": 1}'


def test_a_relative_output_is_resolved_against_the_callers_folder(tmp_path):
    (tmp_path / "here.json").write_text("{}")
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "no-such-repo"), "here.json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and str(tmp_path / "here.json") in run.stderr


def test_an_unknown_make_target_is_refused(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "no-such-repo"), str(tmp_path / "new.json")],
                         env={"PATH": "/usr/bin:/bin", "TARGET": "test"}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "TARGET must be quickstart or quickstart-long" in run.stderr
    assert not (tmp_path / "new.json").exists()
