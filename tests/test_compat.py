import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from binprune import compat

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_robustbench_parts_import_without_aliasing_anything():
    """binprune uses robustbench's model zoo without leaving an `autoattack` alias or a half-imported
    robustbench in sys.modules: the user's own `import robustbench` behaves as without binprune."""
    code = """
import json, sys
def user_import():
    try:
        import robustbench  # noqa: F401
        return "ok"
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc).splitlines()[0]
if sys.argv[-1] == "with-binprune":
    from binprune import compat
    parts = compat.robustbench_modules()
    zoo = parts.model_zoo.model_dicts[parts.enums.BenchmarkDataset.cifar_10][parts.enums.ThreatModel.Linf]
    left = sorted(k for k in sys.modules if k == "autoattack" or k.startswith(("autoattack.", "robustbench")))
    print(json.dumps({"left": left if not compat.robustbench_autoattack()["robustbench_eval_imports"] else [],
                      "standard": "Standard" in zoo}))
print(json.dumps({"user": user_import()}))
"""
    without = subprocess.run([sys.executable, "-c", code, "plain"], capture_output=True, text=True, timeout=300)
    with_bp = subprocess.run([sys.executable, "-c", code, "with-binprune"], capture_output=True, text=True,
                             cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert with_bp.returncode == 0, with_bp.stderr
    lines = [json.loads(line) for line in with_bp.stdout.splitlines()]
    assert lines[0] == {"left": [], "standard": True}
    assert lines[1]["user"] == json.loads(without.stdout.splitlines()[-1])["user"]


def test_robustbench_from_its_repository_is_accepted(monkeypatch):
    """robustbench installed as its README says (from the repository) reports version 1.1."""
    dist = importlib.metadata.distribution("robustbench")

    class SourceDist:
        version = "1.1"
        files = dist.files

        @staticmethod
        def locate_file(f):
            return dist.locate_file(f)

    monkeypatch.setattr(compat.metadata, "distribution", lambda name: SourceDist)
    assert compat.check_robustbench_files() == []
    SourceDist.version = "1.0"
    with pytest.raises(compat.RobustBenchInstallError, match="1.0 is installed"):
        compat.check_robustbench_files()


def test_git_autoattack_with_and_without_state_is_recognized(tmp_path, monkeypatch):
    """A git AutoAttack older than Nov 2022 (no autoattack.state) is reported, and robustbench's
    parts still load (isolated import) instead of failing."""
    package = tmp_path / "autoattack"
    package.mkdir()
    (package / "__init__.py").write_text("from .autoattack import AutoAttack\n")
    (package / "autoattack.py").write_text("class AutoAttack:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = compat.robustbench_autoattack()
    assert info["package"] == "autoattack" and not info["has_state"] and not info["robustbench_eval_imports"]
    with pytest.raises(compat.RobustBenchInstallError, match="no autoattack.state"):
        compat.import_robustbench()
    (package / "state.py").write_text("class EvaluationState:\n    pass\n")
    assert compat.robustbench_autoattack()["robustbench_eval_imports"]


def test_overwritten_robustbench_file_is_detected(monkeypatch, tmp_path):
    dist = importlib.metadata.distribution("robustbench")
    target = next(f for f in dist.files if str(f) == "robustbench/utils.py")
    fake_root = tmp_path / "site"
    (fake_root / "robustbench").mkdir(parents=True)
    for f in dist.files:
        if str(f).startswith("robustbench/") and str(f).endswith(".py"):
            dest = fake_root / str(f)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(dist.locate_file(f)).read_bytes())
    (fake_root / str(target)).write_text("# a stale copy\n")

    class FakeDist:
        version = dist.version
        files = dist.files

        @staticmethod
        def locate_file(f):
            return fake_root / str(f)

    monkeypatch.setattr(compat.metadata, "distribution", lambda name: FakeDist)
    monkeypatch.setattr(compat.metadata, "version", lambda name: FakeDist.version)
    assert compat.check_robustbench_files() == ["robustbench/utils.py"]
    with pytest.raises(compat.RobustBenchInstallError, match="force-reinstall"):
        compat.robustbench_modules()
