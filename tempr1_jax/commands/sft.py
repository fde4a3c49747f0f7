"""`tempr1 sft`: supervised cold start on reference answers (see `tempr1_jax.apps.sft`).

tempr1 sft --gin_file configs/demo.gin --workdir runs/sft --steps 50 --gin.sft/OptimizerConfig.learning_rate=3e-3
"""

from __future__ import annotations

import argparse
import logging

from tempr1_jax.commands.train import add_allow_changed_argument, mesh_bindings
from tempr1_jax.config import add_gin_arguments

HELP = "Supervised cold start on reference answers (loss on answer tokens only); exports an HF checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gin_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, hf export)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer updates (SFTConfig.steps)")
    parser.add_argument(
        "--mesh",
        default=None,
        metavar="data=D,fsdp=F,tensor=T",
        help="device mesh shortcut for MeshConfig.data/fsdp/tensor",
    )
    add_allow_changed_argument(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    from tempr1_jax import configurables
    from tempr1_jax.apps import sft

    configurables.parse_gin(args, bindings=mesh_bindings(args.mesh))
    return sft.sft(args.workdir, steps=args.steps, allow_changed_config=args.allow_changed_config)
