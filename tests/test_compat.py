import importlib.metadata
import sys
from pathlib import Path

import pytest

from binprune import compat


@pytest.mark.slow
def test_robustbench_is_the_real_1_1_1_package():
    assert compat.check_robustbench_files() == []
    robustbench = compat.import_robustbench()
    import robustbench.model_zoo as model_zoo
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    assert importlib.metadata.version("robustbench") == "1.1.1"
    assert Path(model_zoo.__file__).parent.parent == Path(robustbench.__file__).parent
    assert "Standard" in model_zoo.model_dicts[model_zoo.enums.BenchmarkDataset.cifar_10][
        model_zoo.enums.ThreatModel.Linf]
    assert WideResNet(depth=28, widen_factor=1).fc.out_features == 10
    import robustbench.eval  # imports `autoattack`, provided by pyautoattack

    assert sys.modules["autoattack"].AutoAttack is robustbench.eval.AutoAttack


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
    assert compat.check_robustbench_files() == ["robustbench/utils.py"]
    with pytest.raises(compat.RobustBenchInstallError, match="force-reinstall"):
        compat.import_robustbench()
