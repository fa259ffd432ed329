import copy

import pytest
import torch
from torch import nn

import binprune
from binprune.analysis import randomize_scores
from binprune.spec import find_spec
from binprune.deploy import channel_groups, compact, compact_report, count_macs
from binprune.supermask import masked_tensors


def _calibrate(net, shape, seed=0):
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: exact statistics of the calibration batch
    net.train()
    with torch.no_grad():
        net(torch.rand(*shape, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


def _structured(arch, shape, seed=0, **kwargs):
    model = binprune.create_model(arch, num_classes=10, in_channels=shape[1], **kwargs)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, seed=seed)
    randomize_scores(net, channel_structure=3.0, seed=seed)
    return _calibrate(net, shape, seed)


def _max_diff(a, b, x):
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


CASES = {
    "small_cnn": ((32, 1, 16, 16), {"widths": (16, 32, 64), "hidden": 24}),
    "resnet18": ((32, 3, 16, 16), {"width_factor": 0.25}),
    "resnet50": ((32, 3, 16, 16), {"width_factor": 0.125}),  # Bottleneck blocks
}


@pytest.fixture(scope="module")
def structured_nets():
    """One supermask model with trained-looking (channel-structured) masks per architecture and
    its compact version, built once for the tests below."""
    out = {}
    for arch, (shape, kwargs) in CASES.items():
        net = _structured(arch, shape, **kwargs)
        out[arch] = (net, compact(net), torch.rand(8, *shape[1:], generator=torch.Generator().manual_seed(5)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_compact_matches_supermask_model(structured_nets, arch):
    net, small, x = structured_nets[arch]
    assert _max_diff(net, small, x) <= 1e-5
    layers = find_spec(small).transform["kwargs"]["layers"]
    assert sum(r["out_after"] for r in layers) < 0.8 * sum(r["out_before"] for r in layers)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in small.modules())  # all folded, LBN too
    assert not list(masked_tensors(small))
    report = compact_report(net, small, x[:1])
    assert report["after"]["macs"] < report["before"]["macs"]
    assert report["max_abs_output_difference"] <= 1e-5


@pytest.mark.parametrize("arch", list(CASES))
def test_compact_is_exact_in_float64(structured_nets, arch):
    """Without float32 rounding the compact model is the same function (the algebra is exact), and
    in float32 it is as close to that function as the supermask model itself is."""
    net, small32, x = structured_nets[arch]
    net64 = copy.deepcopy(net).double()
    small64 = compact(net64)
    x64 = x.double()
    assert _max_diff(net64, small64, x64) <= 1e-10
    with torch.no_grad():
        truth = net64(x64)
        own_error = float((net(x).double() - truth).abs().max())
        compact_error = float((small32(x).double() - truth).abs().max())
    assert compact_error <= 2 * own_error + 1e-6


def test_compact_removes_channels_of_bottleneck_resnet(structured_nets):
    net, small, x = structured_nets["resnet50"]
    layers = find_spec(small).transform["kwargs"]["layers"]
    assert sum(r["out_after"] for r in layers) < 0.8 * sum(r["out_before"] for r in layers)
    stream = [r for r in layers if r["name"].endswith(("conv3", "downsample.0")) and r["name"].startswith("net.layer2")]
    assert len({r["out_after"] for r in stream}) == 1  # the residual stream is pruned consistently


def test_compact_of_finalized_model_and_random_masks():
    net = _calibrate(binprune.convert_to_binary_supermask(
        binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16)), sparsity=0.9), (16, 1, 12, 12))
    small = compact(binprune.finalize(net))
    x = torch.rand(4, 1, 12, 12)
    assert _max_diff(net, small, x) <= 1e-5


class _Chain(nn.Sequential):
    pass


def _constant_channel_net(consumer: str):
    """conv -> BN -> ReLU -> consumer, where output channel 0 of the conv has an empty filter and
    its BN statistics make it the constant relu(-mean / sqrt(var + eps)) = 2 > 0."""
    torch.manual_seed(0)
    head = [nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3, affine=False), nn.ReLU()]
    if consumer == "padded_conv":
        tail = [nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]
    else:
        tail = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)]
    net = _Chain(*head, *tail).eval()
    with torch.no_grad():
        net[0].weight[0].zero_()
        net[1].running_mean.copy_(torch.tensor([-2.0, 0.3, -0.1]))
        net[1].running_var.copy_(torch.tensor([1.0, 2.0, 0.5]) - net[1].eps)
    return net


def test_constant_channel_folded_into_linear_bias():
    net = _constant_channel_net("linear")
    small = compact(net)
    x = torch.rand(5, 2, 6, 6)
    assert _max_diff(net, small, x) <= 1e-6
    assert small[0].out_channels == 2 and small[-1].in_features == 2  # the constant went into the bias


def test_constant_channel_kept_before_padded_conv():
    net = _constant_channel_net("padded_conv")
    small = compact(net)
    x = torch.rand(5, 2, 6, 6)
    assert _max_diff(net, small, x) <= 1e-6
    # Zero padding makes the constant channel position-dependent after the next conv: it stays.
    assert small[0].out_channels == 3


def test_channel_unused_by_consumer_is_removed():
    net = _constant_channel_net("padded_conv")
    with torch.no_grad():
        net[0].weight[0].normal_()  # a live filter ...
        net[3].weight[:, 1].zero_()  # ... and a channel nobody reads
    small = compact(net)
    assert small[0].out_channels == 2 and small[3].in_channels == 2
    x = torch.rand(5, 2, 6, 6)
    assert _max_diff(net, small, x) <= 1e-5


def test_linear_on_unflattened_map_keeps_channels():
    torch.manual_seed(0)
    # The Linear reads the last spatial axis (size 3 = channel count by coincidence), not channels.
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Linear(3, 4)).eval()
    with torch.no_grad():
        net[0].weight[1].zero_()
        net[1].running_mean.fill_(1.0)
    small = compact(net)
    x = torch.rand(2, 2, 5, 3)
    assert small[0].out_channels == 3
    assert _max_diff(net, small, x) <= 1e-6


def test_unknown_model_is_folded_but_kept_exact():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                   nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6))
            self.b = nn.Conv2d(3, 6, 1)
            self.head = nn.Linear(6, 4)

        def forward(self, x):
            return self.head((self.a(x) + self.b(x)).mean((2, 3)))

    net = binprune.convert_to_binary_supermask(Branchy(), sparsity=0.9)
    randomize_scores(net, channel_structure=3.0, seed=2)
    _calibrate(net, (16, 3, 8, 8))
    small = compact(net)
    x = torch.rand(4, 3, 8, 8)
    assert _max_diff(net, small, x) <= 1e-5
    assert small.network.a[3].out_channels == 6  # feeds an add we cannot see: kept whole


def test_channel_groups_of_resnet_follow_the_residual_stream():
    net = binprune.convert_to_binary_supermask(binprune.create_model("resnet18", width_factor=0.125), sparsity=0.9)
    groups = channel_groups(net)
    stream = groups[0]
    assert stream["producers"] == ["network.net.conv1", "network.net.layer1.0.conv2", "network.net.layer1.1.conv2"]
    assert "network.net.layer2.0.downsample.0" in stream["consumers"]
    assert ("network.net.layer1.0.conv2", "network.net.layer1.0.conv1") not in stream["pairs"]  # data flow order


def test_count_macs_hand_computed():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0, 1, 1] = 1.0
    out = count_macs(net, torch.rand(2, 2, 5, 5))
    conv, lin = out["layers"]
    assert conv["macs"] == 25 * 4 * 2 * 9 and conv["nonzero_macs"] == 25
    assert lin["macs"] == 100 * 3 and lin["params"] == 303
    assert out["macs"] == conv["macs"] + lin["macs"]
