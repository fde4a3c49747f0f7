"""`tempr1 curate`: Time-R1's data recipe with a model's greedy outputs (see `tempr1_jax.curate`).

    # difficulty = the base model's IoU; keep CurateConfig.size samples, Gaussian over difficulty
    tempr1 curate --gin_file configs/time_r1_7b.gin --checkpoint BASE --dataset data/prepared/timerft \
        --split train --out data/curated/timerft_train.jsonl
    # before another epoch: drop what the current policy solves (IoU > CurateConfig.solved_iou)
    tempr1 curate --mode filter --gin_file configs/time_r1_7b.gin --checkpoint POLICY \
        --dataset data/curated/timerft_train.jsonl --out data/curated/timerft_epoch2.jsonl

On a pod, run it on every host with --distributed: each host scores its shard, host 0 writes the files.
"""

from __future__ import annotations

import argparse
import json

from tempr1_jax.commands.train import add_distributed_argument, initialize_distributed

HELP = "Score sample difficulty (model IoU) and pick a Gaussian-weighted subset, or drop solved samples."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempr1_jax import config as gin_config

    gin_config.add_gin_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="model: HF export or orbax params directory")
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer directory (default: --checkpoint)")
    parser.add_argument("--dataset", required=True, help="a prepared dataset directory or a JSONL file")
    parser.add_argument("--split", default="train", help="split of a prepared dataset (ignored for JSONL)")
    parser.add_argument("--media_dir", default=None, help="directory relative media paths are resolved in")
    parser.add_argument("--out", required=True, help="output JSONL of the kept samples")
    parser.add_argument("--mode", choices=("select", "filter"), default="select",
                        help="select: Gaussian-weighted subset; filter: drop solved samples")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="default: RolloutConfig.max_new_tokens from the gin config")
    add_distributed_argument(parser)


def run(args: argparse.Namespace) -> int:
    initialize_distributed(args)  # before jax is used
    from tempr1_jax import config as gin_config
    from tempr1_jax import curate
    from tempr1_jax.rl import trainer  # noqa: F401  (registers the configurables the gin files bind)

    gin_config.parse_gin(args)
    summary = curate.run_curate_command(
        checkpoint=args.checkpoint, tokenizer=args.tokenizer, dataset=args.dataset, split=args.split,
        media_dir=args.media_dir, out=args.out, mode=args.mode, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens)
    print(json.dumps(summary, indent=2))
    return 0
