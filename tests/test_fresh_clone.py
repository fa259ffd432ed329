"""benchmarks/fresh_clone.sh's argument handling (it never replaces an earlier measurement) and the
make target it runs (the full run, a clone plus `make quickstart`, is a benchmark, not a test)."""

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


def test_make_quickstart_long_trains_its_preset_with_the_extra_options():
    """`make quickstart-long ARGS=...` (what fresh_clone.sh runs) trains the quickstart-long preset
    into runs/quickstart-long, resuming there, with the options passed on."""
    run = subprocess.run(["make", "-n", "quickstart-long", "ARGS=--amp bf16"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    (train,) = [line for line in run.stdout.splitlines() if "binprune train" in line]
    assert "--preset quickstart-long --out runs/quickstart-long --amp bf16" in train
    assert "runs/quickstart-long/last.pt" in train and "--resume" in train
