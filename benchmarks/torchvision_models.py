"""Convert every torchvision classification model and run it forward (and backward).

For each name in ``torchvision.models.list_models(module=torchvision.models)``: build it
(random weights, 10 classes), ``convert_to_binary_supermask(sparsity=0.99)``, run a forward pass
in eval mode on 2 random images and a backward pass to the scores, and check that every Conv /
Linear / MultiheadAttention weight was converted or reported. Also records whether any signal
survives the 99%-sparse random mask at initialization (outputs differ between inputs), which
some deep thin networks lose until training moves the masks, whether conversion's own check
(``example_input``) warned about it, and whether the remedy it offers (``connect_channels=True``)
restores the signal, at what sparsity.

Each model runs in its own subprocess (memory is returned between models; one failure cannot
stop the rest). Results: ``benchmarks/results/torchvision_models.json``.

    python benchmarks/torchvision_models.py [--only resnet18 vit_b_16] [--timeout 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Inputs: 224x224 except where the architecture needs another size.
INPUT_SIZE = {"inception_v3": 299}


def check_one(name: str) -> dict:
    import torch
    import torchvision
    from torch import nn

    import binprune

    torch.manual_seed(0)
    start = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    expected = sum(1 for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
                   and getattr(m, "weight", None) is not None)
    expected += sum(1 if m.in_proj_weight is not None else 3 for m in model.modules()
                    if isinstance(m, nn.MultiheadAttention))
    dense_params = sum(p.numel() for p in model.parameters())
    size = INPUT_SIZE.get(name, 224)
    x = torch.rand(2, 3, size, size)
    with warnings.catch_warnings(record=True) as caught:  # the conversion's own disconnection check
        warnings.simplefilter("always", binprune.DisconnectedMaskWarning)
        net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, example_input=x)
    detected = [str(w.message) for w in caught if issubclass(w.category, binprune.DisconnectedMaskWarning)]
    convert_seconds = time.perf_counter() - start
    remedy = None
    if detected:  # the remedy offered by the warning: a weight kept in every output channel
        fixed = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1, connect_channels=True)
        remedy = {"connected": binprune.signal_report(fixed, x)["connected"],
                  "sparsity": binprune.sparsity_report(fixed).sparsity}
        del fixed
    del model
    report = binprune.sparsity_report(net)
    net.eval()
    out = net(x)
    logits = out.logits if hasattr(out, "logits") else out
    ok_shape = tuple(logits.shape) == (2, 10)
    logits.logsumexp(1).sum().backward()
    reached = sum(1 for mt in binprune.masked_tensors(net) if mt.mask.scores.grad is not None)
    return {
        "name": name,
        "passed": bool(ok_shape and len(report.layers) == expected and reached > 0),
        "input_size": size,
        "dense_params": dense_params,
        "masked_layers": len(report.layers),
        "weight_layers_in_model": expected,
        "masked_kept": report.masked_kept,
        "masked_total": report.masked_total,
        "dense_tensors_reported": len(report.dense),
        "dense_values_reported": report.dense_total,
        "layers_reached_by_gradient": reached,
        "signal_survives_at_init": bool((logits[0] - logits[1]).abs().max() > 0),
        "disconnection_warning": detected[0] if detected else None,
        "connect_channels": remedy,
        "output_shape": list(logits.shape),
        "seconds": time.perf_counter() - start,
        "convert_seconds": convert_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", default=str(RESULTS / "torchvision_models.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(check_one(args.one)))
        return

    import torch
    import torchvision

    names = args.only or torchvision.models.list_models(module=torchvision.models)
    results = []
    for i, name in enumerate(names, 1):
        proc = None
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                  timeout=args.timeout)
            if proc.returncode == 0:
                entry = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                entry = {"name": name, "passed": False, "error": proc.stderr.strip().splitlines()[-1][:500]}
        except subprocess.TimeoutExpired:
            entry = {"name": name, "passed": False, "error": f"timed out after {args.timeout} s"}
        results.append(entry)
        status = "ok  " if entry["passed"] else "FAIL"
        print(f"[{i:2d}/{len(names)}] {status} {name} {entry.get('seconds', 0):.1f}s {entry.get('error', '')}", flush=True)

    summary = {
        "description": "torchvision classification models converted to 99%-sparse binary supermasks, forward + backward",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "models": len(results), "passed": sum(r["passed"] for r in results),
        "failed": [r["name"] for r in results if not r["passed"]],
        "signal_lost_at_init": [r["name"] for r in results if r.get("passed") and not r["signal_survives_at_init"]],
        "results": results,
    }
    from binprune.utils import write_json

    write_json(args.out, summary)
    print(f"{summary['passed']}/{summary['models']} passed -> {args.out}")


if __name__ == "__main__":
    main()
