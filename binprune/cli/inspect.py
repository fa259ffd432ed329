"""``binprune inspect``: measure the structure of a model's masks and plot it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import PARSERS, add_arch_flag, register_arch

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect", help="analyze mask structure and write plots",
        description="Measure the structure of a supermask model's masks (empty output/input channels, empty "
                    "kernels, kept weights per kernel, alignment of pruned channels between connected layers), "
                    "each against its expectation for a random mask with the same counts. Writes analysis.json "
                    "and PNG plots into --out.",
    )
    p.add_argument("checkpoint", help="checkpoint (.pt) written by 'binprune train', or a packed .bpk file")
    add_arch_flag(p)
    p.add_argument("--out", required=True, help="folder for analysis.json and the plots")
    p.add_argument("--mask-images", type=PARSERS["int0"], default=4,
                   help="layers shown as mask images in masks.png (default: 4)")
    p.set_defaults(run=run)


def inspect_summary(summary: dict) -> str:
    def ratio(value: Any) -> str:
        return f"{value:.1f}x" if value is not None else "n/a"

    rows = [f"{summary['layers']} masked layers, {summary['kept']:,} of {summary['total']:,} weights kept"]
    for key, label in (("output_channels", "empty output channels"), ("input_channels", "empty input channels"),
                       ("kernels", "empty kernels")):
        rows.append(f"{label:<22} {summary[f'empty_{key}']:>9,}   random mask: "
                    f"{summary[f'empty_{key}_expected_random']:>11,.1f}"
                    f"   ({ratio(summary[f'empty_{key}_ratio_to_random'])})")
    rows.append(f"{'aligned pruned channels':<22} {summary['aligned_channels']:>9,}   independent: "
                f"{summary['aligned_channels_expected_independent']:>11,.1f}   "
                f"({ratio(summary['aligned_channels_ratio_to_independent'])})")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from ..analysis import write_inspection
    from ..loading import load_model
    from ..utils import check_output_path

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder")
    check_output_path(os.path.join(args.out, "analysis.json"), inputs=[args.checkpoint])
    register_arch(args.arch)
    model = load_model(args.checkpoint)
    result = write_inspection(model, args.out, mask_images=args.mask_images)
    print(inspect_summary(result["summary"]))
    print(f"wrote {', '.join(os.path.basename(p) for p in result['files'].values())} to {args.out}")
    return 0
