"""benchmarks/paired_quickstart.py refuses, before any evaluation, an output that would replace an
earlier result and a folder without a finished training run (the evaluation itself is
binprune.evaluate, the test binprune.stats.exact_mcnemar, both tested on their own)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "paired_quickstart.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_an_existing_output_is_refused(tmp_path):
    out = tmp_path / "earlier.json"
    out.write_text("{}")
    run = _run(str(tmp_path), str(tmp_path), "--out", str(out))
    assert run.returncode == 2 and "exists (an earlier result)" in run.stderr
    assert out.read_text() == "{}"


def test_a_folder_without_a_finished_run_is_named(tmp_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "best.pt").write_bytes(b"")
    (finished / "metrics.json").write_text("{}")
    run = _run(str(finished), str(tmp_path / "unfinished"), "--out", str(tmp_path / "new.json"))
    assert run.returncode != 0
    assert "unfinished holds no finished training run" in run.stderr
    assert not (tmp_path / "new.json").exists()
