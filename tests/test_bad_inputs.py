"""Every bad input is a one-line error, nothing read from a file decides which code runs, and
nothing is lost or silently changed.

One section per area, each opened by a comment saying what it covers. To add a section, append it
at the end with its own helpers; the shared helpers are at the top (``one_line``, ``small_net``).
Keep each test small and fast (tiny models, CPU).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import binprune
from binprune import checkpoint as ckpt
from binprune import convert, export, utils
from binprune.checkpoint import CheckpointError

from .conftest import requires_fashion_mnist
from binprune.sparsity import allocate_keep_counts, allocate_keep_ratios

# --- shared helpers ---------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo | BaseException) -> str:
    """The error's message, checked to be a single non-empty line (what the CLI prints)."""
    value = exc.value if isinstance(exc, pytest.ExceptionInfo) else exc
    text = str(value)
    assert text and "\n" not in text, repr(text)
    return text


def small_net(**kwargs) -> nn.Module:
    """A converted small_cnn with a recipe (so files rebuild it without a base model)."""
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(4, 8), seed=0)
    return binprune.convert_to_binary_supermask(model, sparsity=0.9, **kwargs)


# --- files naming code: a checkpoint or packed file never selects code to import --------------------
#
# A spec's excluded types are stored as "type:module.Class". Loading resolves such a name only for
# classes of torch.nn, torchvision, timm, robustbench and binprune, and for classes registered in
# code (binprune.convert.allow_type); anything else is refused and nothing is imported.

EVIL = "evil_module_xyz"


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path that creates a marker file if it is ever imported."""
    folder = tmp_path / "site"
    folder.mkdir()
    marker = tmp_path / "IMPORTED"
    (folder / f"{EVIL}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "import torch\nclass Thing(torch.nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(EVIL, None)
    yield marker
    sys.modules.pop(EVIL, None)


def _spec_with_exclude(net: nn.Module, exclude: list[str]) -> dict:
    spec = binprune.model_spec(net)
    spec["transform"]["kwargs"]["exclude"] = exclude
    return spec


def _write_checkpoint(path: Path, net: nn.Module, spec: dict, *, digest: bool) -> None:
    """A checkpoint as a forger would write it: any spec, with or without a valid digest."""
    payload = {"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION, "spec": spec,
               "model": net.state_dict()}
    if digest:
        payload["digest"] = ckpt.checkpoint_digest(payload)
    torch.save(payload, path)


def _edit_packed(data: bytes, edit) -> bytes:
    """Rewrite a packed file's header with ``edit(header)`` and a matching checksum."""
    magic, version, flags, header_len, payload_len = struct.unpack_from("<4sHHII", data)
    start = struct.calcsize("<4sHHII")
    header = json.loads(zlib.decompress(data[start:start + header_len]))
    edit(header)
    raw = zlib.compress(json.dumps(header).encode())
    body = struct.pack("<4sHHII", magic, version, flags, len(raw), payload_len) + raw + \
        data[start + header_len:start + header_len + payload_len]
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("digest", [True, False], ids=["with-digest", "0.1-style-no-digest"])
def test_checkpoint_naming_an_unknown_type_is_refused_without_importing(tmp_path, evil_module, digest):
    net = small_net()
    path = tmp_path / "evil.pt"
    _write_checkpoint(path, net, _spec_with_exclude(net, [f"type:{EVIL}.Thing"]), digest=digest)
    with pytest.raises(CheckpointError) as exc:
        binprune.load_model(path)
    message = one_line(exc)
    assert str(path) in message and "allow_type(Thing)" in message and f"{EVIL}.Thing" in message
    assert not evil_module.exists() and EVIL not in sys.modules


def test_packed_file_naming_an_unknown_type_is_refused_without_importing(tmp_path, evil_module):
    data = _edit_packed(export.pack_model(small_net()),
                        lambda h: h["spec"]["transform"]["kwargs"].update(exclude=[f"type:{EVIL}.Thing"]))
    path = tmp_path / "evil.bpk"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as exc:
        binprune.load_model(path)
    assert "allow_type" in one_line(exc) and str(path) in one_line(exc)
    assert not evil_module.exists() and EVIL not in sys.modules


def test_a_config_naming_an_unknown_type_is_refused_without_importing(evil_module):
    model = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8))
    with pytest.raises(ValueError, match="allow_type"):
        binprune.convert_to_binary_supermask(model, exclude=[f"type:{EVIL}.Thing"])
    assert not evil_module.exists() and EVIL not in sys.modules


@pytest.mark.parametrize("name", ["type:binprune.__main__.Thing", "type:os.system", "type:torch.nn.functional.relu",
                                  "type:torch.nn.Linear; import os", "type:subprocess.Popen"])
def test_other_type_names_are_refused(name):
    model = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8))
    with pytest.raises(ValueError) as exc:
        binprune.convert_to_binary_supermask(model, exclude=[name])
    assert "allow_type" in one_line(exc)


def test_allowed_packages_and_registered_types_resolve(tmp_path, monkeypatch):
    model = binprune.create_model("small_cnn", in_channels=1, widths=(4, 8), hidden=6)
    net = binprune.convert_to_binary_supermask(model, exclude=["type:torch.nn.modules.linear.Linear"])
    assert all(not n.startswith("network.net.fc") for n in (m.name for m in binprune.supermask.masked_tensors(net)))
    for name in ("type:torch.nn.Linear", "type:torchvision.models.resnet.BasicBlock", "type:binprune.models.Normalize"):
        binprune.convert_to_binary_supermask(model, exclude=[name])
    # A user's module, imported by the user's code but not registered: a file cannot name it ...
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "user_blocks_xyz.py").write_text("import torch\nclass Block(torch.nn.Identity):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    import user_blocks_xyz

    path = tmp_path / "user.pt"
    net = small_net()
    _write_checkpoint(path, net, _spec_with_exclude(net, ["type:user_blocks_xyz.Block"]), digest=True)
    with pytest.raises(CheckpointError, match=r"allow_type\(Block\)"):
        binprune.load_model(path)
    # ... until it is registered in code.
    assert convert.allow_type(user_blocks_xyz.Block) is user_blocks_xyz.Block
    assert binprune.load_model(path) is not None
    with pytest.raises(TypeError):
        convert.allow_type(int)


def test_a_type_passed_in_code_round_trips_through_a_checkpoint(tmp_path):
    class LocalBlock(nn.Sequential):
        pass

    model = nn.Sequential(nn.Flatten(), LocalBlock(nn.Linear(4, 4)), nn.Linear(4, 3))
    net = binprune.convert_to_binary_supermask(model, exclude=[LocalBlock])
    assert binprune.model_spec(net)["transform"]["kwargs"]["exclude"][0].endswith("LocalBlock")
    binprune.save_checkpoint(tmp_path / "local.pt", net)
    again = binprune.load_model(tmp_path / "local.pt", base_model=model)
    x = torch.rand(2, 4)
    assert torch.equal(again(x), net.eval()(x))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["transform"].update(name="os.system"), "unknown model transform"),
    (lambda s: s["recipe"].update(arch="evil_arch"), "unknown architecture"),
    (lambda s: s["recipe"]["kwargs"].update(evil=1), "cannot rebuild the architecture"),
    (lambda s: s["transform"]["kwargs"].update(evil=1), "cannot rebuild the model's 'supermask' transform"),
])
def test_other_names_in_a_file_only_select_registered_builders(tmp_path, edit, message):
    net = small_net()
    spec = binprune.model_spec(net)
    edit(spec)
    _write_checkpoint(tmp_path / "x.pt", net, spec, digest=True)
    with pytest.raises(CheckpointError, match=message) as exc:
        binprune.load_model(tmp_path / "x.pt")
    one_line(exc)


# --- writing files: devices, folders, symlinks, unwritable places, OS errors -------------------------
#
# Writes are atomic (temporary file + rename). Device nodes, pipes and folders are refused before
# anything is written; a symlink is written through (its target is replaced, the link is kept); an
# OSError becomes a one-line WriteError (an OSError and a ValueError) naming the path.


@pytest.mark.parametrize("target", ["/dev/null", "/dev/stdout", "/proc/self/fd/1"])
def test_writes_refuse_devices(target):
    with pytest.raises(utils.WriteError) as exc:
        utils.atomic_write_bytes(target, b"x")
    assert target in one_line(exc)
    with pytest.raises(utils.WriteError):
        utils.check_output_path(target)
    assert Path("/dev/null").is_char_device()


def test_writes_refuse_folders_and_empty_names(tmp_path):
    for bad in (tmp_path, f"{tmp_path}{os.sep}", ""):
        with pytest.raises(utils.WriteError) as exc:
            utils.write_json(bad, {"a": 1})
        one_line(exc)
        with pytest.raises(utils.WriteError):
            utils.check_output_path(bad)
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []


def test_write_error_is_an_os_error_and_a_value_error(tmp_path):
    with pytest.raises(OSError):
        utils.atomic_write_bytes(tmp_path, b"")
    with pytest.raises(ValueError):
        utils.atomic_write_bytes(tmp_path, b"")
    error = utils.WriteError(tmp_path / "x", "No space left on device", errno.ENOSPC)
    again = pickle.loads(pickle.dumps(error))  # crosses process boundaries (DDP workers)
    assert str(again) == str(error) and again.errno == errno.ENOSPC


def test_the_cli_prints_a_write_error_as_one_line(tmp_path, capsys):
    from binprune.cli import main

    binprune.save_checkpoint(tmp_path / "c.pt", small_net())
    assert main(["export", str(tmp_path / "c.pt"), "-o", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("binprune: error: ") and "/dev/null" in err


def test_a_symlink_is_written_through_and_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    utils.write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    assert utils.check_output_path(link) == link
    to_device = tmp_path / "null.json"
    to_device.symlink_to("/dev/null")
    with pytest.raises(utils.WriteError, match="/dev/null"):
        utils.write_json(to_device, {})
    assert to_device.is_symlink()


def test_check_output_path_refuses_what_cannot_be_written(tmp_path):
    afile = tmp_path / "a.pt"
    afile.write_bytes(b"data")
    assert utils.check_output_path(tmp_path / "new" / "deeper" / "b.bpk") == tmp_path / "new" / "deeper" / "b.bpk"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    for inside_a_file in (afile / "sub" / "b.bpk", afile / "b.bpk"):
        with pytest.raises(utils.WriteError, match="is a file, not a folder"):
            utils.check_output_path(inside_a_file)
        with pytest.raises(utils.WriteError, match="is a file, not a folder"):
            utils.atomic_write_bytes(inside_a_file, b"x")
    link = tmp_path / "link.pt"
    link.symlink_to(afile)
    hard = tmp_path / "hard.pt"
    os.link(afile, hard)
    for same in (afile, link, hard, tmp_path / "." / "a.pt"):
        with pytest.raises(utils.WriteError, match="same file as the input") as exc:
            utils.check_output_path(same, inputs=[afile])
        one_line(exc)
    assert utils.check_output_path(tmp_path / "other.bpk", inputs=[afile]) == tmp_path / "other.bpk"


def test_check_output_path_refuses_an_unwritable_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(utils.WriteError, match="not writable") as exc:
        utils.check_output_path(tmp_path / "x.bpk")
    assert exc.value.errno == errno.EACCES
    with pytest.raises(utils.WriteError, match=r"not writable \(to create"):
        utils.check_output_path(tmp_path / "missing" / "x.bpk")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_writing_into_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(utils.WriteError, match="not writable"):
            utils.check_output_path(folder / "x.pt")
        with pytest.raises(utils.WriteError, match="Permission denied") as exc:
            utils.atomic_write_bytes(folder / "x.pt", b"x")
        one_line(exc)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_os_errors_while_writing_become_one_line_write_errors(tmp_path, monkeypatch, code):
    path = tmp_path / "out.pt"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(utils.WriteError) as exc:
        utils.atomic_torch_save({"a": torch.zeros(3)}, path)
    assert exc.value.errno == code and os.strerror(code) in one_line(exc) and str(path) in one_line(exc)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]
    monkeypatch.undo()
    monkeypatch.setattr(utils.tempfile, "mkstemp", fail)
    with pytest.raises(utils.WriteError) as exc:
        utils.write_json(path, {})
    assert exc.value.errno == code


def test_no_space_inside_torch_save_is_a_write_error(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        """A file that takes 100 bytes, then reports a full disk."""

        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(utils.WriteError, match="No space left on device") as exc:
        binprune.save_checkpoint(tmp_path / "c.pt", small_net())
    one_line(exc)
    assert list(tmp_path.iterdir()) == []


# --- checkpoints and packed files: digests, empty, truncated and altered files -----------------------
#
# Every checkpoint written by save_checkpoint records SHA-256 digests of its state_dict and of the
# rest (spec, optimizer, training state); loading verifies them. Files of binprune 0.1 have no
# digest and still load (tests/test_compatibility.py). Empty, truncated or altered files give one
# line naming the file.

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _flip_tensor_byte(path: Path, which: int = -1) -> None:
    """Flip one bit inside the stored bytes of a tensor (zip entries are stored uncompressed)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        entries = sorted((i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 0),
                         key=lambda i: i.file_size)
        info = entries[which]
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_tensor_is_detected(tmp_path):
    net = small_net()
    path = tmp_path / "c.pt"
    binprune.save_checkpoint(path, net)
    assert binprune.load_model(path) is not None
    _flip_tensor_byte(path)
    for load in (binprune.load_model, ckpt.load_checkpoint, ckpt.load_model):
        with pytest.raises(CheckpointError, match="corrupted") as exc:
            load(path)
        assert str(path) in one_line(exc) and "state_dict" in one_line(exc)


def test_a_flipped_byte_in_the_training_state_is_detected(tmp_path):
    net = small_net()
    path = tmp_path / "last.pt"
    binprune.save_checkpoint(path, net, optimizer={"momentum": torch.arange(4000, dtype=torch.float32)}, epoch=3)
    _flip_tensor_byte(path, which=-1)  # the largest tensor: the momentum
    with pytest.raises(CheckpointError, match="optimizer or training state") as exc:
        ckpt.load_checkpoint(path)
    one_line(exc)


def test_digest_survives_a_round_trip_and_keeps_the_stored_dtype(tmp_path):
    net = small_net().double()
    path = tmp_path / "d.pt"
    binprune.save_checkpoint(path, net, extra={"set": {"b", "a"}, "t": (1, 2.5, None, True), "dtype": torch.float16})
    payload = ckpt.load_checkpoint(path)
    assert payload["digest"] == ckpt.checkpoint_digest(payload)
    again = binprune.load_model(path)  # rebuilt in float32, loaded back in the stored float64
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    assert next(again.parameters()).dtype == torch.float64 and torch.equal(again(x), net.eval()(x))


def test_version_1_checkpoints_have_no_digest_and_load():
    payload = ckpt.load_checkpoint(FIXTURES / "v1_supermask.pt")
    assert "digest" not in payload and binprune.load_model(FIXTURES / "v1_supermask.pt") is not None


def test_reserved_checkpoint_keys_are_refused(tmp_path):
    for key in ("format", "digest", "spec"):
        with pytest.raises(ValueError, match=key):
            binprune.save_checkpoint(tmp_path / "c.pt", small_net(), **{key: 1})
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("suffix", [".pt", ".bpk"])
def test_empty_files_are_one_line_errors(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    for load in (binprune.load_model, ckpt.load_checkpoint, export.load_packed):
        with pytest.raises(CheckpointError, match="empty") as exc:
            load(path)
        assert str(path) in one_line(exc)


def test_folders_are_not_model_files(tmp_path):
    for load in (ckpt.load_checkpoint, export.load_packed):
        with pytest.raises(CheckpointError, match="folder") as exc:
            load(tmp_path)
        one_line(exc)


def test_truncated_checkpoints_are_one_line_errors(tmp_path):
    path = tmp_path / "c.pt"
    binprune.save_checkpoint(path, small_net())
    data = path.read_bytes()
    for size in (1, 10, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as exc:
            binprune.load_model(path)
        assert str(path) in one_line(exc)


def test_truncated_packed_files_are_one_line_errors(tmp_path):
    data = export.pack_model(small_net())
    path = tmp_path / "p.bpk"
    for size in (1, 3, 5, 15, 16, 40, len(data) // 2, len(data) - 33, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as exc:
            binprune.load_model(path)
        assert str(path) in one_line(exc)


@pytest.mark.parametrize("edit", [
    lambda h: h["masks"][0].pop("keep"),
    lambda h: h["masks"][0].update(offset="x"),
    lambda h: h.update(masks={"a": 1}),
    lambda h: h["tensors"][0].update(shape="abc"),
    lambda h: h.update(counters=[1, 2]),
    lambda h: h.update(spec=[]),
])
def test_malformed_packed_headers_are_one_line_errors(tmp_path, edit):
    path = tmp_path / "p.bpk"
    path.write_bytes(_edit_packed(export.pack_model(small_net()), edit))
    with pytest.raises(CheckpointError) as exc:
        binprune.load_model(path)
    assert str(path) in one_line(exc)


def test_a_compressed_tensor_cannot_expand_past_its_size():
    bomb = zlib.compress(bytes(10_000_000))
    with pytest.raises(ValueError, match="expected 400"):
        export._decode_raw("shuffle-zlib", bomb, torch.float32, [100])  # noqa: SLF001


# --- conversion: tied weights, meta tensors, dtypes, seeds, class counts -------------------------------
#
# convert_to_binary_supermask refuses what it cannot convert faithfully (tied tensors, meta tensors,
# mixed or non-float dtypes) and invalid settings, with one line; a module reused at several places
# stays shared and is counted once; float64/float16/bfloat16 models convert in their own dtype.


class _TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(self.emb(x).mean(1))


def test_tied_weights_are_refused():
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    b.weight = a.weight
    with pytest.raises(ValueError, match="tied weights") as exc:
        binprune.convert_to_binary_supermask(nn.Sequential(a, nn.ReLU(), b), last_bn=False)
    assert "0.weight and 2.weight" in one_line(exc)
    lm = _TiedLM()
    before = lm.emb.weight.detach().clone()
    with pytest.raises(ValueError, match="emb.weight and out.weight"):
        binprune.convert_to_binary_supermask(lm, last_bn=False)
    assert torch.equal(lm.emb.weight, before)
    # leaving the tied layer dense keeps the tie
    net = binprune.convert_to_binary_supermask(nn.Sequential(_TiedLM(), nn.Linear(10, 3)), exclude=["0.out"])
    assert net.network[0].out.weight is net.network[0].emb.weight


def test_a_module_reused_twice_is_masked_once_and_counted_once():
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(8, 3))
    net = binprune.convert_to_binary_supermask(model, sparsity=0.5, last_bn=False)
    assert net.network[0] is net.network[2]
    report = binprune.sparsity_report(net)
    assert [r.name for r in report.layers] == ["network.0.weight", "network.3.weight"]
    assert report.masked_total == 64 + 24
    back = export.unpack_model(export.pack_model(net), base_model=model)
    x = torch.rand(2, 8)
    assert torch.equal(back(x), net.eval()(x))


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="meta device") as exc:
        binprune.convert_to_binary_supermask(model)
    one_line(exc)


def _dtype_model(dtype):
    return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_non_float32_models_convert_in_their_own_dtype(dtype):
    net = binprune.convert_to_binary_supermask(_dtype_model(dtype), sparsity=0.5)
    floats = {t.dtype for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()}
    assert floats == {dtype}
    reference = binprune.convert_to_binary_supermask(_dtype_model(torch.float32), sparsity=0.5).to(dtype)
    for (name, a), (_, b) in zip(net.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name  # the same as converting in float32, then casting
    if dtype == torch.float64:
        out = net.train()(torch.rand(4, 8, dtype=dtype))
        out.sum().backward()
        assert out.dtype == dtype and all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_mixed_dtypes_are_refused():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3).double())
    with pytest.raises(ValueError, match="one floating dtype") as exc:
        binprune.convert_to_binary_supermask(model)
    one_line(exc)


@pytest.mark.parametrize("seed", [1.7, 2.0, "3", True, None, torch.tensor(1)])
def test_seed_must_be_an_integer(seed):
    model = nn.Sequential(nn.Linear(8, 3))
    with pytest.raises(ValueError, match="seed must be an integer") as exc:
        binprune.convert_to_binary_supermask(model, seed=seed)
    one_line(exc)
    if seed is not None:  # create_model(seed=None) means "torch's global random state"
        with pytest.raises(ValueError, match="seed must be an integer"):
            binprune.create_model("small_cnn", seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer"):
        binprune.init.fixed_weight((3, 3), init="binary", seed=seed, name="w", keep_ratio=1.0, fan_in_count=3)
    with pytest.raises(ValueError, match="seed must be an integer"):
        binprune.init.fixed_bias((3,), init="kaiming", seed=seed, name="b", fan_in_count=3)


def test_numpy_integer_seeds_are_the_same_seed():
    model = nn.Sequential(nn.Linear(8, 3))
    a = binprune.convert_to_binary_supermask(model, seed=np.int64(5))
    b = binprune.convert_to_binary_supermask(model, seed=5)
    assert binprune.model_spec(a) == binprune.model_spec(b) and type(a.config["seed"]) is int
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_integer(num_classes):
    with pytest.raises(ValueError, match="num_classes") as exc:
        binprune.convert_to_binary_supermask(nn.Sequential(nn.Linear(8, 3)), num_classes=num_classes)
    one_line(exc)
    with pytest.raises(ValueError, match="num_classes"):
        binprune.create_model("small_cnn", num_classes=num_classes)


@pytest.mark.parametrize("kwargs, message", [
    (dict(exclude="0"), "list of module names"),
    (dict(p=float("nan")), "p must be"),
    (dict(p=-1.0), "p must be"),
    (dict(p="0.1"), "p must be"),
])
def test_other_conversion_settings(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as exc:
        binprune.convert_to_binary_supermask(nn.Sequential(nn.Linear(8, 3)), **kwargs)
    one_line(exc)


# --- allocation: extreme exponents -------------------------------------------------------------------
#
# The adaptive rule weighs layers by n ** p. A huge p overflows floats; the weights are then
# computed relative to the largest layer in log space (ordinary p gives bit-identical results).


@pytest.mark.parametrize("p", [300.0, 1e6, 1e300])
def test_a_huge_p_is_allocated_without_overflow(p):
    sizes = [10, 1000, 100000, 20]
    ratios = allocate_keep_ratios(sizes, 0.5, p)
    assert all(0 <= r <= 1 for r in ratios)
    assert sum(r * n for r, n in zip(ratios, sizes)) == pytest.approx(0.5 * sum(sizes))
    assert ratios[2] == max(ratios)  # p > 1 favours the largest layer
    assert allocate_keep_counts(sizes, 0.99, p) == [1, 1, 1010, 1]
    net = binprune.convert_to_binary_supermask(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3)), p=p)
    assert [r.kept for r in binprune.sparsity_report(net).layers] == [1, 1]


def test_ordinary_p_is_unchanged():
    # n ** p directly for p that does not overflow (values fixed before the log-space fallback)
    assert allocate_keep_counts([10, 1000, 100000, 20], 0.99, 0.1) == [10, 379, 601, 20]
    assert allocate_keep_counts([10, 1000, 100000, 20], 0.99, 1.0) == [1, 10, 1000, 1]
    with pytest.raises(ValueError, match="p must be"):
        allocate_keep_ratios([10, 20], 0.5, float("inf"))


# --- training runs: folders, locks, divergence, data, budgets ----------------------------------------


def _tiny_run_model(seed: int = 0):
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(4, 8), seed=seed)
    return binprune.convert_to_binary_supermask(model, sparsity=0.9, seed=seed)


def _tiny_data(n: int = 96, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


_QUICK = dict(eps=0.05, epochs=1, attack="fast", batch_size=32, val_fraction=0, progress=False, device="cpu")


@pytest.mark.slow
def test_train_refuses_an_existing_run_unless_resume_or_overwrite(tmp_path):
    from binprune.training import RunFolderError

    out = tmp_path / "run"
    binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **_QUICK)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run"):
        binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **_QUICK)
    assert (out / "last.pt").read_bytes() == before
    binprune.train(_tiny_run_model(1), _tiny_data(), out_dir=out, overwrite=True, **_QUICK)
    assert (out / "last.pt").read_bytes() != before and not (out / "binprune.lock").exists()


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path):
    from binprune.training import RunFolderError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "own file"}')
    with pytest.raises(RunFolderError, match="not a binprune run folder"):
        binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **_QUICK)
    assert (out / "config.json").read_text() == '{"my": "own file"}' and sorted(os.listdir(out)) == ["config.json"]


@pytest.mark.slow
def test_a_second_run_on_a_held_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    import json as _json
    import socket

    from binprune.training import RunFolder, RunFolderError

    out = tmp_path / "run"
    with RunFolder(out):
        with pytest.raises(RunFolderError, match="in use by another run"):
            binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **_QUICK)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "binprune.lock").write_text(_json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                     "started": 0}))
    binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **_QUICK)  # the stale lock is taken over
    assert (out / "last.pt").is_file() and not (out / "binprune.lock").exists()


def test_a_diverging_run_stops_with_the_step_and_the_last_good_checkpoint(tmp_path):
    from binprune.training import TrainingDiverged

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="lr must be > 0, got inf"):  # refused before any work
        binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, lr=float("inf"), **_QUICK)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1, step \d+: .*(no longer finite|loss is).*no checkpoint was written"):
        binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, lr=1e38, **_QUICK)
    assert not (out / "metrics.json").exists() and not (out / "binprune.lock").exists()


@pytest.mark.slow
def test_resuming_on_other_data_is_refused(tmp_path):
    out = tmp_path / "run"
    settings = {**_QUICK, "epochs": 2, "checkpoint_every": 1}
    binprune.train(_tiny_run_model(), _tiny_data(), out_dir=out, **settings)
    with pytest.raises(CheckpointError, match="train_data"):
        binprune.train(_tiny_run_model(), _tiny_data(seed=1), out_dir=out, resume=True, **settings)


@pytest.mark.parametrize("call", ["train", "evaluate"])
def test_a_linf_budget_above_one_is_refused_with_the_255_hint(call):
    x, y = _tiny_data(8)
    with pytest.raises(ValueError, match="8/255"):
        if call == "train":
            binprune.train(_tiny_run_model(), (x, y), **{**_QUICK, "eps": 8})
        else:
            binprune.evaluate(_tiny_run_model(), (x, y), eps=8, attacks=("clean",), progress=False, device="cpu")


def test_labels_beyond_the_logits_are_a_clear_error():
    x, y = _tiny_data()
    model = binprune.convert_to_binary_supermask(
        binprune.create_model("small_cnn", num_classes=5, in_channels=1, widths=(4, 8)), sparsity=0.9)
    with pytest.raises(ValueError, match="num_classes"):
        binprune.train(model, (x, y), **_QUICK)


@pytest.mark.slow
def test_checkpoint_seconds_writes_checkpoints_inside_an_epoch(tmp_path):
    out = tmp_path / "run"
    seen = []

    class Probe:
        def __call__(self, model, step):
            seen.append((step, (out / "last.pt").is_file()))

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            return None

    binprune.train(_tiny_run_model(), _tiny_data(320), out_dir=out, step_hook=Probe(), checkpoint_seconds=1e-6,
                   **{**_QUICK, "batch_size": 32})
    # 10 steps in the epoch; the interval is derived after 5 measured steps (then every step)
    assert [exists for step, exists in seen][6:9] == [True, True, True]


# --- the command line: one line on stderr, exit status 2 --------------------------------------------


def _cli_error(*argv):
    from binprune.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "fashion-mnist", "--eps", "8", "--epochs", "1"], "8/255"),
    (["train", "--dataset", "fashion-mnist", "--eps", "0.1", "--epochs", "1", "--lr", "inf"], "not a finite number"),
    (["train", "--dataset", "fashion-mnist", "--eps", "0.1", "--epochs", "1", "--p", "nan"], "not a finite number"),
    (["train", "--config", "/no/such/config.yaml"], "does not exist"),
    (["eval", "/no/such.pt", "--dataset", "fashion-mnist", "--eps", "8"], "8/255"),
])
def test_cli_errors_are_one_line_with_status_2(argv, message, capsys, tmp_path):
    code = _cli_error(*argv, *(["--out", str(tmp_path / "never")] if argv[0] == "train" else []))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
@requires_fashion_mnist
def test_cli_num_classes_below_the_dataset_is_refused_before_any_work(capsys, tmp_path):
    code = _cli_error("train", "--dataset", "fashion-mnist", "--eps", "0.1", "--epochs", "1", "--num-classes", "5",
                      "--device", "cpu", "--out", str(tmp_path / "never"))
    err = capsys.readouterr().err
    assert code == 2 and "--num-classes 5 is below the 10 classes" in err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_cli_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "binprune", "--debug", "train", "--dataset", "fashion-mnist",
                           "--eps", "8", "--epochs", "1", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "8/255" in proc.stderr


def test_cli_accepts_budgets_as_fractions():
    from binprune.cli import build_parser

    args = build_parser().parse_args(["train", "--eps", "8/255", "--alpha", "2/255"])
    assert args.eps == pytest.approx(8 / 255) and args.alpha == pytest.approx(2 / 255)


def test_evaluation_flags_random_and_probability_outputs_for_every_attack():
    class Probabilities(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x.flatten(1)).softmax(1)

    class Random(Probabilities):
        def forward(self, x):
            return self.lin(x.flatten(1)) + torch.randn(len(x), 3)

    x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    for model, word in ((Probabilities(), "probabilities"), (Random(), "random")):
        report = binprune.evaluate(model, (x, y), eps=0.1, attacks=("clean", "pgd"), progress=False, device="cpu")
        assert any(word in w for w in report.model["warnings"])
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert binprune.evaluate(plain, (x, y), eps=0.1, attacks=("clean",), progress=False, device="cpu").model["warnings"] == []
