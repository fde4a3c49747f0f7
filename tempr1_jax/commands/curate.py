"""`tempr1 curate`: Time-R1's data recipe with a model's greedy outputs (see `tempr1_jax.apps.curate`).

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
from typing import Any

from tempr1_jax.commands.train import add_distributed_argument, initialize_distributed
from tempr1_jax.config import add_gin_arguments

HELP = "Score sample difficulty (model IoU) and pick a Gaussian-weighted subset, or drop solved samples."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gin_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="model: HF export or orbax params directory")
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer directory (default: --checkpoint)")
    parser.add_argument("--dataset", required=True, help="a prepared dataset directory or a JSONL file")
    parser.add_argument("--split", default="train", help="split of a prepared dataset (ignored for JSONL)")
    parser.add_argument("--media_dir", default=None, help="directory relative media paths are resolved in")
    parser.add_argument("--out", required=True, help="output JSONL of the kept samples")
    parser.add_argument(
        "--mode",
        choices=("select", "filter"),
        default="select",
        help="select: Gaussian-weighted subset; filter: drop solved samples",
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: RolloutConfig.max_new_tokens from the gin config"
    )
    add_distributed_argument(parser)


def run(args: argparse.Namespace) -> int:
    initialize_distributed(args)  # before jax is used
    from tempr1_jax import configurables

    configurables.parse_gin(args)
    summary = curate_split(
        checkpoint=args.checkpoint,
        tokenizer=args.tokenizer,
        dataset=args.dataset,
        split=args.split,
        media_dir=args.media_dir,
        out=args.out,
        mode=args.mode,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    print(json.dumps(summary, indent=2))
    return 0


def curate_split(
    *,
    checkpoint: str,
    tokenizer: str | None,
    dataset: str,
    split: str,
    media_dir: str | None,
    out: str,
    mode: str,
    batch_size: int,
    max_new_tokens: int | None,
) -> dict[str, Any]:
    """Greedy outputs of the model, difficulty, subset, files (gin parsed); returns the summary.

    Writes `out` (JSONL of the kept samples, media paths as in the source), `out` + `.difficulty.jsonl`
    (id, task, iou, output for every sample) and `out` + `.report.json`. With several processes each
    generates for its shard of the split (the model on its own devices) and process 0 writes the files.
    """
    import transformers

    from data_pipeline.paths import as_path, local_copy
    from tempr1_jax.apps.curate import curate
    from tempr1_jax.apps.evaluate import load_model, split_loader
    from tempr1_jax.difficulty import CurateConfig
    from tempr1_jax.rl.rollout import RolloutConfig
    from tempr1_jax.training import multihost
    from tempr1_jax.training.model_setup import ModelSetup
    from tempr1_jax.training.predictions import generate_predictions

    rollout_cfg = RolloutConfig()
    model = load_model(checkpoint)
    model.config = ModelSetup().configure(model.config)
    tok = transformers.AutoTokenizer.from_pretrained(str(local_copy(tokenizer or checkpoint)))
    loader = split_loader(tok, model.config, dataset, split, media_dir, batch_size, rollout_cfg.think)
    predictions, targets, skipped = generate_predictions(
        model, tok, loader, max_new_tokens=max_new_tokens or rollout_cfg.max_new_tokens
    )
    kept, ious, summary = curate(predictions, targets, CurateConfig(), mode)
    summary["skipped"] = len(skipped)
    if not multihost.is_main():  # every process has all the outputs; one writes the files
        return summary
    path = as_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(s)) + "\n" for s in kept))
    with as_path(f"{path}.difficulty.jsonl").open("w") as f:
        for p, iou in zip(predictions, ious):
            f.write(json.dumps({"id": p["id"], "task": p["task"], "iou": float(iou), "output": p["output"]}) + "\n")
    as_path(f"{path}.report.json").write_text(json.dumps(summary, indent=2))
    return summary
