"""ONNX export (``binprune.deploy.export_onnx``, ``binprune export --format onnx``), checked
against onnxruntime: standard operators only, dynamic batch, outputs within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import binprune
from binprune.cli import main
from binprune.deploy import compact, export_onnx

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install binprune[dev])")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install binprune[dev])")

TOL = 1e-5


def _net(arch: str, shape: tuple[int, ...], **kwargs) -> nn.Module:
    model = binprune.create_model(arch, num_classes=10, in_channels=shape[0], **kwargs)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # statistics of one batch, so that outputs are O(1) as in a trained model
    net.train()
    with torch.no_grad():
        net(torch.rand(32, *shape, generator=torch.Generator().manual_seed(0)))
    return net.eval()


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("arch, shape, kwargs", [
    ("small_cnn", (1, 28, 28), {"widths": (16, 32, 64), "hidden": 24}),
    ("resnet18", (3, 32, 32), {"width_factor": 0.25}),
])
def test_onnxruntime_matches_the_supermask_model(tmp_path, arch, shape, kwargs):
    net = _net(arch, shape, **kwargs)
    path = tmp_path / "model.onnx"
    size = export_onnx(net, path, input_shape=shape)
    assert size == path.stat().st_size > 0
    graph = onnx.load(str(path)).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)  # standard operators only
    assert {node.op_type for node in graph.node} >= {"Conv", "Gemm", "Relu"}
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded by compact
    for batch in (1, 6):  # the batch axis is dynamic
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = net(x).numpy()
        assert float(np.abs(_run(path, x) - ref).max()) <= TOL


def test_finalized_and_compact_sparse_models_export_the_same_function(tmp_path):
    net = _net("small_cnn", (1, 16, 16), widths=(8, 16))
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        ref = net(x).numpy()
    export_onnx(net, tmp_path / "final.onnx", input_shape=(1, 16, 16), compact_model=False)
    export_onnx(compact(net, engine="sparse"), tmp_path / "sparse.onnx", example_input=x)
    for name in ("final.onnx", "sparse.onnx"):
        assert float(np.abs(_run(tmp_path / name, x) - ref).max()) <= TOL
    kinds = {node.op_type for node in onnx.load(str(tmp_path / "final.onnx")).graph.node}
    assert "BatchNormalization" in kinds or "Mul" in kinds or "Add" in kinds  # finalized: batch norms kept


def test_cli_export_onnx_from_a_packed_file(tmp_path, capsys):
    net = _net("small_cnn", (1, 28, 28), widths=(8, 16))
    packed = tmp_path / "model.bpk"
    binprune.save_packed(net, packed)
    out = tmp_path / "model.onnx"
    assert main(["export", str(packed), "-o", str(out), "--format", "onnx", "--input-shape", "1", "28", "28"]) == 0
    assert "ONNX" in capsys.readouterr().out
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        ref = binprune.load_model(str(packed))(x).numpy()
    assert float(np.abs(_run(out, x) - ref).max()) <= TOL
    assert main(["export", str(packed), "-o", str(tmp_path / "again.bpk")]) == 0  # bpk is still the default
    assert (tmp_path / "again.bpk").read_bytes()[:3] == b"BPK"
