"""Training checkpoints with orbax: one array pytree (params, optimizer state, counters, RNG key data),
the data iterator's state and a small JSON record, saved asynchronously every N steps, last K kept.

`CheckpointManager.restore(abstract)` takes the pytree of the run being resumed (arrays or
`jax.ShapeDtypeStruct`s with shardings) so restored arrays land on the same mesh layout;
`restore_params(abstract_params)` reads only the policy parameters (`arrays/state/params`), for export.
A Grain iterator state may be bytes (DataLoader) or a dict (dataset iterators); both go through JSON.

`restore_newest_readable` is what a resuming run uses: the newest step every process can read, falling
back to older ones with one log line per skipped step (its error's first line, once); the skipped steps
are moved out of the way into `unreadable_checkpoints/` next to the checkpoint directory, so the run can
save those steps again. (A failed orbax read leaves tensorstore callbacks that report "Event loop is
closed" through `sys.unraisablehook` after the fact; that noise is dropped, the read error is not.)
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import pathlib
import shutil
import sys
from typing import Any

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from data_pipeline import paths
from tempr1_jax.training import multihost

log = logging.getLogger(__name__)

_BYTES_KEY = "__bytes_b64__"
CHECKPOINTS_DIR = "checkpoints"  # a run's CheckpointManager directory, under its workdir
UNREADABLE_DIR = "unreadable_checkpoints"  # where skipped steps are moved, next to CHECKPOINTS_DIR


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Save every `save_every` steps (and at the end of a run), keep the last `keep`, asynchronously."""

    save_every: int = 100
    keep: int = 3
    async_save: bool = True

    def __post_init__(self) -> None:
        if self.save_every < 1 or self.keep < 1:
            raise ValueError(f"CheckpointConfig.save_every and keep must be >= 1, got {self.save_every}, {self.keep}")


def encode_data_state(state: Any) -> Any:
    """A JSON-serialisable form of an iterator state (bytes are base64-wrapped)."""
    if isinstance(state, (bytes, bytearray)):
        return {_BYTES_KEY: base64.b64encode(bytes(state)).decode("ascii")}
    return state


def decode_data_state(state: Any) -> Any:
    """Inverse of `encode_data_state`."""
    if isinstance(state, dict) and set(state) == {_BYTES_KEY}:
        return base64.b64decode(state[_BYTES_KEY])
    return state


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of the arrays of `tree`, as a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class CheckpointManager:
    """orbax CheckpointManager for a training run in `directory` (items `arrays`, `data`, `meta`)."""

    def __init__(self, directory: str | pathlib.Path, config: CheckpointConfig = CheckpointConfig()) -> None:
        self.directory = paths.absolute(directory)
        self.config = config
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=config.save_every,
            max_to_keep=config.keep,
            enable_async_checkpointing=config.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("arrays", "data", "meta"))

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints kept on disk, oldest first."""
        return list(self._manager.all_steps())

    def save(
        self, step: int, arrays: Any, *, data_state: Any = None, meta: dict | None = None, force: bool = False
    ) -> bool:
        """Start saving (async) if `step` is on the interval or `force`; True if a save was started."""
        args = ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays),
            data=ocp.args.JsonSave(encode_data_state(data_state)),
            meta=ocp.args.JsonSave(meta or {}),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, abstract_arrays: Any, step: int | None = None) -> tuple[Any, Any, dict]:
        """(arrays, data iterator state, meta) of `step` (default: the latest)."""
        out = self._manager.restore(
            self.resolve_step(step),
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(abstract_arrays),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return out["arrays"], decode_data_state(out["data"]), dict(out["meta"] or {})

    def restore_newest_readable(
        self,
        abstract_arrays: Any,
        gather: multihost.Gather = multihost.allgather,
    ) -> tuple[int, Any, Any, dict] | None:
        """(step, arrays, data state, meta) of the newest checkpoint that every process restores, or None if
        there is no checkpoint. Steps that fail are skipped (a warning each: step and error) and moved into
        `UNREADABLE_DIR`; RuntimeError listing every step's error if none restores (nothing is moved then)."""
        _drop_closed_loop_noise()
        failures: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored, error = self.restore(abstract_arrays, step), ""
            except Exception as err:  # any read failure means: try the previous step
                restored, error = None, _first_line(err)
            ok = gather(np.asarray([error == ""], np.int32))
            if ok.all():
                self._move_aside([s for s, _ in failures])
                return (step, *restored)
            error = error or f"unreadable on process(es) {np.flatnonzero(ok[:, 0] == 0).tolist()}"
            log.warning("checkpoint of step %d skipped: %s", step, error)
            failures.append((step, error))
        if failures:
            raise RuntimeError(
                f"no checkpoint in {self.directory} could be restored:\n"
                + "\n".join(f"  step {step}: {error}" for step, error in failures)
            )
        return None

    def _move_aside(self, steps: list[int]) -> None:
        """Move the directories of `steps` into `UNREADABLE_DIR` (process 0) and forget them."""
        if not steps:
            return
        if multihost.is_main():
            out = self.directory.parent / UNREADABLE_DIR
            out.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target, k = out / str(step), 0
                while target.exists():
                    k += 1
                    target = out / f"{step}_{k}"
                shutil.move(str(self.directory / str(step)), str(target))
                log.warning("moved the unreadable checkpoint of step %d to %s", step, target)
        multihost.barrier("unreadable checkpoints moved")
        self._manager.reload()

    def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
        """Only the TrainState's `params` of `step` (default: the latest), shaped like `abstract_params`;
        the optimizer state is not read (orbax partial restore). Use on a manager that has not saved."""
        target = {"state": {"params": abstract_params}}
        out = self._manager.restore(
            self.resolve_step(step),
            args=ocp.args.Composite(
                arrays=ocp.args.PyTreeRestore(
                    target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
                )
            ),
        )
        return out["arrays"]["state"]["params"]

    def resolve_step(self, step: int | None = None) -> int:
        """`step`, or the latest step; ValueError naming the available steps if there is no such checkpoint."""
        steps = self.all_steps()
        if not steps:
            raise ValueError(f"no checkpoint in {self.directory}")
        if step is None:
            return max(steps)
        if step not in steps:
            raise ValueError(f"no checkpoint of step {step} in {self.directory}; available steps: {steps}")
        return step

    def should_save(self, step: int) -> bool:
        """Whether `save(step)` without `force` would save (on the interval and newer than the latest)."""
        return self._manager.should_save(step)

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves, then release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def _first_line(err: BaseException, limit: int = 500) -> str:
    """`Type: first line of the message`, at most `limit` characters."""
    text = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _drop_closed_loop_noise() -> None:
    """Drop the "Event loop is closed" RuntimeErrors that tensorstore callbacks report through
    `sys.unraisablehook` after a failed orbax read (installed once; everything else passes through)."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_noise", False):
        return

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_noise = True
    sys.unraisablehook = hook
