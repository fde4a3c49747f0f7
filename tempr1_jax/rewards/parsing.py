"""Completions and targets -> padded numpy arrays with masks, for the reward kernel.

Never raises on model output: anything unreadable yields no segments (and no choice), which the
rewards score 0. Numbers are kept raw (NaN, inf, negative, reversed, huge); the kernel applies
DESIGN §2's rules. At most `max_segments` predicted segments are kept per completion (default
`tasks.MAX_SEGMENTS` = 128, first in reading order; `tvg` keeps only the last): later ones are
dropped and not counted, so a 1000-segment completion pads like a 128-segment one. Targets are
validated and a malformed one raises ValueError naming its sample id.

Speed: this is the host-side part of `compute_rewards`, so it avoids per-segment Python. Rows
are handled one task at a time. Each completion is matched once against its strict template with
the segment list left open (`Task.output_regex(open_segments=True)`); the lists of the matching
ones are then checked and converted together in one compiled pass (`segment_lists`).
Other completions go through the task's lenient parser (`Task.parse`), which defines the result;
tests check that both routes agree with `reference.reward_reference`. Targets are converted in
one `np.fromiter` pass and checked vectorised; if anything is off, `tasks.target_segments` re-checks
them one by one to name the offending sample.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards import segment_lists
from tempr1_jax.rewards.kernel import KINDS

_SEGMENT_ANSWERS = ("segment", "segments", "choice_glue")


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
    weights: np.ndarray  # [B, 3] each row's task weights (format, loc, cls)
    has_cls: np.ndarray  # [B] whether the row's task has a classification term


def resolve_tasks(task: str | Sequence[str], n: int) -> list[tasks_lib.Task]:
    """One Task per completion from a task name or a sequence of names (mixed batches)."""
    if isinstance(task, str):
        return [tasks_lib.get_task(task)] * n
    names = list(task)
    if len(names) != n:
        raise ValueError(f"got {len(names)} task names for {n} completions")
    return [tasks_lib.get_task(name) for name in names]


def _scatter(n: int, rows: np.ndarray, pos: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, width, 2] array and mask holding `values[k]` at (rows[k], pos[k])."""
    width = int(pos.max(initial=-1)) + 1
    arr = np.zeros((n, max(width, 1), 2), np.float64)
    mask = np.zeros((n, max(width, 1)), bool)
    arr[rows, pos] = values.reshape(-1, 2)
    mask[rows, pos] = True
    return arr, mask


def _positions(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each count c, concatenated."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum())) - starts


def _targets(targets: Sequence[Mapping[str, Any]], rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat segments [K, 2], counts [R], durations [R]) of the targets at `rows`, validated."""
    try:
        picked = [targets[i] for i in rows]
        seg_lists = [t["segments"] for t in picked]
        counts = np.fromiter(map(len, seg_lists), np.int64, len(rows))
        segs = list(itertools.chain.from_iterable(seg_lists))
        ok = set(map(len, segs)) == {2} and (counts > 0).all()
        flat = np.fromiter(itertools.chain.from_iterable(segs), np.float64, 2 * len(segs)).reshape(-1, 2)
        durations = np.array([t["duration"] for t in picked], np.float64)
        ok = ok and (
            np.isfinite(flat).all()
            and (flat[:, 0] <= flat[:, 1]).all()
            and np.isfinite(durations).all()
            and (durations > 0).all()
        )
    except (TypeError, ValueError, KeyError, AttributeError):
        ok = False
    if not ok:
        checked = [tasks_lib.target_segments(targets[i]) for i in rows]  # raises, naming the sample
        counts = np.array([len(segs) for segs, _ in checked], np.int64)
        flat = np.array([seg for segs, _ in checked for seg in segs], np.float64).reshape(-1, 2)
        durations = np.array([d for _, d in checked], np.float64)
    return flat, counts, durations


def _group_by_task(task_list: Sequence[tasks_lib.Task]) -> list[tuple[tasks_lib.Task, list[int]]]:
    """(task, its row indices) for each task in the batch (keyed by identity: registry records)."""
    if not task_list:
        return []
    ids = np.fromiter(map(id, task_list), np.uint64, len(task_list))
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    if len(first) == 1:
        return [(task_list[0], list(range(len(task_list))))]
    order = np.argsort(inverse, kind="stable")
    parts = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    return [(task_list[f], rows.tolist()) for f, rows in zip(first, parts)]


# Kernel families in the order `compute_rewards` dispatches them: the costliest kernel starts first.
_FAMILY_ORDER = (KINDS["type3"], KINDS["type2"], KINDS["type1"], KINDS["tiou"], KINDS["exact"])


def _family(t: tasks_lib.Task) -> int:
    return KINDS[t.reward] if t.has_segments else KINDS["exact"]


def family_chunks(task_list: Sequence[tasks_lib.Task]) -> list[np.ndarray]:
    """Row indices of the batch split by reward kernel family (Type 3, Type 2, Type 1, tIoU, then
    the rows without segments), empty families left out."""
    by_family: dict[int, list[np.ndarray]] = {}
    for t, rows in _group_by_task(task_list):
        by_family.setdefault(_family(t), []).append(np.asarray(rows, np.int64))
    if len(by_family) == 1:
        return [np.arange(len(task_list))]
    return [np.sort(np.concatenate(by_family[f])) for f in _FAMILY_ORDER if f in by_family]


def parse_batch(
    task_list: Sequence[tasks_lib.Task],
    completions: Sequence[Any],
    targets: Sequence[Mapping[str, Any]],
    think: bool = True,
    max_segments: int = tasks_lib.MAX_SEGMENTS,
) -> RewardInputs:
    """Read completions (answer blocks only) and validate targets into padded arrays.

    Rows are handled one task at a time, with per-row work reduced to one strict-template match
    (`map` over the task's rows) and list comprehensions over the results.
    """
    n = len(completions)
    if len(targets) != n or len(task_list) != n:
        raise ValueError(f"{n} completions for {len(targets)} targets and {len(task_list)} tasks")
    format_ok = np.zeros(n, np.float64)
    cls = np.zeros(n, np.float64)
    kind = np.zeros(n, np.int32)
    weights = np.zeros((n, 3), np.float64)
    has_cls = np.zeros(n, bool)
    seg_rows: list[np.ndarray] = []
    fast_rows, fast_counts, fast_vals = [], [], []  # template matched: lists read in bulk
    slow_rows, slow_segs = [], []  # lenient parser
    for t, rows in _group_by_task(task_list):
        texts = [c if c.__class__ is str else "" for c in map(completions.__getitem__, rows)]
        fast = t.answer in _SEGMENT_ANSWERS
        matches = list(map(t.output_regex(think, open_segments=fast).fullmatch, texts))
        ok = np.fromiter([m is not None for m in matches], bool, len(rows))
        rows_arr = np.asarray(rows, np.int64)
        choices: list[str | None] = [None] * len(rows)
        if fast:  # the template around the list matched: now the list itself
            matched = [m for m in matches if m is not None]
            lists_ok, counts, values = segment_lists.read_segment_lists(
                [m["body"] for m in matched], single=t.answer == "segment"
            )
            ok[ok] = lists_ok
            fast_rows.append(rows_arr[ok])
            fast_counts.append(counts[lists_ok])
            fast_vals.append(values)
            if t.answer == "choice_glue":
                for k, m in zip(np.flatnonzero(ok), itertools.compress(matched, lists_ok)):
                    choices[k] = m["choice"]
        format_ok[rows_arr] = ok
        weights[rows_arr] = t.weights
        has_cls[rows_arr] = t.has_cls
        for k in np.flatnonzero(~ok) if fast else range(len(rows)):
            parsed = t.parse(texts[k], max_segments=max_segments)
            choices[k] = parsed.choice
            if parsed.segments:
                slow_rows.append(rows[k])
                slow_segs.append(parsed.segments)
        if t.has_segments:
            seg_rows.append(rows_arr)
            kind[rows_arr] = KINDS[t.reward]
        if t.has_cls:
            expected = [t.expected_choice(targets[i]) for i in rows]
            cls[rows_arr] = [a == b for a, b in zip(choices, expected)]

    fast_counts = np.concatenate(fast_counts) if fast_counts else np.zeros(0, np.int64)
    fast_vals = np.concatenate(fast_vals) if fast_vals else np.zeros((0, 2))  # [segments, 2]
    fast_pos = _positions(fast_counts)
    fast_row_of = np.repeat(np.concatenate(fast_rows) if fast_rows else np.zeros(0, np.int64), fast_counts)
    # (A single-segment template holds one pair, so a task's `pick` cannot matter here.)
    keep = fast_pos < max_segments
    slow_counts = np.array([len(s) for s in slow_segs], np.int64)
    slow_vals = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(slow_segs)), np.float64)
    pred, pred_mask = _scatter(
        n,
        np.concatenate([fast_row_of[keep], np.repeat(np.asarray(slow_rows, np.int64), slow_counts)]),
        np.concatenate([fast_pos[keep], _positions(slow_counts)]),
        np.concatenate([fast_vals[keep].reshape(-1), slow_vals]),
    )

    duration = np.ones(n, np.float64)
    gt_rows = np.zeros(0, np.int64)
    gt_pos = np.zeros(0, np.int64)
    gt_flat = np.zeros((0, 2))
    if seg_rows:
        rows_arr = np.sort(np.concatenate(seg_rows))
        gt_flat, gt_counts, duration[rows_arr] = _targets(targets, rows_arr.tolist())
        gt_rows = np.repeat(rows_arr, gt_counts)
        gt_pos = _positions(gt_counts)
    gt, gt_mask = _scatter(n, gt_rows, gt_pos, gt_flat)
    return RewardInputs(pred, pred_mask, gt, gt_mask, duration, kind, format_ok, cls, weights, has_cls)
