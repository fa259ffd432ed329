"""Accelerator options of the training step, tested on the CPU: bf16 autocast (top-k and
straight-through gradient), channels-last, batch prefetch, SyncBatchNorm conversion, records."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import binprune
from binprune.config import RunConfig, TrainConfig
from binprune.supermask import masked_tensors
from binprune.training.trainer import autocast_context, cudnn_benchmark, prefetch_to_device


def _net(seed=0):
    model = binprune.create_model("small_cnn", num_classes=10, in_channels=1, widths=(8, 16), seed=seed)
    return binprune.convert_to_binary_supermask(model, sparsity=0.9, seed=seed)


def _score_grads(net, x, y, amp):
    net.zero_grad(set_to_none=True)
    with autocast_context(torch.device("cpu"), amp):
        logits = net(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits, {mt.name: mt.mask.scores.grad.clone() for mt in masked_tensors(net)}


def test_bf16_autocast_keeps_float32_masks_and_straight_through_gradient():
    torch.manual_seed(0)
    net = _net().train()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    masks_fp32 = {mt.name: mt.mask.mask().clone() for mt in masked_tensors(net)}
    logits32, grads32 = _score_grads(net, x, y, "none")
    logits16, grads16 = _score_grads(net, x, y, "bf16")
    assert logits32.dtype == torch.float32 and logits16.dtype == torch.bfloat16  # autocast was active
    for mt in masked_tensors(net):
        assert mt.mask.scores.dtype == torch.float32
        assert torch.equal(mt.mask.mask(), masks_fp32[mt.name])  # the same top-k under autocast
        g32, g16 = grads32[mt.name], grads16[mt.name]
        assert g16.dtype == torch.float32 and torch.isfinite(g16).all()
        # straight-through: zero exactly where the fixed weight is zero, same direction as float32
        assert g16.abs().sum() > 0
        cosine = F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.95, (mt.name, float(cosine))


def test_autocast_context_rejects_unknown_dtype():
    import pytest

    with pytest.raises(ValueError, match="unknown amp 'fp8'"):
        autocast_context(torch.device("cpu"), "fp8")
    with pytest.raises(ValueError, match="unknown amp 'fp16'"):
        TrainConfig(eps=0.1, epochs=1, amp="fp16").validate()


@pytest.mark.slow
def test_train_with_bf16_and_channels_last_on_cpu(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    net = _net()
    result = binprune.train(net, (x, y), eps=0.1, epochs=1, attack="fast", batch_size=16, amp="bf16",
                            channels_last=True, val_fraction=0.0, progress=False, device="cpu", out_dir=tmp_path)
    assert result.history[0]["train_loss"] > 0
    conv = next(mt for mt in masked_tensors(net) if mt.original.dim() == 4 and mt.original.shape[1] > 1)
    assert conv.original.is_contiguous(memory_format=torch.channels_last)
    assert not conv.original.is_contiguous()
    record = result.facts["config"]
    assert record["amp"] == "bf16" and record["channels_last"] is True


def test_speed_options_recorded_only_when_set():
    record = TrainConfig(eps=0.1, epochs=1).record()
    assert not {"amp", "channels_last", "cudnn_benchmark"} & set(record)  # older checkpoints still resume
    assert TrainConfig(eps=0.1, epochs=1, amp="bf16").record()["amp"] == "bf16"
    assert "channels_last" in RunConfig(train=TrainConfig(eps=0.1, epochs=1, channels_last=True)).record()["train"]


def test_prefetch_on_cpu_yields_the_batches_unchanged():
    batches = [(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.tensor([3, 4])) for _ in range(3)]
    out = list(prefetch_to_device(iter(batches), torch.device("cpu")))
    assert len(out) == 3
    for (x, y, i), (a, b, c) in zip(batches, out):
        assert torch.equal(x, a) and torch.equal(y, b) and torch.equal(i, c)


def test_cudnn_benchmark_is_restored():
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before


def test_sync_batchnorm_conversion_keeps_the_masks():
    net = _net()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(_net())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert set(net.state_dict()) == set(synced.state_dict())
    for a, b in zip(masked_tensors(net), masked_tensors(synced)):
        assert a.name == b.name and torch.equal(a.mask.mask(), b.mask.mask())
