import importlib
import math
import sys

import pytest
import torch
from torch import nn

import binprune
from binprune.methods import (
    at_model,
    flyingbird_model,
    ATMCProjection,
    BinaryWeight,
    LatentClip,
    Method,
    atmc_model,
    atmc_size,
    binarize_weights,
    binary_dense_size,
    dense_size,
    get_method,
    hydra_model,
    hydra_scores,
    hydra_size,
    kmeans_codebook,
    list_methods,
    quantize_with_zero,
    register_method,
    rst_model,
    stored_size,
    supermask_size,
    unregister_method,
    weight_counts,
    weight_sparsity,
    width_factor_for_ratio,
)
from binprune.checkpoint import load_checkpoint, save_checkpoint
from binprune.loading import load_model
from binprune.methods.measure import weight_layers
from binprune.spec import attach_spec, find_spec
from binprune.supermask import masked_tensors


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(4, 8))


def _x(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(1))


# --- binary weights ------------------------------------------------------------------------------


def test_binary_weight_forward_is_scaled_sign_with_straight_through_gradient():
    latent = torch.tensor([0.5, -0.25, 1.5, -2.0, 0.0, 0.75], requires_grad=True)
    out = BinaryWeight()(latent)
    alpha = (0.5 + 0.25 + 1.5 + 2.0 + 0.75) / 5  # mean |w| over the non-zero entries
    assert torch.allclose(out, torch.tensor([1, -1, 1, -1, 0, 1.0]) * alpha)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (out * upstream).sum().backward()
    # identity where |w| <= 1, zero where the latent left [-1, 1]
    assert torch.equal(latent.grad, torch.tensor([1.0, 2.0, 0.0, 0.0, 5.0, 6.0]))


def test_binarize_weights_clips_latents_and_layers_compute_with_two_values():
    model = _tiny()
    with torch.no_grad():
        model.net.conv0_0.weight.mul_(10)  # push some latents beyond 1 before binarizing
    model = binarize_weights(model)
    for _, module in weight_layers(model):
        latent = module.parametrizations["weight"].original
        assert latent.abs().max() <= 1
        assert module.weight.detach().abs().unique().numel() == 1  # alpha * {-1, +1}
    with torch.no_grad():
        model.net.fc.parametrizations["weight"].original.add_(5.0)
    LatentClip()(model, 1)
    assert model.net.fc.parametrizations["weight"].original.max() == 1.0
    model(_x()).sum().backward()
    assert model.net.fc.parametrizations["weight"].original.grad is not None


# --- HYDRA ---------------------------------------------------------------------------------------


def test_hydra_score_initialization_formula():
    w = torch.zeros(2, 1, 3, 3)
    w[0, 0, 0, 0], w[1, 0, 2, 2], w[0, 0, 1, 1] = 0.5, -2.0, 1.0
    s = hydra_scores(w)
    scale = math.sqrt(6 / 9)  # fan_in = 1 * 3 * 3
    assert s[0, 0, 0, 0].item() == pytest.approx(scale * 0.5 / 2.0)
    assert s[1, 0, 2, 2].item() == pytest.approx(-scale)
    assert s[0, 0, 1, 1].item() == pytest.approx(scale * 0.5)
    assert s.abs().max().item() == pytest.approx(scale)


def test_hydra_prune_stage_trains_scores_only_with_uniform_counts():
    model = hydra_model(_tiny(), sparsity=0.9, allocation="uniform")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".scores") for n in trainable)
    for mt in masked_tensors(model):
        assert abs(int(mt.mask.keep_count) - 0.1 * mt.original.numel()) <= 1  # the same ratio per layer
        expected = hydra_scores(mt.original)
        assert torch.allclose(mt.mask.scores, expected)  # scores start from the (pre-trained) weights


def test_hydra_finetune_keeps_mask_and_changes_only_kept_weights():
    pruned = hydra_model(_tiny(), sparsity=0.9, allocation="adaptive", p=0.1)
    for binary in (False, True):
        model = hydra_model(_tiny(seed=3), sparsity=0.9, allocation="adaptive", p=0.1, stage="finetune", binary=binary)
        model.load_state_dict(pruned.state_dict())
        LatentClip()(model, 0)
        masks = {mt.name: mt.mask.mask().clone() for mt in masked_tensors(model)}
        before = {mt.name: mt.original.detach().clone() for mt in masked_tensors(model)}
        assert not any(mt.mask.scores.requires_grad for mt in masked_tensors(model))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        model.train()
        nn.functional.cross_entropy(model(_x()), torch.arange(6) % 10).backward()
        opt.step()
        for mt in masked_tensors(model):
            assert torch.equal(mt.mask.mask(), masks[mt.name])  # the mask is fixed
            changed = mt.original.detach() != before[mt.name]
            assert not (changed & ~masks[mt.name]).any()  # pruned weights untouched
            assert changed.any()  # kept weights train
            effective = mt.module.weight.detach()
            assert not effective[~masks[mt.name]].any()
            if binary:
                assert effective[masks[mt.name]].abs().unique().numel() == 1


# --- ATMC ----------------------------------------------------------------------------------------


def test_kmeans_codebook_and_quantization_keep_a_zero_level():
    values = torch.tensor([-3.0, -2.9, -3.1, 0.05, 2.0, 2.2, 1.8, 0.0])
    mask = torch.tensor([True, True, True, True, True, True, True, False])
    q, book = quantize_with_zero(values, mask, levels=2)
    assert sorted(book.tolist()) == pytest.approx([-3.0, 2.0])
    assert q[-1] == 0 and q[3] == 0  # outside the mask, and nearest to the zero level
    assert set(q.tolist()) <= {0.0, *book.tolist()}
    assert kmeans_codebook(torch.randn(1000), 4).numel() == 4


def test_atmc_projection_keeps_exactly_the_global_topk():
    model = _tiny()
    hook = ATMCProjection(model, sparsity=0.9, allocation="global", bits=None)
    weights = [m.weight.detach().clone() for _, m in weight_layers(model)]
    flat = torch.cat([w.abs().flatten() for w in weights])
    k = round(0.1 * flat.numel())
    threshold = torch.topk(flat, k).values.min()
    hook(model, 1)
    after = [m.weight.detach() for _, m in weight_layers(model)]
    assert sum(int((w != 0).sum()) for w in after) == k
    for w0, w1 in zip(weights, after):
        assert torch.equal(w1 != 0, w0.abs() >= threshold)
        assert torch.equal(w1[w1 != 0], w0[w1 != 0])


@pytest.mark.parametrize("allocation", ["global", "adaptive"])
def test_atmc_binary_projection_gives_two_levels_plus_zero(allocation):
    model = atmc_model(_tiny(), sparsity=0.9, allocation=allocation, bits=1)
    hook = ATMCProjection(model, sparsity=0.9, allocation=allocation, bits=1, admm_every=1)
    hook(model, 1)
    info = hook.project(model)
    kept = 0
    for (_, module), layer in zip(weight_layers(model), info):
        w = module.weight.detach()
        assert w[w != 0].unique().numel() <= 2
        kept += int((w != 0).sum())
        assert layer["kept"] == int((w != 0).sum())
    assert kept <= round(0.1 * sum(m.weight.numel() for _, m in weight_layers(model)))
    size = atmc_size(model, bits=1)
    assert size["parts"]["codebooks"] == 4 * 2 * len(info)
    assert size["bytes"] == sum(size["parts"].values())


def test_atmc_step_hook_state_survives_save_and_load(tmp_path):
    model = _tiny()
    hook = ATMCProjection(model, sparsity=0.8, allocation="global", bits=1, admm_every=2, penalty=0.1)
    for step in range(1, 4):
        with torch.no_grad():
            for _, m in weight_layers(model):
                m.weight.add_(0.01 * torch.randn_like(m.weight))
        hook(model, step)
    save_checkpoint(tmp_path / "c.pt", model, step_hook=hook.state_dict())
    restored_model = load_model(tmp_path / "c.pt")
    restored = ATMCProjection(restored_model, sparsity=0.8, allocation="global", bits=1, admm_every=2, penalty=0.1)
    restored.load_state_dict(load_checkpoint(tmp_path / "c.pt")["step_hook"])
    assert restored.step == hook.step == 3
    for a, b in zip(hook.Z + hook.U + hook.codebooks, restored.Z + restored.U + restored.codebooks):
        assert torch.equal(a, b)
    hook(model, 4)
    restored(restored_model, 4)
    for (_, a), (_, b) in zip(weight_layers(model), weight_layers(restored_model)):
        assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="settings"):
        ATMCProjection(model, sparsity=0.8, bits=2).load_state_dict(hook.state_dict())


class _Crash(RuntimeError):
    pass


class _CrashingHook:
    """Wraps a step hook and raises after ``at`` steps (a simulated kill)."""

    def __init__(self, hook, at):
        self.hook, self.at = hook, at

    def __call__(self, model, step):
        if step == self.at:
            raise _Crash()
        self.hook(model, step)

    def state_dict(self):
        return self.hook.state_dict()

    def load_state_dict(self, state):
        self.hook.load_state_dict(state)


@pytest.mark.slow
def test_atmc_training_resumes_exactly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    data = (torch.rand(64, 1, 12, 12, generator=gen), torch.randint(0, 10, (64,), generator=gen))
    settings = dict(sparsity=0.8, allocation="global", bits=1, admm_every=3, penalty=0.05)
    kwargs = dict(eps=0.1, epochs=2, attack="fast", batch_size=16, val_fraction=0.0, lr=0.05, progress=False,
                  device="cpu", checkpoint_every=2)

    def fresh():
        return atmc_model(_tiny(), sparsity=0.8, bits=1)

    reference = fresh()
    hook = ATMCProjection(reference, **settings)
    binprune.train(reference, data, out_dir=tmp_path / "a", step_hook=hook, **kwargs)

    interrupted = fresh()
    with pytest.raises(_Crash):
        binprune.train(interrupted, data, out_dir=tmp_path / "b",
                       step_hook=_CrashingHook(ATMCProjection(interrupted, **settings), at=7), **kwargs)
    resumed = fresh()
    resumed_hook = ATMCProjection(resumed, **settings)
    binprune.train(resumed, data, out_dir=tmp_path / "b", resume=True, step_hook=resumed_hook, **kwargs)
    assert resumed_hook.step == hook.step == 8
    for a, b in zip(hook.Z + hook.U, resumed_hook.Z + resumed_hook.U):
        assert torch.equal(a, b)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


# --- checkpoints and sizes -----------------------------------------------------------------------


def _variants():
    hydra_ft = hydra_model(_tiny(), sparsity=0.9, stage="finetune", binary=True)
    return {
        "dense": _tiny(),
        "binary": binarize_weights(_tiny()),
        "hydra-prune": hydra_model(_tiny(), sparsity=0.9, allocation="adaptive", p=0.1),
        "hydra-finetune-binary": hydra_ft,
        "hydra-finetune-fp": hydra_model(_tiny(), sparsity=0.9, stage="finetune"),
        "binprune-global": binprune.convert_to_binary_supermask(_tiny(), sparsity=0.9, allocation="global"),
        "atmc": atmc_model(_tiny(), sparsity=0.9, bits=1),
        "rst": rst_model(_tiny(), sparsity=0.9),
        "rst-lbn": rst_model(_tiny(), sparsity=0.9, last_bn=True),
        "at-binaryconnect-lbn": at_model(_tiny(), binary=True, last_bn=True),
        "at-fp-lbn": at_model(_tiny(), last_bn=True),
        "flyingbird": flyingbird_model(_tiny(), sparsity=0.9),
        "hydra-prune-bn": hydra_model(_tiny(), sparsity=0.9, train_bn=True),
    }


@pytest.mark.parametrize("kind", ["dense", "binary", "hydra-prune", "hydra-finetune-binary", "hydra-finetune-fp",
                                  "atmc", "rst", "binprune-global", "rst-lbn", "at-binaryconnect-lbn", "at-fp-lbn",
                                  "flyingbird", "hydra-prune-bn"])
def test_every_method_round_trips_through_checkpoints(kind, tmp_path):
    model = _variants()[kind]
    with torch.no_grad():  # move the state away from what a rebuild would give
        for _, p in model.named_parameters():
            p.add_(0.01)
    model.train()
    model(_x())  # batch-norm statistics
    model.eval()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert type(loaded) is type(model)
    assert torch.equal(loaded(_x()), model(_x()))


def test_size_formulas_by_hand():
    model = _tiny()
    weights = sum(m.weight.numel() for _, m in weight_layers(model))  # 36 + 144 + 288 + 576 + 80
    other = sum(v.numel() for k, v in model.state_dict().items() if v.is_floating_point()) - weights
    assert dense_size(model)["bytes"] == 4 * weights + 4 * other
    layers = list(weight_layers(model))
    binary = binarize_weights(_tiny())
    assert binary_dense_size(binary)["bytes"] == (sum(math.ceil(m.weight.numel() / 8) for _, m in layers)
                                                  + 4 * len(layers) + 4 * other)
    pruned = hydra_model(_tiny(), sparsity=0.9, stage="finetune", binary=True)
    size = hydra_size(pruned)
    kept = [int(mt.mask.mask().sum()) for mt in masked_tensors(pruned)]
    assert size["parts"]["weights"] == sum(math.ceil(k / 8) for k in kept)
    assert size["parts"]["scales"] == 4 * len(kept)
    assert size["parts"]["other"] == 4 * other


def test_small_width_factor_hits_the_ratio():
    build = lambda f: binprune.create_model("small_cnn", in_channels=1, widths=(32, 64, 128), width_factor=f)
    full = sum(p.numel() for p in build(1.0).parameters())
    factor, ratio = width_factor_for_ratio(build, 0.01, full)
    assert 0.05 < factor < 0.2
    assert 0.007 < ratio < 0.014


# --- methods as peers: copies, specs, sizes, the registry ----------------------------------------


def _snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
            "spec": find_spec(model)}


_TRANSFORMS = {
    "binarize_weights": lambda m: binarize_weights(m),
    "hydra-prune": lambda m: hydra_model(m, sparsity=0.9),
    "hydra-finetune": lambda m: hydra_model(m, sparsity=0.9, allocation="adaptive", p=0.1, stage="finetune"),
    "hydra-finetune-binary": lambda m: hydra_model(m, sparsity=0.9, stage="finetune", binary=True),
    "atmc": lambda m: atmc_model(m, sparsity=0.9, bits=1),
    "rst": lambda m: rst_model(m, sparsity=0.9),
    "at-binaryconnect-lbn": lambda m: at_model(m, binary=True, last_bn=True),
    "flyingbird": lambda m: flyingbird_model(m, sparsity=0.9),
}


@pytest.mark.parametrize("name", sorted(_TRANSFORMS))
def test_every_transform_returns_a_copy_and_leaves_its_input_unchanged(name):
    base = _tiny()
    before = _snapshot(base)
    out = _TRANSFORMS[name](base)
    assert out is not base
    after = _snapshot(base)
    assert after["modules"] == before["modules"] and after["grad"] == before["grad"]
    assert after["spec"] == before["spec"] and after["spec"].transform_name is None
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], before["state"][k]) for k in before["state"])
    base_storage = {t.untyped_storage().data_ptr() for t in base.state_dict().values()}
    assert not base_storage & {t.untyped_storage().data_ptr() for t in out.state_dict().values()}
    assert find_spec(out).transform_name is not None
    assert find_spec(out).recipe == find_spec(base).recipe  # the architecture is still recorded


def test_stored_size_dispatches_on_the_method_that_built_the_model():
    atmc = atmc_model(_tiny(), sparsity=0.9, bits=1)
    ATMCProjection(atmc, sparsity=0.9, bits=1).project(atmc)
    atmc_fp = atmc_model(_tiny(), sparsity=0.9, bits=None)
    ATMCProjection(atmc_fp, sparsity=0.9, bits=None).project(atmc_fp)
    hydra = hydra_model(_tiny(), sparsity=0.9, stage="finetune", binary=True)
    cases = [
        (_tiny(), dense_size, None),
        (binarize_weights(_tiny()), binary_dense_size, "binary_weights"),
        (hydra, hydra_size, "hydra"),
        (hydra_model(_tiny(), sparsity=0.9), hydra_size, "hydra"),
        (atmc, lambda m: atmc_size(m, 1), "atmc"),
        (atmc_fp, lambda m: atmc_size(m, None), "atmc"),
        (rst_model(_tiny(), sparsity=0.9), supermask_size, "supermask"),
        (binprune.convert_to_binary_supermask(_tiny(), sparsity=0.9), supermask_size, "supermask"),
    ]
    for model, expected, transform in cases:
        assert find_spec(model).transform_name == transform
        size = stored_size(model)
        assert size == expected(model) and size["bytes"] == sum(size["parts"].values())
    assert stored_size(hydra)["parts"]["scales"] == 4 * len(list(weight_layers(hydra)))
    unknown = _tiny()
    attach_spec(unknown, find_spec(unknown).with_transform("no-such-method", {}))
    with pytest.raises(ValueError, match="no-such-method"):
        stored_size(unknown)


def test_a_method_model_keeps_its_spec_through_wrapping(tmp_path):
    model = hydra_model(_tiny(), sparsity=0.9, stage="finetune", binary=True)
    model.eval()
    wrapped = nn.Sequential(model)
    assert find_spec(wrapped) == find_spec(model) and find_spec(wrapped).transform_name == "hydra"
    assert stored_size(wrapped) == stored_size(model)
    assert weight_sparsity(wrapped) == weight_sparsity(model) >= 0.9 - 1e-6
    save_checkpoint(tmp_path / "w.pt", wrapped)
    loaded = load_model(tmp_path / "w.pt")
    assert find_spec(loaded).transform_name == "hydra"
    assert torch.equal(loaded(_x()), wrapped(_x()))


def test_weight_sparsity_counts_zero_conv_and_linear_weights():
    model = _tiny()
    nonzero, total = weight_counts(model)
    assert nonzero == total == sum(m.weight.numel() for _, m in weight_layers(model))
    assert weight_sparsity(model) == 0.0
    with torch.no_grad():
        model.net.fc.weight.zero_()
    assert weight_sparsity(model) == pytest.approx(model.net.fc.weight.numel() / total)
    supermask = binprune.convert_to_binary_supermask(_tiny(), sparsity=0.9)
    assert weight_sparsity(supermask) == pytest.approx(0.9, abs=0.01)


def test_method_registry():
    assert list_methods()[:4] == ["at-fp", "at-fp-lbn", "at-binary", "at-binary-lbn"]
    assert {"hydra-binary", "atmc-binary", "rst", "rst-lbn", "sehwag2019", "flyingbird", "binprune-pgd10",
            "binprune-fast", "binprune-p0.1", "binprune-p0.1-nolbn"} <= set(list_methods())
    assert get_method("hydra-binary").label == "HYDRA (binary), uniform"
    assert get_method("hydra-binary").name == "hydra-binary"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")

    @register_method("test-registry-method")
    class Mine(Method):
        label, strategy, precision = "mine", "uniform", "binary"

    try:
        assert get_method("test-registry-method").name == "test-registry-method"
        assert isinstance(get_method("test-registry-method"), Mine)
        with pytest.raises(ValueError, match="registered already"):
            register_method("test-registry-method")(Mine())
        register_method("test-registry-method", replace=True)(Mine(label="mine, again"))
        assert get_method("test-registry-method").label == "mine, again"
        with pytest.raises(TypeError):
            register_method("test-not-a-method")(object())
    finally:
        unregister_method("test-registry-method")
    assert "test-registry-method" not in list_methods()


def test_baselines_is_a_deprecated_alias_of_methods():
    import binprune.methods

    for name in ("binprune.baselines.compare", "binprune.baselines"):
        sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match="binprune.baselines is deprecated: use binprune.methods"):
        old = importlib.import_module("binprune.baselines")
    assert old.hydra_model is binprune.methods.hydra_model and old.LatentClip is binprune.methods.LatentClip
    assert set(old.__all__) <= set(binprune.methods.__all__)
    with pytest.warns(DeprecationWarning, match="use binprune.experiments.compare"):
        old_compare = importlib.import_module("binprune.baselines.compare")
    from binprune.experiments import compare as new_compare

    assert old_compare.compare is new_compare
    assert old_compare.PRESETS["tiny"].test_examples == 16
    assert list(old_compare.METHODS) == list_methods()
