"""Evaluation harness: greedy generation over a prepared split, the benchmark metrics through
`evaluation.score`, and the reports: `eval_results.json`, `predictions.jsonl`, a markdown table with
TempR1's published numbers beside ours (Tables 1-2) and a time-line figure of predicted against
ground-truth segments for a few samples per task (TempR1 Fig. 4).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from tempr1_jax import evaluation, multihost, paper_results, tasks as tasks_lib
from tempr1_jax.rewards import compute_rewards, reference

RESULTS_JSON = "eval_results.json"
PREDICTIONS_JSONL = "predictions.jsonl"
TABLE_MD = "eval_table.md"
TIMELINE_PNG = "eval_timeline.png"


@dataclasses.dataclass
class EvalResult:
    """Greedy outputs and their scores.

    predictions: one dict per evaluated sample (`id`, `task`, `source`, `output`), in split order.
    targets: the unified samples, aligned with `predictions`.
    metrics: (dataset, task) -> `evaluation.score` metrics (percent).
    rewards: per task and overall: mean total reward of the greedy outputs ("mean_reward").
    skipped: samples the loader could not prepare (id, task, source, reason).
    """

    predictions: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    metrics: dict[tuple[str, str], dict[str, float]]
    rewards: dict[str, float]
    skipped: list[dict[str, Any]]


def generate_predictions(model: Any, tokenizer: Any, batches: Iterable[Mapping[str, Any]], *,
                         max_new_tokens: int, mesh: Any = None, layout: str = "fsdp_tensor",
                         limit: int | None = None, gather: multihost.Gather = multihost.allgather,
                         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Greedy completions for every valid row of the evaluation `batches` (see `make_eval_loader`).

    Returns (predictions, targets, skipped); stops after `limit` samples if given. With `mesh` (the
    model already sharded on it with `layout`), inputs are sharded along the batch and so is the cache.

    With several processes, `batches` is this process's shard; the processes run generate in step
    (`multihost.lockstep`: common batch count and shapes, a dummy batch once a shard has run out), read
    their own output rows, and every process returns the predictions of all of them (`gather`), interleaved
    back into split order (exact unless samples were skipped or the loader has worker processes).
    """
    from models.qwen2_5_vl.generation import generate
    from tempr1_jax.rl import setup
    from tempr1_jax.rl.rollout import decode_completions

    eos = list(model.config.eos_token_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    predictions, targets, skipped = [], [], []
    for batch, shape in multihost.lockstep(batches, limit=limit, gather=gather):
        valid = np.zeros(0, bool) if batch is None else np.asarray(batch["valid"], bool)
        skipped += [] if batch is None else list(batch.get("skipped", ()))
        inputs = _fill_padding_rows(batch["inputs"], valid) if valid.any() else _dummy_inputs(model.config, pad)
        shape = (*shape, *multihost.common_shape(inputs.layout_sizes, gather))  # vision block layouts too
        inputs = setup.pad_inputs(inputs, shape, pad)
        inputs = inputs if mesh is None else setup.place_inputs(inputs, mesh)
        out = generate(model, inputs, max_new_tokens=max_new_tokens, temperature=0.0, eos_token_id=eos,
                       pad_token_id=pad, return_dict=True, mesh=mesh, layout=layout)
        if not valid.any():
            continue
        rows = np.flatnonzero(valid)
        tokens = setup.local_rows(out.tokens)[rows]
        mask = setup.local_rows(out.mask)[rows]
        texts = decode_completions(tokenizer, tokens, mask, drop_ids=[*eos, pad])
        for sample, text in zip(batch["samples"], texts):
            sample = dict(sample)
            predictions.append({"id": sample.get("id"), "task": sample["task"],
                                "source": sample.get("source"), "output": text})
            targets.append(sample)
    shards = multihost.gather_objects([predictions, targets, skipped], gather)
    predictions, targets = (multihost.interleave([shard[k] for shard in shards]) for k in (0, 1))
    skipped = [s for shard in shards for s in shard[2]]
    if limit is not None:
        predictions, targets = predictions[:limit], targets[:limit]
    return predictions, targets, skipped


def _fill_padding_rows(inputs: Any, valid: np.ndarray) -> Any:
    """The batch with its padding rows (`valid` False, all-masked) replaced by copies of the first valid
    row, so that every row is a real left-padded prompt; their outputs are dropped."""
    from tempr1_jax.rl import setup

    if valid.all():
        return inputs
    return setup.take_rows(inputs, np.where(valid, np.arange(len(valid)), np.flatnonzero(valid)[0]))


def _dummy_inputs(config: Any, pad: int) -> Any:
    """A one-row prompt of a single (attended) pad token: what a process with no sample to generate for
    feeds the collective step; its output is dropped."""
    from models.qwen2_5_vl.inputs import build_model_inputs

    return build_model_inputs(config, np.full((1, 1), pad, np.int32))


def score_predictions(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                      **options: Any) -> dict[tuple[str, str], dict[str, float]]:
    """`evaluation.score` per (dataset, task) group, groups in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(predictions):
        groups[(str(p.get("source") or "unknown"), p["task"])].append(i)
    return {key: evaluation.score(key[1], [predictions[i]["output"] for i in idx],
                                  [targets[i] for i in idx], **options)
            for key, idx in groups.items()}


def per_sample_rewards(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                       think: bool = True, **reward_options: Any) -> np.ndarray:
    """Total reward (`compute_rewards`) of each output, float32 [N]."""
    if not predictions:
        return np.zeros((0,), np.float32)
    return compute_rewards([p["task"] for p in predictions], [p["output"] for p in predictions], list(targets),
                           think=think, **reward_options)["total"]


def reward_summary(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                   think: bool = True, **reward_options: Any) -> dict[str, float]:
    """Mean total reward of the outputs per task (`<task>/reward`) and over all samples (`mean_reward`)."""
    total = per_sample_rewards(predictions, targets, think, **reward_options)
    tasks = np.asarray([p["task"] for p in predictions])
    out = {f"{t}/reward": float(np.mean(total[tasks == t])) for t in dict.fromkeys(tasks.tolist())}
    out["mean_reward"] = float(np.mean(total)) if len(total) else 0.0
    return out


def evaluate(model: Any, tokenizer: Any, batches: Iterable[Mapping[str, Any]], *, max_new_tokens: int,
             think: bool = True, mesh: Any = None, layout: str = "fsdp_tensor", limit: int | None = None,
             score_options: Mapping[str, Any] | None = None,
             reward_options: Mapping[str, Any] | None = None) -> EvalResult:
    """Greedy generation over `batches`, then benchmark metrics and mean rewards."""
    predictions, targets, skipped = generate_predictions(model, tokenizer, batches, max_new_tokens=max_new_tokens,
                                                         mesh=mesh, layout=layout, limit=limit)
    metrics = score_predictions(predictions, targets, **dict(score_options or {}))
    rewards = reward_summary(predictions, targets, think=think, **dict(reward_options or {}))
    return EvalResult(predictions, targets, metrics, rewards, skipped)


def write_reports(result: EvalResult, outdir: str | pathlib.Path, title: str = "Evaluation",
                  timeline_per_task: int = 3) -> dict[str, pathlib.Path]:
    """Write `eval_results.json`, `predictions.jsonl`, `eval_table.md` and `eval_timeline.png`."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {name: outdir / name for name in (RESULTS_JSON, PREDICTIONS_JSONL, TABLE_MD, TIMELINE_PNG)}
    paths[RESULTS_JSON].write_text(json.dumps({
        "metrics": {f"{dataset}/{task}": values for (dataset, task), values in result.metrics.items()},
        "rewards": result.rewards,
        "num_samples": len(result.predictions),
        "skipped": result.skipped,
    }, indent=2))
    write_predictions(paths[PREDICTIONS_JSONL], result.predictions)
    paths[TABLE_MD].write_text(markdown_table(result.metrics, title))
    plot_timelines(result.predictions, result.targets, paths[TIMELINE_PNG], per_task=timeline_per_task)
    return paths


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown_table(metrics: Mapping[tuple[str, str], Mapping[str, float]], title: str = "Evaluation") -> str:
    """One section per (dataset, task): metric | ours | the paper's figure for that dataset and metric
    (TempR1 Tables 1-2 where it reports one, else the first published method; "-" if none)."""
    lines = [f"## {title}", ""]
    for (dataset, task), values in metrics.items():
        lines += [f"### {dataset} ({task})", "", "| metric | ours | paper | method |", "|---|---:|---:|---|"]
        for name, value in values.items():
            ref = paper_results.paper_figure(dataset, name, task)
            method, paper = ref if ref else ("", None)
            lines.append(f"| {name} | {_fmt(value)} | {_fmt(paper)} | {method} |")
        lines.append("")
    return "\n".join(lines)


def predicted_segments(task: str, output: str, duration: float) -> list[tuple[float, float]]:
    """The valid segments of a completion as the metrics read them, clipped to [0, duration]."""
    parsed = tasks_lib.get_task(task).parse(output, fallback=True)
    clipped = (reference.clip_segment(seg, duration) for seg in parsed.segments)
    return [seg for seg in clipped if seg is not None]


def plot_timelines(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                   path: str | pathlib.Path, per_task: int = 3) -> pathlib.Path:
    """Draw, for the first `per_task` samples of each localisation task, the ground-truth segments
    (green, upper lane) and the predicted ones (orange, lower lane) on the video's time line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen: dict[str, list[tuple[Mapping, Mapping]]] = defaultdict(list)
    for pred, target in zip(predictions, targets):
        task = pred["task"]
        if tasks_lib.get_task(task).has_segments and len(chosen[task]) < per_task:
            chosen[task].append((pred, target))
    rows = [pair for pairs in chosen.values() for pair in pairs]
    fig, axes = plt.subplots(max(len(rows), 1), 1, figsize=(9, 0.9 * max(len(rows), 1) + 0.6), squeeze=False)
    for ax, (pred, target) in zip(axes[:, 0], rows):
        gts, duration = tasks_lib.target_segments(target)
        preds = predicted_segments(pred["task"], pred["output"], duration)
        ax.broken_barh([(s, e - s) for s, e in gts], (0.55, 0.35), color="tab:green", label="ground truth")
        ax.broken_barh([(s, e - s) for s, e in preds], (0.1, 0.35), color="tab:orange", label="predicted")
        ax.set_xlim(0, duration)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        query = target.get("query", "")
        query = "; ".join(query) if isinstance(query, (list, tuple)) else " ".join(str(query).split())
        ax.set_title(f"[{pred['task']}] {pred.get('id', '')}: {query[:80]}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    if not rows:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no localisation samples", ha="center")
    else:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", fontsize=7, ncol=2)
        axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_predictions(path: str | pathlib.Path, predictions: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line: id, task, source, output."""
    with open(path, "w") as f:
        for p in predictions:
            f.write(json.dumps(dict(p)) + "\n")


def load_model(checkpoint: str | pathlib.Path, dtype: Any = None) -> Any:
    """A model from an HF directory (config.json + safetensors) or an orbax params directory (+ params/)."""
    import jax.numpy as jnp

    from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
    from models.qwen2_5_vl.orbax_io import PARAMS_DIR, load_orbax_params

    path = pathlib.Path(checkpoint)
    dtype = jnp.float32 if dtype is None else dtype
    if (path / PARAMS_DIR).is_dir():
        return load_orbax_params(path, dtype=dtype)
    if not (path / "config.json").is_file():
        raise ValueError(f"--checkpoint {path}: neither an HF export (config.json + safetensors) nor an "
                         f"orbax params directory (config.json + {PARAMS_DIR}/)")
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype)


def split_loader(tokenizer: Any, model_config: Any, dataset: str | pathlib.Path, split: str,
                 media_dir: str | None, batch_size: int, think: bool) -> Any:
    """The evaluation loader (one ordered pass) over a prepared split directory or a JSONL file, with the
    gin-bound `LoaderConfig` video/shape settings."""
    from data_pipeline.loader import SourceConfig, make_eval_loader
    from tempr1_jax.rl import setup

    data = pathlib.Path(dataset)
    source = (SourceConfig(path=str(data), media_dir=media_dir) if data.is_file()
              else SourceConfig(path=str(data), split=split, media_dir=media_dir))
    return make_eval_loader(setup.LoaderConfig(sources=(source,), batch_size=batch_size), tokenizer, model_config,
                            setup.prompt_builders(think))


def run_eval_command(*, checkpoint: str, tokenizer: str | None, dataset: str, split: str, media_dir: str | None,
                     workdir: str, batch_size: int, max_new_tokens: int | None, limit: int | None,
                     timeline_per_task: int, strict: bool) -> str:
    """`tempr1 eval` after gin is parsed: load, generate, score, write the reports; returns a summary.

    With several processes each generates for its shard of the split and process 0 writes the reports."""
    import transformers

    from models.qwen2_5_vl import sharding as sharding_lib
    from tempr1_jax.rl import setup
    from tempr1_jax.rl.rollout import RolloutConfig

    model_setup, mesh_cfg, rollout_cfg = setup.ModelSetup(), setup.MeshConfig(), RolloutConfig()
    model = load_model(checkpoint, jax.numpy.dtype(model_setup.dtype))
    mesh = None
    if mesh_cfg.data * mesh_cfg.fsdp * mesh_cfg.tensor > 1:
        mesh = mesh_cfg.make()
        sharding_lib.shard_model(model, mesh, mesh_cfg.layout)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer or checkpoint)
    loader = split_loader(tok, model.config, dataset, split, media_dir, batch_size, rollout_cfg.think)
    result = evaluate(model, tok, loader, max_new_tokens=max_new_tokens or rollout_cfg.max_new_tokens,
                      think=rollout_cfg.think, mesh=mesh, layout=mesh_cfg.layout, limit=limit,
                      score_options={"strict": strict} if strict else None)
    name = pathlib.Path(dataset).name
    table = markdown_table(result.metrics, f"{name} ({split}): {len(result.predictions)} samples, "
                                           f"{len(result.skipped)} skipped")
    if not multihost.is_main():  # every process has the whole result; one writes it
        return table + "\nreports written by process 0"
    paths = write_reports(result, workdir, title=f"{name} ({split})", timeline_per_task=timeline_per_task)
    return table + f"\nwrote {', '.join(str(p) for p in paths.values())}"
