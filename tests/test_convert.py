import io
from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torchvision import models as tvm

import binprune
from binprune.supermask import masked_tensors

# (name, builder, input size): torchvision classification architectures on small inputs; the
# transformer families use their torchvision classes at a reduced size.
ARCHITECTURES = [
    ("resnet18", partial(tvm.resnet18, num_classes=10), 32),
    ("resnext50_32x4d", partial(tvm.resnext50_32x4d, num_classes=10), 32),
    ("wide_resnet50_2", partial(tvm.wide_resnet50_2, num_classes=10), 32),
    ("vgg11_bn", partial(tvm.vgg11_bn, num_classes=10), 32),
    ("mobilenet_v2", partial(tvm.mobilenet_v2, num_classes=10), 32),
    ("mobilenet_v3_small", partial(tvm.mobilenet_v3_small, num_classes=10), 32),
    ("densenet121", partial(tvm.densenet121, num_classes=10), 32),
    ("efficientnet_b0", partial(tvm.efficientnet_b0, num_classes=10), 32),
    ("regnet_x_400mf", partial(tvm.regnet_x_400mf, num_classes=10), 32),
    ("shufflenet_v2_x0_5", partial(tvm.shufflenet_v2_x0_5, num_classes=10), 32),
    ("squeezenet1_1", partial(tvm.squeezenet1_1, num_classes=10), 64),
    ("mnasnet0_5", partial(tvm.mnasnet0_5, num_classes=10), 32),
    ("googlenet", partial(tvm.googlenet, num_classes=10, aux_logits=True, init_weights=True), 64),
    ("inception_v3", partial(tvm.inception_v3, num_classes=10, aux_logits=False, init_weights=True), 80),
    ("convnext_tiny", partial(tvm.convnext_tiny, num_classes=10), 32),
    ("vit", partial(tvm.VisionTransformer, image_size=32, patch_size=8, num_layers=2, num_heads=2,
                    hidden_dim=32, mlp_dim=64, num_classes=10), 32),
    ("swin", partial(tvm.SwinTransformer, patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                     window_size=[4, 4], num_classes=10), 32),
    ("maxvit", partial(tvm.MaxVit, input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                       block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10), 32),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, build, size", ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_torchvision_architecture_converts_forward_backward(name, build, size):
    torch.manual_seed(0)
    model = build()
    # 0.9 rather than 0.99: at 99% a random mask can cut every path through deep thin networks
    # (ShuffleNet), and then no gradient reaches the scores at all.
    net = binprune.convert_to_binary_supermask(model, sparsity=0.9, p=0.1)
    report = binprune.sparsity_report(net)
    assert report.layers, "no layer was converted"
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight is not None]
    assert len([r for r in report.layers if not r.name.endswith("in_proj_weight")]) == len(weight_layers)
    net.train()
    out = net(torch.rand(4, 3, size, size))
    logits = out.logits if hasattr(out, "logits") else out
    assert logits.shape == (4, 10)
    nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    grads = [mt.mask.scores.grad for mt in masked_tensors(net)]
    assert grads[0] is not None  # the gradient reaches the first layer (it can be zero: 99% sparse)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for n, p in net.named_parameters() if not n.endswith("scores"))
    net.eval()
    x = torch.rand(2, 3, size, size)
    assert torch.equal(net(x), net(x))


def _small():
    return binprune.create_model("small_cnn", num_classes=10, in_channels=1)


def test_input_not_mutated_and_weights_fixed_binary():
    model = _small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = binprune.convert_to_binary_supermask(model, sparsity=0.9)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    for mt in masked_tensors(net):
        assert set(mt.original.unique().tolist()) == {-1.0, 1.0}
    assert int(net.network.net.fc.bias.abs().sum()) == 0  # binary init zeroes fixed biases
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".scores") for n in trainable)


def test_same_seed_regenerates_weights_and_scores():
    a = binprune.convert_to_binary_supermask(_small(), seed=3).state_dict()
    b = binprune.convert_to_binary_supermask(_small(), seed=3).state_dict()
    c = binprune.convert_to_binary_supermask(_small(), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "network.net.conv1_0.parametrizations.weight.original"
    assert not torch.equal(a[key], c[key])


@pytest.mark.parametrize("init", ["binary", "signed_constant", "kaiming"])
def test_init_schemes(init):
    net = binprune.convert_to_binary_supermask(_small(), sparsity=0.9, init=init)
    mt = [m for m in masked_tensors(net)][2]
    w = mt.original
    fan_in = w[0].numel()
    if init == "binary":
        assert set(w.unique().tolist()) == {-1.0, 1.0}
    elif init == "signed_constant":
        keep = int(mt.mask.keep_count) / w.numel()
        assert torch.allclose(w.abs(), torch.full_like(w, (2 / (keep * fan_in)) ** 0.5))
    else:
        assert w.unique().numel() > 100 and abs(w.std().item() - (2 / fan_in) ** 0.5) < 0.1 * (2 / fan_in) ** 0.5


def test_state_dict_round_trip_weights_only(tmp_path):
    net = binprune.convert_to_binary_supermask(_small(), sparsity=0.95)
    with torch.no_grad():
        for mt in masked_tensors(net):
            mt.mask.scores.normal_()
    path = tmp_path / "sd.pt"
    torch.save(net.state_dict(), path)
    fresh = binprune.convert_to_binary_supermask(_small(), sparsity=0.95)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    net.eval(), fresh.eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(net(x), fresh(x))


def test_state_dict_mismatch_names_the_keys():
    net = binprune.convert_to_binary_supermask(_small(), sparsity=0.95)
    sd = net.state_dict()
    sd.pop("network.net.fc.parametrizations.weight.0.scores")
    sd["network.net.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"(?s)network\.net\.fc\.parametrizations\.weight\.0\.scores.*network\.net\.extra"):
        net.load_state_dict(sd)
    other = binprune.convert_to_binary_supermask(
        binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16, 32)), sparsity=0.95)
    with pytest.raises(RuntimeError, match="size mismatch for network.net.conv0_0"):
        net.load_state_dict(other.state_dict())


@pytest.mark.slow
def test_finalize_gives_plain_layers_with_identical_outputs():
    net = binprune.convert_to_binary_supermask(binprune.create_model("resnet18", width_factor=0.25), sparsity=0.99)
    net.train()
    net(torch.rand(8, 3, 32, 32))  # move the running statistics away from their defaults
    net.eval()
    plain = binprune.finalize(net)
    assert not list(masked_tensors(plain))
    assert type(plain.network.net.conv1) is nn.Conv2d and isinstance(plain.network.net.conv1.weight, nn.Parameter)
    assert plain.last_bn is not None
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(plain(x), net(x))
    assert int((plain.network.net.fc.weight != 0).sum()) == int(dict(
        (r.name, r.kept) for r in binprune.sparsity_report(net).layers)["network.net.fc.weight"])


def test_multihead_attention_packed_and_separate_projections():
    class Tiny(nn.Module):
        def __init__(self, same_dim):
            super().__init__()
            kdim = None if same_dim else 6
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
            self.kv = nn.Linear(8, 8 if same_dim else 6)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            kv = self.kv(x)
            return self.head(self.attn(x, kv, kv)[0].mean(1))

    for same in (True, False):
        net = binprune.convert_to_binary_supermask(Tiny(same), sparsity=0.5)
        names = [r.name for r in binprune.sparsity_report(net).layers]
        expected = ["network.attn.in_proj_weight"] if same else [
            "network.attn.q_proj_weight", "network.attn.k_proj_weight", "network.attn.v_proj_weight"]
        assert all(e in names for e in expected) and "network.attn.out_proj.weight" in names
        out = net(torch.rand(4, 5, 8))
        out.sum().backward()
        net.eval()
        x = torch.rand(2, 5, 8)
        assert torch.equal(net(x), net(x))


def test_conv_variants_and_linear_subclass():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=2, dilation=2, padding_mode="circular"),
        nn.Conv1d(4, 4, 3, groups=4, stride=2),
        nn.Flatten(), MyLinear(12, 5),
    )
    net = binprune.convert_to_binary_supermask(model, sparsity=0.5)
    assert len(binprune.sparsity_report(net).layers) == 3
    assert net(torch.rand(3, 2, 8)).shape == (3, 5)
    model3d = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2 * 4, 4))
    assert binprune.convert_to_binary_supermask(model3d, sparsity=0.5)(torch.rand(2, 1, 4, 4, 6)).shape == (2, 4)


def test_exclude_by_name_and_type_and_bn_modes():
    model = binprune.create_model("small_cnn", in_channels=1)
    net = binprune.convert_to_binary_supermask(model, exclude=["net.fc", nn.Conv1d])
    names = [r.name for r in binprune.sparsity_report(net).layers]
    assert "network.net.fc.weight" not in names
    assert "network.net.fc.weight" in [r.name for r in binprune.sparsity_report(net).dense]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.affine for m in bns) and isinstance(net.last_bn, nn.BatchNorm1d)
    kept = binprune.convert_to_binary_supermask(model, bn="keep", last_bn=False)
    assert all(m.affine for m in kept.modules() if isinstance(m, nn.BatchNorm2d)) and kept.last_bn is None
    assert not any(p.requires_grad for n, p in kept.named_parameters() if not n.endswith("scores"))


def test_global_allocation_keeps_budget():
    net = binprune.convert_to_binary_supermask(_small(), sparsity=0.9, allocation="global")
    report = binprune.sparsity_report(net)
    assert report.masked_kept == round(0.1 * report.masked_total)
    net(torch.rand(4, 1, 28, 28)).sum().backward()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=10.0)
    opt.step()
    assert binprune.sparsity_report(net).masked_kept == round(0.1 * report.masked_total)


def test_lbn_shape_error_is_clear():
    net = binprune.convert_to_binary_supermask(_small(), num_classes=7)
    with pytest.raises(ValueError, match=r"expects logits of shape \(N, 7\)"):
        net(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(sparsity=1.0), ValueError, r"outside \[0, 1\)"),
        (dict(sparsity=-0.1), ValueError, r"outside \[0, 1\)"),
        (dict(allocation="layerwise"), ValueError, "unknown allocation"),
        (dict(init="gauss"), ValueError, "unknown init"),
        (dict(bn="drop"), ValueError, "unknown bn mode"),
        (dict(score_init_scale=0), ValueError, "score_init_scale"),
        (dict(exclude=["nope"]), ValueError, "does not have"),
        (dict(exclude=[3]), TypeError, "module names"),
    ],
)
def test_convert_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        binprune.convert_to_binary_supermask(_small(), **kwargs)


def test_convert_rejects_non_modules_lazy_and_converted_models():
    with pytest.raises(TypeError, match="nn.Module"):
        binprune.convert_to_binary_supermask("resnet18")
    with pytest.raises(ValueError, match="lazy module"):
        binprune.convert_to_binary_supermask(nn.Sequential(nn.LazyLinear(3)))
    with pytest.raises(ValueError, match="no Conv, Linear"):
        binprune.convert_to_binary_supermask(nn.Sequential(nn.ReLU()))
    net = binprune.convert_to_binary_supermask(_small())
    with pytest.raises(ValueError, match="already a supermask"):
        binprune.convert_to_binary_supermask(net)
