"""Attacking the compact copy and confirming on the model: the numbers stay the model's."""

import pytest
import torch
from torch import nn

import binprune
from binprune.evaluation.attacks import pgd_confirmed_flags, pgd_robust_flags
from binprune.evaluation.autoattack import run_autoattack
from binprune.evaluation.confirm import AttackForm, autoattack_confirmed, confirm, equivalent_model
from binprune.evaluation.model import correct_flags
from binprune.evaluation.progress import ProgressReporter
from binprune.views import balanced_indices, select_examples
from tests.conftest import requires_fashion_mnist, tiny_trained_supermask

EPS = 0.1


@pytest.fixture(scope="module")
def setup():
    """A briefly trained tiny supermask CNN and 48 class-balanced test images."""
    model = tiny_trained_supermask(EPS)
    x, y, _ = select_examples(binprune.load_dataset("fashion-mnist", split="test"), 48, "balanced", 0)
    return model, x, y


class AlwaysZero(nn.Module):
    """A 'copy' that answers class 0 whatever the input: it agrees with nothing."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.n_classes = n_classes

    def forward(self, x):
        logits = torch.zeros(len(x), self.n_classes) + 0 * self.scale * x.flatten(1).sum(1, keepdim=True)
        logits[:, 0] = 10.0
        return logits


class NoisyLogits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out + torch.randn_like(out)


def _form(copy, x, y):
    return AttackForm(copy, correct_flags(copy, x, y, batch_size=64, device=torch.device("cpu")), {"attacked": "test"})


@pytest.mark.slow
@requires_fashion_mnist
def test_equivalent_model_accepts_the_compact_copy_and_refuses_a_different_function(setup):
    model, x, y = setup
    form, info = equivalent_model(model, x, y, tolerance=1e-4, engine="dense", batch_size=64,
                                  device=torch.device("cpu"))
    assert form is not None and info["attacked"] == "compact" and info["max_logit_difference"] <= info["limit"]
    noisy, info = equivalent_model(NoisyLogits(model), x, y, tolerance=1e-4, engine="dense", batch_size=64,
                                   device=torch.device("cpu"))
    assert noisy is None and info["attacked"] == "model" and "differ" in info["reason"]


@pytest.mark.slow
@requires_fashion_mnist
def test_pgd_on_an_identical_copy_gives_the_plain_flags_and_a_useless_copy_is_reattacked(setup):
    model, x, y = setup
    clean = correct_flags(model, x, y, batch_size=64, device=torch.device("cpu"))
    options = dict(eps=EPS, steps=10, batch_size=16, seed=3)
    plain = pgd_robust_flags(model, x, y, clean, **options)
    same, counts = pgd_confirmed_flags(model, _form(model, x, y), x, y, clean, **options)
    assert torch.equal(same, plain) and counts["not_transferred"] == 0 and counts["reattacked"] == 0
    assert counts["confirmed"] == int(clean.sum() - plain.sum())
    # The copy is wrong everywhere, so its "adversarial examples" fool nothing: every example is
    # attacked again on the model, and the result is the model's, not the copy's 0.
    flags, counts = pgd_confirmed_flags(model, _form(AlwaysZero(), x, y), x, y, clean, **options)
    assert counts["reattacked"] == counts["not_transferred"] == int(clean.sum()) > 0
    assert counts["broken_by_reattack"] == int(clean.sum() - flags.sum())
    assert 0 < int(flags.sum()) and not bool((flags & ~clean).any())


@pytest.mark.slow
@requires_fashion_mnist
def test_autoattack_with_a_useless_copy_equals_autoattack_on_the_model(setup):
    model, x, y = setup
    dev = torch.device("cpu")
    clean = correct_flags(model, x, y, batch_size=64, device=dev)
    settings = dict(eps=EPS, norm="Linf", version="apgd", attacks=None, iterations=3, square_queries=None,
                    batch_size=64, device=dev, seed=0)
    _, plain = run_autoattack(model, x, y, clean=clean, **settings)

    def on_model(xs, ys):
        return run_autoattack(model, xs, ys, clean=torch.ones(len(xs), dtype=torch.bool), **settings)

    result, flags = autoattack_confirmed(model, _form(AlwaysZero(), x, y), x, y, clean, run_on_model=on_model,
                                         progress=ProgressReporter(False), **settings)
    assert torch.equal(flags, plain)
    assert result["attack_form"]["reattacked"] == int(clean.sum()) and result["accuracy"] == int(plain.sum()) / len(x)


@pytest.mark.slow
@requires_fashion_mnist
def test_evaluate_records_the_attack_form_and_can_be_switched_off(setup):
    model, x, y = setup
    on = binprune.evaluate(model, (x, y), eps=EPS, attacks=("clean", "pgd"), progress=False, pgd_steps=5)
    off = binprune.evaluate(model, (x, y), eps=EPS, attacks=("clean", "pgd"), progress=False, pgd_steps=5,
                            attack_compact=False)
    assert on.model["attack_form"]["attacked"] == "compact" and on.settings["attack_compact"] is True
    assert "attack_form" in on.attacks["pgd"].details and "attack_form" not in off.attacks["pgd"].details
    assert off.model["attack_form"]["attacked"] == "model"
    assert torch.equal(on.attacks["clean"].robust, off.attacks["clean"].robust)
    with pytest.raises(ValueError, match="compact_tolerance"):
        binprune.evaluate(model, (x, y), eps=EPS, attacks=("clean",), compact_tolerance=0, progress=False)


def test_confirm_refuses_examples_outside_the_threat_model():
    x = torch.rand(4, 1, 28, 28) * 0.5 + 0.25
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    form = AttackForm(model, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside the threat model"):
        confirm(model, form, x, x + 0.2, torch.zeros(4, dtype=torch.long), eps=0.1, norm="Linf", batch_size=4,
                device=torch.device("cpu"))


def test_balanced_selection_has_every_class_equally_and_in_turn():
    labels = torch.arange(10).repeat_interleave(30)  # stored sorted by class
    idx = balanced_indices(labels, 43, seed=1)
    counts = torch.bincount(labels[idx], minlength=10)
    assert len(idx) == 43 and len(set(idx.tolist())) == 43
    assert counts.tolist() == [5, 5, 5] + [4] * 7
    assert sorted(labels[idx[:10]].tolist()) == list(range(10))
    assert torch.equal(idx, balanced_indices(labels, 43, seed=1))
    assert not torch.equal(idx, balanced_indices(labels, 43, seed=2))
    with pytest.raises(ValueError, match="class-balanced"):
        balanced_indices(labels, 400, seed=1)
