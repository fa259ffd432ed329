"""binprune doctor on a deliberately broken environment: each problem named, with its fix."""

import json

import torch

from binprune import doctor
from binprune.cli import main


def _by_check(findings):
    return {f.check: f for f in findings}


def test_a_healthy_environment_has_no_problem(capsys):
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == 0
    checks = {f["check"] for f in out["findings"]}
    assert {"python", "package torch", "autoattack", "robustbench", "threads", "devices"} <= checks


def test_a_broken_environment_names_each_problem_and_its_fix(tmp_path, monkeypatch, capsys):
    real_version = doctor._version  # noqa: SLF001 (simulating a broken environment)
    # pyautoattack uninstalled; robustbench present as a bare folder without install record (torchattacks' copy)
    monkeypatch.setattr(doctor, "_version", lambda name: None if name in ("pyautoattack", "robustbench")
                        else real_version(name))
    # a git AutoAttack older than Nov 2022: no autoattack/state.py
    package = tmp_path / "site" / "autoattack"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # more threads than cores, and a data-set variable pointing nowhere
    monkeypatch.setattr(doctor.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setenv("BINPRUNE_FASHION_MNIST", str(tmp_path / "empty"))
    findings = _by_check(doctor.run_checks(data_dir=tmp_path / "nothing"))
    expected = {
        "package pyautoattack": ("problem", "pip install pyautoattack"),
        "robustbench": ("problem", "pip install --force-reinstall --no-deps robustbench==1.1.1"),
        "autoattack (robustbench)": ("warning", "pip install --force-reinstall --no-deps git+https://github.com/fra31/auto-attack"),
        "threads": ("warning", "export OMP_NUM_THREADS=1"),
        "data fashion-mnist": ("problem", "unset BINPRUNE_FASHION_MNIST  # or point it at the folder with the four IDX files"),
        "data folder": ("problem", f"mkdir -p {tmp_path / 'nothing'}"),
    }
    for check, (status, fix) in expected.items():
        assert (findings[check].status, findings[check].fix) == (status, fix), findings[check]
    assert "stale copy" in findings["robustbench"].detail and "no autoattack.state" in findings["autoattack (robustbench)"].detail

    assert main(["doctor", "--data-dir", str(tmp_path)]) == 1  # exit status 1 on a problem
    out = capsys.readouterr().out
    assert "PROBLEM  package pyautoattack" in out and "fix: pip install pyautoattack" in out


def test_overwritten_robustbench_files_are_a_problem_with_the_repair_command(monkeypatch):
    monkeypatch.setattr(doctor, "check_robustbench_files", lambda: ["robustbench/utils.py", "robustbench/data.py"])
    finding = _by_check(doctor.check_robustbench())["robustbench"]
    assert finding.status == "problem" and "overwritten" in finding.detail
    assert finding.fix == "pip install --force-reinstall --no-deps robustbench==1.1.1"


def test_a_check_that_raises_is_reported_not_raised():
    def broken():
        raise RuntimeError("metadata unreadable")
        yield  # pragma: no cover

    (finding,) = doctor.run_checks([broken])
    assert finding.status == "problem" and "metadata unreadable" in finding.detail


def test_bf16_advice_follows_the_cpu_bf16_instructions(monkeypatch):
    """--amp bf16 is advised where the CPU has AVX512-BF16 or AMX (either sufficed in the speed runs);
    an unknown answer says so instead of guessing."""
    def cpu(avx512_bf16, amx):
        for probe, answer in (("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx)):
            if answer is None:
                monkeypatch.delattr(torch.cpu, probe, raising=False)
            else:
                monkeypatch.setattr(torch.cpu, probe, lambda answer=answer: answer, raising=False)
        (finding,) = doctor.check_bf16()
        assert finding.status == "info"
        return finding.detail

    both = cpu(True, True)
    assert "trains faster" in both and "AVX512-BF16, AMX" in both
    assert doctor.cpu_features()["amx_tile"] is True
    avx_only = cpu(True, False)  # the AMD CPU of speed-zen5.json: 1.91x
    assert "trains faster" in avx_only and "AMX" not in avx_only.split("(")[1].split(")")[0]
    assert "trains faster" in cpu(False, True)
    neither = cpu(False, False)
    assert "slower on this CPU" in neither and "keep float32 for CPU runs" in neither
    assert "cannot tell" in cpu(None, False)
    assert "cannot tell" in cpu(False, None)
    assert doctor.cpu_features()["amx_tile"] is None
    assert "trains faster" in cpu(True, None)  # one known unit suffices
    assert doctor.check_bf16 in doctor.CHECKS
