"""The training loop that SFT (`apps.sft.SFTTrainer`) and GRPO (`rl.trainer.GRPOTrainer`) share.

`Trainer` owns what every run has: the workdir, the mesh, the model and tokenizer built from gin
(`ModelSetup`, `DataConfig`, `MeshConfig`), the policy split into trained params and frozen rest, orbax
checkpoints with every process's loader state, resume, stop requests, `metrics.jsonl` written by process 0,
and the Hugging Face export at the end. A subclass builds its loader (`make_training_loader`), `TrainStep`
and state, and implements `step` (drawing its batch with `next_batch`); it may add arrays, meta, configs
that define the run (`definition`), and hooks before and after each step.

Guarantees:
- a run resumed from its workdir continues with exactly the losses of an uninterrupted run (the loader's
  state of every process is checkpointed with the weights, the model is rebuilt from the same source);
- the workdir is checked before anything is written to it: a start whose settings differ from those the
  workdir's run was trained with stops with the list of differences (`run_record`), unless allowed;
  `model/`, the operative config and the run record are written only once the checkpoint is restored;
- a checkpoint that cannot be read is skipped for the previous one (`CheckpointManager.restore_newest_readable`);
- a SIGTERM on any process stops every process at the same stop point (`preemption`): between steps,
  after a step's batch is drawn (the loader's wait ends early), after its rollout, between generation
  batches (evaluation, curriculum); every process saves the last completed step and `run` returns 0
  without exporting.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from data_pipeline import loader as loader_lib
from data_pipeline import paths
from models.qwen2_5_vl import sharding as sharding_lib
from tempr1_jax.config import write_operative_config
from tempr1_jax.training import multihost, run_record
from tempr1_jax.training.checkpoints import (
    CHECKPOINTS_DIR,
    CheckpointConfig,
    CheckpointManager,
    abstract_like,
    decode_data_state,
    encode_data_state,
)
from tempr1_jax.training.data_setup import DataConfig, LoaderConfig, resolve_sources, write_synthetic
from tempr1_jax.training.export import HF_DIR, export_hf, write_run_model
from tempr1_jax.training.metrics_log import MetricsLogger
from tempr1_jax.training.model_setup import MeshConfig, ModelSetup, build_model, trainable_filter
from tempr1_jax.training.preemption import StopFlag, StopRequested, stop_point

log = logging.getLogger(__name__)


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
    `self.train_step` (a `training.train_step.TrainStep`) and `self.state`, and implements `step`.

    `allow_changed_config`: continue the workdir's run although its defining settings changed (the
    differences are recorded in its history); otherwise such a start raises `run_record.ChangedConfigError`.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        settings: LoopSettings,
        allow_changed_config: bool = False,
    ) -> None:
        self.workdir = paths.as_path(workdir)
        self.settings = settings
        mesh_cfg = MeshConfig()
        self.model_setup = ModelSetup()
        self.mesh = mesh_cfg.make()
        self.layout = mesh_cfg.layout
        data_cfg = DataConfig()
        self.sources = resolve_sources(data_cfg, self.workdir)
        self.fingerprint = run_record.fingerprint(self.definition())
        self.changed = run_record.check_workdir(self.workdir, self.fingerprint, allow_changed_config)
        # Nothing is written to the workdir before this point.
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Process 0 first; then any process that does not see its data (a workdir on a host's own disk).
        if multihost.is_main():
            write_synthetic(data_cfg, self.workdir)
        multihost.barrier("training data written")
        if not multihost.is_main():
            write_synthetic(data_cfg, self.workdir)
        self.checkpoints = CheckpointManager(self.workdir / CHECKPOINTS_DIR, CheckpointConfig())
        self.stop = StopFlag()
        self.stopped = False  # whether the last `run` ended on a stop request (SIGTERM)
        self.loader: Any = None
        self.train_step: Any = None
        self.state: Any = None
        self._resume_data_state: Any = None

    def definition(self) -> dict[str, Any]:
        """The configs that define what this run learns (see `run_record.fingerprint`); subclasses add theirs."""
        return {
            "trainer": self.settings.desc,
            "ModelSetup": self.model_setup,
            "DataConfig": DataConfig(),
            "LoaderConfig": LoaderConfig(sources=self.sources),
        }

    def build_policy(self, think: bool) -> Any:
        """Build the model and tokenizer, shard the model on the mesh and split it; sets `tokenizer`,
        `model_config`, `graphdef`, `frozen`, `pad_id`; returns the trained params."""
        # A tiny model's tokenizer is trained into workdir/tokenizer by process 0 first; the others read it.
        trains_tokenizer = self.model_setup.checkpoint is None and self.model_setup.tokenizer is None
        if trains_tokenizer and not multihost.is_main():
            multihost.barrier("run tokenizer written")
        model, self.tokenizer = build_model(self.model_setup, self.workdir, self.sources, think, self.mesh, self.layout)
        if trains_tokenizer and multihost.is_main():
            multihost.barrier("run tokenizer written")
        self.model_config = model.config
        sharding_lib.shard_model(model, self.mesh, self.layout)
        self.graphdef, params, self.frozen = nnx.split(model, trainable_filter(self.model_setup.freeze_vision), ...)
        self.pad_id = int(self.tokenizer.pad_token_id)
        return params

    def make_training_loader(
        self, loader_cfg: Any, prompt_builders: Mapping[str, Any], answer_builders: Mapping[str, Any] | None = None
    ) -> Any:
        """`data_pipeline.loader.make_loader` with this run's tokenizer and model; its wait for a batch ends
        early on a stop request."""
        return loader_lib.make_loader(
            loader_cfg, self.tokenizer, self.model_config, prompt_builders, answer_builders, should_stop=self.stop
        )

    def model(self) -> Any:
        """The current policy as a model (params merged back into the graph)."""
        return nnx.merge(self.graphdef, self.state.params, self.frozen)

    # --- what a subclass provides -------------------------------------------------------------------

    def step(self, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics; draw the batch with `next_batch`."""
        raise NotImplementedError

    def before_step(self, step: int) -> dict[str, Any]:
        """Work due before step `step` draws its batch (e.g. a curriculum epoch); returns extra metrics."""
        return {}

    def after_step(self, step: int) -> dict[str, Any]:
        """Work due once `step` steps are done (e.g. an evaluation); returns extra metrics of that step."""
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

    # --- stop points ----------------------------------------------------------------------------------

    def stop_point(self, where: str) -> None:
        """Raise `StopRequested` on every process if any process was asked to stop (a collective)."""
        stop_point(self.stop.requested, where)

    def next_batch(self) -> Any:
        """The loader's next batch, then a stop point (a stop request also ends the loader's wait)."""
        try:
            batch = next(self.loader)
        except loader_lib.LoaderStopped:
            batch = None
        self.stop_point("after drawing a batch")
        return batch

    # --- checkpoints and export ---------------------------------------------------------------------

    def restore(self) -> int:
        """Continue from the newest readable checkpoint in the workdir, if any; returns the step to start from."""
        found = self.checkpoints.restore_newest_readable(abstract_like(self.checkpoint_arrays()))
        if found is None:
            return 0
        step, arrays, data_state, meta = found
        self.load_checkpoint_arrays(arrays)
        self.on_restore(meta)
        self.loader.set_state(self._own_data_state(data_state))
        log.info("resumed from the checkpoint of step %d", step)
        return int(step)

    def _own_data_state(self, saved: Any) -> Any:
        """This process's loader state in a checkpoint's `data` item (one per process; a single state in
        checkpoints of earlier versions)."""
        if not (isinstance(saved, dict) and set(saved) == {"processes"}):
            return saved
        states = saved["processes"]
        if len(states) != jax.process_count():
            log.warning(
                "the checkpoint was saved by %d processes, this run has %d: the data shards differ, so "
                "the batches differ from an uninterrupted run's",
                len(states),
                jax.process_count(),
            )
        return decode_data_state(states[jax.process_index() % len(states)])

    def save(self, step: int, force: bool = False, data_state: Any = None) -> bool:
        """Checkpoint the arrays, every process's loader state (`data_state` for this one, default the
        loader's current state) and the meta (async; on the interval or forced; never over a kept step)."""
        if step in self.checkpoints.all_steps() or not (force or self.checkpoints.should_save(step)):
            return False
        own = self.loader.get_state() if data_state is None else data_state
        states = multihost.gather_objects(encode_data_state(own))
        return self.checkpoints.save(
            step,
            self.checkpoint_arrays(),
            data_state={"processes": states},
            meta={"step": step, **self.checkpoint_meta()},
            force=True,
        )

    def export(self, directory: str | pathlib.Path | None = None) -> pathlib.Path | None:
        """Write the current policy and the tokenizer as an HF directory (default `workdir/hf`); returns it.

        Skipped (None) with several processes, whose parameters are not all addressable from one host:
        `tempr1 convert orbax-to-hf WORKDIR OUT` exports the run's last checkpoint instead.
        """
        if jax.process_count() > 1:
            log.warning(
                "HF export skipped with %d processes; run `tempr1 convert orbax-to-hf %s OUT`",
                jax.process_count(),
                self.workdir,
            )
            return None
        return export_hf(self.model(), self.tokenizer, directory or self.workdir / HF_DIR)

    def _record_start(self, start: int) -> None:
        """Once the checkpoint is restored: `model/`, the operative config and the run record (process 0)."""
        if multihost.is_main():
            write_run_model(self.workdir, self.model(), self.tokenizer, self.model_setup)
            write_operative_config(self.workdir)
            run_record.record_start(self.workdir, self.fingerprint, start, self.changed, jax.process_count())
            for line in self.changed:
                log.warning("continuing with a changed setting (--allow_changed_config): %s", line)

    def skip_metrics(self) -> dict[str, int]:
        """Samples the loaders of all processes skipped so far: `skipped_total` and, where the loader counts
        them by source and reason, `skipped/<source>/<reason>`."""
        shards = multihost.gather_objects([self.loader.stats()["skipped"], self.loader.skip_counts()])
        out = {"skipped_total": sum(total for total, _ in shards)}
        for _, counts in shards:
            for source, kinds in counts.items():
                for kind, n in kinds.items():
                    out[f"skipped/{source}/{kind}"] = out.get(f"skipped/{source}/{kind}", 0) + int(n)
        return out

    # --- the loop -----------------------------------------------------------------------------------

    def _loader_state(self) -> Any:
        return copy.deepcopy(self.loader.get_state())

    def run(self) -> int:
        """Train up to `settings.steps`, resuming from a checkpoint in the workdir, then export the policy
        (`settings.export_hf`) unless stopped; returns 0 (also after a stop request, once saved)."""
        steps = self.settings.steps
        logger = None
        last = stopped = None
        with self.stop:
            try:
                start = last = self.restore()
                self._record_start(start)
                if multihost.is_main():
                    logger = MetricsLogger(
                        self.workdir,
                        total_steps=steps,
                        start_step=start,
                        tensorboard=self.settings.tensorboard,
                        progress=self.settings.progress,
                        desc=self.settings.desc,
                    )
                stopped = False
                for step in range(start, steps):
                    try:
                        # The loader state to save if the step is interrupted: before its batch is drawn.
                        self._resume_data_state = self._loader_state()
                        self.stop_point("between steps")
                        extra = self.before_step(step)
                        self._resume_data_state = self._loader_state()  # a curriculum epoch may rebuild the loader
                        metrics = {**self.step(step), **extra}
                    except StopRequested:
                        stopped = True
                        if last > start:
                            self.save(last, force=True, data_state=self._resume_data_state)
                        break
                    last = step + 1
                    try:
                        metrics.update(self.after_step(last))
                    except StopRequested:
                        stopped = True
                    metrics.update(self.skip_metrics())
                    if logger:
                        logger.log(last, metrics)
                    self.save(last, force=last == steps or stopped)
                    if stopped:
                        break
            finally:
                self.checkpoints.close()
                if logger:
                    logger.close()
        self.stopped = bool(stopped)
        if stopped:
            log.warning("stopped on request after step %d%s", last, "; its checkpoint is saved" if last else "")
        if multihost.is_main() and stopped is not None:
            run_record.record_event(self.workdir, "stopped" if stopped else "finished", step=last)
        if self.settings.export_hf and stopped is False:
            out = self.export()
            if out is not None:
                log.info("exported the policy of step %d to %s", last, out)
        return 0
