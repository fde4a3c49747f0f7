"""Time-R1's data recipe on numbers: difficulty = the model's IoU per sample, a Gaussian-weighted
subset, and the per-epoch filter that drops samples the current policy already solves.

- `sample_iou` / `sample_ious`: the IoU of each greedy completion, the difficulty score.
- `gaussian_weights` / `select_subset`: sample `size` distinct samples with probability proportional to
  exp(-(d - mean)^2 / (2 std^2)) over the difficulty d (Time-R1: mean 0.3, std 0.2), so that samples the
  base model half-solves dominate the subset while easy and hopeless ones stay rare.
- `drop_solved`: before an epoch, keep only samples whose current IoU is at most a threshold (0.7).

`tempr1 curate` (`apps.curate`) and the trainer's curriculum (`rl.curriculum`) both build on these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import numpy as np

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards import reference

DEFAULT_MEAN = 0.3


DEFAULT_STD = 0.2


DEFAULT_SOLVED_IOU = 0.7


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CurateConfig:
    """`tempr1 curate` settings: subset size and the Gaussian over difficulty, the solved threshold."""

    size: int = 2500
    mean: float = DEFAULT_MEAN
    std: float = DEFAULT_STD
    solved_iou: float = DEFAULT_SOLVED_IOU
    seed: int = 0


def gaussian_weights(
    difficulty: Sequence[float] | np.ndarray, mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD
) -> np.ndarray:
    """Unnormalised Gaussian weight of each difficulty value (non-finite difficulty -> weight 0)."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    d = np.asarray(difficulty, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"difficulty must be a 1-D array, got shape {d.shape}")
    w = np.exp(-0.5 * ((d - mean) / std) ** 2)
    return np.where(np.isfinite(d), w, 0.0)


def select_subset(
    difficulty: Sequence[float] | np.ndarray,
    size: int,
    mean: float = DEFAULT_MEAN,
    std: float = DEFAULT_STD,
    seed: int = 0,
) -> np.ndarray:
    """Indices (sorted) of `size` distinct samples drawn with Gaussian weights over difficulty.

    `size` larger than the number of samples with a positive weight raises ValueError. Deterministic
    for a given seed.
    """
    w = gaussian_weights(difficulty, mean, std)
    positive = int(np.count_nonzero(w > 0))
    if not 0 <= size <= positive:
        raise ValueError(f"subset size {size} must be in [0, {positive}] (samples with a finite difficulty)")
    if size == 0:
        return np.zeros((0,), np.int64)
    rng = np.random.default_rng(seed)
    # Weighted sampling without replacement via Gumbel top-k: keys log(w) + Gumbel noise.
    with np.errstate(divide="ignore"):
        keys = np.log(w) + rng.gumbel(size=w.shape)
    return np.sort(np.argsort(-keys, kind="stable")[:size])


def drop_solved(
    samples: Sequence[Mapping[str, Any]], ious: Sequence[float] | np.ndarray, threshold: float = DEFAULT_SOLVED_IOU
) -> list[Mapping[str, Any]]:
    """The samples whose current IoU is at most `threshold` (Time-R1's per-epoch filter).

    A non-finite IoU counts as unsolved (the sample is kept).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.shape != (len(samples),):
        raise ValueError(f"need one IoU per sample: {len(samples)} samples, ious shape {ious.shape}")
    keep = ~(ious > threshold)
    return [s for s, k in zip(samples, keep) if k]


def sample_iou(task: str, completion: str, target: Mapping[str, Any]) -> float:
    """How well one completion solves its sample, in [0, 1]: the difficulty score.

    TG/TVG: IoU of the segment the metric reads (first, or last for TVG); DTG: mean index-aligned
    IoU (Type 1); VHD/GVQA: IoU of the unions (Type 2); TAL: the DP-matched F1 (R_match); letter
    tasks: exact match. Untagged text is read as a whole (the evaluation's lenient parse).
    """
    t = tasks_lib.get_task(task)
    parsed = t.parse(completion, fallback=True)
    if not t.has_segments:
        return float(parsed.choice == t.expected_choice(target))
    gts, duration = tasks_lib.target_segments(target)
    preds = list(parsed.segments)
    if t.answer == "segment":
        preds = preds[:1]
        return reference.iou(
            reference.clip_segment(preds[0], duration) if preds else None, reference.clip_segment(gts[0], duration)
        )
    if t.reward == "type3":
        return reference.match_reward(preds, gts, duration)
    if t.reward == "type1":
        return reference.type1_reward(preds, gts, duration)
    return reference.union_iou(preds, gts, duration)


def sample_ious(tasks: Sequence[str], completions: Sequence[str], targets: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """`sample_iou` for each (task, completion, target) triple, as float64 [N]."""
    if not len(tasks) == len(completions) == len(targets):
        raise ValueError(f"lengths differ: {len(tasks)} tasks, {len(completions)} completions, {len(targets)} targets")
    return np.array([sample_iou(t, c, s) for t, c, s in zip(tasks, completions, targets)], np.float64)
