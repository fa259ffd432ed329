"""``binprune export``: write a packed kilobyte-sized model file, or an ONNX file."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import add_arch_flag, register_arch

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="write a packed kilobyte-sized model file (or ONNX)",
        description="Write a supermask checkpoint as a packed .bpk file: the model's recipe and seed, each mask "
                    "coded close to log2 C(n, k) bits, batch-norm statistics and a checksum (weights are "
                    "regenerated from the seed when loading). Prints the size under each encoding. "
                    "--format onnx writes the compact model (dead channels removed, batch norms folded) "
                    "as an ONNX graph of standard operators instead.",
        epilog="A .bpk file loads with binprune.load_model(path) or any command taking a checkpoint. "
               "Formats: docs/PACKED_FORMAT.md, docs/INFERENCE.md (onnx).",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    add_arch_flag(p)
    p.add_argument("-o", "--output", required=True,
                   help="file to write, e.g. model.bpk or model.onnx (robustbench: a folder)")
    p.add_argument("--format", choices=("bpk", "onnx", "robustbench"), default="bpk",
                   help="bpk: packed kilobyte file (default); onnx: the compact model as an ONNX graph; "
                        "robustbench: a folder with NAME.pt2 (torch.export), loader.py (plain torch, no binprune) "
                        "and NAME.json (ModelInfo)")
    p.add_argument("--model-name", metavar="NAME", help="robustbench: the entry's name (default: the checkpoint's "
                                                          "file name)")
    p.add_argument("--model-info", metavar="JSON", help="robustbench: the entry 'binprune eval --robustbench' wrote, "
                                                          "to include its accuracies")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="onnx, robustbench: shape of one input example (default: the recipe's channels, 32 x 32); "
                        "the batch axis is dynamic")
    p.add_argument("--footprint-json", metavar="PATH",
                   help="also write the size accounting (bytes, bits per parameter) as JSON")
    p.set_defaults(run=run)


def footprint_table(fp: dict) -> str:
    labels = {
        "packed_file": "packed file", "masks": "masks alone", "bound": "bound sum log2 C(n,k)",
        "paper_bitmap_sign": "bitmap + sign bits", "state_dict": "state_dict (torch.save)",
        "dense_fp32": "dense float32",
    }
    lines = [f"{'encoding':<24} {'bytes':>14} {'bits/param':>11}"]
    for key, label in labels.items():
        lines.append(f"{label:<24} {fp['bytes'][key]:>14,.0f} {fp['bits_per_param'][key]:>11.4f}")
    ratio = f"{fp['masks_to_bound']:.4f}x" if fp["masks_to_bound"] is not None else "n/a (bound 0)"
    lines.append(f"({fp['original_params']:,} original parameters, {fp['kept_weights']:,} weights kept; "
                 f"masks at {ratio} the bound)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..export import footprint, save_packed
    from ..loading import load_model
    from ..utils import check_output_path, write_json

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if args.format == "robustbench":
        return _run_robustbench(args)
    if os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} is a folder; give a file name such as "
                         f"{os.path.join(args.output, 'model.bpk')}")
    check_output_path(args.output, inputs=[args.checkpoint])
    if args.footprint_json:
        check_output_path(args.footprint_json, inputs=[args.checkpoint, args.output])
    register_arch(args.arch)
    model = load_model(args.checkpoint)
    if args.format == "onnx":
        return _run_onnx(args, model)
    fp = footprint(model)
    size = save_packed(model, args.output)
    if args.footprint_json:
        write_json(args.footprint_json, {"checkpoint": args.checkpoint, "packed_file": args.output, "units": {
            "bytes": "bytes", "bits_per_param": "bits per original parameter"}, **fp})
    print(f"wrote {args.output} ({size:,} bytes)")
    print(footprint_table(fp))
    return 0


def _run_onnx(args: argparse.Namespace, model: Any) -> int:
    from ..deploy.onnx_export import export_onnx

    size = export_onnx(model, args.output, input_shape=args.input_shape)
    print(f"wrote {args.output} ({size:,} bytes, ONNX, compact model with dense weights)")
    return 0


def _run_robustbench(args: argparse.Namespace) -> int:
    import json

    from ..deploy.robustbench_export import export_robustbench
    from ..loading import load_model

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} exists and is not a folder (--format robustbench writes a folder)")
    info = None
    if args.model_info is not None:
        with open(args.model_info) as fh:
            info = json.load(fh)
    name = args.model_name or os.path.splitext(os.path.basename(args.checkpoint))[0]
    register_arch(args.arch)
    files = export_robustbench(load_model(args.checkpoint), args.output, name=name, input_shape=args.input_shape,
                               model_info=info)
    print(f"wrote {', '.join(files.values())} (load with: from loader import load_model; no binprune needed)")
    return 0
