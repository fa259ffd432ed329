"""Every sanity check can fail: each is shown failing on a model built to break it, and passing on
a normal model. Plus: AutoAttack examples outside the threat model are an error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from binprune.data import load_dataset
from binprune.evaluation import SANITY_CHECKS, evaluate, robust_accuracy_from_autoattack, sanity_checks
from binprune.evaluation.sanity import input_gradient_flags
from binprune.models import Normalize

from .conftest import requires_fashion_mnist

EPS = 0.05
N = 64


def _mlp() -> nn.Module:
    """A tiny dense classifier; the batch norm over its logits (as binprune's LBN) keeps it free of
    regions where every ReLU is off and the output is constant."""
    return nn.Sequential(Normalize([0.286], [0.353]), nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10),
                         nn.BatchNorm1d(10, affine=False))


def _train(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x, y = load_dataset("fashion-mnist", split="train").tensors(1500)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(6):
        for i in range(0, len(x), 50):
            loss = nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    """A normal model, a dense surrogate trained on the same data (another seed), and 64 test images."""
    x, y = load_dataset("fashion-mnist", split="test").tensors(N)
    return _train(0), _train(1), x, y


# --- models built to break a check -------------------------------------------------------------

class Quantize(nn.Module):
    """Rounds pixels to 4 levels: a non-differentiable input quantization (zero gradient almost
    everywhere), the classic gradient-masking defense."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 3) / 3


class NoisyLogits(nn.Module):
    """A randomized forward: Gaussian noise on the logits, drawn anew on every call."""

    def __init__(self, base: nn.Module, std: float = 1.0):
        super().__init__()
        self.base, self.std = base, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        return logits + self.std * torch.randn_like(logits)


class SaturatedSoftmax(nn.Module):
    """Outputs probabilities from hugely scaled logits: exactly one-hot in float32, so the
    softmax passes back no gradient."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.base(x) * 1e6, dim=1)


class IgnoresInput(nn.Module):
    """The same logits whatever the input."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.logits = nn.Parameter(torch.linspace(1.0, 0.0, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class OffGridOracle(nn.Module):
    """Wrong on images on the 8-bit pixel grid (every clean image: its logits are rotated by one
    class), right off it (every PGD output): its outputs under PGD's inputs differ from its
    clean ones, so PGD seems to *raise* accuracy."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        scaled = x.detach().flatten(1) * 255
        on_grid = ((scaled - scaled.round()).abs() < 1e-3).all(1, keepdim=True)
        return torch.where(on_grid, logits.roll(1, dims=1), logits)


class SafeFarFromData(nn.Module):
    """Gradient masking that grows with the budget: an input farther than ``radius`` (L-inf) from
    every known clean image gets constant logits of that image's label (zero gradient, always
    right); closer ones get the base model."""

    def __init__(self, base: nn.Module, anchors: torch.Tensor, labels: torch.Tensor, radius: float):
        super().__init__()
        self.base, self.radius = base, radius
        self.register_buffer("anchors", anchors.flatten(1))
        self.register_buffer("labels", labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        nearest, index = torch.cdist(x.detach().flatten(1), self.anchors, p=float("inf")).min(1)
        safe = 10.0 * nn.functional.one_hot(self.labels[index], logits.shape[1]).to(logits) + 0.0 * logits
        return torch.where((nearest > self.radius)[:, None], safe, logits)


class TiresOfAttacks(nn.Module):
    """A "dynamic" defense: after ``patience`` gradient queries in a row (an iterative attack) its
    outputs stop depending on the input (zero gradient), until an ordinary no-grad forward pass
    resets it. PGD-20 sees a normal model; PGD with more, smaller steps stalls early."""

    def __init__(self, base: nn.Module, patience: int = 20):
        super().__init__()
        self.base, self.patience, self.calls = base, patience, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            self.calls = 0
            return self.base(x)
        self.calls += 1
        if self.calls <= self.patience:
            return self.base(x)
        return self.base(x).detach() + 0.0 * x.flatten(1).sum(1, keepdim=True)


# --- helpers -------------------------------------------------------------------------------------

def _check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float = EPS,
           surrogate: nn.Module | None = None, attacks=("clean", "pgd"), **settings) -> dict:
    """Run one check (with the evaluation it reads) and return its report."""
    results = evaluate(model, (x, y), eps=eps, attacks=attacks, device="cpu", progress=False)
    settings = {"restarts": 2, "steps_factor": 2, "square_queries": 200, **settings}
    report = sanity_checks(model, (x, y), eps, results=results, device="cpu", progress=False, surrogate=surrogate,
                           checks=[name], **settings)
    assert report["settings"]["checks"] == [name]
    if report["skipped"]:
        return report["skipped"][0]
    assert report["n_checks"] == 1 and report["passed"] == report["checks"][0]["passed"]
    return report["checks"][0]


# --- a normal model passes every check ------------------------------------------------------------

@pytest.fixture(scope="module")
def normal_report(setup):
    model, surrogate, x, y = setup
    results = evaluate(model, (x, y), eps=EPS, attacks=("clean", "pgd"), device="cpu", progress=False)
    return sanity_checks(model, (x, y), EPS, results=results, restarts=2, steps_factor=2, square_queries=200,
                         surrogate=surrogate, device="cpu", progress=False)


@pytest.mark.slow
@requires_fashion_mnist
@pytest.mark.parametrize("name", list(SANITY_CHECKS))
def test_a_normal_model_passes(normal_report, name):
    checks = {c["name"]: c for c in normal_report["checks"]}
    assert name in checks and checks[name]["passed"] and checks[name]["status"] == "passed", checks.get(name)


@requires_fashion_mnist
def test_a_normal_model_report(normal_report):
    assert normal_report["passed"] and normal_report["n_checks"] == len(SANITY_CHECKS)
    assert not normal_report["skipped"]
    checks = {c["name"]: c["numbers"] for c in normal_report["checks"]}
    assert checks["eps_zero_equals_clean"]["mismatched_examples"] == 0
    assert checks["eps_zero_equals_clean"]["max_perturbation"] == 0.0
    assert checks["restarts_consistent"]["broken_by_reference_only"] == 0
    assert checks["input_gradients_nonzero"]["share"] == 1.0
    assert {"torch", "git_commit"} <= set(normal_report["versions"])


@requires_fashion_mnist
def test_transfer_check_is_skipped_without_a_surrogate(setup):
    model, _, x, y = setup
    result = _check(model, x, y, "transfer_not_better_than_white_box")
    assert result["status"] == "skipped" and result["passed"] is None and "surrogate" in result["description"]
    results = evaluate(model, (x, y), eps=EPS, attacks=("clean", "pgd"), device="cpu", progress=False)
    report = sanity_checks(model, (x, y), EPS, results=results, device="cpu", progress=False,
                           checks=["transfer_not_better_than_white_box", "input_gradients_nonzero"])
    assert report["passed"] and report["n_checks"] == 1  # a skipped check neither passes nor fails
    assert [s["name"] for s in report["skipped"]] == ["transfer_not_better_than_white_box"]


def test_unknown_check_names_are_refused():
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match=r"unknown sanity check\(s\) \['nope'\]"):
        sanity_checks(_mlp().eval(), (x, y), 0.1, results={"settings": {"eps": 0.1}}, checks=["nope"], device="cpu",
                      progress=False)


# --- each check fails on a model built to break it ------------------------------------------------

@requires_fashion_mnist
def test_attack_order_fails_when_pgd_inputs_are_treated_differently(setup):
    model, _, x, y = setup
    result = _check(OffGridOracle(model).eval(), x, y, "attack_order")
    numbers = result["numbers"]
    assert not result["passed"]
    assert numbers["pgd_all_examples"] > numbers["clean"] and numbers["examples_wrong_clean_correct_under_pgd"] > 5


@requires_fashion_mnist
def test_eps_zero_fails_on_a_randomized_forward(setup):
    model, _, x, y = setup
    torch.manual_seed(0)
    result = _check(NoisyLogits(model).eval(), x, y, "eps_zero_equals_clean")
    assert not result["passed"] and result["numbers"]["mismatched_examples"] > 0
    assert result["numbers"]["max_perturbation"] == 0.0  # the inputs were the clean ones: the model differed


@pytest.mark.slow
@requires_fashion_mnist
def test_eps_sweep_fails_when_masking_grows_with_the_budget(setup):
    model, _, x, y = setup
    gated = SafeFarFromData(model, x, y, radius=1.5 * EPS).eval()
    result = _check(gated, x, y, "eps_sweep_non_increasing", eps_multipliers=(0.0, 0.5, 1.0, 2.0))
    accuracy = result["numbers"]["accuracy"]
    assert not result["passed"] and accuracy[3] > accuracy[2] + 0.1  # higher at 2 eps than at eps


@requires_fashion_mnist
def test_large_eps_fails_on_input_quantization(setup):
    model, _, x, y = setup
    result = _check(nn.Sequential(Quantize(), model).eval(), x, y, "large_eps_near_zero", eps=0.1)
    assert not result["passed"] and result["numbers"]["accuracy"] > 0.05


@requires_fashion_mnist
def test_more_steps_fails_when_long_attacks_stall(setup):
    model, _, x, y = setup
    result = _check(TiresOfAttacks(model, patience=20).eval(), x, y, "more_steps_not_better", steps_factor=5)
    more, reference = result["numbers"]["accuracy"][1], result["numbers"]["accuracy"][0]
    assert not result["passed"] and more > reference + 0.05


@requires_fashion_mnist
def test_restarts_fail_on_a_randomized_forward(setup):
    model, _, x, y = setup
    torch.manual_seed(0)
    result = _check(NoisyLogits(model).eval(), x, y, "restarts_consistent")
    numbers = result["numbers"]
    assert not result["passed"]
    assert numbers["broken_by_reference_only"] > 0 and numbers["change"] > numbers["margin"]


@requires_fashion_mnist
@pytest.mark.parametrize("broken", ["quantized input", "saturated softmax", "ignores its input"])
def test_input_gradients_fail_on_masked_gradients(setup, broken):
    model, _, x, y = setup
    masked = {"quantized input": lambda: nn.Sequential(Quantize(), model),
              "saturated softmax": lambda: SaturatedSoftmax(model),
              "ignores its input": IgnoresInput}[broken]().eval()
    finite, nonzero = input_gradient_flags(masked, x, y, batch_size=32, device=torch.device("cpu"))
    assert finite.all() and nonzero.float().mean() < 0.05
    results = {"settings": {"eps": EPS, "norm": "Linf", "n_examples": N}, "accuracy": {}, "attacks": {}}
    report = sanity_checks(masked, (x, y), EPS, results=results, device="cpu", progress=False,
                           checks=["input_gradients_nonzero"])
    check = report["checks"][0]
    assert not report["passed"] and not check["passed"] and check["numbers"]["zero_examples"] > 0.95 * N


@requires_fashion_mnist
def test_input_gradients_fail_on_non_finite_gradients(setup):
    model, _, x, y = setup

    class SqrtInput(nn.Module):  # d sqrt(x) / dx is infinite at x = 0 (most Fashion-MNIST pixels)
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return model(torch.sqrt(z))

    finite, _ = input_gradient_flags(SqrtInput().eval(), x, y, batch_size=N, device=torch.device("cpu"))
    assert not finite.any()


@pytest.mark.slow
@requires_fashion_mnist
def test_square_fails_on_input_quantization(setup):
    model, _, x, y = setup
    result = _check(nn.Sequential(Quantize(), model).eval(), x, y, "square_not_better_than_white_box", eps=0.1,
                    square_queries=300)
    numbers = result["numbers"]
    assert not result["passed"] and numbers["source"] == "Square run alone"
    assert numbers["square"] < numbers["pgd"] - 0.01


@requires_fashion_mnist
def test_transfer_fails_on_input_quantization(setup):
    model, surrogate, x, y = setup
    result = _check(nn.Sequential(Quantize(), model).eval(), x, y, "transfer_not_better_than_white_box", eps=0.1,
                    surrogate=surrogate)
    numbers = result["numbers"]
    assert not result["passed"] and numbers["extra_breaks"] > numbers["margin"]
    assert numbers["broken_by_transfer_only"] > 0


# --- AutoAttack's examples must be in the threat model ------------------------------------------

def _two_pixel_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))  # class = larger of pixels 0 and 1
    return model


def test_autoattack_examples_in_the_threat_model_are_counted():
    x = torch.tensor([[0.55, 0.45, 0, 0]] * 3 + [[0.3, 0.7, 0, 0]])
    y = torch.zeros(4, dtype=torch.long)  # the last one is misclassified on the clean input
    x_adv = x.clone()
    x_adv[1, :2] = torch.tensor([0.49, 0.51])  # 0.06 away, inside eps = 0.1: the label flips
    summary, robust = robust_accuracy_from_autoattack(_two_pixel_model(), x, y, x_adv, eps=0.1, norm="Linf",
                                                      y_adv=torch.tensor([0, 1, 0, 1]))
    assert robust.tolist() == [True, False, True, False] and summary["accuracy"] == pytest.approx(0.5)
    assert summary["invalid_adversarial_examples"] == 0 and summary["max_perturbation"] == pytest.approx(0.06)
    assert summary["predictions_match_autoattack"] is True


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__((2, slice(0, 2)), torch.tensor([0.3, 0.7])),
     r"1 of 4 adversarial examples are outside the threat model \(Linf, eps=0.1.*1 with a Linf perturbation "
     r"above eps=0.1 \(largest 0.25, example 2"),
    (lambda a: a.__setitem__((0, 2), -0.05), r"1 with values outside \[0, 1\] \(min -0.05"),
    (lambda a: a.__setitem__((3, 0), float("nan")), "1 with NaN or infinite values"),
])
def test_autoattack_examples_outside_the_threat_model_are_an_error(change, message):
    x = torch.tensor([[0.55, 0.45, 0, 0]] * 3 + [[0.3, 0.7, 0, 0]])
    y = torch.zeros(4, dtype=torch.long)
    x_adv = x.clone()
    change(x_adv)
    with pytest.raises(ValueError, match=message):
        robust_accuracy_from_autoattack(_two_pixel_model(), x, y, x_adv, eps=0.1, norm="Linf")


def test_l2_threat_model_names_the_l2_norm():
    x = torch.full((2, 4), 0.5)
    x_adv = x.clone()
    x_adv[0] += 0.3  # L2 norm 0.6 > 0.5
    with pytest.raises(ValueError, match=r"L2 perturbation above eps=0.5 \(largest 0.6"):
        robust_accuracy_from_autoattack(_two_pixel_model(), x, torch.zeros(2, dtype=torch.long), x_adv, eps=0.5,
                                        norm="L2")
