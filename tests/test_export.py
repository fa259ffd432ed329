import hashlib
import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

import binprune
from binprune.analysis import randomize_scores
from binprune import load_model
from binprune.checkpoint import CheckpointError
from binprune.coding import decode_mask, encode_mask, golomb_bits, mask_bound_bits
from binprune.export import PACKED_VERSION, footprint, load_packed, pack_model, save_packed, unpack_model
from binprune.supermask import masked_tensors


def _calibrate(net, shape, batches=1, seed=0):
    """Give the batch norms real statistics (a cumulative average), then switch to eval."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    gen = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(torch.rand(*shape, generator=gen))
    return net.eval()


def _small(init="binary", allocation="adaptive", seed=0):
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16), hidden=12)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.9, init=init, allocation=allocation, seed=seed)
    randomize_scores(net, channel_structure=1.0, seed=seed)
    return _calibrate(net, (16, 1, 12, 12))


def _resend(data: bytes) -> bytes:
    """Recompute the checksum of an edited file, so that a later check is what fails."""
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


# --- mask coding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1000, 36864])
@pytest.mark.parametrize("density", ["zero", "one", "all", 0.01, 0.5, 0.9])
def test_mask_coding_round_trip_within_bound(n, density):
    rng = np.random.default_rng(n)
    k = {"zero": 0, "one": 1, "all": n}.get(density) if isinstance(density, str) else round(density * n)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, k, replace=False)] = True
    code = encode_mask(mask)
    assert np.array_equal(decode_mask(code, n, k), mask)
    bound = mask_bound_bits(n, k)
    if k in (0, n):
        assert code.bits == 0 and code.data == b""
    else:
        # Within 10% of log2 C(n, k), plus a few bits of integer-length overhead for tiny counts.
        assert code.bits <= 1.10 * bound + 2, (code.coding, code.bits, bound)
        assert len(code.data) == math.ceil(code.bits / 8)


def test_mask_coding_picks_complement_and_bitmap():
    mask = np.ones(5000, dtype=bool)
    mask[::100] = False
    assert encode_mask(mask).coding == "golomb_complement"
    rng = np.random.default_rng(0)
    half = rng.random(5000) < 0.5
    assert encode_mask(half).coding in ("bitmap", "golomb")  # either costs about 1 bit per entry
    assert encode_mask(half).bits <= 5000


def test_golomb_length_matches_hand_count():
    # m = 3: b = 2, u = 1. gap 0 -> q=0 r=0: "0" + 1 bit; gap 4 -> q=1 r=1: "10" + 2 bits; gap 2 -> q=0, r=2: "0" + 2 bits
    assert golomb_bits(np.array([0, 4, 2]), 3) == (1 + 1) + (2 + 2) + (1 + 2)


def test_decode_rejects_inconsistent_counts():
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50, 97]] = True
    code = encode_mask(mask)
    with pytest.raises(ValueError):
        decode_mask(code, 100, 4)


# --- packed files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("init, allocation", [("binary", "adaptive"), ("kaiming", "uniform"), ("signed_constant", "global")])
def test_round_trip_outputs_bit_identical(tmp_path, init, allocation):
    net = _small(init, allocation)
    path = tmp_path / "model.bpk"
    size = save_packed(net, path)
    assert size == path.stat().st_size
    loaded = load_packed(path)
    x = torch.rand(8, 1, 12, 12)
    assert torch.equal(net(x), loaded(x))
    for a, b in zip(masked_tensors(net), masked_tensors(loaded)):
        assert a.name == b.name and torch.equal(a.mask.mask(), b.mask.mask())
    # The checkpoint loader dispatches packed files too, and returns an eval-mode model.
    again = load_model(path)
    assert not again.training and torch.equal(again(x), net(x))


@pytest.mark.slow
def test_round_trip_resnet_bit_identical():
    model = binprune.create_model("resnet18", num_classes=10, width_factor=0.125)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, seed=3)
    randomize_scores(net, channel_structure=2.0, seed=3)
    _calibrate(net, (8, 3, 16, 16))
    loaded = unpack_model(pack_model(net))
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(net(x), loaded(x))


def test_truncated_file(tmp_path):
    data = pack_model(_small())
    for cut in (len(data) - 1, len(data) // 2, 10, 2):
        (tmp_path / "t.bpk").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|not a binprune packed"):
            load_packed(tmp_path / "t.bpk")
    with pytest.raises(CheckpointError, match="unexpected bytes"):
        unpack_model(data + b"\0")


def test_corrupted_file():
    data = bytearray(pack_model(_small()))
    data[len(data) - 60] ^= 0x10  # inside the data section
    with pytest.raises(CheckpointError, match="checksum"):
        unpack_model(bytes(data))


def test_wrong_magic_and_newer_version():
    data = pack_model(_small())
    with pytest.raises(CheckpointError, match="not a binprune packed file"):
        unpack_model(b"XYZ" + data[3:])
    newer = data[:4] + struct.pack("<H", PACKED_VERSION + 1) + data[6:]
    with pytest.raises(CheckpointError, match="newer"):
        unpack_model(_resend(newer))


def test_mismatched_architecture():
    net = _small()
    data = pack_model(net)
    # The same file, its recipe edited to another width: the rebuilt layers no longer match.
    import json
    import zlib

    head = struct.unpack_from("<4sHHII", data)
    header = json.loads(zlib.decompress(data[16 : 16 + head[3]]))
    header["spec"]["recipe"]["kwargs"]["widths"] = [8, 24]
    new_header = zlib.compress(json.dumps(header).encode())
    rest = data[16 + head[3] : -32]
    edited = struct.pack("<4sHHII", head[0], head[1], head[2], len(new_header), head[4]) + new_header + rest
    with pytest.raises(CheckpointError, match="does not match the rebuilt model"):
        unpack_model(_resend(edited + b"\0" * 32))


def test_seed_mismatch_detected_by_weight_fingerprint():
    net = _small()
    with torch.no_grad():
        next(masked_tensors(net)).original.neg_()  # weights no longer the ones the seed gives
    with pytest.raises(CheckpointError, match="regenerated from the seed differ"):
        unpack_model(pack_model(net))


class _Custom(nn.Module):
    """A model binprune did not define (no recipe)."""

    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 5))

    def forward(self, x):
        return self.body(x)


def test_model_without_recipe_needs_base_model(tmp_path):
    torch.manual_seed(0)
    base = _Custom()
    net = binprune.convert_to_binary_supermask(base, sparsity=0.8, init="kaiming")
    randomize_scores(net, seed=1)
    _calibrate(net, (8, 3, 8, 8))
    path = tmp_path / "custom.bpk"
    save_packed(net, path)
    with pytest.raises(CheckpointError, match="base model"):
        load_packed(path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_packed(path, base_model=_Custom(hidden=12))
    loaded = load_packed(path, base_model=base)
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(net(x), loaded(x))


def test_save_requires_masks(tmp_path):
    with pytest.raises(ValueError, match="no masked tensors"):
        save_packed(binprune.finalize(_small()), tmp_path / "x.bpk")
    with pytest.raises(FileNotFoundError):
        load_packed(tmp_path / "missing.bpk")


def test_footprint_accounting(tmp_path):
    net = _small()
    fp = footprint(net)
    masks = list(masked_tensors(net))
    n = [m.original.numel() for m in masks]
    k = [int(m.mask.mask().sum()) for m in masks]
    bound = sum(mask_bound_bits(a, b) for a, b in zip(n, k))
    assert fp["bytes"]["bound"] == pytest.approx(bound / 8)
    assert fp["bytes"]["paper_bitmap_sign"] == math.ceil((sum(n) + sum(k)) / 8)
    assert fp["bytes"]["packed_file"] == save_packed(net, tmp_path / "m.bpk")
    assert fp["bytes"]["masks"] <= fp["bytes"]["packed_file"] < fp["bytes"]["dense_fp32"] < fp["bytes"]["state_dict"]
    assert fp["masks_to_bound"] <= 1.10
    params = binprune.sparsity_report(net).total_params
    assert fp["bits_per_param"]["packed_file"] == pytest.approx(8 * fp["bytes"]["packed_file"] / params)
    assert fp["kept_weights"] == sum(k)
