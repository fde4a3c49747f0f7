"""Stop requests that every process agrees on: a SIGTERM on any host stops all of them at the same point.

A preemption or maintenance event may send SIGTERM to some hosts only. Each process records its own
request (`StopFlag`, a SIGTERM handler) and the processes compare their flags at *stop points*
(`agree_to_stop`, one all-gather of one integer): after each step's batch is drawn, after the rollout,
and at every lockstep generation step (`multihost.lockstep`). Every process reaches the same stop points
in the same order, so all of them see the same answer and raise `StopRequested` at the same place; the
training loop then saves the last completed step on every process and returns 0.

The flag is also what the loader polls while it waits for a batch (`should_stop`), so a wait on a
missing or slow file ends within a fraction of a second of the signal.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import numpy as np

from tempr1_jax.training import multihost
from tempr1_jax.training.multihost import StopRequested

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM while in its `with` block; calling it returns whether a stop was requested."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopFlag:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            log.warning("SIGTERM: stopping at the next stop point, then saving a checkpoint")
        self.requested = True

    def __exit__(self, *exc) -> None:
        # None: the previous handler was not installed from Python (e.g. JAX's preemption notifier).
        signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)


def agree_to_stop(requested: bool, gather: multihost.Gather = multihost.allgather) -> bool:
    """Whether any process has `requested` a stop (a collective: every process must call it)."""
    return bool(gather(np.asarray([int(requested)], np.int32)).any())


def stop_point(requested: bool, where: str, gather: multihost.Gather = multihost.allgather) -> None:
    """Raise `StopRequested` on every process if any of them has `requested` a stop (see `agree_to_stop`)."""
    if agree_to_stop(requested, gather):
        raise StopRequested(f"stop requested ({where})")


__all__ = ["StopFlag", "StopRequested", "agree_to_stop", "stop_point"]
