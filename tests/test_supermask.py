import copy

import pytest
import torch
from torch import nn

from binprune.supermask import GlobalBudget, TopKMask, apply_mask, masked_tensors, topk_mask


def _masked_conv(k=20, seed=0):
    conv = nn.Conv2d(3, 8, 3)
    g = torch.Generator().manual_seed(seed)
    mask = apply_mask(conv, "weight", scores=torch.empty_like(conv.weight).uniform_(-0.01, 0.01, generator=g),
                      keep_count=k)
    return conv, mask


@pytest.mark.parametrize("k", [0, 1, 7, 100, 215, 216])
def test_topk_mask_keeps_exactly_k(k):
    scores = torch.randn(6, 6, 6)
    mask = topk_mask(scores, k)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int(mask.sum()) == k
    if 0 < k < scores.numel():
        assert scores.abs()[mask].min() >= scores.abs()[~mask].max()


def test_topk_mask_exact_with_ties():
    scores = torch.zeros(1000)
    scores[:10] = 1.0
    assert int(topk_mask(scores, 500).sum()) == 500
    assert int(topk_mask(torch.ones(33), 7).sum()) == 7


def test_topk_mask_rejects_bad_k():
    with pytest.raises(ValueError, match="outside"):
        topk_mask(torch.randn(10), 11)


def test_straight_through_gradient_matches_hand_computation():
    conv, mask = _masked_conv(k=30)
    x = torch.randn(4, 3, 9, 9)
    target = torch.randn(4, 8, 7, 7)
    loss = ((conv(x) - target) ** 2).mean()
    loss.backward()

    w = conv.parametrizations.weight.original
    m = topk_mask(mask.scores, 30)
    w_eff = (w * m).detach().requires_grad_(True)
    ref = ((nn.functional.conv2d(x, w_eff, conv.bias) - target) ** 2).mean()
    (grad_w_eff,) = torch.autograd.grad(ref, w_eff)
    expected = torch.sign(mask.scores.detach()) * w * grad_w_eff
    torch.testing.assert_close(mask.scores.grad, expected, rtol=0, atol=0)
    assert torch.equal(conv.weight, w * m)


def test_fixed_weight_gets_no_gradient_and_is_a_buffer():
    conv, mask = _masked_conv()
    names = [n for n, _ in conv.named_parameters()]
    assert names == ["bias", "parametrizations.weight.0.scores"]
    assert "parametrizations.weight.original" in dict(conv.named_buffers())


def test_trainable_weight_gets_masked_gradient():
    lin = nn.Linear(5, 4)
    apply_mask(lin, "weight", scores=torch.randn(4, 5), keep_count=6, weight_trainable=True)
    mask_module = lin.parametrizations.weight[0]
    mask_module.scores.requires_grad_(False)
    lin(torch.randn(3, 5)).sum().backward()
    grad = lin.parametrizations.weight.original.grad
    assert grad is not None
    assert torch.equal(grad != 0, mask_module.mask() & (grad != 0))
    assert int((grad != 0).sum()) <= 6


class _CountingMask(TopKMask):
    calls = 0

    def compute_mask(self, scores, k):
        type(self).calls += 1
        return super().compute_mask(scores, k)


def test_mask_recomputed_only_when_scores_change():
    lin = nn.Linear(16, 16)
    counting = _CountingMask(torch.randn(16, 16), 10)
    from torch.nn.utils import parametrize
    parametrize.register_parametrization(lin, "weight", counting, unsafe=True)
    _CountingMask.calls = 0
    x = torch.randn(2, 16, requires_grad=True)
    for _ in range(12):  # an attack: many forwards and input gradients, no optimizer step
        torch.autograd.grad(lin(x).sum(), x)
    with torch.no_grad():
        lin(x)
    assert _CountingMask.calls == 1
    opt = torch.optim.SGD([counting.scores], lr=0.1)
    lin(x).sum().backward()
    opt.step()
    lin(x)
    lin(x)
    assert _CountingMask.calls == 2
    with torch.no_grad():
        counting.keep_count.fill_(3)
    assert int((lin.weight != 0).sum()) <= 3
    assert _CountingMask.calls == 3


def test_eval_forward_is_bit_identical():
    conv, _ = _masked_conv()
    conv.eval()
    x = torch.randn(2, 3, 10, 10)
    assert torch.equal(conv(x), conv(x))


def test_global_budget_keeps_exact_total_with_one_threshold():
    a, b = nn.Linear(20, 10), nn.Linear(10, 30)
    budget = GlobalBudget(total_keep=50)
    sa, sb = torch.randn(10, 20), torch.randn(30, 10) * 3
    apply_mask(a, "weight", scores=sa.clone(), keep_count=0, budget=budget)
    apply_mask(b, "weight", scores=sb.clone(), keep_count=0, budget=budget)
    ma, mb = a.parametrizations.weight[0].mask(), b.parametrizations.weight[0].mask()
    assert int(ma.sum()) + int(mb.sum()) == 50
    threshold = torch.cat([sa.abs().flatten(), sb.abs().flatten()]).topk(50).values.min()
    assert bool((sa.abs()[ma] >= threshold).all()) and bool((sb.abs()[mb] >= threshold).all())
    assert int(b.parametrizations.weight[0].keep_count) == int(mb.sum())


def test_deepcopy_and_masked_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    for i in (0, 2):
        apply_mask(model[i], "weight", scores=torch.randn_like(model[i].weight), keep_count=3)
    clone = copy.deepcopy(model)
    assert [t.name for t in masked_tensors(clone)] == ["0.weight", "2.weight"]
    x = torch.randn(3, 4)
    assert torch.equal(clone(x), model(x))
    with torch.no_grad():
        scores = next(masked_tensors(clone)).mask.scores
        order = scores.abs().flatten().argsort()  # the clone now keeps its 3 smallest scores
        scores.view(-1)[order[:3]] = 10.0
    assert not torch.equal(clone[0].weight, model[0].weight)


def test_apply_mask_errors():
    lin = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="no tensor named"):
        apply_mask(lin, "nope", scores=torch.randn(3, 3), keep_count=1)
    with pytest.raises(ValueError, match="do not match"):
        apply_mask(lin, "weight", scores=torch.randn(2, 3), keep_count=1)
    with pytest.raises(ValueError, match="outside"):
        apply_mask(nn.Linear(3, 3), "weight", scores=torch.randn(3, 3), keep_count=10)
    apply_mask(lin, "weight", scores=torch.randn(3, 3), keep_count=1)
    with pytest.raises(ValueError, match="already parametrized"):
        apply_mask(lin, "weight", scores=torch.randn(3, 3), keep_count=1)
