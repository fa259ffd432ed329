"""RobustBench protocol, leaderboard entries, and RobustBench model-zoo models from local files."""

import dataclasses
import inspect
import json
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch

import binprune
from binprune.evaluation import SANITY_CHECKS
from binprune.checkpoint import CheckpointError, save_checkpoint
from binprune.cli import main
from binprune.compat import robustbench_modules
from binprune.evaluation import (
    evaluate,
    leaderboard_entry,
    load_benchmark_data,
    load_robustbench_model,
    robustbench_architecture,
    robustbench_benchmark,
    run_robustbench_protocol,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download (robustbench's gdrive helpers, gdown, torch.hub, sockets) fails the test."""
    import socket
    import urllib.request

    import gdown
    import requests

    robustbench_modules()

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    for owner, name in [(gdown, "download"),
                        (requests, "get"), (requests.Session, "request"), (urllib.request, "urlopen"),
                        (torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                        (socket, "create_connection"), (socket.socket, "connect")]:
        monkeypatch.setattr(owner, name, refuse)


def _robustbench_source(name):
    """The text of one of robustbench's files (read, not imported)."""
    import importlib.util
    from pathlib import Path

    folder = Path(list(importlib.util.find_spec("robustbench").submodule_search_locations)[0])
    return (folder / name).read_text()


def test_robustbench_benchmark_cannot_call_pyautoattack():
    """Why binprune runs the protocol itself (docs/EVALUATION.md): robustbench's benchmark() imports
    the git AutoAttack and passes arguments pyautoattack 0.2.0 does not take."""
    from pyautoattack import AutoAttack

    source = _robustbench_source("eval.py")
    assert "from autoattack import AutoAttack" in source and "from autoattack.state import" in source
    assert "log_path=log_path" in source and "bs=batch_size" in source
    assert "log_path" not in inspect.signature(AutoAttack.__init__).parameters
    assert "bs" not in inspect.signature(AutoAttack.run_standard_evaluation).parameters


@pytest.mark.slow
def test_load_zoo_architecture_from_local_file_without_network(tmp_path, no_network):
    # Ding2020MMA: a WideResNet-28-4 from RobustBench's cifar10 Linf zoo, saved as RobustBench's
    # checkpoints are ({"state_dict": ...} with DataParallel's "module." prefix).
    torch.manual_seed(0)
    reference = robustbench_architecture("Ding2020MMA", "cifar10", "Linf").eval()
    path = tmp_path / "Ding2020MMA.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = load_robustbench_model("Ding2020MMA", "cifar10", "Linf", checkpoint=path)
    assert type(model) is type(reference) and not model.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))

    # a file whose keys do not match raises, naming them (nothing is dropped silently)
    state = reference.state_dict()
    del state["fc.weight"]
    state["fc.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): fc\.weight.*unexpected keys \(1\): fc\.extra"):
        load_robustbench_model("Ding2020MMA", "cifar10", "Linf", checkpoint=tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not in RobustBench's cifar10 Linf model zoo"):
        load_robustbench_model("Ding2020MM", checkpoint=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_robustbench_model("Ding2020MMA", checkpoint=tmp_path / "missing.pt")


@pytest.mark.slow
def test_zoo_model_without_its_normalization_buffers_loads_with_a_warning(tmp_path, no_network):
    # Hendrycks2020AugMix_WRN (WRN-40-2) normalizes with buffers mu/sigma that its published
    # checkpoint lacks; they keep the constructor's values and the warning names them.
    reference = robustbench_architecture("Hendrycks2020AugMix_WRN", "cifar10", "corruptions")
    state = {k: v for k, v in reference.state_dict().items() if k not in ("mu", "sigma")}
    torch.save(state, tmp_path / "augmix.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_robustbench_model("Hendrycks2020AugMix_WRN", "cifar10", "corruptions",
                                       checkpoint=tmp_path / "augmix.pt")
    assert any("mu, sigma" in str(w.message) for w in caught)
    assert torch.equal(model.mu, reference.mu)


@pytest.mark.slow
def test_wrap_and_evaluate_a_zoo_model(tmp_path, no_network):
    torch.manual_seed(0)
    reference = robustbench_architecture("Hendrycks2020AugMix_WRN", "cifar10", "corruptions")
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "augmix.pt")
    model = load_robustbench_model("Hendrycks2020AugMix_WRN", "cifar10", "corruptions", checkpoint=tmp_path / "augmix.pt")
    wrapped = binprune.convert_to_binary_supermask(model, sparsity=0.99)
    assert type(wrapped.network) is type(model)
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6)
    result = evaluate(wrapped, (x, y), eps=8 / 255, attacks=["clean", "pgd"], pgd_steps=2, device="cpu",
                      progress=False)
    assert result["model"]["form"] == "finalized" and result["model"]["sparsity"] > 0.98
    assert 0 <= result["accuracy"]["pgd"] <= result["accuracy"]["clean"] <= 1


def test_leaderboard_entry_has_modelinfo_fields():
    import ast

    tree = ast.parse(_robustbench_source("utils.py"))
    model_info = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelInfo")
    fields = [n.target.id for n in model_info.body if isinstance(n, ast.AnnAssign)]
    entry = leaderboard_entry(dataset="cifar10", threat_model="Linf", eps=8 / 255, clean_accuracy=0.81234,
                              robust_accuracy=0.4, name="Binary supermask", architecture="ResNet-18",
                              binprune={"sparsity": 0.99, "kept_params": 111_000})
    assert list(entry) == fields + ["binprune"]  # RobustBench's ModelInfo fields, then binprune's own
    assert (entry["clean_acc"], entry["autoattack_acc"], entry["eps"]) == ("81.23", "40.0", "8/255")
    assert entry["additional_data"] is False and entry["number_forward_passes"] == 1
    assert entry["binprune"] == {"threat_model": "Linf", "sparsity": 0.99, "kept_params": 111_000}
    assert leaderboard_entry(dataset="cifar10", threat_model="L2", eps=0.5, clean_accuracy=1, robust_accuracy=0,
                             name="n", architecture="a")["eps"] == "0.5"


def _py2_style_pickle(obj, keys):
    """Pickle ``obj`` so that ``keys`` load as bytes under encoding='bytes' and as str under
    'latin1', like CIFAR's original Python 2 files (binprune reads them one way, torchvision the other)."""
    data = pickle.dumps(obj, protocol=2)
    for key in keys:
        raw = key.encode()
        data = data.replace(b"X" + struct.pack("<I", len(raw)) + raw, b"U" + bytes([len(raw)]) + raw)
    return data


def _write_cifar10(root, n=30):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(n)]
    (base / "test_batch").write_bytes(_py2_style_pickle({"data": images, "labels": labels}, ["data", "labels"]))
    names = [f"class{i}" for i in range(10)]
    (base / "batches.meta").write_bytes(_py2_style_pickle({"label_names": names}, ["label_names", *names]))
    return images.reshape(n, 3, 32, 32), labels


def test_benchmark_data_from_torchvision_folder(tmp_path, monkeypatch, no_network):
    import torchvision.datasets.cifar

    images, labels = _write_cifar10(tmp_path)
    expected = torch.from_numpy(images[:12]).float() / 255
    # Made-up files fail torchvision's checksums: binprune's own reader takes them, in order.
    x, y, info = load_benchmark_data("cifar10", tmp_path, 12)
    assert info["loader"] == "binprune.data.load_dataset" and "checksums" in info["note"]
    assert torch.equal(x, expected) and y.tolist() == labels[:12]
    # Files that pass the checksums go through robustbench's own loader, which gives the same tensors.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    x, y, info = load_benchmark_data("cifar10", tmp_path / "cifar-10-batches-py", 12)
    assert info["loader"] == "robustbench.data.load_cifar10" and "original order" in info["selection"]
    assert torch.allclose(x, expected) and y.tolist() == labels[:12]
    with pytest.raises(ValueError, match="n_examples=31 but the cifar10 test set has 30"):
        load_benchmark_data("cifar10", tmp_path, 31)


@pytest.mark.slow
def test_robustbench_protocol_writes_leaderboard_entry(tmp_path, no_network):
    _write_cifar10(tmp_path / "data")
    torch.manual_seed(0)
    model = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", widths=(4, 8)), sparsity=0.9)
    clean, robust = robustbench_benchmark(model, data_dir=tmp_path / "data", n_examples=20, model_name="Tiny_CNN",
                                          out_dir=tmp_path / "model_info", device="cpu", progress=False)
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "Tiny_CNN.json"
    entry = json.loads(path.read_text())
    assert entry["clean_acc"] == str(round(clean * 100, 2)) and entry["autoattack_acc"] == str(round(robust * 100, 2))
    assert 0 <= robust <= clean <= 1 and entry["eps"] == "8/255" and entry["dataset"] == "cifar10"
    assert entry["name"] == "Tiny_CNN" and entry["architecture"] == "small_cnn (binary supermask)"
    own = entry["binprune"]
    report = binprune.sparsity_report(model)
    assert (own["kept_params"], own["total_params"]) == (report.kept_params, report.total_params)
    assert own["sparsity"] == pytest.approx(report.sparsity) and own["n_examples"] == 20
    assert own["eps_value"] == pytest.approx(8 / 255) and own["eps_is_standard"]
    assert own["autoattack"]["settings"]["version"] == "standard"
    assert own["autoattack"]["settings"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert own["clean_accuracy"] == clean and own["robust_accuracy"] == robust
    size_fields = {"packed_file_bytes", "state_dict_bytes"} & set(own)
    assert size_fields and all(isinstance(own[f], int) and own[f] > 0 for f in size_fields)
    with pytest.raises(ValueError, match="model_name must be a file-name-safe name"):
        run_robustbench_protocol(model, data_dir=tmp_path / "data", n_examples=20, model_name="../x", out_dir=None)
    with pytest.raises(ValueError, match="runs on cifar10, cifar100"):
        run_robustbench_protocol(model, dataset="imagenet", data_dir=tmp_path, model_name="x", out_dir=None)


@pytest.mark.slow
def test_cli_robustbench_protocol(tmp_path, no_network):
    _write_cifar10(tmp_path / "data")
    torch.manual_seed(0)
    net = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", widths=(4, 8)), sparsity=0.9)
    save_checkpoint(tmp_path / "net.pt", net)
    status = main(["eval", str(tmp_path / "net.pt"), "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                   "--robustbench", "--model-name", "Tiny", "--n-examples", "10", "--sanity-examples", "10",
                   "--leaderboard-dir", str(tmp_path / "lb"), "--out", str(tmp_path / "r.json"), "--device", "cpu",
                   "--no-progress"])
    assert status == 0
    result = json.loads((tmp_path / "r.json").read_text())
    entry_path = tmp_path / "lb" / "cifar10" / "Linf" / "Tiny.json"
    assert result["leaderboard_entry"] == str(entry_path) and entry_path.is_file()
    assert set(result["accuracy"]) == {"clean", "autoattack", "pgd"} and result["settings"]["eps"] == 8 / 255
    assert result["data"]["loader"] == "binprune.data.load_dataset"
    assert result["sanity_checks"]["n_checks"] == len(SANITY_CHECKS) - 1  # the transfer check needs --surrogate


@pytest.mark.slow
def test_cli_reads_a_zoo_checkpoint_with_robustbench_arch(tmp_path, no_network, capsys):
    _write_cifar10(tmp_path / "data")
    zoo = robustbench_architecture("Ding2020MMA", "cifar10", "Linf")
    torch.save({"state_dict": zoo.state_dict()}, tmp_path / "mma.pt")
    argv = ["eval", str(tmp_path / "mma.pt"), "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
            "--attacks", "clean", "--n-examples", "4", "--no-sanity-checks", "--out", str(tmp_path / "r.json"),
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 2 and "not a binprune checkpoint" in capsys.readouterr().err
    assert main(argv + ["--robustbench-arch", "Ding2020MMA"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"]["class"] == type(zoo).__name__ and result["settings"]["n_examples"] == 4
