"""Completions and targets -> padded numpy arrays with masks, for the reward kernel.

Never raises on model output: anything unreadable yields no segments (and no choice), which the
rewards score 0. Numbers are kept raw (NaN, inf, negative, reversed, huge); the kernel applies
DESIGN §2's rules. At most `max_segments` predicted segments are kept per completion (default
`tasks.MAX_SEGMENTS` = 64, first in reading order; later ones are dropped and not counted), so a
1000-segment completion pads like a 64-segment one. Targets are validated and a malformed one
raises ValueError naming its sample id.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards.kernel import KINDS


@dataclasses.dataclass
class RewardInputs:
    """A batch as arrays. Segments are [B, N, 2] float64 with [B, N] masks (True = present)."""

    pred: np.ndarray
    pred_mask: np.ndarray
    gt: np.ndarray
    gt_mask: np.ndarray
    duration: np.ndarray
    kind: np.ndarray
    format_ok: np.ndarray
    cls: np.ndarray


def _pad_rows(counts: list[int], flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scatter row-major segments `flat` [sum(counts), 2] into [B, max(counts), 2] plus a mask."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    width = max(int(counts_arr.max(initial=0)), 1)
    mask = np.arange(width)[None, :] < counts_arr[:, None]
    arr = np.zeros((len(counts), width, 2), np.float64)
    arr[mask] = flat.reshape(-1, 2)
    return arr, mask


def resolve_tasks(task: str | Sequence[str], n: int) -> list[tasks_lib.Task]:
    """One Task per completion from a task name or a sequence of names (mixed batches)."""
    if isinstance(task, str):
        return [tasks_lib.get_task(task)] * n
    names = list(task)
    if len(names) != n:
        raise ValueError(f"got {len(names)} task names for {n} completions")
    return [tasks_lib.get_task(name) for name in names]


def parse_batch(
    task_list: Sequence[tasks_lib.Task],
    completions: Sequence[Any],
    targets: Sequence[Mapping[str, Any]],
    think: bool = True,
    max_segments: int = tasks_lib.MAX_SEGMENTS,
) -> RewardInputs:
    """Parse completions (leniently, answer blocks only) and validate targets into arrays."""
    if len(completions) != len(targets) or len(completions) != len(task_list):
        raise ValueError(f"{len(completions)} completions for {len(targets)} targets")
    n = len(completions)
    pred_counts, pred_flat = [0] * n, []
    gt_counts, gt_flat = [0] * n, []
    duration = np.ones(n, np.float64)
    kind = np.zeros(n, np.int32)
    format_ok = np.zeros(n, np.float64)
    cls = np.zeros(n, np.float64)
    for i, (t, text, target) in enumerate(zip(task_list, completions, targets)):
        format_ok[i], parsed = t.read(text if isinstance(text, str) else "", think, max_segments)
        if t.has_segments:
            segs, duration[i] = tasks_lib.target_segments(target)
            gt_flat.extend(segs)
            gt_counts[i] = len(segs)
            pred_flat.extend(parsed.segments)
            pred_counts[i] = len(parsed.segments)
            kind[i] = KINDS[t.reward]
        if t.has_cls:
            cls[i] = parsed.choice == t.expected_choice(target)
    pred, pred_mask = _pad_rows(pred_counts, _floats(pred_flat))
    gt, gt_mask = _pad_rows(gt_counts, _floats(gt_flat))
    return RewardInputs(pred, pred_mask, gt, gt_mask, duration, kind, format_ok, cls)


def _floats(pairs: list[tuple[float, float]]) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(pairs), np.float64, count=2 * len(pairs))
