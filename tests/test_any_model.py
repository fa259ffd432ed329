"""Any model on the command line: torchvision:NAME, timm:NAME, robustbench:NAME and a user's own
factory, trained on tiny inputs, then evaluated, exported and inspected from the checkpoint alone."""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import binprune
from binprune.checkpoint import CheckpointError
from binprune.cli import main


def _image_folder(root: Path, n: int = 8, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def _train(tmp_path, arch, out, *extra):
    data = tmp_path / "data"
    if not data.exists():
        _image_folder(data)
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--arch", arch, "--epochs", "1",
            "--batch-size", "8", "--train-examples", "16", "--test-examples", "4", "--attack", "fast", "--eps", "0.01",
            "--val-fraction", "0", "--test-pgd-steps", "1", "--sparsity", "0.9", "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]
    assert main(args) == 0
    return out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["torchvision:resnet18", "timm:resnet18"])
def test_train_then_eval_export_inspect_a_library_model(tmp_path, arch, capsys):
    if arch.startswith("timm"):
        pytest.importorskip("timm")
    torch.set_num_threads(1)
    ckpt = _train(tmp_path, arch, tmp_path / "run")
    model = binprune.load_model(ckpt)  # no base model: the recipe names the library's model
    recipe = binprune.model_spec(model)["recipe"]
    assert recipe["arch"] == arch
    if arch.startswith("timm"):  # timm's own mean/std, not the data set's 0.5
        assert recipe["mean"] == pytest.approx([0.485, 0.456, 0.406]) and recipe["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert main(["eval", str(ckpt), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--eps", "0.01",
                 "--attacks", "clean,pgd", "--pgd-steps", "1", "--n-examples", "4", "--no-sanity-checks",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["accuracy"]["clean"] >= 0
    assert main(["export", str(ckpt), "-o", str(tmp_path / "m.bpk")]) == 0
    packed = binprune.load_model(tmp_path / "m.bpk")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
    assert main(["inspect", str(tmp_path / "m.bpk"), "--out", str(tmp_path / "inspect"), "--mask-images", "1"]) == 0
    assert (tmp_path / "inspect" / "analysis.json").is_file()


@pytest.mark.slow
def test_library_models_build_with_their_own_normalization():
    tv = binprune.create_model("torchvision:mnasnet0_5", num_classes=3, mean=[0.5] * 3, std=[0.25] * 3)
    assert tv.normalize.std.flatten().tolist() == [0.25] * 3 and tv.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    rb = binprune.create_model("robustbench:Standard", num_classes=10)
    assert type(rb.net).__name__ == "WideResNet" and rb.normalize.std.flatten().tolist() == [1.0] * 3
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet19'"):
        binprune.create_model("torchvision:resnet19")
    with pytest.raises(ValueError, match="3-channel"):
        binprune.create_model("torchvision:resnet18", in_channels=1)


@pytest.mark.slow
def test_a_user_factory_loads_only_when_named_again(tmp_path, monkeypatch, capsys):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        import torch
        CALLS = []
        def tiny(num_classes=10):
            CALLS.append(num_classes)
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from binprune.models import register_factory

    register_factory("userpkg.nets:tiny")  # what --arch userpkg.nets:tiny does
    model = binprune.convert_to_binary_supermask(
        binprune.create_model("userpkg.nets:tiny", num_classes=4, seed=0), sparsity=0.5, seed=0)
    binprune.save_checkpoint(tmp_path / "user.pt", model)
    # A fresh process: the checkpoint names the factory, but loading it does not import it ...
    code = (f"import sys, binprune; sys.path.insert(0, {str(tmp_path)!r})\n"
            f"try:\n    binprune.load_model({str(tmp_path / 'user.pt')!r})\nexcept Exception as e:\n"
            "    print(type(e).__name__, e); print('imported' if 'userpkg.nets' in sys.modules else 'not imported')\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(Path(binprune.__file__).parent.parent), "PATH": "/usr/bin:/bin"})
    assert "user factory" in out.stdout and "--arch userpkg.nets:tiny" in out.stdout, out.stderr
    assert out.stdout.strip().endswith("not imported")
    # ... and the command line loads it once the user names the factory again.
    assert main(["export", str(tmp_path / "user.pt"), "-o", str(tmp_path / "user.bpk"), "--arch", "userpkg.nets:tiny"]) == 0
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(binprune.load_model(tmp_path / "user.bpk")(x), model.eval()(x))


def test_malformed_or_missing_architectures_are_clear_errors():
    with pytest.raises(ValueError, match="package.module:callable"):
        binprune.models.check_architecture("torchvision:")
    with pytest.raises(ValueError, match="not registered"):
        binprune.models.check_architecture("somepkg.mod:fn")
    with pytest.raises(CheckpointError, match="--arch nothere.mod:fn"):
        binprune.checkpoint.build_model({"recipe": {"arch": "nothere.mod:fn", "num_classes": 2, "in_channels": 3,
                                                     "mean": [0.5] * 3, "std": [0.5] * 3, "kwargs": {}}})
