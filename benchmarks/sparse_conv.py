"""Which kernel for a 99%-sparse convolution on CPU? Per layer: dense, im2col + CSR, direct sparse.

For every convolution of a model (its finalized weights ``w * mask``), on the input that layer
actually receives at the given batch size, times PyTorch's dense ``conv2d`` against

* ``csr``: ``unfold`` (im2col) followed by a sparse CSR weight times the unfolded input, the
  straightforward way to exploit unstructured sparsity without custom kernels (materializing
  im2col costs about as much as the dense convolution);
* ``direct``: binprune's direct sparse kernel (``binprune.deploy.sparse``: one fused multiply-add
  per kept weight over shifted input rows), when it can be built.

All results are compared with the dense one (largest difference). Without ``--checkpoint``, a
freshly converted CIFAR ResNet-18 (random masks with the per-layer keep counts of a trained one,
so the same kept work). Writes ``benchmarks/results/sparse_conv.json``.

    python benchmarks/sparse_conv.py [--checkpoint runs/r18/best.pt] [--batch-size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import binprune  # noqa: E402
from binprune import finalize  # noqa: E402
from binprune import load_model  # noqa: E402
from binprune.deploy import load_sparse_kernels, sparsify  # noqa: E402
from binprune.deploy.sparse import ALWAYS_SPARSE  # noqa: E402
from binprune.utils import write_json  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _csr_conv(conv: nn.Conv2d):
    """``x -> conv(x)`` computed as CSR weight @ unfold(x) (groups=1, no padding modes)."""
    out_ch = conv.out_channels
    weight = conv.weight.detach().reshape(out_ch, -1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore")
        csr = weight.to_sparse_csr()
    bias = None if conv.bias is None else conv.bias.detach()

    def run(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
        oh = (h + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
        ow = (w + 2 * conv.padding[1] - conv.dilation[1] * (conv.kernel_size[1] - 1) - 1) // conv.stride[1] + 1
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (C*k*k, N*L)
        out = (csr @ cols).reshape(out_ch, n, oh * ow).transpose(0, 1).reshape(n, out_ch, oh, ow)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    return run


def _layer_row(name: str, conv: nn.Conv2d, x: torch.Tensor, repeats: int, direct_ok: bool) -> dict:
    """Dense, im2col + CSR and (when built) the direct sparse kernel on one layer's real input."""
    density = float((conv.weight != 0).float().mean())
    sparse = _csr_conv(conv)
    dense_s = _median_time(lambda: conv(x), repeats)
    sparse_s = _median_time(lambda: sparse(x), repeats)
    row = {"layer": name, "weight_shape": list(conv.weight.shape), "input_shape": list(x.shape), "density": density,
           "dense_s": dense_s, "csr_s": sparse_s, "csr_to_dense": sparse_s / dense_s,
           "max_abs_difference": float((conv(x) - sparse(x)).abs().max())}
    if direct_ok:
        direct = sparsify(conv, ALWAYS_SPARSE)
        row["direct_s"] = _median_time(lambda: direct.run_sparse(x), repeats)
        row["direct_to_dense"] = row["direct_s"] / dense_s
        row["direct_max_abs_difference"] = float((conv(x) - direct.run_sparse(x)).abs().max())
    print(f"{name:28s} density {density:7.4f}  dense {1e3 * dense_s:8.1f} ms  CSR {1e3 * sparse_s:8.1f} ms"
          f" ({sparse_s / dense_s:5.2f})" + (f"  direct {1e3 * row['direct_s']:8.1f} ms ({row['direct_to_dense']:5.2f})"
                                             if direct_ok else ""), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint or .bpk file of a trained model (default: a converted "
                                                 "CIFAR ResNet-18, random masks with trained keep counts)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sparse_conv.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint:
        model = finalize(load_model(args.checkpoint)).eval()
    else:
        base = binprune.create_model("resnet18", num_classes=10)
        model = finalize(binprune.convert_to_binary_supermask(base, sparsity=0.99, p=0.1, seed=args.seed)).eval()
    direct_ok = load_sparse_kernels()
    in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    inputs: dict[str, torch.Tensor] = {}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1
             and m.padding_mode == "zeros" and isinstance(m.padding, tuple)}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: inputs.__setitem__(name, inp[0].detach()))
             for name, m in convs.items()]
    gen = torch.Generator().manual_seed(args.seed)
    with torch.inference_mode():
        model(torch.rand(args.batch_size, in_channels, args.input_size, args.input_size, generator=gen))
    for h in hooks:
        h.remove()

    with torch.inference_mode():
        rows = [_layer_row(name, conv, inputs[name], args.repeats, direct_ok) for name, conv in convs.items()]
    dense_total = sum(r["dense_s"] for r in rows)
    best_total = sum(min(r["dense_s"], r["csr_s"]) for r in rows)
    direct_total = sum(min(r["dense_s"], r["direct_s"]) for r in rows) if direct_ok else None
    result = {
        "benchmark": "sparse_conv",
        "description": "per convolution: dense conv2d vs unfold + CSR sparse weight vs binprune's direct sparse "
                       "kernel, on the layer's real input",
        "config": {"checkpoint": args.checkpoint or "converted resnet18, random masks (trained keep counts)",
                   "batch_size": args.batch_size, "repeats": args.repeats,
                   "statistic": "median", "torch_num_threads": torch.get_num_threads(), "torch": torch.__version__},
        "layers": rows,
        "faster_with_csr": [r["layer"] for r in rows if r["csr_s"] < r["dense_s"]],
        "dense_total_s": dense_total,
        "best_of_both_total_s": best_total,
        "best_of_both_to_dense": best_total / dense_total,
        "faster_with_direct": [r["layer"] for r in rows if r.get("direct_s", math.inf) < r["dense_s"]],
        "best_of_dense_and_direct_total_s": direct_total,
        "best_of_dense_and_direct_to_dense": direct_total / dense_total if direct_ok else None,
    }
    write_json(args.out, result)
    print(f"layers faster with CSR: {len(result['faster_with_csr'])} of {len(rows)}; "
          f"picking the faster kernel per layer: {result['best_of_both_to_dense']:.3f}x the dense conv time; "
          + (f"with the direct kernel instead: {len(result['faster_with_direct'])} layers faster, "
             f"{result['best_of_dense_and_direct_to_dense']:.3f}x; " if direct_ok else "") + f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
