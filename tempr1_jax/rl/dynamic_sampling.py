"""DAPO's dynamic sampling: groups whose rewards are all equal are replaced by groups of newly drawn prompts.

A group whose G rewards are all equal has zero advantages and gives no policy gradient; DAPO (Yu et al.,
2025, §3.2) keeps sampling until the batch holds only groups with distinct rewards. Here the step's batch
keeps its size and order: each round draws the loader's next batch, rolls it out with the key
fold_in(step key, round), and moves its groups with distinct rewards, in order, into the slots of the
batch's equal groups; the round's other groups are dropped. Rounds stop when no process has an equal group
left, after `RolloutConfig.max_resample_rounds` rounds (the groups still equal then keep their slots; with
`LossConfig.filter_equal_groups` they get weight 0), or when a process's loader is exhausted.

Several processes: a rollout is a collective, so every process runs every round. One small all-gather per
round (equal groups left, loader exhausted, counts) decides on all of them alike; a process with nothing
to replace rolls out its own batch again without drawing from its loader, and keeps none of it. Shapes:
a round's batch is padded to the processes' common shape, and the refilled batch to the larger of its own
and the round's (both buckets, equal on every process), so it keeps the loader's batch size and buckets.

Determinism: keys derive from the step key and the loader advances on the host only, so the checkpoint
saved after the step (with the loader's state) resumes exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from models.qwen2_5_vl.inputs import ModelInputs, collate_model_inputs
from tempr1_jax.rl.rollout import Rollout
from tempr1_jax.training import multihost
from tempr1_jax.training.batches import pad_inputs, take_rows

log = logging.getLogger(__name__)

# (host prompts padded to the processes' common shape, their samples, key) -> the scored rollout.
RollFn = Callable[[ModelInputs, Sequence[Mapping[str, Any]], jax.Array], Rollout]


@dataclasses.dataclass
class Refilled:
    """The step's batch after dynamic sampling (host prompts, samples and rollout, row order kept) and its
    `resample_*` metrics, summed over processes."""

    prompts: ModelInputs
    samples: list[Mapping[str, Any]]
    rollout: Rollout
    metrics: dict[str, int]


def refill_equal_groups(
    prompts: ModelInputs,
    samples: Sequence[Mapping[str, Any]],
    r: Rollout,
    loader: Iterator[Mapping[str, Any]],
    roll: RollFn,
    key: jax.Array,
    *,
    max_rounds: int,
    pad_token_id: int,
    gather: multihost.Gather = multihost.allgather,
) -> Refilled:
    """Replace the equal-reward groups of rollout `r` of `prompts` / `samples` (this process's rows) by groups
    of prompts drawn from `loader` and rolled out with `roll`, for at most `max_rounds` rounds.

    Metrics: `resample_rounds`, `resample_prompts` (drawn), `resample_groups_replaced`,
    `resample_groups_equal_initial` and `resample_groups_equal` (still equal at the end).
    """
    if max_rounds < 0:
        raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
    group = len(r.tasks) // len(samples)
    samples = list(samples)
    rounds = drawn = replaced = 0
    exhausted = False
    initial = None
    while True:
        slots = np.flatnonzero(r.equal_groups[::group])
        totals = gather(np.asarray([len(slots), exhausted, drawn, replaced], np.int64)).sum(axis=0)
        initial = int(totals[0]) if initial is None else initial
        if not totals[0] or totals[1] or rounds >= max_rounds:
            break
        rounds += 1
        batch = _draw(loader) if len(slots) else None
        exhausted = exhausted or (len(slots) > 0 and batch is None)
        inputs, new_samples = (prompts, samples) if batch is None else (batch["inputs"], list(batch["samples"]))
        inputs = pad_inputs(inputs, multihost.common_shape(inputs.padded_shape, gather), pad_token_id)
        new = roll(inputs, new_samples, jax.random.fold_in(key, rounds))
        picks = np.flatnonzero(~new.equal_groups[::group]) if batch is not None else np.zeros(0, np.int64)
        n = min(len(slots), len(picks))
        slots, picks = slots[:n], picks[:n]
        prompts = _merge_prompts(prompts, inputs, slots, picks, pad_token_id)
        r = _merge_rollouts(r, new, slots, picks, group)
        for slot, pick in zip(slots, picks, strict=True):
            samples[slot] = new_samples[pick]
        drawn += 0 if batch is None else len(batch["samples"])
        replaced += n
    metrics = {
        "resample_rounds": rounds,
        "resample_prompts": int(totals[2]),
        "resample_groups_replaced": int(totals[3]),
        "resample_groups_equal_initial": initial,
        "resample_groups_equal": int(totals[0]),
    }
    return Refilled(prompts, samples, r, metrics)


def _draw(loader: Iterator[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The loader's next batch, or None (logged) once it is exhausted."""
    try:
        return next(loader)
    except StopIteration:
        log.warning("dynamic sampling: the training loader is exhausted; the equal groups left keep their slots")
        return None


def _merge_prompts(
    dst: ModelInputs, src: ModelInputs, slots: np.ndarray, picks: np.ndarray, pad_token_id: int
) -> ModelInputs:
    """`dst` with rows `slots` taken from rows `picks` of `src`, padded to the larger of both shapes
    (padded even when no row moves, so that every process keeps one shape)."""
    tokens, patches = max(dst.seq_len, src.seq_len), max(dst.num_patches, src.num_patches)
    layout = tuple(max(a, b) for a, b in zip(dst.layout_sizes, src.layout_sizes, strict=True))
    if not len(slots):
        return pad_inputs(dst, (dst.batch_size, tokens, patches, *layout), pad_token_id)
    both = collate_model_inputs([dst, src], tokens, patches, pad_token_id=pad_token_id, pad_layout_to=layout or None)
    index = np.arange(dst.batch_size)
    index[slots] = dst.batch_size + picks
    return take_rows(both, index)


def _merge_rollouts(dst: Rollout, src: Rollout, slots: np.ndarray, picks: np.ndarray, group: int) -> Rollout:
    """`dst` with groups `slots` taken from groups `picks` of `src` (reward terms missing on one side are 0,
    as `compute_rewards` gives them); generation and scoring times add up."""
    offsets = np.arange(group)
    to = (slots[:, None] * group + offsets).reshape(-1)
    frm = (picks[:, None] * group + offsets).reshape(-1)

    def put(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[to] = b[frm]
        return a

    texts, tasks = list(dst.texts), list(dst.tasks)
    for i, j in zip(to, frm, strict=True):
        texts[i], tasks[i] = src.texts[j], src.tasks[j]
    rewards = {
        term: put(
            dst.rewards.get(term, np.zeros(len(dst.tasks), np.float32)),
            src.rewards.get(term, np.zeros(len(src.tasks), np.float32)),
        )
        for term in [*dst.rewards, *(t for t in src.rewards if t not in dst.rewards)]
    }
    return Rollout(
        put(dst.tokens, src.tokens),
        put(dst.mask, src.mask),
        texts,
        tasks,
        rewards,
        put(dst.advantages, src.advantages),
        put(dst.equal_groups, src.equal_groups),
        dst.generate_s + src.generate_s,
        dst.score_s + src.score_s,
    )


__all__ = ["Refilled", "RollFn", "refill_equal_groups"]
