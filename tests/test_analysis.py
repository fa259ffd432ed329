import json
import math

import pytest
import torch
from torch import nn

import binprune
from binprune.analysis import analyze_masks, hypergeometric_pmf, prob_all_pruned, randomize_scores, write_inspection
from binprune.checkpoint import save_checkpoint
from binprune.cli import main
from binprune.export import save_packed
from binprune.supermask import apply_mask, masked_tensors


def _set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    apply_mask(module, "weight", scores=mask.float(), keep_count=int(mask.sum()))


def test_random_mask_formulas_hand_computed():
    # n = 10, k = 3, f = 2: P(0) = C(8,3)/C(10,3) = 56/120, P(1) = 2 C(8,2)/120 = 56/120, P(2) = 8/120.
    assert hypergeometric_pmf(10, 3, 2) == pytest.approx([56 / 120, 56 / 120, 8 / 120])
    assert prob_all_pruned(10, 3, 2) == pytest.approx(56 / 120)
    assert prob_all_pruned(10, 9, 2) == 0.0  # 9 kept among 10: two positions cannot both be pruned
    # Large layers: no overflow, and the exact value matches the product form.
    n, k, f = 2_359_296, 7_097, 4_608
    product = math.exp(sum(math.log1p(-k / (n - i)) for i in range(f)))
    assert prob_all_pruned(n, k, f) == pytest.approx(product, rel=1e-9)
    assert sum(hypergeometric_pmf(n, k, 9)) == pytest.approx(1.0)


def test_layer_counts_hand_computed():
    conv = nn.Conv2d(3, 4, 2, bias=False)  # n = 4 * 3 * 4 = 48 weights, kernels of 4
    mask = torch.zeros(4, 3, 2, 2, dtype=torch.bool)
    mask[0, 0] = True  # one full kernel: 4 kept
    mask[2, 1, 0, 0] = True  # one weight
    mask[2, 0, 1, 1] = True  # one weight in the same input channel as the full kernel
    _set_mask(conv, mask)  # k = 6
    row = analyze_masks(conv)["layers"][0]
    n, k = 48, 6
    assert (row["total"], row["kept"]) == (n, k)
    out = row["output_channels"]  # filters 1 and 3 are empty; each filter has f = 12 weights
    assert out["empty"] == 2
    assert out["expected_empty_random"] == pytest.approx(4 * math.comb(36, 6) / math.comb(48, 6))
    inp = row["input_channels"]  # input channel 2 is empty; each has 4 * 4 = 16 weights
    assert inp["empty"] == 1
    assert inp["expected_empty_random"] == pytest.approx(3 * math.comb(32, 6) / math.comb(48, 6))
    kern = row["kernels"]
    assert kern["kept_histogram"] == [12 - 3, 2, 0, 0, 1]
    expected = [12 * math.comb(4, j) * math.comb(44, 6 - j) / math.comb(48, 6) for j in range(5)]
    assert kern["expected_histogram_random"] == pytest.approx(expected)
    assert kern["empty"] == 9 and kern["expected_empty_random"] == pytest.approx(expected[0])


def test_alignment_between_connected_layers():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    first = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    first[[0, 1]] = False  # outputs 0, 1 empty
    second = torch.ones(3, 4, 3, 3, dtype=torch.bool)
    second[:, [1, 2]] = False  # inputs 1, 2 ignored
    _set_mask(net[0], first)
    _set_mask(net[2], second)
    result = analyze_masks(net)
    (pair,) = result["alignment"]
    assert (pair["producer"], pair["consumer"]) == ("0", "2")
    assert pair["producer_empty_outputs"] == 2 and pair["consumer_empty_inputs"] == 2
    assert pair["both"] == 1 and pair["expected_both_independent"] == pytest.approx(2 * 2 / 4)
    assert pair["jaccard"] == pytest.approx(1 / 3)
    assert result["summary"]["aligned_channels"] == 1


def test_random_scores_match_random_expectation_and_structure_exceeds_it():
    net = binprune.convert_to_binary_supermask(binprune.create_model("resnet18", width_factor=0.25), sparsity=0.99)
    randomize_scores(net, channel_structure=0.0, seed=0)
    uniform = analyze_masks(net)["summary"]
    # A uniformly random mask: within a few standard deviations of its own expectation.
    expected = uniform["empty_kernels_expected_random"]
    assert abs(uniform["empty_kernels"] - expected) < 5 * math.sqrt(expected)
    randomize_scores(net, channel_structure=3.0, seed=0)
    structured = analyze_masks(net)["summary"]
    assert structured["empty_output_channels"] > 5 * structured["empty_output_channels_expected_random"]
    assert structured["aligned_channels"] > structured["aligned_channels_expected_independent"]
    json.dumps(structured)  # plain data


def _checkpoint(tmp_path):
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16))
    net = binprune.convert_to_binary_supermask(model, sparsity=0.9)
    randomize_scores(net, channel_structure=2.0, seed=0)
    path = tmp_path / "model.pt"
    save_checkpoint(path, net)
    return net, path


@pytest.mark.slow
def test_write_inspection_files(tmp_path):
    net, _ = _checkpoint(tmp_path)
    result = write_inspection(net, tmp_path / "inspect", mask_images=2)
    assert set(result["files"]) == {"analysis", "keep_ratio", "channel_occupancy", "kernel_histograms", "masks", "alignment"}
    for path in result["files"].values():
        with open(path, "rb") as fh:
            head = fh.read(8)
        assert head.startswith(b"\x89PNG") or path.endswith(".json")
    data = json.loads((tmp_path / "inspect" / "analysis.json").read_text())
    assert data["summary"] == result["summary"]
    assert len(data["layers"]) == len(list(masked_tensors(net)))


@pytest.mark.slow
def test_cli_export_and_inspect(tmp_path, capsys):
    net, path = _checkpoint(tmp_path)
    out = tmp_path / "model.bpk"
    assert main(["export", str(path), "-o", str(out), "--footprint-json", str(tmp_path / "fp.json")]) == 0
    text = capsys.readouterr().out
    assert "packed file" in text and "bound" in text
    fp = json.loads((tmp_path / "fp.json").read_text())
    assert fp["bytes"]["packed_file"] == out.stat().st_size
    # inspect reads the packed file as well as the checkpoint, with the same masks
    assert main(["inspect", str(out), "--out", str(tmp_path / "insp")]) == 0
    assert "empty output channels" in capsys.readouterr().out
    a = json.loads((tmp_path / "insp" / "analysis.json").read_text())
    assert a == json.loads(json.dumps(analyze_masks(net)))


def test_cli_errors_exit_2(tmp_path, capsys):
    net, path = _checkpoint(tmp_path)
    packed = tmp_path / "m.bpk"
    save_packed(net, packed)
    packed.write_bytes(packed.read_bytes()[:-5])
    assert main(["inspect", str(packed), "--out", str(tmp_path / "x")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "y.bpk")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err
