"""`tempr1 eval`: greedy generation over a prepared split, the benchmark metrics, the paper beside ours.

    tempr1 eval --gin_file tempr1_7b.gin --checkpoint CKPT --dataset prepared/charades_sta --split test \
        --workdir runs/eval_charades

Writes `eval_results.json`, `predictions.jsonl`, `eval_table.md` (TempR1's Table 1-2 numbers beside
ours) and `eval_timeline.png` (predicted vs ground-truth segments, a few samples per task) to --workdir.
On a pod, run it on every host with --distributed: each host generates for its shard, host 0 writes.
Exits 1, writing nothing, when the loader could use none of the split's samples (e.g. a wrong --media_dir).
"""

from __future__ import annotations

import argparse
import sys

from tempr1_jax.commands.train import add_distributed_argument, initialize_distributed, mesh_bindings

HELP = "Greedy generation over a prepared split and the benchmark metrics (with the paper's numbers)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempr1_jax import config as gin_config

    gin_config.add_gin_arguments(parser)
    parser.add_argument("--checkpoint", required=True,
                        help="model directory: an HF export (config.json + safetensors) or an orbax params "
                             "directory (config.json + params/)")
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer directory (default: --checkpoint)")
    parser.add_argument("--dataset", required=True,
                        help="a prepared dataset directory (ArrayRecord, see `tempr1 prepare`) or a JSONL file")
    parser.add_argument("--split", default="test", help="split of a prepared dataset (ignored for JSONL)")
    parser.add_argument("--media_dir", default=None, help="directory relative video/image paths are resolved in")
    parser.add_argument("--workdir", default="runs/eval", help="output directory")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="default: RolloutConfig.max_new_tokens from the gin config")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--timeline_per_task", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="IoU > thr instead of >= thr (Time-R1's script)")
    parser.add_argument("--mesh", default=None, metavar="data=D,fsdp=F,tensor=T",
                        help="shard the model and the batch (MeshConfig shortcut); default one device")
    add_distributed_argument(parser)


def run(args: argparse.Namespace) -> int:
    initialize_distributed(args)  # before jax is used
    from tempr1_jax import config as gin_config
    from tempr1_jax import eval_harness
    from tempr1_jax.rl import trainer  # noqa: F401  (registers the configurables the gin files bind)

    gin_config.parse_gin(args, bindings=mesh_bindings(args.mesh))
    try:
        summary = eval_harness.run_eval_command(
            checkpoint=args.checkpoint, tokenizer=args.tokenizer, dataset=args.dataset, split=args.split,
            media_dir=args.media_dir, workdir=args.workdir, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, limit=args.limit, timeline_per_task=args.timeline_per_task,
            strict=args.strict)
    except eval_harness.NoUsableSamplesError as err:
        print(f"tempr1 eval: error: {err}", file=sys.stderr)
        return 1
    gin_config.write_operative_config(args.workdir)
    print(summary)
    return 0
