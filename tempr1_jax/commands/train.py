"""`tempr1 train`: GRPO / DAPO / GSPO training from gin configs (see `tempr1_jax.rl.trainer`)."""

from __future__ import annotations

import argparse
import logging

from tempr1_jax.config import add_gin_arguments

HELP = "GRPO (or DAPO/GSPO) training from gin configs; resumes from a checkpoint in --workdir."


def parse_mesh(text: str) -> dict[str, int]:
    """`data=D,fsdp=F,tensor=T` (any subset, any order) -> {"data": D, ...}; ValueError when malformed."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in ("data", "fsdp", "tensor") or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--mesh {text!r}: expected data=D,fsdp=F,tensor=T with positive integers")
        out[name] = int(value)
    return out


def mesh_bindings(text: str | None) -> list[str]:
    """gin bindings for the `--mesh` shortcut."""
    return [] if not text else [f"MeshConfig.{k} = {v}" for k, v in parse_mesh(text).items()]


def add_distributed_argument(parser: argparse.ArgumentParser) -> None:
    """--distributed: one process per TPU host (`initialize_distributed`)."""
    parser.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() first (one process per TPU host)"
    )


def initialize_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize()` with --distributed (before anything touches the devices)."""
    if args.distributed:
        import jax

        jax.distributed.initialize()


def add_allow_changed_argument(parser: argparse.ArgumentParser) -> None:
    """--allow_changed_config: resume a workdir's run although its defining settings changed."""
    parser.add_argument(
        "--allow_changed_config",
        action="store_true",
        help="continue the run in --workdir although settings that define it (model, data, loss, "
        "optimizer, ...) differ from those it was trained with; the differences are recorded "
        "in WORKDIR/run_history.jsonl (without this flag such a start stops and lists them)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--gin_file/--gin.NAME=VALUE, --workdir, --steps, --mesh, --distributed, --allow_changed_config."""
    add_gin_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, config)")
    parser.add_argument("--steps", type=int, default=None, help="total training steps (TrainConfig.steps)")
    parser.add_argument(
        "--mesh",
        default=None,
        metavar="data=D,fsdp=F,tensor=T",
        help="device mesh shortcut for MeshConfig.data/fsdp/tensor",
    )
    add_distributed_argument(parser)
    add_allow_changed_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Parse the gin config, build the trainer and train; 0 on success or after a SIGTERM save."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save step at INFO
    initialize_distributed(args)
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    from tempr1_jax import configurables
    from tempr1_jax.rl import trainer

    steps = [] if args.steps is None else [f"TrainConfig.steps = {args.steps}"]
    configurables.parse_gin(args, bindings=[*mesh_bindings(args.mesh), *steps])
    return trainer.train(args.workdir, allow_changed_config=args.allow_changed_config)
