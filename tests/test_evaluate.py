"""Evaluation: clean / PGD / AutoAttack accuracies, sanity checks, and the ``binprune eval`` command."""

import json

import pytest
import torch
from torch import nn

import binprune
from binprune.checkpoint import save_checkpoint
from binprune.cli import main
from binprune.data import ImageTensorDataset, load_dataset
from binprune.config import EvalConfig, SanityConfig
from binprune.evaluation import (
    ATTACKS,
    SANITY_CHECKS,
    AttackContext,
    check_result,
    evaluate,
    evaluation_tensors,
    register_attack,
    register_check,
    robust_accuracy_from_autoattack,
    run_autoattack,
    sanity_checks,
)
from binprune.models import Normalize
from binprune.results import AttackResult, EvalReport
from binprune.supermask import TopKMask

from .conftest import requires_fashion_mnist


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids OpenMP contention.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _mlp() -> nn.Module:
    """A tiny dense classifier; the batch norm over its logits (as binprune's LBN) keeps it from
    having zero-gradient regions where every ReLU is off and the output is a constant."""
    return nn.Sequential(Normalize([0.286], [0.353]), nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10),
                         nn.BatchNorm1d(10, affine=False))


@pytest.fixture(scope="module")
def trained():
    """A small dense classifier trained briefly with plain SGD on real Fashion-MNIST images."""
    torch.manual_seed(0)
    x, y = load_dataset("fashion-mnist", split="train").tensors(1500)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(6):
        for i in range(0, len(x), 50):
            loss = nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, load_dataset("fashion-mnist", split="test")


def _capture_autoattack_output(monkeypatch):
    """Record what pyautoattack's run_standard_evaluation returns."""
    from pyautoattack import AutoAttack

    returned = {}
    original = AutoAttack.run_standard_evaluation

    def spy(self, x, y, /, **kwargs):
        out = original(self, x, y, **kwargs)
        returned["x"], returned["y"], returned["out"] = x, y, out
        return out

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", spy)
    return returned


def test_robust_accuracy_from_autoattack_examples():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))  # class = larger of pixels 0 and 1
    x = torch.tensor([[0.55, 0.45, 0, 0]] * 4 + [[0.3, 0.7, 0, 0]])
    y = torch.tensor([0, 0, 0, 0, 0])  # the last one is misclassified on clean input
    x_adv = x.clone()
    x_adv[1, :2] = torch.tensor([0.49, 0.51])  # 0.06 away, inside eps=0.1: label flips -> broken
    summary, robust = robust_accuracy_from_autoattack(model, x, y, x_adv, eps=0.1, norm="Linf",
                                                      y_adv=torch.tensor([0, 1, 0, 0, 1]))
    assert robust.tolist() == [True, False, True, True, False]
    assert summary["accuracy"] == pytest.approx(3 / 5)
    assert summary["invalid_adversarial_examples"] == 0
    assert summary["max_perturbation"] == pytest.approx(0.06)
    assert summary["predictions_match_autoattack"] is True
    # y_adv that disagrees with the model's own predictions reveals a non-deterministic model.
    summary, _ = robust_accuracy_from_autoattack(model, x, y, x_adv, eps=0.1, y_adv=torch.zeros(5, dtype=torch.long))
    assert summary["predictions_match_autoattack"] is False
    # An example outside the threat model (0.25 away at eps 0.1), or not an image, is an error.
    outside = x_adv.clone()
    outside[2, :2] = torch.tensor([0.3, 0.7])
    with pytest.raises(ValueError, match="Linf"):
        robust_accuracy_from_autoattack(model, x, y, outside, eps=0.1, norm="Linf")
    not_an_image = x_adv.clone()
    not_an_image[3, 0] = float("nan")
    with pytest.raises(ValueError):
        robust_accuracy_from_autoattack(model, x, y, not_an_image, eps=0.1, norm="Linf")


@pytest.mark.slow
@requires_fashion_mnist
def test_autoattack_accuracy_is_computed_from_what_pyautoattack_returns(trained, monkeypatch):
    model, test = trained
    x, y = test.tensors(48)
    returned = _capture_autoattack_output(monkeypatch)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    result, robust = run_autoattack(model, x, y, eps=0.05, version="custom", attacks=["apgd-ce", "apgd-t", "square"],
                                    iterations=10, square_queries=100, batch_size=32, device="cpu", seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is untouched by AutoAttack's re-seeding

    x_adv, y_adv = returned["out"]
    with torch.no_grad():
        adv_correct = model(x_adv).argmax(1) == y
        clean_correct = model(x).argmax(1) == y
    assert result["accuracy"] == pytest.approx((adv_correct & clean_correct).float().mean().item())
    assert torch.equal(robust, adv_correct & clean_correct)
    assert torch.equal(y_adv, model(x_adv).argmax(1))
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert result["invalid_adversarial_examples"] == 0 and result["predictions_match_autoattack"]
    assert 0 < result["accuracy"] < result["clean_accuracy"]  # the attack found some, not all
    # per-attack counts from AutoAttack's log add up to its final answer
    assert [s["attack"] for s in result["per_attack"]] == ["apgd-ce", "apgd-t", "square"]
    assert result["per_attack_consistent"]
    assert result["per_attack"][-1]["robust_accuracy_after"] == pytest.approx(result["accuracy"])
    assert result["settings"]["device"] == "cpu" and result["settings"]["seed"] == 0
    assert any("running apgd-ce" == r["message"] for r in result["log"])
    # deterministic: the same call gives the same answer
    again, _ = run_autoattack(model, x, y, eps=0.05, version="custom", attacks=["apgd-ce", "apgd-t", "square"],
                              iterations=10, square_queries=100, batch_size=32, device="cpu", seed=0)
    assert again["accuracy"] == result["accuracy"] and again["per_attack"][0] == {
        **result["per_attack"][0], "elapsed_s": again["per_attack"][0]["elapsed_s"]}


def test_autoattack_warnings_are_captured():
    # A model that outputs probabilities triggers AutoAttack's softmax-output check.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Softmax(dim=1)).eval()
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    result, _ = run_autoattack(model, x, y, eps=0.1, version="custom", attacks=["apgd-ce"], iterations=2,
                               device="cpu")
    assert any("probability distribution" in w for w in result["autoattack_warnings"])


@pytest.mark.slow
@requires_fashion_mnist
def test_evaluate_results_settings_and_determinism(trained):
    model, test = trained
    model.train()
    events = []
    r1 = evaluate(model, test, eps=0.05, attacks="clean,pgd", n_examples=100, batch_size=64, device="cpu",
                  progress=events.append)
    assert model.training  # evaluate restores the caller's mode
    model.eval()
    r2 = evaluate(model, test, eps=0.05, attacks=["pgd"], n_examples=100, batch_size=64, device="cpu", progress=False)
    assert r1["accuracy"] == r2["accuracy"]
    acc = r1["accuracy"]
    assert set(acc) == {"clean", "pgd"} and 0 <= acc["pgd"] < acc["clean"] <= 1 and acc["clean"] > 0.6
    pgd = r1["attacks"]["pgd"]
    assert pgd["steps"] == 20 and pgd["restarts"] == 1 and pgd["alpha"] == pytest.approx(2.5 * 0.05 / 20)
    settings = r1["settings"]
    assert (settings["eps"], settings["norm"], settings["n_examples"], settings["device"]) == (0.05, "Linf", 100, "cpu")
    assert settings["attacks"] == ["clean", "pgd"] and settings["seed"] == 0
    assert r1["data"]["selection"] == "the first 100 examples in dataset order"
    assert r1["units"]["accuracy"].startswith("fraction") and r1["units"]["time"] == "seconds"
    assert {"torch", "pyautoattack"} <= set(r1["versions"])
    assert {e["stage"] for e in events if "done" in e} >= {"clean", "pgd-20"}
    json.dumps(r1.to_dict())  # plain types only
    # more restarts can only remove examples; L2 runs through binprune's L2PGD
    r3 = evaluate(model, test, eps=0.05, attacks=["pgd"], n_examples=100, pgd_restarts=3, device="cpu", progress=False)
    assert r3["accuracy"]["pgd"] <= acc["pgd"]
    l2 = evaluate(model, test, eps=0.5, norm="L2", attacks=["pgd"], n_examples=100, device="cpu", progress=False)
    assert l2["attacks"]["pgd"]["implementation"] == "binprune.adversary.L2PGD" and l2["accuracy"]["pgd"] < acc["clean"]


def test_bad_inputs_give_clear_errors():
    model = _mlp()
    x, y = torch.rand(10, 1, 28, 28), torch.randint(0, 10, (10,))
    cases = [
        (dict(eps=-0.1), "eps must be >= 0"),
        (dict(eps=0.1, attacks=["clean", "cw"]), "unknown attack 'cw'"),
        (dict(eps=0.1, norm="L1"), "unknown norm 'L1'"),
        (dict(eps=0.1, n_examples=11), "n_examples=11 but the data holds only 10"),
        (dict(eps=0.1, attacks=["autoattack-custom"]), "needs autoattack_options"),
        (dict(eps=0.1, batch_size=0), "batch_size must be an integer >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            evaluate(model, (x, y), device="cpu", progress=False, **kwargs)
    for data, message in [((x * 2, y), r"must lie in \[0, 1\]"), ((x, y[:9]), "10 images but 9 labels"),
                          (((x * 255).to(torch.uint8), y), "x.float\\(\\) / 255"), ((x, y.float()), "integer tensor")]:
        with pytest.raises(ValueError, match=message):
            evaluate(model, data, eps=0.1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="out of range for a model with 10 outputs"):
        evaluate(model, (x, y + 10), eps=0.1, attacks=["clean"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="only applies to version 'custom'"):
        run_autoattack(model, x, y, eps=0.1, attacks=["apgd-ce"], device="cpu")
    with pytest.raises(ValueError, match="sanity checks need eps > 0"):
        sanity_checks(model, (x, y), 0.0, device="cpu")


def test_class_sorted_data_is_interleaved():
    images = torch.zeros(30, 1, 2, 2, dtype=torch.uint8)
    labels = torch.arange(3).repeat_interleave(10)  # stored by class, like an image-folder tree
    ds = ImageTensorDataset(images, labels, ["a", "b", "c"], "imagefolder", (0.5,), (0.5,))
    _, y, info = evaluation_tensors(ds, 7)
    assert y.tolist() == [0, 1, 2, 0, 1, 2, 0] and "interleaved" in info["selection"]
    _, y, info = evaluation_tensors(ds)  # the whole set: order does not matter
    assert torch.equal(y, labels) and "first 30" in info["selection"]


def test_supermask_is_evaluated_without_recomputing_masks(monkeypatch):
    torch.manual_seed(0)
    net = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", in_channels=1, widths=(4, 8)),
                                               sparsity=0.8)
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    net.eval()
    net(x[:2])  # masks computed once here
    calls = []
    original = TopKMask.compute_mask
    monkeypatch.setattr(TopKMask, "compute_mask", lambda self, s, k: calls.append(1) or original(self, s, k))
    slow = evaluate(net, (x, y), eps=0.1, attacks=["pgd"], pgd_steps=5, fast=False, device="cpu", progress=False)
    assert calls == [] and slow["model"]["form"] == "supermask"
    fast = evaluate(net, (x, y), eps=0.1, attacks=["pgd"], pgd_steps=5, device="cpu", progress=False)
    assert fast["model"]["form"] == "finalized" and "bit-identical" in fast["model"]["reason"]
    assert fast["accuracy"] == slow["accuracy"]
    assert fast["model"]["kept_params"] < fast["model"]["total_params"]
    assert all(p.requires_grad for p in (mt.mask.scores for mt in binprune.masked_tensors(net)))  # restored


def _tiny_data(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_report_flags_match_accuracy():
    torch.manual_seed(0)
    model = _mlp().eval()
    x, y = _tiny_data(30)
    report = evaluate(model, (x, y), eps=0.1, attacks=("clean", "pgd"), pgd_steps=3, device="cpu", progress=False)
    assert isinstance(report, EvalReport) and list(report.attacks) == ["clean", "pgd"]
    for name, result in report.attacks.items():
        assert isinstance(result, AttackResult) and result.name == name
        assert result.robust.dtype == torch.bool and result.robust.shape == (30,)
        assert result.accuracy == int(result.robust.sum()) / 30 == report["accuracy"][name]
        assert report.to_dict()["attacks"][name]["robust_flags"] == result.robust.int().tolist()
    assert not (report.attacks["pgd"].robust & ~report.attacks["clean"].robust).any()  # robust implies clean


def test_evaluate_takes_a_config_and_rejects_unknown_settings():
    model = _mlp().eval()
    x, y = _tiny_data(12)
    report = evaluate(model, (x, y), EvalConfig(eps=0.1, attacks=("clean",)), n_examples=5, device="cpu",
                      progress=False)
    assert report.settings["eps"] == 0.1 and report.n_examples == 5 and list(report.accuracy) == ["clean"]
    with pytest.raises(ValueError, match=r"unknown evaluation setting\(s\) pgd_step:"):
        evaluate(model, (x, y), eps=0.1, pgd_step=3, device="cpu", progress=False)
    with pytest.raises(ValueError, match="no attack budget: pass eps"):
        evaluate(model, (x, y), device="cpu", progress=False)
    clean = evaluate(model, (x, y), attacks="clean", device="cpu", progress=False)  # no budget needed
    assert clean.settings["eps"] is None and list(clean.accuracy) == ["clean"]
    with pytest.raises(ValueError, match=r"unknown sanity check setting\(s\) restart:"):
        sanity_checks(model, (x, y), 0.1, restart=2, device="cpu", progress=False)


def test_evaluate_restores_train_mode():
    model = _mlp()
    model.train()
    model[2].eval()  # mixed modes survive too
    x, y = _tiny_data(16)
    running = model[5].running_mean.clone()
    evaluate(model, (x, y), eps=0.1, attacks=["pgd"], pgd_steps=2, device="cpu", progress=False)
    assert model.training and not model[2].training and model[5].training
    assert torch.equal(model[5].running_mean, running)  # evaluated in eval mode: no statistics updated


def test_register_a_custom_attack():
    @register_attack("uniform-noise")
    def uniform_noise(ctx: AttackContext) -> AttackResult:
        noise = torch.empty_like(ctx.x).uniform_(-ctx.config.eps, ctx.config.eps, generator=torch.Generator().manual_seed(ctx.config.seed))
        with torch.no_grad():
            correct = ctx.model((ctx.x + noise).clamp(0, 1).to(ctx.device)).argmax(1).cpu() == ctx.y
        robust = ctx.clean & correct
        return AttackResult("uniform-noise", int(robust.sum()) / ctx.n, ctx.n, 0.0, {"kind": "noise"}, robust=robust)

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_attack("uniform-noise")(uniform_noise)
        model = _mlp().eval()
        x, y = _tiny_data(20)
        report = evaluate(model, (x, y), eps=0.1, attacks="uniform-noise", device="cpu", progress=False)
        assert report.settings["attacks"] == ["clean", "uniform-noise"]
        result = report.attacks["uniform-noise"]
        assert result.details == {"kind": "noise"} and report["attacks"]["uniform-noise"]["kind"] == "noise"
        assert result.accuracy <= report.accuracy["clean"]
    finally:
        ATTACKS.pop("uniform-noise", None)
    with pytest.raises(ValueError, match="unknown attack 'uniform-noise'"):
        evaluate(_mlp(), _tiny_data(4), eps=0.1, attacks="uniform-noise", device="cpu", progress=False)


def test_register_a_custom_check():
    @register_check("clean_above_chance")
    def clean_above_chance(ctx):
        return check_result("clean_above_chance", ctx.clean_accuracy > 0.1, "clean accuracy above 1/10",
                            clean=ctx.clean_accuracy)

    try:
        model = _mlp().eval()
        x, y = _tiny_data(16)
        results = evaluate(model, (x, y), eps=0.1, attacks=("clean", "pgd"), pgd_steps=2, device="cpu",
                           progress=False)
        report = sanity_checks(model, (x, y), 0.1, results=results, pgd_steps=2,
                               config=SanityConfig(restarts=1, steps_factor=2, square_queries=5), device="cpu",
                               progress=False)
        names = [c["name"] for c in report["checks"]]
        assert names[-1] == "clean_above_chance" and "more_restarts_not_better" not in names  # 1 restart: skipped
        assert report["checks"][-1]["numbers"] == {"clean": results["accuracy"]["clean"]}
        assert report["n_checks"] == len(SANITY_CHECKS) - 1
    finally:
        SANITY_CHECKS.pop("clean_above_chance", None)


@pytest.mark.slow
@requires_fashion_mnist
def test_sanity_checks_pass_on_a_trained_model(trained):
    model, test = trained
    results = evaluate(model, test, eps=0.05, attacks=["clean", "pgd", "autoattack-custom"], n_examples=64,
                       autoattack_options={"attacks": ["apgd-ce", "apgd-t", "square"], "iterations": 20,
                                           "square_queries": 200},
                       device="cpu", progress=False)
    report = sanity_checks(model, test, 0.05, results=results, restarts=2, steps_factor=3, device="cpu",
                           progress=False)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == set(SANITY_CHECKS) - {"transfer_not_better_than_white_box"}  # skipped: no surrogate
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    clean = results["accuracy"]["clean"]
    assert checks["eps_zero_equals_clean"]["numbers"] == {"clean": clean, "pgd_eps_0": clean, "mismatched_examples": 0,
                                                          "max_perturbation": 0.0, "n_examples": 64}
    large = checks["large_eps_near_zero"]["numbers"]
    assert large["eps"] == 0.5 and large["accuracy"] <= 0.01
    sweep = checks["eps_sweep_non_increasing"]["numbers"]
    assert sweep["accuracy"][0] == clean and sweep["accuracy"][-1] < sweep["accuracy"][0]
    assert checks["square_not_better_than_white_box"]["numbers"]["source"] == "AutoAttack per-attack counts"
    with pytest.raises(ValueError, match="results were computed at eps=0.05"):
        sanity_checks(model, test, 0.1, results=results, device="cpu", progress=False)


class _Quantize(nn.Module):
    """Rounds pixels to 4 levels: zero gradient almost everywhere (gradient masking)."""

    def forward(self, x):
        return torch.round(x * 3) / 3


@pytest.mark.slow
@requires_fashion_mnist
def test_sanity_checks_flag_gradient_masking(trained):
    model, test = trained
    masked = nn.Sequential(_Quantize(), model).eval()
    results = evaluate(masked, test, eps=0.1, attacks=["clean", "pgd"], n_examples=64, device="cpu", progress=False)
    report = sanity_checks(masked, test, 0.1, results=results, restarts=2, steps_factor=2, square_queries=300,
                           device="cpu", progress=False)
    checks = {c["name"]: c for c in report["checks"]}
    assert not report["passed"]
    # PGD has no gradient to follow: even a budget that reaches any image leaves accuracy well above 0,
    # and the black-box Square attack does much better than PGD.
    assert not checks["large_eps_near_zero"]["passed"] and checks["large_eps_near_zero"]["numbers"]["accuracy"] > 0.05
    square = checks["square_not_better_than_white_box"]
    assert not square["passed"] and square["numbers"]["square"] < square["numbers"]["pgd"] - 0.01


# --- the command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = binprune.convert_to_binary_supermask(
        binprune.create_model("small_cnn", in_channels=1, widths=(4, 8), mean=[0.286], std=[0.353]), sparsity=0.5)
    x, y = load_dataset("fashion-mnist", split="train").tensors(600)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for i in range(0, 600, 50):
        loss = nn.functional.cross_entropy(net(x[i:i + 50]), y[i:i + 50])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, net.eval())
    return path


@requires_fashion_mnist
@pytest.mark.slow
def test_cli_eval_writes_results_with_sanity_checks(checkpoint, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"
    status = main(["eval", str(checkpoint), "--dataset", "fashion-mnist", "--eps", "0.05", "--attacks", "clean,pgd",
                   "--n-examples", "40", "--sanity-examples", "24", "--batch-size", "20", "--device", "cpu",
                   "--no-progress", "--out", str(out.parent)])
    assert status == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(checkpoint) and result["dataset"] == "fashion-mnist"
    assert set(result["accuracy"]) == {"clean", "pgd"} and result["settings"]["n_examples"] == 40
    assert result["model"]["form"] == "finalized"
    sanity = result["sanity_checks"]
    assert sanity["settings"]["n_examples"] == 24 and sanity["n_checks"] == len(SANITY_CHECKS) - 1  # no surrogate
    assert all(isinstance(c["passed"], bool) and c["numbers"] for c in sanity["checks"])
    printed = capsys.readouterr().out
    assert "pgd-20 accuracy" in printed and f"results written to {out}" in printed


@pytest.mark.slow
@requires_fashion_mnist
def test_cli_eval_errors_are_one_line(checkpoint, tmp_path, capsys):
    def run(*argv):
        status = main(["eval", *argv, "--no-progress", "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert status == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    ckpt = str(checkpoint)
    assert "does not exist" in run(str(tmp_path / "missing.pt"), "--dataset", "fashion-mnist", "--eps", "0.1")
    assert "unknown attack 'cw'" in run(ckpt, "--dataset", "fashion-mnist", "--eps", "0.1", "--attacks", "clean,cw")
    assert "n_examples=20000 but the data holds only 10000" in run(
        ckpt, "--dataset", "fashion-mnist", "--eps", "0.1", "--n-examples", "20000")
    assert "--data-dir" in run(ckpt, "--dataset", "fashion-mnist", "--eps", "0.1", "--data-dir", str(tmp_path / "no"))
    assert "pass --eps" in run(ckpt, "--dataset", "fashion-mnist")
    assert "pass --dataset" in run(ckpt, "--eps", "0.1")
    assert "--model-name" in run(ckpt, "--dataset", "cifar10", "--robustbench")
    assert "drop autoattack-plus" in run(ckpt, "--dataset", "cifar10", "--robustbench", "--model-name", "m",
                                         "--attacks", "clean,autoattack-plus")
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in run(str(not_a_checkpoint), "--dataset", "fashion-mnist", "--eps", "0.1")
    for argv in (["--eps", "-1"], ["--dataset", "mnist"], ["--norm", "L1"], ["--n-examples", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["eval", ckpt, "--dataset", "fashion-mnist", *argv] if "--dataset" not in argv else ["eval", ckpt, *argv])
        assert exc.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
