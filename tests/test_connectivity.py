"""Models that a random 99% mask disconnects are caught at conversion, with the layer named and a
remedy (connect_channels) that keeps every output channel connected."""

import warnings

import pytest
import torch
import torchvision

import binprune
from binprune.connectivity import signal_report
from binprune.convert import DisconnectedMaskWarning


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5"])
def test_disconnected_light_torchvision_models_are_caught_and_remedied(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DisconnectedMaskWarning, match=r"cuts every path .* at network\..*connect_channels=True"):
        net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, example_input=x)
    from binprune.adversary import frozen_batchnorm_stats

    with torch.no_grad(), frozen_batchnorm_stats(net):
        out = net.train()(x)
    assert torch.equal(out[0], out[1])  # the warning is right: one output for every input
    with warnings.catch_warnings():
        warnings.simplefilter("error", DisconnectedMaskWarning)
        fixed = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, connect_channels=True,
                                                     example_input=x)
    assert signal_report(fixed, x)["connected"]
    report = binprune.sparsity_report(fixed)
    assert 0.98 < report.sparsity < 0.99  # one weight per output channel costs a little sparsity
    for mt in binprune.masked_tensors(fixed):
        mask = mt.mask.mask()
        assert (mask.reshape(mask.shape[0], -1).sum(1) > 0).all(), mt.name
    # the option is part of the spec, so a checkpoint rebuilds the same structure
    assert binprune.model_spec(fixed)["transform"]["kwargs"]["connect_channels"] is True


def test_a_connected_model_converts_without_warning():
    model = binprune.create_model("small_cnn", in_channels=1, widths=(8, 16), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DisconnectedMaskWarning)
        net = binprune.convert_to_binary_supermask(model, sparsity=0.9, example_input=torch.rand(2, 1, 16, 16))
    assert signal_report(net, torch.rand(2, 1, 16, 16)) == {"connected": True, "cut_layers": [], "finite": True}


@pytest.mark.slow
def test_an_eval_mode_overflow_at_initialization_is_not_a_cut():
    """mnasnet0_5 gives one output for every input in eval mode at initialization (the running
    statistics are still the identity), but with batch statistics, as in training, its output
    depends on the input: no warning."""
    torch.manual_seed(0)
    model = torchvision.models.get_model("mnasnet0_5", weights=None, num_classes=10)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DisconnectedMaskWarning)
        net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, example_input=x)
    with torch.no_grad():
        out = net.eval()(x)
    assert torch.equal(out[0], out[1])
    assert signal_report(net, x)["connected"]
