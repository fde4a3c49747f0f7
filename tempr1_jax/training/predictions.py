"""Greedy predictions of a model over an evaluation loader, in step across processes.

What evaluation, curation and the trainer's curriculum share: `generate_predictions` turns the batches
of `data_pipeline.loader.make_eval_loader` into one prediction dict per sample (id, task, source, output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.inputs import build_model_inputs
from tempr1_jax.training import multihost
from tempr1_jax.training.batches import local_rows, pad_inputs, place_inputs, take_rows


def generate_predictions(
    model: Any,
    tokenizer: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    mesh: Any = None,
    layout: str = "fsdp_tensor",
    limit: int | None = None,
    gather: multihost.Gather = multihost.allgather,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Greedy completions for every valid row of the evaluation `batches` (see `make_eval_loader`).

    Returns (predictions, targets, skipped); stops after `limit` samples if given. With `mesh` (the
    model already sharded on it with `layout`), inputs are sharded along the batch and so is the cache.

    With several processes, `batches` is this process's shard; the processes run generate in step
    (`multihost.lockstep`: common batch count and shapes, a dummy batch once a shard has run out), read
    their own output rows, and every process returns the predictions of all of them (`gather`), interleaved
    back into split order (exact unless samples were skipped or the loader has worker processes).
    With `should_stop`, every process raises `multihost.StopRequested` between two batches once it is true
    on any of them.
    """
    eos = list(model.config.eos_token_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    predictions, targets, skipped = [], [], []
    for batch, shape in multihost.lockstep(batches, limit=limit, gather=gather, should_stop=should_stop):
        valid = np.zeros(0, bool) if batch is None else np.asarray(batch["valid"], bool)
        skipped += [] if batch is None else list(batch.get("skipped", ()))
        inputs = _fill_padding_rows(batch["inputs"], valid) if valid.any() else dummy_inputs(model.config, pad)
        shape = (*shape, *multihost.common_shape(inputs.layout_sizes, gather))  # vision block layouts too
        inputs = pad_inputs(inputs, shape, pad)
        inputs = inputs if mesh is None else place_inputs(inputs, mesh)
        out = generate(
            model,
            inputs,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            eos_token_id=eos,
            pad_token_id=pad,
            return_dict=True,
            mesh=mesh,
            layout=layout,
        )
        if not valid.any():
            continue
        rows = np.flatnonzero(valid)
        tokens = local_rows(out.tokens)[rows]
        mask = local_rows(out.mask)[rows]
        texts = decode_completions(tokenizer, tokens, mask, drop_ids=[*eos, pad])
        for sample, text in zip(batch["samples"], texts):
            sample = dict(sample)
            predictions.append(
                {"id": sample.get("id"), "task": sample["task"], "source": sample.get("source"), "output": text}
            )
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
    if valid.all():
        return inputs
    return take_rows(inputs, np.where(valid, np.arange(len(valid)), np.flatnonzero(valid)[0]))


def dummy_inputs(config: Any, pad: int) -> Any:
    """A one-row prompt of a single (attended) pad token: what a process with no sample to generate for
    feeds the collective step; its output is dropped."""
    return build_model_inputs(config, np.full((1, 1), pad, np.int32))


def decode_completions(tokenizer: Any, tokens: np.ndarray, mask: np.ndarray, drop_ids: Sequence[int] = ()) -> list[str]:
    """Text of each completion: masked tokens minus `drop_ids` (EOS, pad); other special tokens kept."""
    drop = np.asarray(list(drop_ids), np.int64)
    texts = []
    for row, m in zip(np.asarray(tokens), np.asarray(mask, bool), strict=True):
        ids = row[m]
        ids = ids[~np.isin(ids, drop)]
        texts.append(tokenizer.decode(ids.tolist(), skip_special_tokens=False))
    return texts
