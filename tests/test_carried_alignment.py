"""The carried fast attack keeps its perturbation in the padded frame of the original image
(Liu et al.'s FGSM_RS), so crops and flips of later epochs read it back where it was written."""

import pytest
import torch
from torch import nn

from binprune.adversary import CARRIED_ALPHA_FACTOR, CarriedFGSM, attack_bn_mode, default_alpha
from binprune.data import (
    CROP_PADDING,
    augment_batch,
    augmentation_generator,
    crop_flip,
    crop_flip_params,
    uncrop_flip,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


def test_crop_params_reproduce_the_augmentation():
    x = torch.rand(6, 3, 8, 8)
    out = augment_batch(x, "crop_flip", augmentation_generator(3, 2, 5))
    offsets, flips = crop_flip_params(6, augmentation_generator(3, 2, 5))
    assert torch.equal(out, crop_flip(x, offsets, flips))


def test_uncrop_inverts_crop_inside_the_window_and_keeps_the_rest():
    padded = torch.randn(4, 3, 8 + 2 * CROP_PADDING, 8 + 2 * CROP_PADDING)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [8, 0]])
    flips = torch.tensor([True, False, True, True])
    values = torch.randn(4, 3, 8, 8)
    out = uncrop_flip(values, offsets, flips, into=padded)
    assert torch.equal(crop_flip(out, offsets, flips, padded=True), values)
    outside = torch.ones_like(padded, dtype=torch.bool)
    outside[0, :, 0:8, 0:8] = False
    assert torch.equal(out[0][outside[0]], padded[0][outside[0]])


def test_carried_perturbation_stays_aligned_under_crop_and_flip():
    """Write a perturbation under one crop/flip, read it under another: every pixel of the
    original image that both crops see gets back the perturbation it was given."""
    eps = 8 / 255
    attack = CarriedFGSM(_model(), num_examples=2, example_shape=(3, 8, 8), eps=eps, padding=CROP_PADDING)
    images = torch.rand(2, 3, 8, 8) * 0.5 + 0.25  # away from the [0, 1] clamp
    labels = torch.tensor([1, 2])
    rows = torch.tensor([0, 1])
    first = (torch.tensor([[2, 6], [0, 8]]), torch.tensor([False, True]))
    aug1 = crop_flip(images, *first)
    adv1 = attack(aug1, labels, rows, first)
    delta1 = adv1 - aug1  # in the coordinates of the first augmentation
    # the same perturbation, mapped back to the padded original frame
    frame1 = uncrop_flip(delta1, *first, into=torch.full((2, 3, 16, 16), float("nan")))
    second = (torch.tensor([[5, 1], [4, 4]]), torch.tensor([True, False]))
    stored = crop_flip(attack.codes[rows].float() * eps / 127, *second, padded=True)
    expected = crop_flip(frame1, *second, padded=True)
    seen = ~torch.isnan(expected)
    assert seen.any() and (~seen).any()  # the two windows overlap only in part
    assert torch.allclose(stored[seen], expected[seen], atol=eps / 127 + 1e-6)


def test_carried_attack_refuses_missing_crops_and_uses_the_reference_step():
    attack = CarriedFGSM(_model(), 2, (3, 8, 8), eps=0.1, padding=CROP_PADDING)
    try:
        attack(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.tensor([0, 1]))
    except ValueError as exc:
        assert "crops" in str(exc)
    else:
        raise AssertionError("missing crops were accepted")
    assert attack.codes.shape == (2, 3, 16, 16)
    assert attack.alpha == CARRIED_ALPHA_FACTOR * 0.1 == default_alpha("fast", 0.1, 1, carry=True)
    assert default_alpha("fast", 0.1, 1) == 1.25 * 0.1


def test_trades_attack_runs_with_batch_norm_in_eval_mode_by_default():
    assert attack_bn_mode("trades", None) == "eval"
    assert attack_bn_mode("pgd", None) == "train"
    assert attack_bn_mode("trades", "train") == "train"


@pytest.mark.slow
def test_the_trainer_gives_the_attack_the_crops_each_batch_received(monkeypatch):
    """Through binprune.train on crop-and-flip data: the crops handed to the carried attack are
    exactly the augmentation of the images it attacks."""
    from binprune.data import ImageTensorDataset
    from binprune.models import create_model
    from binprune.training import train

    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (24, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = ImageTensorDataset(raw, torch.randint(0, 10, (24,), generator=g), [str(i) for i in range(10)], "syn",
                              (0.5,) * 3, (0.25,) * 3, "crop_flip")
    seen = []
    original = CarriedFGSM.forward

    def spy(self, images, labels, indices, crops=None):
        seen.append((images.clone(), indices.clone(), crops))
        return original(self, images, labels, indices, crops)

    monkeypatch.setattr(CarriedFGSM, "forward", spy)
    model = create_model("small_cnn", num_classes=10, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3,
                         widths=[4, 8], seed=0)
    train(model, data, eps=8 / 255, epochs=2, attack="fast", carry_perturbation=True, batch_size=8, val_fraction=0,
          progress=False)
    assert len(seen) == 6
    for images, idx, crops in seen:
        assert crops is not None
        assert torch.equal(images, crop_flip(raw[idx].float().div(255), *crops))
