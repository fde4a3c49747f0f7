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
from typing import Any

from tempr1_jax.apps.evaluate import NoUsableSamplesError, no_samples_message
from tempr1_jax.commands.score import add_metric_arguments, metric_options
from tempr1_jax.commands.train import add_distributed_argument, initialize_distributed, mesh_bindings
from tempr1_jax.config import add_gin_arguments

HELP = "Greedy generation over a prepared split and the benchmark metrics (with the paper's numbers)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gin_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="model directory: an HF export (config.json + safetensors) or an orbax params "
        "directory (config.json + params/)",
    )
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer directory (default: --checkpoint)")
    parser.add_argument(
        "--dataset",
        required=True,
        help="a prepared dataset directory (ArrayRecord, see `tempr1 prepare`) or a JSONL file",
    )
    parser.add_argument("--split", default="test", help="split of a prepared dataset (ignored for JSONL)")
    parser.add_argument("--media_dir", default=None, help="directory relative video/image paths are resolved in")
    parser.add_argument("--workdir", default="runs/eval", help="output directory")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: RolloutConfig.max_new_tokens from the gin config"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--timeline_per_task", type=int, default=3)
    add_metric_arguments(parser)
    parser.add_argument(
        "--mesh",
        default=None,
        metavar="data=D,fsdp=F,tensor=T",
        help="shard the model and the batch (MeshConfig shortcut); default one device",
    )
    add_distributed_argument(parser)


def run(args: argparse.Namespace) -> int:
    initialize_distributed(args)  # before jax is used
    from tempr1_jax import configurables
    from tempr1_jax.config import write_operative_config

    configurables.parse_gin(args, bindings=mesh_bindings(args.mesh))
    try:
        summary = evaluate_split(
            checkpoint=args.checkpoint,
            tokenizer=args.tokenizer,
            dataset=args.dataset,
            split=args.split,
            media_dir=args.media_dir,
            workdir=args.workdir,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
            timeline_per_task=args.timeline_per_task,
            score_options=metric_options(args),
        )
    except NoUsableSamplesError as err:
        print(f"tempr1 eval: error: {err}", file=sys.stderr)
        return 1
    write_operative_config(args.workdir)
    print(summary)
    return 0


def evaluate_split(
    *,
    checkpoint: str,
    tokenizer: str | None,
    dataset: str,
    split: str,
    media_dir: str | None,
    workdir: str,
    batch_size: int,
    max_new_tokens: int | None,
    limit: int | None,
    timeline_per_task: int,
    score_options: dict[str, Any] | None = None,
) -> str:
    """Load, generate, score, write the reports (gin parsed); returns a summary.

    With several processes each generates for its shard of the split and process 0 writes the reports."""
    import pathlib

    import jax.numpy as jnp
    import transformers

    from data_pipeline.paths import local_copy
    from models.qwen2_5_vl import sharding as sharding_lib
    from tempr1_jax.apps.eval_report import markdown_table, write_reports
    from tempr1_jax.apps.evaluate import evaluate, load_model, split_loader
    from tempr1_jax.rl.rollout import RolloutConfig
    from tempr1_jax.training import multihost
    from tempr1_jax.training.model_setup import MeshConfig, ModelSetup

    model_setup, mesh_cfg, rollout_cfg = ModelSetup(), MeshConfig(), RolloutConfig()
    mesh = mesh_cfg.make() if mesh_cfg.data * mesh_cfg.fsdp * mesh_cfg.tensor > 1 else None
    model = load_model(
        checkpoint,
        jnp.dtype(model_setup.dtype),
        None if mesh is None else sharding_lib.loader_sharding(mesh, mesh_cfg.layout),
    )
    model.config = model_setup.configure(model.config)
    if mesh is not None:
        sharding_lib.shard_model(model, mesh, mesh_cfg.layout)  # in place already; constrains the activations
    tok = transformers.AutoTokenizer.from_pretrained(str(local_copy(tokenizer or checkpoint)))
    loader = split_loader(tok, model.config, dataset, split, media_dir, batch_size, rollout_cfg.think)
    result = evaluate(
        model,
        tok,
        loader,
        max_new_tokens=max_new_tokens or rollout_cfg.max_new_tokens,
        think=rollout_cfg.think,
        mesh=mesh,
        layout=mesh_cfg.layout,
        limit=limit,
        score_options=score_options,
    )
    if not result.predictions:
        raise NoUsableSamplesError(no_samples_message(dataset, split, media_dir, result.skipped))
    name = pathlib.Path(dataset).name
    table = markdown_table(
        result.metrics,
        f"{name} ({split}): {len(result.predictions)} samples, {len(result.skipped)} skipped",
        score_options,
    )
    if not multihost.is_main():  # every process has the whole result; one writes it
        return table + "\nreports written by process 0"
    paths = write_reports(
        result, workdir, title=f"{name} ({split})", timeline_per_task=timeline_per_task, score_options=score_options
    )
    return table + f"\nwrote {', '.join(str(p) for p in paths.values())}"
