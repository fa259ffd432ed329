"""Each baseline's distinctive mechanic, as its reference implements it (docs/BASELINES.md), the
equal step budget, and the paper's presets (one optimizer step each on tiny data)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from binprune import create_model
from binprune.config import CompareConfig, RunConfig, config_from_dict, load_preset
from binprune.convert import convert_to_binary_supermask
from binprune.data import ImageTensorDataset
from binprune.methods import (
    ATMCProjection,
    ConnectClip,
    ConnectSign,
    DynamicSparsity,
    LastBatchNorm,
    at_model,
    get_method,
    hydra_model,
    hydra_scores,
    rst_model,
    weight_layers,
)
from binprune.methods.atmc import ATMC_RHO, ATMC_TRAIN
from binprune.methods.base import Phase
from binprune.methods.hydra import HYDRA_TRAIN
from binprune.supermask import masked_tensors
from binprune.training import train


def _net(widths=(4, 8)):
    return create_model("small_cnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.5], widths=list(widths), seed=0)


def _data(n=64, channels=1, size=28, augment="none", seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    mean, std = (0.5,) * channels, (0.25,) * channels
    return ImageTensorDataset(images, labels, [str(i) for i in range(10)], "synthetic", mean, std, augment)


# --- HYDRA -----------------------------------------------------------------------------------------


def test_hydra_scores_are_its_scaled_weight_init_and_batch_norms_train_while_pruning():
    net = _net()
    for _, m in weight_layers(net):
        w = m.weight.detach()
        fan = w[0].numel()
        expected = math.sqrt(6 / fan) * w / w.abs().max()  # hydra utils/model.py initialize_scaled_score
        assert torch.allclose(hydra_scores(w), expected)
    pruned = hydra_model(net, sparsity=0.9, stage="prune", train_bn=True)
    trainable = {n for n, p in pruned.named_parameters() if p.requires_grad}
    bn_names = {f"{name}.{p}" for name, m in pruned.named_modules() if isinstance(m, nn.BatchNorm2d)
                for p in ("weight", "bias")}
    assert bn_names and bn_names <= trainable  # --freeze-bn off
    assert all(n.endswith(".scores") or n in bn_names for n in trainable)
    first = next(iter(masked_tensors(pruned)))
    assert torch.allclose(first.mask.scores.detach(), hydra_scores(next(weight_layers(net))[1].weight))


def test_hydra_phases_use_its_trainer_and_the_100_20_100_split():
    ctx = _Ctx(CompareConfig(epochs=11))
    phases = get_method("hydra-fp-p0.1").phases(ctx)
    assert [p.train for p in phases] == [HYDRA_TRAIN] * 3 and HYDRA_TRAIN["attack"] == "trades"
    assert [p.lr for p in phases] == [0.1, 0.1, 0.01]
    epochs = [p.budget_epochs(11, "equal") for p in phases]
    assert epochs == pytest.approx([5.0, 1.0, 5.0]) and sum(epochs) == pytest.approx(11)
    assert [p.budget_epochs(11, "published") for p in phases] == [100, 20, 100]


# --- BinaryConnect --------------------------------------------------------------------------------


def test_binaryconnect_sign_is_unscaled_straight_through_and_clipped():
    latent = torch.tensor([-0.3, 0.0, 0.02, 0.9], requires_grad=True)
    out = ConnectSign()(latent)
    assert out.tolist() == [-1.0, 1.0, 1.0, 1.0]  # no scale; sign(0) = +1 (BinMask in conv_type.py)
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert latent.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # straight through
    model = at_model(_net(), binary=True, last_bn=True)
    assert isinstance(model, LastBatchNorm) and model.last_bn.affine
    layer = next(weight_layers(model))[1]
    with torch.no_grad():
        layer.parametrizations["weight"].original.mul_(50)
    ConnectClip()(model, 1)
    latent = layer.parametrizations["weight"].original
    assert latent.abs().max() <= 1.0 and set(layer.weight.unique().tolist()) <= {-1.0, 1.0}


def test_binary_at_phase_trains_with_adam_and_cosine():
    (phase,) = get_method("at-binary-lbn").phases(_Ctx(CompareConfig()))
    assert phase.train == {"optimizer": "adam", "schedule": "cosine"} and phase.lr == 5e-4
    model = phase.build(phase.start())
    result = train(model, _data(32), eps=0.1, epochs=1, attack="fast", batch_size=16, val_fraction=0, progress=False,
                   **phase.train, lr=phase.lr, step_hook=ConnectClip())
    assert result.facts["optimizer_steps"] == 2


# --- ATMC ------------------------------------------------------------------------------------------


def test_atmc_loss_has_its_admm_term_and_its_stages():
    net = _net()
    hook = ATMCProjection(net, sparsity=0.9, bits=1, penalty=0.0, rho=ATMC_RHO)
    weights = [m.weight for _, m in weight_layers(net)]
    expected = ATMC_RHO / 2 * sum(((w - z + u) ** 2).sum() for w, z, u in zip(weights, hook.Z, hook.U))
    term = hook.loss_term(net)
    assert term.requires_grad and torch.allclose(term, expected) and float(term.detach()) > 0
    assert ATMC_TRAIN["clean_loss_weight"] == 0.5
    phases = get_method("atmc-binary-p0.1").phases(_Ctx(CompareConfig(epochs=3)))
    assert [p.name.split("-")[1] for p in phases] == ["pretrain", "l0", "1bit"]
    assert [p.budget_epochs(3, "equal") for p in phases] == pytest.approx([1.0, 1.0, 1.0])
    assert [p.lr for p in phases] == [0.05, 0.01, 0.005]
    l0 = phases[1].hook(net)
    assert l0.bits is None and l0.loss_term(net) == 0.0  # the L0 stage projects only


def test_trainer_adds_the_clean_term_and_a_hooks_loss_term():
    """With no attack, 0.5 CE(clean) + 0.5 CE(adv) is the plain CE; a hook's constant loss term
    shows in the logged loss without changing the step."""

    class Constant:
        def __call__(self, model, step):
            pass

        def loss_term(self, model):
            return torch.tensor(5.0)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    data = _data(32)
    runs = []
    for kwargs in ({}, {"clean_loss_weight": 0.5}, {"step_hook": Constant()}):
        model = _net()
        result = train(model, data, eps=0.1, epochs=1, attack="none", batch_size=16, val_fraction=0, progress=False,
                       **kwargs)
        runs.append((result.history[0]["train_loss"], next(weight_layers(result.model))[1].weight.detach().clone()))
    assert runs[1][0] == pytest.approx(runs[0][0]) and torch.allclose(runs[1][1], runs[0][1])
    assert runs[2][0] == pytest.approx(runs[0][0] + 5.0) and torch.equal(runs[2][1], runs[0][1])


# --- RST -------------------------------------------------------------------------------------------


def test_rst_uses_a_signed_kaiming_constant_kaiming_uniform_scores_and_no_lbn():
    net = rst_model(_net(), sparsity=0.9)
    assert net.last_bn is None
    assert not any(m.affine for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    for mt in masked_tensors(net):
        w = mt.original
        fan = w[0].numel()
        assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / fan)))  # gain(relu) / sqrt(fan_in)
        assert (w > 0).any() and (w < 0).any()
        bound = 1 / math.sqrt(fan)  # kaiming_uniform_(a=sqrt(5))
        assert mt.mask.scores.abs().max() <= bound and mt.mask.scores.abs().max() > 0.5 * bound
    assert rst_model(_net(), sparsity=0.9, last_bn=True).last_bn is not None


# --- Flying Bird -----------------------------------------------------------------------------------


def test_flyingbird_prunes_by_magnitude_and_regrows_keeping_each_layers_count():
    net = _net()
    hook = DynamicSparsity(net, sparsity=0.9, allocation="uniform", total_steps=78_200, seed=0)
    assert hook.intervals == (900, 1200)
    weights = [m.weight for _, m in weight_layers(net)]
    before = [m.clone() for m in hook.masks]
    smallest = []
    for w, m in zip(weights, hook.masks):
        kept = w.detach().abs()[m]
        smallest.append(kept.min())
    hook.prune_and_regrow(weights)
    for w, m0, m1, k in zip(weights, before, hook.masks, hook.counts):
        assert int(m1.sum()) == k and not torch.equal(m0, m1)
        assert (w.detach()[~m1] == 0).all()
    assert hook.current_death_rate() == pytest.approx(0.5)
    hook.step = 78_200
    assert hook.current_death_rate() == pytest.approx(0.005)


# --- budgets ---------------------------------------------------------------------------------------


def test_phase_settings_are_restricted_to_the_methods_own():
    with pytest.raises(ValueError, match="cannot differ"):
        Phase("x", start=_net, build=lambda m: m, lr=0.1, train={"eps": 0.3})
    with pytest.raises(ValueError, match="both"):
        Phase("x", start=_net, build=lambda m: m, lr=0.1, epochs=10)


def test_fractional_budget_stops_after_its_steps():
    result = train(_net(), _data(64), eps=0.1, epochs=2, budget_epochs=1.5, attack="none", batch_size=16,
                   val_fraction=0, progress=False)
    assert result.facts["optimizer_steps"] == 6


class _Ctx:
    """A minimal method context: phases are built, not trained."""

    def __init__(self, config):
        self.config = config

    def base_model(self, width_factor=1.0):
        return _net()

    def small_width(self):
        return 0.5, 0.25

    def run_phase(self, phase):
        raise AssertionError("not trained here")

    def phase_steps(self, phase):
        return 10


# --- the paper's presets ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper-resnet34-cifar10", "paper-resnet34-cifar10-fast", "paper-resnet18-cifar10",
                                  "paper-resnet18-cifar10-fast"])
def test_paper_presets_run_one_optimizer_step(name):
    run = config_from_dict(RunConfig, load_preset("train", name), where=name)
    m, t = run.model, run.train
    assert t.batch_size == 256 and t.eps == pytest.approx(8 / 255) and m.sparsity == 0.99 and m.p == 0.1
    assert (t.epochs, t.attack) in ((400, "pgd"), (100, "fast"))
    data = _data(2, channels=3, size=32, augment="crop_flip")
    model = create_model(m.arch, num_classes=10, in_channels=3, mean=data.mean, std=data.std, seed=0)
    net = convert_to_binary_supermask(model, sparsity=m.sparsity, allocation=m.allocation, p=m.p, init=m.init,
                                      last_bn=m.last_bn, seed=0)
    before = [mt.mask.scores.detach().clone() for mt in masked_tensors(net)]
    tiny = dataclasses.replace(t, epochs=1, batch_size=2, val_fraction=0.0)
    result = train(net, data, tiny, progress=False)
    assert result.facts["optimizer_steps"] == 1
    after = [mt.mask.scores.detach() for mt in masked_tensors(result.model)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_every_phase_of_every_method_has_valid_settings_under_each_cpu_preset(tmp_path):
    """The comparison's settings with each method's own (a method's iterative attack drops the
    preset's carried perturbation), for every registered method and both budgets."""
    from binprune.experiments.compare import Runner, resolve_preset
    from binprune.methods import list_methods

    for preset in ("fmnist-cpu", "cifar10-cpu", "paper-cifar10-resnet34"):
        for budget in ("equal", "published"):
            config = dataclasses.replace(resolve_preset(preset), budget=budget)
            runner = Runner(config, tmp_path, None, device=torch.device("cpu"), progress=False, log=print)
            for name in list_methods():
                for phase in get_method(name).phases(_Ctx(config)):
                    cfg = runner.phase_config(phase)  # validated
                    if cfg.attack != "fast":
                        assert not cfg.carry_perturbation


@pytest.mark.parametrize("method, options", [("Hydra", {"binary": False}), ("Sehwag2019", {})])
def test_pruning_methods_refuse_an_unknown_trainer(method, options):
    from binprune.methods import hydra

    with pytest.raises(ValueError, match="trainer must be 'trades'"):
        getattr(hydra, method)(trainer="fgsm", **options)
