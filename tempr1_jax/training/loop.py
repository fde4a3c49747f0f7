"""The training loop that SFT (`apps.sft.SFTTrainer`) and GRPO (`rl.trainer.GRPOTrainer`) share.

`Trainer` owns what every run has: the workdir, the mesh, the model and tokenizer built from gin
(`ModelSetup`, `DataConfig`, `MeshConfig`), the policy split into trained params and frozen rest, orbax
checkpoints with the loader state, resume, SIGTERM handling, `metrics.jsonl` written by process 0, and
the Hugging Face export at the end. A subclass builds its loader, `TrainStep` and state, and implements
`step`; it may add arrays, meta and a hook before each step.

Guarantees: a run resumed from its workdir continues with exactly the losses of an uninterrupted run
(the loader's state is checkpointed with the weights, the model is rebuilt from the same source); on
SIGTERM the current step finishes, a checkpoint is written, and `run` returns 0 without exporting.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
from typing import Any

import jax
from flax import nnx

from data_pipeline import paths
from models.qwen2_5_vl import sharding as sharding_lib
from tempr1_jax.config import write_operative_config
from tempr1_jax.training import multihost
from tempr1_jax.training.checkpoints import CHECKPOINTS_DIR, CheckpointConfig, CheckpointManager, abstract_like
from tempr1_jax.training.data_setup import DataConfig, resolve_sources
from tempr1_jax.training.export import HF_DIR, export_hf, write_run_model
from tempr1_jax.training.metrics_log import MetricsLogger
from tempr1_jax.training.model_setup import MeshConfig, ModelSetup, build_model, trainable_filter

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM while in its `with` block; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "StopFlag":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: finishing the current step, then saving a checkpoint")
        self.requested = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs from a trainer's config: steps, logging and the final export."""

    steps: int
    tensorboard: bool = True
    progress: bool = True
    export_hf: bool = True
    desc: str = "train"


class Trainer:
    """A training run in `workdir`. After `build_policy`, a subclass sets `self.loader`,
    `self.train_step` (a `training.train_step.TrainStep`) and `self.state`, and implements `step`."""

    def __init__(self, workdir: str | pathlib.Path, settings: LoopSettings) -> None:
        self.workdir = paths.as_path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        mesh_cfg = MeshConfig()
        self.model_setup = ModelSetup()
        self.mesh = mesh_cfg.make()
        self.layout = mesh_cfg.layout
        self.sources = resolve_sources(DataConfig(), self.workdir)
        self.checkpoints = CheckpointManager(self.workdir / CHECKPOINTS_DIR, CheckpointConfig())
        self.loader: Any = None
        self.train_step: Any = None
        self.state: Any = None

    def build_policy(self, think: bool) -> Any:
        """Build the model and tokenizer, record them in `workdir/model/`, shard the model on the mesh and
        split it; sets `tokenizer`, `model_config`, `graphdef`, `frozen`, `pad_id`; returns the trained params."""
        model, self.tokenizer = build_model(self.model_setup, self.workdir, self.sources, think, self.mesh,
                                            self.layout)
        if jax.process_index() == 0:
            write_run_model(self.workdir, model, self.tokenizer, self.model_setup)
        self.model_config = model.config
        sharding_lib.shard_model(model, self.mesh, self.layout)
        self.graphdef, params, self.frozen = nnx.split(model, trainable_filter(self.model_setup.freeze_vision), ...)
        self.pad_id = int(self.tokenizer.pad_token_id)
        return params

    def model(self) -> Any:
        """The current policy as a model (params merged back into the graph)."""
        return nnx.merge(self.graphdef, self.state.params, self.frozen)

    # --- what a subclass provides -------------------------------------------------------------------

    def step(self, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics."""
        raise NotImplementedError

    def before_step(self, step: int) -> dict[str, Any]:
        """Work due before step `step` draws its batch (e.g. a curriculum epoch); returns extra metrics."""
        return {}

    def checkpoint_arrays(self) -> dict[str, Any]:
        """The arrays a checkpoint holds (restored into the same structure)."""
        return {"state": self.state}

    def load_checkpoint_arrays(self, arrays: dict[str, Any]) -> None:
        """Take restored `checkpoint_arrays` as the current state."""
        self.state = self.train_step.place_state(arrays["state"], arrays["state"].params)

    def checkpoint_meta(self) -> dict[str, Any]:
        """JSON meta saved with each checkpoint besides the step."""
        return {}

    def on_restore(self, meta: dict[str, Any]) -> None:
        """Called with a restored checkpoint's meta, before the loader's state is set."""

    # --- checkpoints and export ---------------------------------------------------------------------

    def restore(self) -> int:
        """Continue from the newest checkpoint in the workdir, if any; returns the step to start from."""
        step = self.checkpoints.latest_step()
        if step is None:
            return 0
        arrays, data_state, meta = self.checkpoints.restore(abstract_like(self.checkpoint_arrays()), step)
        self.load_checkpoint_arrays(arrays)
        self.on_restore(meta)
        self.loader.set_state(data_state)
        log.info("resumed from the checkpoint of step %d", step)
        return int(step)

    def save(self, step: int, force: bool = False) -> bool:
        """Checkpoint the arrays, the loader state and the meta (async; on the interval or forced)."""
        return self.checkpoints.save(step, self.checkpoint_arrays(), data_state=self.loader.get_state(),
                                     meta={"step": step, **self.checkpoint_meta()}, force=force)

    def export(self, directory: str | pathlib.Path | None = None) -> pathlib.Path | None:
        """Write the current policy and the tokenizer as an HF directory (default `workdir/hf`); returns it.

        Skipped (None) with several processes, whose parameters are not all addressable from one host:
        `tempr1 convert orbax-to-hf WORKDIR OUT` exports the run's last checkpoint instead.
        """
        if jax.process_count() > 1:
            log.warning("HF export skipped with %d processes; run `tempr1 convert orbax-to-hf %s OUT`",
                        jax.process_count(), self.workdir)
            return None
        return export_hf(self.model(), self.tokenizer, directory or self.workdir / HF_DIR)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Train up to `settings.steps`, resuming from a checkpoint in the workdir, then export the policy
        (`settings.export_hf`) unless stopped by SIGTERM; returns 0."""
        start = self.restore()
        write_operative_config(self.workdir)
        steps = self.settings.steps
        logger = (MetricsLogger(self.workdir, total_steps=steps, start_step=start, tensorboard=self.settings.tensorboard,
                                progress=self.settings.progress, desc=self.settings.desc)
                  if multihost.is_main() else None)
        last = start
        stopped = False
        try:
            with StopFlag() as stop:
                for step in range(start, steps):
                    extra = self.before_step(step)
                    metrics = {**self.step(step), **extra}
                    last = step + 1
                    if logger:
                        logger.log(last, metrics)
                    self.save(last, force=last == steps or stop.requested)
                    if stop.requested:
                        log.warning("stopped by SIGTERM after step %d; checkpoint saved", last)
                        stopped = True
                        break
        finally:
            self.checkpoints.close()
            if logger:
                logger.close()
        if self.settings.export_hf and not stopped:
            out = self.export()
            if out is not None:
                log.info("exported the policy of step %d to %s", last, out)
        return 0
