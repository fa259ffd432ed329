"""Would unstructured sparse kernels speed up a 99%-sparse network on CPU? Per layer, dense vs CSR.

For every convolution of a trained model (its finalized weights ``w * mask``), on the input that
layer actually receives at the given batch size, times PyTorch's dense ``conv2d`` against the
same convolution computed as ``unfold`` (im2col) followed by a sparse CSR weight times the
unfolded input: the straightforward way to exploit unstructured sparsity without custom kernels.
Both results are compared (largest difference). Writes ``benchmarks/results/sparse_conv.json``.

    python benchmarks/sparse_conv.py --checkpoint runs/r18/best.pt [--batch-size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
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

from binprune import finalize  # noqa: E402
from binprune import load_model  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint or .bpk file of a trained model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sparse_conv.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = finalize(load_model(args.checkpoint)).eval()
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

    rows = []
    with torch.inference_mode():
        for name, conv in convs.items():
            x = inputs[name]
            density = float((conv.weight != 0).float().mean())
            sparse = _csr_conv(conv)
            dense_s = _median_time(lambda: conv(x), args.repeats)
            sparse_s = _median_time(lambda: sparse(x), args.repeats)
            diff = float((conv(x) - sparse(x)).abs().max())
            rows.append({"layer": name, "weight_shape": list(conv.weight.shape), "input_shape": list(x.shape),
                         "density": density, "dense_s": dense_s, "csr_s": sparse_s,
                         "csr_to_dense": sparse_s / dense_s, "max_abs_difference": diff})
            print(f"{name:28s} density {density:7.4f}  dense {1e3 * dense_s:8.1f} ms  CSR {1e3 * sparse_s:8.1f} ms"
                  f"  ratio {sparse_s / dense_s:5.2f}", flush=True)
    dense_total = sum(r["dense_s"] for r in rows)
    best_total = sum(min(r["dense_s"], r["csr_s"]) for r in rows)
    result = {
        "benchmark": "sparse_conv",
        "description": "per convolution: dense conv2d vs unfold + CSR sparse weight, on the layer's real input",
        "config": {"checkpoint": args.checkpoint, "batch_size": args.batch_size, "repeats": args.repeats,
                   "statistic": "median", "torch_num_threads": torch.get_num_threads(), "torch": torch.__version__},
        "layers": rows,
        "faster_with_csr": [r["layer"] for r in rows if r["csr_s"] < r["dense_s"]],
        "dense_total_s": dense_total,
        "best_of_both_total_s": best_total,
        "best_of_both_to_dense": best_total / dense_total,
    }
    write_json(args.out, result)
    print(f"layers faster with CSR: {len(result['faster_with_csr'])} of {len(rows)}; "
          f"picking the faster kernel per layer: {result['best_of_both_to_dense']:.3f}x the dense conv time; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
