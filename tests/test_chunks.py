"""Evaluation in saved chunks: a killed evaluation resumes, the merged numbers are the chunks' own,
and a folder holding another evaluation's chunks is refused."""

import json

import pytest
import torch

import binprune
from binprune.evaluation.chunks import chunk_bounds, merge_details
from binprune.views import select_examples
from tests.conftest import requires_fashion_mnist, tiny_trained_supermask

EPS = 0.1
APGD_QUICK = {"iterations": 5}


@pytest.fixture(scope="module")
def setup():
    """A briefly trained tiny supermask CNN and 60 class-balanced test images."""
    model = tiny_trained_supermask(EPS)
    x, y, _ = select_examples(binprune.load_dataset("fashion-mnist", split="test"), 60, "balanced", 0)
    return model, x, y


def _eval(model, x, y, **kw):
    settings = dict(eps=EPS, attacks=("clean", "pgd", "autoattack-apgd"), pgd_steps=5, device="cpu",
                    progress=False, autoattack_options=APGD_QUICK, batch_size=32)
    settings.update(kw)
    return binprune.evaluate(model, (x, y), **settings)


def test_chunk_bounds_cover_every_example_once():
    assert chunk_bounds(10, None) == [(0, 10)]
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(10, 50) == [(0, 10)]


@requires_fashion_mnist
def test_chunked_evaluation_resumes_and_merges(setup, tmp_path):
    model, x, y = setup
    first = _eval(model, x, y, chunk_examples=25, resume_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.glob("chunk-*.json"))
    assert files == ["chunk-0000000-0000025.json", "chunk-0000025-0000050.json", "chunk-0000050-0000060.json"]
    assert first.settings["chunk_examples"] == 25 and first.settings["resumed_chunks"] == []
    for name, result in first.attacks.items():
        assert result.n_examples == 60 and len(result.robust) == 60
        assert result.accuracy == pytest.approx(int(result.robust.sum()) / 60)
    # robust flags are never above clean ones; the merged AutoAttack breakdown adds up
    aa = first.attacks["autoattack-apgd"]
    assert not (aa.robust & ~first.attacks["clean"].robust).any()
    assert aa.details["robust_examples"] == int(aa.robust.sum())
    assert aa.details["clean_accuracy"] == pytest.approx(first.attacks["clean"].accuracy)
    assert len(aa.details["chunks"]) == 3 and aa.details["chunk_examples"] == 25
    if aa.details["per_attack_consistent"]:
        assert aa.details["per_attack"][-1]["robust_accuracy_after"] == pytest.approx(aa.accuracy)

    # a second run reuses every chunk: same flags, nothing recomputed; the time is the chunks'
    again = _eval(model, x, y, chunk_examples=25, resume_dir=tmp_path)
    assert again.settings["resumed_chunks"] == [[0, 25], [25, 50], [50, 60]]
    chunk_seconds = sum(json.loads((tmp_path / f).read_text())["seconds"] for f in files)
    assert chunk_seconds > 0 and again.seconds >= chunk_seconds
    for name in first.attacks:
        assert torch.equal(again.attacks[name].robust, first.attacks[name].robust)

    # a lost chunk (a killed run) is recomputed, with the same result (seeded per chunk)
    (tmp_path / files[1]).unlink()
    resumed = _eval(model, x, y, chunk_examples=25, resume_dir=tmp_path)
    assert resumed.settings["resumed_chunks"] == [[0, 25], [50, 60]]
    for name in first.attacks:
        assert torch.equal(resumed.attacks[name].robust, first.attacks[name].robust)

    # the same chunks without a folder give the same numbers (saving changes nothing)
    unsaved = _eval(model, x, y, chunk_examples=25)
    for name in first.attacks:
        assert torch.equal(unsaved.attacks[name].robust, first.attacks[name].robust)


@requires_fashion_mnist
def test_one_chunk_is_the_unchunked_evaluation(setup):
    model, x, y = setup
    whole = _eval(model, x, y)
    one = _eval(model, x, y, chunk_examples=1000)
    for name in whole.attacks:
        assert torch.equal(whole.attacks[name].robust, one.attacks[name].robust)
    assert "chunk_examples" not in whole.settings


@requires_fashion_mnist
def test_a_folder_of_another_evaluation_is_refused(setup, tmp_path):
    model, x, y = setup
    _eval(model, x, y, attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path)
    other = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=[8, 16], seed=1).eval()
    with pytest.raises(ValueError, match="another evaluation"):
        _eval(other, x, y, attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path)
    with pytest.raises(ValueError, match="another evaluation"):
        _eval(model, x, y, attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path, pgd_steps=7)
    with pytest.raises(ValueError, match="another evaluation"):
        _eval(model, x.flip(0), y.flip(0), attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path)
    with pytest.raises(ValueError, match="another evaluation"):  # other batches, other random starts
        _eval(model, x, y, attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path, batch_size=16)
    # a damaged chunk file says which file and what to do
    path = next(tmp_path.glob("chunk-*.json"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="remove it"):
        _eval(model, x, y, attacks=("clean", "pgd"), chunk_examples=30, resume_dir=tmp_path)
    # the chunk setting is checked like the others
    with pytest.raises(ValueError, match="chunk_examples"):
        _eval(model, x, y, chunk_examples=0)


def test_merge_details_sums_counts_and_keeps_equal_settings():
    parts = [{"steps": 5, "robust_examples": 3, "clean_accuracy": 0.5, "autoattack_warnings": ["w"],
              "per_attack_consistent": True, "settings": {"eps": 0.1}, "attack_form": {"confirmed": 2, "kind": "c"}},
             {"steps": 5, "robust_examples": 4, "clean_accuracy": 1.0, "autoattack_warnings": ["w", "v"],
              "per_attack_consistent": False, "settings": {"eps": 0.1}, "attack_form": {"confirmed": 1, "kind": "c"}}]
    merged = merge_details(parts, [10, 30])
    assert merged["steps"] == 5 and merged["robust_examples"] == 7
    assert merged["clean_accuracy"] == pytest.approx((0.5 * 10 + 1.0 * 30) / 40)
    assert merged["autoattack_warnings"] == ["w", "v"] and merged["per_attack_consistent"] is False
    assert merged["settings"] == {"eps": 0.1} and merged["attack_form"] == {"confirmed": 3, "kind": "c"}
    assert merged["chunks"] == parts
    json.dumps(merged)
    # equal counts in two chunks are still two chunks' counts; equal settings stay one setting
    same = {"robust_examples": 3, "steps": 5, "attacks": ["apgd-ce"], "python_warnings": ["w"],
            "per_attack": [{"attack": "apgd-ce", "examples_attacked": 4, "examples_broken": 1, "elapsed_s": 2.0}]}
    twice = merge_details([same, same], [10, 10])
    assert twice["robust_examples"] == 6 and twice["steps"] == 5 and twice["attacks"] == ["apgd-ce"]
    assert twice["python_warnings"] == ["w"]
    assert twice["per_attack"] == [{"attack": "apgd-ce", "examples_attacked": 8, "examples_broken": 2,
                                    "elapsed_s": 4.0}]


@requires_fashion_mnist
def test_cli_eval_resumes_from_its_chunk_folder(setup, tmp_path, capsys):
    from binprune.cli import main
    from binprune.checkpoint import save_checkpoint

    model, _, _ = setup
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    args = ["eval", str(path), "--dataset", "fashion-mnist", "--eps", "0.1", "--attacks", "clean,pgd",
            "--n-examples", "40", "--pgd-steps", "3", "--chunk-examples", "16", "--resume-dir", str(tmp_path / "c"),
            "--no-sanity-checks", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert len(list((tmp_path / "c").glob("chunk-*.json"))) == 3
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "eval.json").read_text()) for d in "ab")
    assert b["settings"]["resumed_chunks"] == [[0, 16], [16, 32], [32, 40]]
    assert a["attacks"]["pgd"]["robust_flags"] == b["attacks"]["pgd"]["robust_flags"]
    assert a["settings"]["chunk_examples"] == 16
    assert main([*args[:-4], "--robustbench", "--model-name", "m", "--device", "cpu"]) == 2
    assert "--resume-dir applies to the plain evaluation" in capsys.readouterr().err


@requires_fashion_mnist
@pytest.mark.parametrize("compact, eps", [(False, 0.03), (True, 0.03), (False, 0.1)])
def test_standard_after_apgd_is_one_standard_run(setup, compact, eps):
    """AutoAttack standard completed from the APGD attacks' flags gives the flags of one standard
    run (at eps 0.03 some examples are left for FAB-T and Square; at 0.1 none are)."""
    model, x, y = setup
    options = {"iterations": 5, "square_queries": 50}
    kw = dict(eps=eps, device="cpu", progress=False, batch_size=32, autoattack_options=options,
              attack_compact=compact)
    alone = binprune.evaluate(model, (x, y), attacks=("clean", "autoattack"), **kw)
    after = binprune.evaluate(model, (x, y), attacks=("clean", "autoattack-apgd", "autoattack"), **kw)
    one, two = alone.attacks["autoattack"], after.attacks["autoattack"]
    assert torch.equal(one.robust, two.robust)
    assert "apgd_from" in two.details and "apgd_from" not in one.details
    strip = ("elapsed_s",)
    assert [{k: v for k, v in s.items() if k not in strip} for s in one.details["per_attack"]] == \
        [{k: v for k, v in s.items() if k not in strip} for s in two.details["per_attack"]]
    assert two.details["settings"]["attacks"] == one.details["settings"]["attacks"]
    assert two.details["settings"]["version"] == "standard"
    # the APGD flags are the standard run's after its first two attacks: never below the final ones
    assert not (two.robust & ~after.attacks["autoattack-apgd"].robust).any()
    left = after.attacks["autoattack-apgd"].robust.sum()
    assert (left > 0) == (eps == 0.03) and (two.details["tail"] is not None) == (eps == 0.03)


def test_a_chunk_saved_without_its_time_counts_completed_autoattack_once():
    from binprune.evaluation.chunks import _attack_seconds
    from binprune.results import AttackResult

    results = {"clean": AttackResult("clean", 1.0, 2, 1.0),
               "autoattack-apgd": AttackResult("autoattack-apgd", 1.0, 2, 10.0),
               "autoattack": AttackResult("autoattack", 1.0, 2, 40.0, {"apgd_from": "autoattack-apgd"})}
    assert _attack_seconds(results) == 41.0  # AutoAttack's 40 s include APGD's 10
    results["autoattack"] = AttackResult("autoattack", 1.0, 2, 40.0)
    assert _attack_seconds(results) == 51.0
