"""binprune's own attacks give the same adversarial examples as torchattacks' (same steps, same
random numbers), so installing binprune without torchattacks changes no result."""

import pytest
import torch
from torch import nn

from binprune.adversary import FastFGSM, L2PGD, LinfPGD, TradesPGD, is_attack, make_attack

torchattacks = pytest.importorskip("torchattacks")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (LinfPGD, "PGD", dict(eps=0.1, alpha=0.03, steps=3, random_start=True)),
    (L2PGD, "PGDL2", dict(eps=0.5, alpha=0.1, steps=3, random_start=True)),
    (TradesPGD, "TPGD", dict(eps=0.1, alpha=0.03, steps=3)),
    (FastFGSM, "FFGSM", dict(eps=0.1, alpha=0.125)),
])
@pytest.mark.parametrize("training", [False, True])
def test_same_examples_as_torchattacks(ours, theirs, kwargs, training):
    model = _model()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 10
    results, modes = [], []
    for attack in (ours(model, **kwargs), getattr(torchattacks, theirs)(model, **kwargs)):
        if training:
            attack.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=False)
        model.train()
        torch.manual_seed(1)
        results.append(attack(x, y))
        modes.append(model.training)
    assert torch.equal(results[0], results[1])
    assert modes == [True, True] and is_attack(results and ours(model, **kwargs))
    assert (results[0] - x).abs().max() <= kwargs["eps"] + 1e-6 or ours is L2PGD


def test_make_attack_builds_binprune_attacks():
    model = _model()
    assert isinstance(make_attack("pgd", model, eps=0.1), LinfPGD)
    assert isinstance(make_attack("trades", model, eps=0.1), TradesPGD)
    assert isinstance(make_attack("fast", model, eps=0.1), FastFGSM)
    assert is_attack(torchattacks.FGSM(model, eps=0.1)) and not is_attack(model)
