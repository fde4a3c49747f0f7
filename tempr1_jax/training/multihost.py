"""Host-side agreement between processes: greedy evaluation over each process's shard of a split
(`lockstep`, `gather_objects`, `interleave`), one shape for the processes' training batches
(`common_shape`), files written once (`is_main`, `barrier`), a stop request honoured by all at once
(`StopRequested`; see `training.preemption`).

Each process's evaluation loader reads the rows `[process_index::process_count]` of the split
(`data_pipeline.loader.make_eval_loader`), so shards differ by up to a batch, more with skipped samples,
and each batch takes its own shape buckets. A sharded `generate` is a collective: every process must call
it the same number of times with the same global shapes. `lockstep` agrees on both, one small all-gather
per batch; `gather_objects` + `interleave` then give every process all the results: in split order
when no sample was skipped and the loader has no worker processes, else in each shard's own order.

The collective is an argument (`Gather`: this process's array -> every process's, stacked), by default
`allgather` over `jax.experimental.multihost_utils`; with one process it is `x[None]`, so a single
process runs this very code.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

T = TypeVar("T")
Gather = Callable[[np.ndarray], np.ndarray]


def allgather(x: np.ndarray) -> np.ndarray:
    """Every process's `x` (same shape and dtype on each), stacked in process order: [process_count, *x.shape]."""
    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))


class StopRequested(Exception):
    """Raised on every process at the same collective step once any process has been asked to stop."""


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier of this `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_main() -> bool:
    """Whether this is the process that writes the files every process shares (process 0)."""
    return jax.process_index() == 0


def lockstep(
    batches: Iterable[Mapping[str, Any]],
    *,
    limit: int | None = None,
    gather: Gather = allgather,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[Mapping[str, Any] | None, tuple[int, int, int]]]:
    """This process's evaluation `batches`, in step with every other process's.

    Yields (batch, (rows, tokens, patches)): `batch` is None once this process's shard has run out (the
    process must still run the step, on a dummy batch whose results it drops); the shape is the largest
    over the processes' batches, which every process pads its inputs to. Stops on every process at the
    same step: when no process has a batch left, or once `limit` valid rows were yielded over all processes.
    With `should_stop`, every process raises `StopRequested` at the same step once it is true on any of them.
    """
    done = 0
    for batch in itertools.chain(batches, itertools.repeat(None)):
        state = np.zeros(6, np.int64)  # has a batch, valid rows so far, rows, tokens, patches, stop
        state[1] = done
        if batch is not None:
            state[[0, 2, 3, 4]] = 1, *batch["inputs"].input_ids.shape, batch["inputs"].num_patches
        state[5] = bool(should_stop and should_stop())
        states = gather(state)
        if states[:, 5].any():
            raise StopRequested("stop requested during generation")
        if not states[:, 0].any() or (limit is not None and states[:, 1].sum() >= limit):
            return
        yield batch, tuple(int(n) for n in states[:, 2:5].max(axis=0))
        done += 0 if batch is None else len(batch["samples"])


def common_shape(shape: Sequence[int], gather: Gather = allgather) -> tuple[int, ...]:
    """The elementwise largest of every process's `shape` (all of the same length)."""
    return tuple(int(n) for n in gather(np.asarray(shape, np.int64)).max(axis=0))


def gather_objects(obj: Any, gather: Gather = allgather) -> list[Any]:
    """Every process's JSON-able `obj`, in process order (two all-gathers: sizes, then the padded bytes)."""
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = gather(np.asarray([len(data)], np.int64))[:, 0]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(data)] = data
    return [json.loads(row[:n].tobytes()) for row, n in zip(gather(padded), sizes)]


def interleave(per_process: Sequence[Sequence[T]]) -> list[T]:
    """Row 0 of every process in process order, then row 1, ...: the inverse of sharding a sequence as
    `rows[index::count]` (shards may be shorter than the first by one row or more)."""
    longest = max(map(len, per_process), default=0)
    return [rows[k] for k in range(longest) for rows in per_process if k < len(rows)]


__all__ = [
    "Gather",
    "StopRequested",
    "allgather",
    "barrier",
    "common_shape",
    "gather_objects",
    "interleave",
    "is_main",
    "lockstep",
]
