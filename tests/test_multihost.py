"""Evaluation on several processes (`tempr1_jax.training.multihost`), with threads standing in for the processes:
the shards of a split (`rows[index::count]`, as `make_eval_loader` reads them) run the same number of
lockstep steps, the shorter ones on dummy batches (None), with the common largest shape; `limit` stops
every process at the same step; gathered rows interleave back into split order.
Also: the dummy and padded inputs `generate_predictions` feeds those steps.
"""

from __future__ import annotations

import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.qwen2_5_vl.config import tiny_config
from tempr1_jax.training import batches, multihost, predictions


class ThreadGather:
    """An all-gather among `count` threads, one per simulated process (a broken barrier, not a hang,
    if they disagree on the number of collective calls)."""

    def __init__(self, count: int):
        self.barrier = threading.Barrier(count, timeout=20)
        self.slots: list = [None] * count

    def bind(self, index: int):
        def gather(x):
            self.slots[index] = np.asarray(x)
            self.barrier.wait()
            out = np.stack(self.slots)
            self.barrier.wait()  # every process has read before any writes the next value
            return out

        return gather


def run_processes(count: int, fn):
    """fn(index, gather) on `count` threads at once; the results in process order."""
    gathers = ThreadGather(count)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: fn(i, gathers.bind(i)), range(count)))


def shard_batches(n: int, index: int, count: int, batch_size: int, tokens: int = 8, patches: int = 4):
    """The evaluation batches of process `index`: its rows of a split of `n` (split positions as samples),
    `batch_size` per batch, the last one padded (`valid` False), `tokens` + index token columns."""
    rows = list(range(n))[index::count]
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        inputs = types.SimpleNamespace(input_ids=np.zeros((batch_size, tokens + index)), num_patches=patches)
        yield {"inputs": inputs, "samples": chunk, "valid": np.arange(batch_size) < len(chunk)}


def lockstep_run(n: int, count: int, batch_size: int, limit: int | None = None):
    """Per process: the lockstep steps as (its rows or None, common shape), and all rows gathered."""

    def process(index, gather):
        steps = [
            (None if b is None else b["samples"], shape)
            for b, shape in multihost.lockstep(shard_batches(n, index, count, batch_size), limit=limit, gather=gather)
        ]
        mine = [row for rows, _ in steps if rows is not None for row in rows]
        return steps, multihost.interleave(multihost.gather_objects(mine, gather))

    return run_processes(count, process)


@pytest.mark.parametrize(
    "n, count, batch_size, expected",
    [
        # rows of each process per step; None: a dummy step (the shard has run out)
        (10, 1, 4, [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]]),
        (10, 2, 2, [[[0, 2], [4, 6], [8]], [[1, 3], [5, 7], [9]]]),
        (10, 4, 2, [[[0, 4], [8]], [[1, 5], [9]], [[2, 6], None], [[3, 7], None]]),  # two shards a batch short
        (9, 4, 2, [[[0, 4], [8]], [[1, 5], None], [[2, 6], None], [[3, 7], None]]),
        (3, 4, 2, [[[0]], [[1]], [[2]], [None]]),  # process 3 has no row at all
        (0, 3, 2, [[], [], []]),
    ],
)
def test_lockstep_runs_every_process_the_same_steps(n, count, batch_size, expected):
    results = lockstep_run(n, count, batch_size)
    for index, (steps, gathered) in enumerate(results):
        assert [rows for rows, _ in steps] == expected[index]
        # The common shape: the largest over the processes that still have a batch (tokens 8 + index).
        last = [max(i for i in range(count) if expected[i][k] is not None) for k in range(len(expected[0]))]
        assert [shape for _, shape in steps] == [(batch_size, 8 + i, 4) for i in last]
        assert gathered == list(range(n))


def test_limit_stops_every_process_at_the_same_step():
    # 2 + 2 rows after step 1 (< 5), 8 after step 2: every process stops before step 3.
    results = lockstep_run(10, 2, 2, limit=5)
    assert [[rows for rows, _ in steps] for steps, _ in results] == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]
    assert results[0][1][:5] == [0, 1, 2, 3, 4]


def test_gather_objects_and_interleave():
    out = run_processes(3, lambda i, gather: multihost.gather_objects({"p": i, "rows": ["é" * i]}, gather))
    assert out == [[{"p": i, "rows": ["é" * i]} for i in range(3)]] * 3
    assert multihost.gather_objects([1, "a"]) == [[1, "a"]]  # one real process: x[None]
    assert multihost.interleave([[0, 2, 4], [1, 3], [], []]) == [0, 1, 2, 3, 4]
    assert multihost.interleave([]) == []


def test_dummy_and_padded_inputs_are_left_padded_prompts_of_the_common_shape():
    config = tiny_config()
    pad = 0
    dummy = predictions.dummy_inputs(config, pad)
    padded = batches.pad_inputs(dummy, (3, 6, 8), pad)
    assert (padded.batch_size, padded.seq_len, padded.num_patches) == (3, 6, 8)
    np.testing.assert_array_equal(padded.attention_mask, [[0, 0, 0, 0, 0, 1]] * 3)
    np.testing.assert_array_equal(padded.input_ids, np.full((3, 6), pad))
    assert not padded.patch_valid.any() and padded.position_ids.shape == (3, 3, 6)
    # A batch of the common shape already is passed through as it is.
    assert batches.pad_inputs(padded, (3, 6, 8), pad) is padded
