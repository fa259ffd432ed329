import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import binprune
from binprune.adversary import make_attack, run_attack
from binprune.checkpoint import CheckpointError, load_checkpoint
from binprune.data import load_dataset
from binprune.supermask import masked_tensors
from binprune.config import TrainConfig
from binprune.training import learning_rate, train

from .conftest import requires_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
TINY = dict(arch="small_cnn", widths=(8, 16))


@pytest.fixture(scope="module")
def fmnist():
    train_set = load_dataset("fashion-mnist", split="train")
    test_set = load_dataset("fashion-mnist", split="test")
    return train_set.subset(torch.arange(2000)), test_set.subset(torch.arange(200))


def _tiny_supermask(seed=0):
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16))
    return binprune.convert_to_binary_supermask(model, sparsity=0.9, seed=seed)


class _BNProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.modes: list[bool] = []
        self.bn.register_forward_hook(lambda m, i, o: self.modes.append(m.training))

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_attack_bn_train_mode_uses_batch_statistics_and_freezes_running_ones():
    model = _BNProbe().train()
    running = model.bn.running_mean.clone(), model.bn.running_var.clone(), model.bn.num_batches_tracked.clone()
    attack = make_attack("pgd", model, eps=0.1, steps=3, bn_mode="train")
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 3, (6,))
    adv = run_attack(attack, model, x, y, bn_mode="train")
    assert model.modes == [True] * 3  # every attack forward in train mode (batch statistics)
    assert torch.equal(model.bn.running_mean, running[0]) and torch.equal(model.bn.running_var, running[1])
    assert torch.equal(model.bn.num_batches_tracked, running[2])
    assert model.training and (adv - x).abs().max() <= 0.1 + 1e-6 and model.bn.momentum == 0.1

    model.modes.clear()
    attack = make_attack("pgd", model, eps=0.1, steps=2, bn_mode="eval")
    run_attack(attack, model, x, y, bn_mode="eval")
    assert model.modes == [False] * 2 and model.training


def test_attacks_that_reseed_do_not_reset_the_training_rng():
    torchattacks = pytest.importorskip("torchattacks")
    model = _BNProbe().eval()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    attack = torchattacks.APGD(model, eps=0.1, steps=2, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    attack(x, y)  # torchattacks' APGD re-seeds the global RNG ...
    assert not torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)
    run_attack(attack, model, x, y, bn_mode="eval")  # ... which run_attack undoes
    assert torch.equal(torch.rand(3), expected)


def test_learning_rate_schedules():
    cfg = TrainConfig(eps=0.1, epochs=4, lr=0.2)
    assert learning_rate(cfg, 0, 100) == pytest.approx(0.2)
    assert learning_rate(cfg, 50, 100) == pytest.approx(0.1)
    assert learning_rate(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(eps=0.1, epochs=4, lr=0.2, schedule="step")
    assert [learning_rate(step, s, 100) for s in (10, 60, 80)] == pytest.approx([0.2, 0.02, 0.002])
    warm = TrainConfig(eps=0.1, epochs=4, lr=0.2, warmup_epochs=1)
    assert learning_rate(warm, 0, 100) == pytest.approx(0.2 / 25) and learning_rate(warm, 25, 100) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attack="cw"), "unknown attack"),
        (dict(eps=-0.1), "eps must be"),
        (dict(epochs=0), "epochs must be"),
        (dict(batch_size=1), "batch_size must be"),
        (dict(schedule="exp"), "unknown schedule"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(carry_perturbation=True), "only applies"),
        (dict(attack_bn="frozen"), "attack_bn"),
    ],
)
def test_train_rejects_bad_settings(kwargs, message):
    args = dict(eps=0.1, epochs=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train(_tiny_supermask(), (torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)), **args)


def test_train_rejects_unnormalized_inputs_and_frozen_models():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(_tiny_supermask(), (torch.rand(8, 1, 28, 28) * 255, torch.zeros(8, dtype=torch.long)), eps=0.1, epochs=1)
    frozen = _tiny_supermask().requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(frozen, (torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)), eps=0.1, epochs=1)


@pytest.mark.slow
@requires_fashion_mnist
def test_supermask_training_updates_scores_only_and_writes_results(fmnist, tmp_path):
    train_set, test_set = fmnist
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(16, 32), mean=train_set.mean,
                                  std=train_set.std)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.9)
    fixed = {mt.name: mt.original.clone() for mt in masked_tensors(net)}
    scores = {mt.name: mt.mask.scores.detach().clone() for mt in masked_tensors(net)}
    result = train(net, train_set, test_data=test_set, eps=0.1, epochs=2, attack="fast", batch_size=64,
                   val_fraction=0.1, out_dir=tmp_path, progress=False, device="cpu")
    for mt in masked_tensors(net):
        assert torch.equal(mt.original, fixed[mt.name])
        assert not torch.equal(mt.mask.scores, scores[mt.name])
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("accuracy", "attack", "eps", "sparsity", "kept_params", "total_params", "epochs",
                "seconds", "seed", "config"):
        assert key in m
    acc = m["accuracy"]
    assert 0 <= acc["pgd"] <= acc["clean"] <= 1 and m["n_examples"] == 200
    assert acc["clean"] > 0.3 and acc["pgd"] > 0.15  # chance is 0.1 (2 epochs on 1800 images)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file() and (tmp_path / "curves.png").is_file()
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 2 and last["config"]["eps"] == 0.1 and "rng" in last and "optimizer" in last
    best = binprune.checkpoint.load_model(tmp_path / "best.pt")
    assert result.metrics["selected_epoch"] in (1, 2) and isinstance(best, binprune.Subnetwork)


@pytest.mark.slow
@requires_fashion_mnist
def test_dense_trades_and_carried_fast_attack_train(fmnist):
    train_set = fmnist[0].subset(torch.arange(640))
    dense = binprune.create_model("small_cnn", in_channels=1, widths=(8, 16))
    before = dense.net.conv0_0.weight.clone()
    train(dense, train_set, eps=0.1, epochs=1, attack="trades", attack_steps=2, batch_size=64, progress=False, device="cpu")
    assert not torch.equal(dense.net.conv0_0.weight, before)
    net = _tiny_supermask()
    result = train(net, train_set, eps=0.1, epochs=1, attack="fast", carry_perturbation=True, batch_size=64,
                   progress=False, device="cpu")
    assert result.history[0]["train_loss"] > 0


@pytest.mark.slow
@requires_fashion_mnist
def test_custom_torchattacks_instance(fmnist):
    torchattacks = pytest.importorskip("torchattacks")
    train_set = fmnist[0].subset(torch.arange(640))
    net = _tiny_supermask()
    attack = torchattacks.FGSM(net, eps=0.05)
    result = train(net, train_set, eps=0.05, epochs=1, attack=attack, batch_size=64, progress=False, device="cpu",
                   val_fraction=0)
    assert result.metrics["config"]["custom_attack"] == "FGSM"
    other = _tiny_supermask()
    with pytest.raises(ValueError, match="same model"):
        train(other, train_set, eps=0.05, epochs=1, attack=torchattacks.FGSM(net, eps=0.05), progress=False)


def _cli(*args, env=None):
    return [sys.executable, "-m", "binprune.cli", *args]


TINY_RUN = ["train", "--dataset", "fashion-mnist", "--arch", "small_cnn", "--width-factor", "0.25", "--sparsity", "0.9",
            "--attack", "pgd", "--attack-steps", "2", "--eps", "0.1", "--epochs", "2", "--batch-size", "32",
            "--train-examples", "960", "--test-examples", "100", "--device", "cpu", "--no-progress", "--seed", "1"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


@pytest.mark.slow
@requires_fashion_mnist
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(*TINY_RUN, "--out", str(full)), check=True, env=_env(), capture_output=True)
    proc = subprocess.Popen(_cli(*TINY_RUN, "--out", str(killed), "--checkpoint-every", "3"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(proc, killed / "last.pt", epoch=1, min_batch=3)  # mid-way through the second epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "metrics.json").exists()
    subprocess.run(_cli(*TINY_RUN, "--out", str(killed), "--checkpoint-every", "3", "--resume"), check=True,
                   env=_env(), capture_output=True)
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for key in ("accuracy", "val_accuracy", "selected_epoch", "kept_params"):
        assert a[key] == b[key], key
    hist_a = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    hist_b = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    sa, sb = load_checkpoint(full / "last.pt")["model"], load_checkpoint(killed / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
@requires_fashion_mnist
def test_resume_errors(tmp_path):
    run = ["train", "--dataset", "fashion-mnist", "--width-factor", "0.25", "--eps", "0.1", "--epochs", "1",
           "--attack", "fast", "--train-examples", "256", "--test-examples", "50", "--device", "cpu", "--no-progress"]
    out = tmp_path / "run"
    subprocess.run(_cli(*run, "--out", str(out)), check=True, env=_env(), capture_output=True)
    again = subprocess.run(_cli(*run, "--out", str(out)), env=_env(), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    changed = subprocess.run(_cli(*run, "--out", str(out), "--resume", "--lr", "0.05"), env=_env(), capture_output=True,
                             text=True)
    assert changed.returncode == 2 and "different configuration" in changed.stderr and "lr" in changed.stderr
    assert "Traceback" not in changed.stderr
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    corrupt = subprocess.run(_cli(*run, "--out", str(out), "--resume"), env=_env(), capture_output=True, text=True)
    assert corrupt.returncode == 2 and "corrupted" in corrupt.stderr and len(corrupt.stderr.strip().splitlines()) == 1
    with pytest.raises(CheckpointError):
        load_checkpoint(out / "last.pt")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sparsity", "1.0"], "outside [0, 1)"),
        (["--eps", "-1"], "negative"),
        (["--arch", "resnet19"], "unknown architecture"),
        (["--dataset", "mnist"], "invalid choice"),
        (["--dataset", "cifar10", "--data-dir", "/no/such/dir"], "does not exist"),
        (["--dataset", "fashion-mnist"], "--eps"),
    ],
)
def test_cli_bad_values_exit_with_one_line(args, message, capsys):
    from binprune.cli import main

    base = ["train", "--epochs", "1"] + ([] if "--eps" in args or message == "--eps" else ["--eps", "0.1"])
    try:
        code = main([*base, *args, "--out", "/tmp/binprune-never-written"])
    except SystemExit as exc:  # argparse's own validation
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_help_is_complete():
    proc = subprocess.run(_cli("train", "--help"), env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--dataset", "--data-dir", "--arch", "--num-classes", "--sparsity", "--p", "--allocation", "--init",
                 "--last-bn", "--attack", "--eps", "--alpha", "--attack-steps", "--epochs", "--batch-size", "--lr", "--seed",
                 "--device", "--out", "--resume", "--preset"):
        assert flag in proc.stdout


def _wait_for_checkpoint(proc, last, epoch, min_batch, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if last.exists():
            ckpt = load_checkpoint(last)
            if ckpt["epoch"] == epoch and ckpt["next_batch"] >= min_batch:
                return
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared in time")


@pytest.mark.slow
@requires_fashion_mnist
def test_two_process_gloo_training_killed_and_resumed(tmp_path):
    def torchrun(out, *extra):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                "-m", "binprune.cli", *TINY_RUN, "--out", str(out), *extra]

    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.run(torchrun(full), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((full / "metrics.json").read_text())
    assert m["config"]["world_size"] == 2 and 0 <= m["accuracy"]["pgd"] <= m["accuracy"]["clean"] <= 1
    assert len((full / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in full.iterdir()) == ["best.pt", "binprune-run.json", "config.json", "config.yaml",
                                                      "curves.png", "last.pt", "metrics.csv", "metrics.json",
                                                      "metrics.jsonl"]

    proc = subprocess.Popen(torchrun(killed, "--checkpoint-every", "3"), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(proc, killed / "last.pt", epoch=1, min_batch=3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    resumed = subprocess.run(torchrun(killed, "--checkpoint-every", "3", "--resume"), env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    b = json.loads((killed / "metrics.json").read_text())
    for key in ("accuracy", "val_accuracy", "selected_epoch"):
        assert m[key] == b[key], key


def test_a_sparsity_schedule_runs_through_train():
    """SparsitySchedule reaches the trainer as a step hook: the kept count follows the ramp."""
    from binprune.sparsity import SparsitySchedule

    net = _tiny_supermask()
    x, y = torch.rand(96, 1, 28, 28), torch.randint(0, 10, (96,))
    hook = binprune.SparsityScheduleHook(SparsitySchedule(final=0.95, ramp_steps=2, initial=0.5))
    train(net, (x, y), eps=0.0, epochs=2, attack="none", batch_size=32, val_fraction=0, progress=False,
          device="cpu", step_hook=hook)
    report = binprune.sparsity_report(net)
    assert report.masked_sparsity == pytest.approx(0.95, abs=0.01)
