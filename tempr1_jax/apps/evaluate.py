"""`tempr1 eval`: load a model and a prepared split, generate greedily, score with the benchmark metrics
(`evaluation.score`) and the rewards, and write the reports (`apps.eval_report`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from data_pipeline import paths
from data_pipeline.loader import SourceConfig, make_eval_loader
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from models.qwen2_5_vl.orbax_io import PARAMS_DIR, load_orbax_params
from tempr1_jax.rewards import compute_rewards
from tempr1_jax.training.data_setup import LoaderConfig, prompt_builders
from tempr1_jax.training.live_eval import score_predictions
from tempr1_jax.training.predictions import generate_predictions


class NoUsableSamplesError(ValueError):
    """Every sample of the evaluated split was skipped by the loader: there is nothing to score."""


def no_samples_message(dataset: str, split: str, media_dir: str | None, skipped: Sequence[Mapping[str, Any]]) -> str:
    """Why an evaluation has nothing to score: the skip reasons with one example."""
    kinds = Counter(s.get("kind", "unknown") for s in skipped)
    reasons = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common()) or "the split is empty"
    example = f"; e.g. sample {skipped[0]['id']!r}: {skipped[0]['reason']}" if skipped else ""
    return (
        f"no usable sample in {dataset} (split {split}): all {len(skipped)} were skipped ({reasons}){example}. "
        f"Check --media_dir ({media_dir}) and the files."
    )


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


def per_sample_reward_terms(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    think: bool = True,
    **reward_options: Any,
) -> dict[str, np.ndarray]:
    """The reward terms (`compute_rewards`: `format`, `loc`, `total`, + `cls`) of each output, float32 [N]."""
    if not predictions:
        return {
            "format": np.zeros((0,), np.float32),
            "loc": np.zeros((0,), np.float32),
            "total": np.zeros((0,), np.float32),
        }
    return compute_rewards(
        [p["task"] for p in predictions],
        [p["output"] for p in predictions],
        list(targets),
        think=think,
        **reward_options,
    )


def per_sample_rewards(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    think: bool = True,
    **reward_options: Any,
) -> np.ndarray:
    """Total reward (`compute_rewards`) of each output, float32 [N]."""
    return per_sample_reward_terms(predictions, targets, think, **reward_options)["total"]


def reward_summary(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    think: bool = True,
    **reward_options: Any,
) -> dict[str, float]:
    """Mean total reward of the outputs per task (`<task>/reward`) and over all samples (`mean_reward`)."""
    total = per_sample_rewards(predictions, targets, think, **reward_options)
    tasks = np.asarray([p["task"] for p in predictions])
    out = {f"{t}/reward": float(np.mean(total[tasks == t])) for t in dict.fromkeys(tasks.tolist())}
    out["mean_reward"] = float(np.mean(total)) if len(total) else 0.0
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    think: bool = True,
    mesh: Any = None,
    layout: str = "fsdp_tensor",
    limit: int | None = None,
    score_options: Mapping[str, Any] | None = None,
    reward_options: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Greedy generation over `batches`, then benchmark metrics and mean rewards."""
    predictions, targets, skipped = generate_predictions(
        model, tokenizer, batches, max_new_tokens=max_new_tokens, mesh=mesh, layout=layout, limit=limit
    )
    metrics = score_predictions(predictions, targets, **dict(score_options or {}))
    rewards = reward_summary(predictions, targets, think=think, **dict(reward_options or {}))
    return EvalResult(predictions, targets, metrics, rewards, skipped)


def load_model(checkpoint: str | pathlib.Path, dtype: Any = None, sharding: Any = None) -> Any:
    """A model from an HF directory (config.json + safetensors) or an orbax params directory (+ params/),
    local or in a bucket, each parameter placed by `sharding(path, shape)` (default: the default device)."""
    path = paths.as_path(checkpoint)
    dtype = jnp.float32 if dtype is None else dtype
    if (path / PARAMS_DIR).is_dir():
        return load_orbax_params(paths.local_copy(path), dtype=dtype, sharding=sharding)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"--checkpoint {path}: neither an HF export (config.json + safetensors) nor an "
            f"orbax params directory (config.json + {PARAMS_DIR}/)"
        )
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(paths.local_copy(path), dtype=dtype, sharding=sharding)


def split_loader(
    tokenizer: Any,
    model_config: Any,
    dataset: str | pathlib.Path,
    split: str,
    media_dir: str | None,
    batch_size: int,
    think: bool,
) -> Any:
    """The evaluation loader (one ordered pass) over a prepared split directory or a JSONL file, with the
    gin-bound `LoaderConfig` video/shape settings."""
    data = paths.as_path(dataset)
    source = (
        SourceConfig(path=str(data), media_dir=media_dir)
        if data.is_file()
        else SourceConfig(path=str(data), split=split, media_dir=media_dir)
    )
    return make_eval_loader(
        LoaderConfig(sources=(source,), batch_size=batch_size), tokenizer, model_config, prompt_builders(think)
    )
