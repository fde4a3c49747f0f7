"""Host batches on the device mesh: each process's rows as its part of one global array, and back.

`place_rows` / `place_inputs` shard along the batch axes (data, fsdp); `local_rows` returns a process's
rows as numpy; `slice_inputs`, `take_rows` and `pad_inputs` reshape host `ModelInputs` so that every
process feeds arrays of one common shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.inputs import ModelInputs, collate_model_inputs


def batch_sharding(shape: Sequence[int], mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Shard dimension `axis` over the mesh's batch axes (data, fsdp) where it divides; else replicate."""
    spec = [None] * len(shape)
    if len(shape):
        spec[axis] = sharding_lib.BATCH
    return NamedSharding(mesh, sharding_lib.fit_spec(tuple(spec), tuple(shape), mesh)[0])


def place_rows(x: Any, mesh: Mesh, axis: int = 0) -> jax.Array:
    """This process's rows (a host array) as its part of a global array of every process's rows, in
    process order, sharded along the batch dimension `axis` (of the global shape: with several
    processes the local batch need not divide over the mesh's batch axes, but the global one must)."""
    x = np.asarray(x)
    shape = (*x.shape[:axis], x.shape[axis] * jax.process_count(), *x.shape[axis + 1 :])
    devices = math.prod(mesh.shape[a] for a in sharding_lib.BATCH)
    if jax.process_count() > 1 and shape[axis] % devices:
        # Replicating it instead would have each process claim different rows for the same array.
        raise ValueError(
            f"{x.shape[axis]} rows per process x {jax.process_count()} processes do not divide over "
            f"the mesh's batch axes (data x fsdp = {devices}); change the batch size or the mesh"
        )
    return jax.make_array_from_process_local_data(batch_sharding(shape, mesh, axis), x, shape)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded along axis 0, as numpy (inverse of `place_rows`).

    Shards repeated over the non-batch mesh axes are taken once; with one process this is the whole array.
    """
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    pieces: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, np.asarray(shard.data))
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)


def place_inputs(inputs: ModelInputs, mesh: Mesh) -> ModelInputs:
    """`ModelInputs` with every field sharded along its batch dimension (axis 1 for position ids)."""
    return ModelInputs(
        **{
            f: place_rows(getattr(inputs, f), mesh, 1 if f == "position_ids" else 0)
            for f in ModelInputs.__dataclass_fields__
        }
    )


def slice_inputs(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """Rows [start, stop) of host `ModelInputs` (views)."""
    return take_rows(inputs, slice(start, stop))


def take_rows(inputs: ModelInputs, rows: np.ndarray | slice) -> ModelInputs:
    """Rows `rows` (indices, repeats allowed, or a slice) of host `ModelInputs`."""
    return ModelInputs(
        **{
            f: (
                np.asarray(getattr(inputs, f))[:, rows] if f == "position_ids" else np.asarray(getattr(inputs, f))[rows]
            )
            for f in ModelInputs.__dataclass_fields__
        }
    )


def pad_inputs(
    inputs: ModelInputs, shape: tuple[int, ...], pad_token_id: int, padding_side: str = "left"
) -> ModelInputs:
    """Host `inputs` padded to (rows, tokens, patches[, *layout_sizes]) = `shape` (`ModelInputs.padded_shape`):
    tokens on `padding_side`, patches at the end, block layouts with empty blocks, extra rows copies of the
    first; `inputs` itself if it has that shape already."""
    rows, tokens, patches, *layout = shape
    if inputs.padded_shape[: len(shape)] == tuple(shape):
        return inputs
    inputs = collate_model_inputs(
        [inputs], tokens, patches, padding_side=padding_side, pad_token_id=pad_token_id, pad_layout_to=layout or None
    )
    return take_rows(inputs, np.where(np.arange(rows) < inputs.batch_size, np.arange(rows), 0))
