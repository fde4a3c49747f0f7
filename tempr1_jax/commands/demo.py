"""`tempr1 demo [--workdir W]`: synthetic data, tiny tokenizer and model, SFT, eval, GRPO, eval, export.

Writes `W/demo_report.json` ({"before": {task: metrics, ..., "mean_reward": x}, "after": {...}}),
`W/learning_curve.png`, per-phase metrics and checkpoints, and an HF export in `W/hf`.
"""

from __future__ import annotations

import argparse
import logging

from tempr1_jax.config import add_gin_arguments

HELP = "End-to-end run on a built-in synthetic dataset (SFT, eval, GRPO, eval, export)."
DEFAULT_GIN = "demo_e2e.gin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gin_arguments(parser)
    parser.add_argument("--workdir", default="runs/demo", help="output directory (default runs/demo)")
    # --gin_file files are read after configs/demo_e2e.gin, so they override it.


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tempr1_jax import configurables
    from tempr1_jax.apps import demo

    # The demo's own settings first, then any --gin_file / --gin.NAME=VALUE of the command line.
    args.gin_file = [DEFAULT_GIN, *args.gin_file]
    configurables.parse_gin(args)
    report = demo.run_demo(args.workdir)
    print(demo.format_report(report))
    print(f"wrote {args.workdir}/{demo.REPORT} and {args.workdir}/{demo.CURVE}")
    return 0
