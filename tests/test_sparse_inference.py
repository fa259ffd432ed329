"""The sparse inference path: outputs equal the supermask model's within 1e-5 on odd shapes, the
rule is deterministic, and without the compiled kernel everything falls back to dense kernels.

Tests that need the compiled kernel share one module-scoped fixture (the first build takes about
a minute) and are marked slow; they skip where the kernel cannot be built."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import binprune
from binprune.deploy import compact, densify, sparse_plan, sparsify
from binprune.deploy import kernels
from binprune.deploy.sparse import ALWAYS_SPARSE as ALWAYS
from binprune.deploy.sparse import DEFAULT_RULE, LayerShape, SparseConv1d, SparseConv2d, SparseLinear, SparseRule

TOL = 1e-5
# PyTorch's own note on the dense path of the odd-shapes model's padding="same" layer
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def _calibrate(net: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Batch-norm statistics of one random batch, so that outputs are O(1) as in a trained model."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.rand(*shape, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


def _odd_model() -> nn.Module:
    """Stride 2, groups, dilation, 1x1, asymmetric 'same' padding, non-square kernels and a Conv1d
    branch-free chain, as a supermask model at 99% sparsity (p = 0.1)."""
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, (2, 4), padding="same", bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, (3, 5), stride=(2, 1), padding=(1, 2)), nn.ReLU(),
        nn.Conv2d(24, 24, 3, stride=3, padding=0), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )
    net = binprune.convert_to_binary_supermask(base, sparsity=0.9, p=0.1)
    return _calibrate(net, (16, 3, 19, 23))


@pytest.fixture(scope="module")
def kernel():
    """The compiled kernel (built once per machine, then cached); skips where it cannot be built."""
    kernels.reset_for_tests()
    if not kernels.load_sparse_kernels(warn=False):
        pytest.skip(f"sparse kernel unavailable: {kernels.sparse_kernels_status()}")
    return torch.ops.binprune_sparse.conv2d


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    for cls in (SparseConv1d, SparseConv2d, SparseLinear):
        original = cls._run

        def run(self, x, original=original):
            calls[0] += 1
            return original(self, x)

        monkeypatch.setattr(cls, "_run", run)
    return calls


# --- without the kernel --------------------------------------------------------------------------


def test_rule_follows_density_and_shape():
    big = dict(in_channels=64, out_channels=64, groups=1, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1),
               dilation=(1, 1))
    sparse = LayerShape(**big, kept=int(0.01 * 64 * 64 * 9))
    dense = LayerShape(**big, kept=64 * 64 * 9)
    assert DEFAULT_RULE.use_sparse(sparse, 256, 32, 32) and DEFAULT_RULE.use_sparse(sparse, 1, 32, 32)
    assert not DEFAULT_RULE.use_sparse(dense, 256, 32, 32)
    work = sparse.work(2, 32, 32)
    assert work["dense_macs"] == 2 * 32 * 32 * 64 * 64 * 9
    assert work["sparse_macs"] == sparse.kept * 2 * 34 * 34  # positions of the padded planes
    assert work["packed"] == 64 * 2 * 34 * 34 and work["inputs"] == work["outputs"] == 2 * 64 * 32 * 32
    strided = LayerShape(**{**big, "stride": (2, 2)}, kept=100).work(1, 32, 32)
    assert strided["outputs"] == 64 * 16 * 16 and strided["sparse_macs"] == 100 * 17 * 17
    assert strided["packed"] == 64 * 4 * 17 * 17  # four phases
    stem = LayerShape(3, 64, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), kept=64 * 3 * 9)
    assert DEFAULT_RULE.use_sparse(stem, 256, 32, 32)  # dense kernels are slow with 3 input channels
    assert DEFAULT_RULE.predict(sparse, 256, 32, 32) < DEFAULT_RULE.predict(dense, 256, 32, 32)
    never = SparseRule(intercept=0.0, density_exponent=0.0, channels_exponent=0.0, positions_exponent=0.0)
    assert not never.use_sparse(sparse, 256, 32, 32) and ALWAYS.use_sparse(dense, 256, 32, 32)


def test_sparsify_keeps_parameters_state_and_other_modules():
    mha = nn.MultiheadAttention(8, 2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                          nn.ConvTranspose2d(4, 4, 2), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    wrapped = nn.ModuleDict({"net": model, "mha": mha})
    out = sparsify(wrapped, inplace=False)
    assert type(out["net"][0]) is SparseConv2d and type(out["net"][4]) is SparseLinear
    assert type(out["net"][1]) is nn.Conv2d and type(out["net"][2]) is nn.ConvTranspose2d  # reflect, transposed
    assert type(out["mha"].out_proj) is type(mha.out_proj)  # MultiheadAttention reads its weights directly
    assert list(out.state_dict()) == list(wrapped.state_dict())
    assert type(model[0]) is nn.Conv2d  # the input is not modified
    back = densify(out)
    assert type(back["net"][0]) is nn.Conv2d and type(back["net"][4]) is nn.Linear
    assert not any(k.startswith("sparse_") for k, _ in back.named_buffers())


def test_compact_terminates_when_a_whole_layer_is_empty():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten())
    with torch.no_grad():
        model[0].weight.zero_()  # every channel between the convs is removable: one is kept, once
    small = compact(model)
    assert small[0].out_channels == 1
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert float((small(x) - model(x)).abs().max()) <= TOL


def test_engine_is_checked():
    net = binprune.convert_to_binary_supermask(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), sparsity=0.5)
    with pytest.raises(ValueError, match="engine"):
        compact(net, engine="fast")


def test_without_the_kernel_compact_falls_back_to_dense_with_one_notice(monkeypatch):
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    kernels.reset_for_tests()
    try:
        net = _odd_model()
        with pytest.warns(RuntimeWarning, match="sparse kernels unavailable") as record:
            small = compact(net, engine="sparse", rule=ALWAYS)
            compact(net, engine="sparse")
        assert len([w for w in record if "sparse kernels" in str(w.message)]) == 1
        assert "\n" not in str(record[0].message)
        calls = _count_kernel_calls(monkeypatch)
        x = torch.rand(3, 3, 19, 23)
        with torch.no_grad():
            assert float((small(x) - net(x)).abs().max()) <= TOL
        assert calls[0] == 0
    finally:
        monkeypatch.delenv(kernels.ENV_SWITCH)
        kernels.reset_for_tests()


@pytest.mark.slow  # a fresh interpreter importing torch: a few seconds
def test_importing_builds_nothing():
    code = ("import torch, binprune.deploy; from binprune.deploy import kernels\n"
            "assert kernels.sparse_kernels_status() == 'not built yet'\n"
            "try:\n    torch.ops.binprune_sparse.conv2d\nexcept (AttributeError, RuntimeError):\n    pass\n"
            "else:\n    raise AssertionError('the kernel was loaded at import')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- with the kernel -----------------------------------------------------------------------------


def _reference_taps(weight: torch.Tensor):
    nz = weight.nonzero()
    rowptr = torch.zeros(weight.shape[0] + 1, dtype=torch.int64)
    rowptr[1:] = torch.bincount(nz[:, 0], minlength=weight.shape[0]).cumsum(0)
    return rowptr, nz[:, 1].int(), nz[:, 2].int(), nz[:, 3].int(), weight[tuple(nz.T)].contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("n, c, h, w, o, k, stride, pad, dil, groups, density", [
    (2, 5, 7, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.3),
    (3, 4, 8, 8, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, 0.5),       # stride 2
    (1, 8, 5, 5, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, 0.5),       # 1x1, batch 1
    (2, 6, 9, 7, 6, (3, 3), (1, 1), (2, 2), (2, 2), 2, 0.4),       # dilation, groups
    (4, 3, 11, 11, 5, (5, 5), (3, 3), (2, 2), (1, 1), 1, 0.7),     # stride 3: 9 phases
    (1, 4, 6, 6, 8, (3, 3), (2, 2), (0, 0), (1, 1), 4, 0.6),       # depthwise-like, no padding
    (2, 4, 6, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.0),       # empty layer
    (5, 16, 1, 1, 7, (1, 1), (1, 1), (0, 0), (1, 1), 1, 0.3),      # 1x1 images
    (2, 3, 10, 12, 4, (3, 5), (2, 1), (1, 2), (1, 2), 1, 0.5),     # non-square everything
    (300, 2, 3, 3, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.5),     # many images per tile
])
def test_kernel_matches_conv2d(kernel, n, c, h, w, o, k, stride, pad, dil, groups, density):
    gen = torch.Generator().manual_seed(n * 100 + c)
    weight = torch.randn(o, c // groups, *k, generator=gen)
    weight = weight * (torch.rand(weight.shape, generator=gen) < density)
    weight[0] = 0  # an empty output channel
    bias = torch.randn(o, generator=gen)
    x = torch.randn(n, c, h, w, generator=gen)
    ref = torch.nn.functional.conv2d(x, weight, bias, stride, pad, dil, groups)
    taps = list(_reference_taps(weight))
    taps[1] = ((taps[1].long() + (torch.repeat_interleave(torch.arange(o), taps[0].diff()) // (o // groups))
                * (c // groups))).int()  # group offset of the input channel
    padding = [pad[0], pad[0], pad[1], pad[1]]
    for inp in (x, x.transpose(2, 3).contiguous().transpose(2, 3), x[:, :, :, :]):  # any strides
        out = kernel(inp, *taps, bias, list(k), list(stride), padding, list(dil))
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


@pytest.mark.slow
def test_odd_shapes_model_equals_supermask_model(kernel, monkeypatch):
    net = _odd_model()
    calls = _count_kernel_calls(monkeypatch)
    small = compact(net, engine="sparse", rule=ALWAYS)
    for batch in (1, 7):
        x = torch.rand(batch, 3, 19, 23, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert float((small(x) - net(x)).abs().max()) <= TOL
    assert calls[0] == 2 * 7  # every Conv/Linear ran the kernel


@pytest.mark.slow
@pytest.mark.parametrize("arch, shape, kwargs", [
    ("resnet18", (3, 32, 32), {"width_factor": 0.25}),
    ("small_cnn", (1, 28, 28), {}),
])
def test_networks_equal_supermask_model(kernel, arch, shape, kwargs):
    model = binprune.create_model(arch, num_classes=10, in_channels=shape[0], **kwargs)
    net = _calibrate(binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1), (32, *shape))
    forced, ruled = compact(net, engine="sparse", rule=ALWAYS), compact(net, engine="sparse")
    for batch in (1, 5):
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = net(x)
            assert float((forced(x) - ref).abs().max()) <= TOL
            assert float((ruled(x) - ref).abs().max()) <= TOL


@pytest.mark.slow
def test_sparsify_inside_inference_mode(kernel):
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.rand(2, 4, 7, 7)
    with torch.inference_mode():
        layer = sparsify(conv, ALWAYS)
        assert float((layer(x) - conv(x)).abs().max()) <= TOL
        made_here = sparsify(nn.Conv2d(4, 6, 3), ALWAYS)  # parameters that are inference tensors
        assert made_here(x).shape == (2, 6, 5, 5)


@pytest.mark.slow
def test_empty_layer_gives_its_bias(kernel):
    conv = nn.Conv2d(4, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
    layer = sparsify(conv, ALWAYS)
    with torch.no_grad():
        out = layer(torch.rand(2, 4, 5, 5))
    assert torch.equal(out, conv.bias.detach().view(1, 3, 1, 1).expand(2, 3, 5, 5))


@pytest.mark.slow
def test_conv1d_linear_threads_grad_and_weight_updates(kernel, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5, 3))
    with torch.no_grad():
        for m in model:
            if hasattr(m, "weight"):
                m.weight.mul_(torch.rand_like(m.weight) < 0.3)
    fast = sparsify(model, ALWAYS)
    x = torch.rand(3, 4, 10)
    calls = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        ref = model(x)
        assert float((fast(x) - ref).abs().max()) <= TOL
        lin = fast[3](torch.rand(2, 5, 30))  # Linear on a 3-d input
        assert lin.shape == (2, 5, 3)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            assert float((fast(x) - ref).abs().max()) <= TOL
        finally:
            torch.set_num_threads(threads)
    assert calls[0] == 2 * 2 + 1
    x.requires_grad_(True)
    fast(x).sum().backward()  # autograd needs the graph: the dense kernels run
    assert x.grad is not None and calls[0] == 5
    with torch.no_grad():
        fast[0].weight.mul_(2.0)  # in-place change of the weight: the kernel's copy follows
        model[0].weight.mul_(2.0)
        assert float((fast(x) - model(x)).abs().max()) <= TOL


@pytest.mark.slow
def test_recycled_outputs_never_overwrite_a_live_tensor(kernel):
    layer = sparsify(nn.Conv2d(8, 16, 3, padding=1), ALWAYS)  # outputs of 2 MB: recycled by the kernel
    xs = [torch.rand(32, 8, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        first = layer(xs[0])
        kept = first.clone()
        view = layer(xs[1])[1:]  # only a view survives: its buffer must stay too
        kept_view = view.clone()
        for x in xs:
            layer(x)  # freed at once: their buffers go round the pool
        assert torch.equal(first, kept) and torch.equal(view, kept_view)
        assert float((layer(xs[2]) - nn.Conv2d.forward(layer, xs[2])).abs().max()) <= TOL
    binprune.deploy.release_sparse_memory()


@pytest.mark.slow
def test_rule_choices_are_deterministic_and_reported(kernel):
    model = binprune.create_model("resnet18", num_classes=10, width_factor=0.25)
    net = _calibrate(binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1), (16, 3, 32, 32))
    x = torch.rand(4, 3, 32, 32)
    plans = [sparse_plan(compact(net, engine="sparse"), x) for _ in range(2)]
    assert plans[0] == plans[1]
    assert len(plans[0]) == 21 and {r["name"] for r in plans[0]} >= {"net.conv1", "net.fc"}
    assert all(r["sparse"] == (r["predicted_ratio"] < DEFAULT_RULE.margin) for r in plans[0])
    assert any(r["sparse"] for r in plans[0]) and not all(r["sparse"] for r in plans[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice when the kernel is there
        compact(net, engine="sparse")
