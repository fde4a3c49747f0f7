"""`tempr1 demo [--workdir W]`: synthetic data, tiny tokenizer and model, SFT, eval, GRPO, eval, export.

Writes `W/demo_report.json` (held-out metrics and reward terms before and after GRPO, the baselines,
every change with its paired standard error; see `apps.demo.build_report`), `W/learning_curve.png`,
per-phase metrics, checkpoints and evaluation reports, and an HF export in `W/hf`. Progress (phase,
step x / n, time left) goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tempr1_jax.config import add_gin_arguments

HELP = "End-to-end run on a built-in synthetic dataset (SFT, eval, GRPO, eval, export)."
DEFAULT_GIN = "demo_e2e.gin"


def quiet_transformers() -> None:
    """Keep transformers' advisory warnings (e.g. "PyTorch was not found", printed when it is imported
    without torch, which the demo does not need) from the user; must run before transformers is imported."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gin_arguments(parser)
    parser.add_argument("--workdir", default="runs/demo", help="output directory (default runs/demo)")
    # --gin_file files are read after configs/demo_e2e.gin, so they override it.


def run(args: argparse.Namespace) -> int:
    quiet_transformers()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tempr1_jax import configurables
    from tempr1_jax.apps import demo

    # The demo's own settings first, then any --gin_file / --gin.NAME=VALUE of the command line.
    args.gin_file = [DEFAULT_GIN, *args.gin_file]
    configurables.parse_gin(args)
    from tempr1_jax.training.run_record import ChangedConfigError

    try:
        report = demo.run_demo(args.workdir)
    except demo.DemoStopped as stop:
        print(f"tempr1 demo: {stop}", file=sys.stderr)
        return 1
    except ChangedConfigError as err:
        # A demo's phases are not continued under other settings: a fresh workdir is the answer.
        lines = "\n  ".join(err.differences)
        print(
            f"tempr1 demo: {args.workdir} holds a demo run with other settings; use another --workdir or "
            f"remove this one. The settings differ in:\n  {lines}",
            file=sys.stderr,
        )
        return 2
    print(demo.format_report(report))
    print(
        f"wrote {args.workdir}/{demo.REPORT}, {args.workdir}/{demo.CURVE} and "
        f"{args.workdir}/eval_after/eval_timeline.png"
    )
    return 0
