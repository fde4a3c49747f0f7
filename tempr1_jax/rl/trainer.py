"""The GRPO training loop (GRPO, DAPO or GSPO through `LossConfig.name`), configured with gin.

One step: next batch of prompts (mixed tasks) -> rollout (jitted generate, host rewards, advantages)
-> reference (and, with `num_iterations` > 1, old-policy) log-probs (jitted) -> `num_iterations`
updates, each accumulated over `micro_batches` (jitted) -> metrics.jsonl -> checkpoint.

Determinism, which exact resume and mesh-independence rest on: the step's key is
fold_in(run key, step); the loader's state is checkpointed with the weights; the reference policy is
rebuilt from the same source (seed or checkpoint) on resume; nothing else carries state.
On SIGTERM the current step finishes, a checkpoint is written and `run` returns 0.

With `TrainConfig.drop_solved`, each epoch from the second on starts by dropping the samples the policy
solves (Time-R1's filter, `rl.curriculum`); the epoch is part of the checkpoint, its set in `curriculum/`.

Workdir: `model/` (what rebuilds the model, written at the start; see `rl.export`), `checkpoints/`,
`metrics.jsonl`, `operative_config.gin`, `curriculum/` (with `drop_solved`) and, after a run that reached
`TrainConfig.steps`, `hf/`: the final policy and tokenizer as a Hugging Face directory (`TrainConfig.export_hf`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import time
from typing import Any

import gin
import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from data_pipeline.loader import make_loader
from models.qwen2_5_vl import sharding as sharding_lib
from tempr1_jax import multihost
from tempr1_jax.config import write_operative_config
from tempr1_jax.curate import CurateConfig
from tempr1_jax.rl.checkpointing import CHECKPOINTS_DIR, CheckpointConfig, CheckpointManager, abstract_like
from tempr1_jax.rl.curriculum import Curriculum
from tempr1_jax.rl.export import HF_DIR, export_hf, write_run_model
from tempr1_jax.rl.logprobs import completion_logprobs
from tempr1_jax.rl.losses import LossBatch, LossConfig, compute_loss
from tempr1_jax.rl.metrics_log import MetricsLogger
from tempr1_jax.rl.optimizer import OptimizerConfig, make_optimizer, make_schedule
from tempr1_jax.rl.rollout import Rollout, RolloutConfig, reward_metrics, rollout
from tempr1_jax.rl.setup import (DataConfig, LoaderConfig, MeshConfig, ModelSetup, build_model, local_rows,
                                 pad_inputs, place_inputs, place_rows, prompt_builders, resolve_sources,
                                 slice_inputs, trainable_filter)
from tempr1_jax.rl.train_step import TrainStep

log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. steps: rollout batches (each gives `num_iterations` optimizer updates).
    export_hf: at the end of the run (not after a SIGTERM), write the policy to `workdir/hf`.
    drop_solved: before each epoch from the second on, drop the training samples whose greedy IoU under the
      current policy exceeds `CurateConfig.solved_iou` (Time-R1; see `rl.curriculum`).
    epoch_steps: steps per epoch for `drop_solved`; None: one pass over the epoch's samples
      (samples // (LoaderConfig.batch_size * processes), so epochs shrink with the set)."""

    steps: int = 100
    seed: int = 0
    num_iterations: int = 1
    micro_batches: int = 1
    tensorboard: bool = True
    progress: bool = True
    export_hf: bool = True
    drop_solved: bool = False
    epoch_steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 0 or self.num_iterations < 1 or self.micro_batches < 1:
            raise ValueError("TrainConfig: steps >= 0, num_iterations >= 1 and micro_batches >= 1 are required")
        if self.epoch_steps is not None and self.epoch_steps < 1:
            raise ValueError(f"TrainConfig.epoch_steps must be >= 1 or None, got {self.epoch_steps}")


def make_policy_loss(graphdef: Any, loss_cfg: LossConfig, group_size: int, temperature: float = 1.0):
    """The `TrainStep` loss of a policy split as (graphdef, params, frozen) on RL micro-batches.

    A micro-batch is a dict: `prompt` (ModelInputs, P rows), `completions` / `mask` [P * G, T],
    `advantages` / `weights` [P * G], `old_logp` / `ref_logp` [P * G, T] or None.
    """
    def loss_fn(params, frozen, b):
        model = nnx.merge(graphdef, params, frozen)
        logp = completion_logprobs(model, b["prompt"], b["completions"], b["mask"], group_size, temperature)
        terms = compute_loss(LossBatch(logp, b["old_logp"], b["ref_logp"], b["mask"], b["advantages"],
                                       b["weights"]), loss_cfg)
        return terms.total, terms.count, terms.aux

    return loss_fn


class _StopFlag:
    """Set by SIGTERM; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: finishing the current step, then saving a checkpoint")
        self.requested = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class GRPOTrainer:
    """Builds every part of a run from the gin configuration, then `run()` trains in `workdir`."""

    def __init__(self, workdir: str | pathlib.Path, config: TrainConfig | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = config or TrainConfig()
        self.rollout_cfg = RolloutConfig()
        self.loss_cfg = LossConfig()
        mesh_cfg = MeshConfig()
        setup = ModelSetup()
        data_cfg = DataConfig()
        self.mesh = mesh_cfg.make()
        self.layout = mesh_cfg.layout

        sources = resolve_sources(data_cfg, self.workdir)
        model, self.tokenizer = build_model(setup, self.workdir, sources, self.rollout_cfg.think)
        if jax.process_index() == 0:
            write_run_model(self.workdir, model, self.tokenizer, setup)
        self.model_config = model.config
        sharding_lib.shard_model(model, self.mesh, mesh_cfg.layout)
        self.graphdef, params, self.frozen = nnx.split(model, trainable_filter(setup.freeze_vision), ...)
        # A separate copy: the policy's buffers are donated to the update.
        self.ref_params = jax.tree.map(lambda x: x.copy(), params) if self.loss_cfg.beta > 0 else None

        self.loader_cfg = LoaderConfig(sources=sources)
        if self.loader_cfg.batch_size % self.cfg.micro_batches:
            raise ValueError(f"TrainConfig.micro_batches={self.cfg.micro_batches} must divide "
                             f"LoaderConfig.batch_size={self.loader_cfg.batch_size}")
        self.curriculum = (Curriculum(self.workdir, self.loader_cfg, CurateConfig().solved_iou, self.cfg.epoch_steps)
                           if self.cfg.drop_solved else None)
        self.loader = self._make_loader()
        total_updates = max(self.cfg.steps * self.cfg.num_iterations, 1)
        opt_cfg = OptimizerConfig()
        self.schedule = make_schedule(opt_cfg, total_updates)
        self.train_step = TrainStep(self._loss_fn, make_optimizer(opt_cfg, total_updates))
        self.state = self.train_step.init_state(params)
        self.rng = jax.random.key(self.cfg.seed)
        self.checkpoints = CheckpointManager(self.workdir / CHECKPOINTS_DIR, CheckpointConfig())
        self._logprobs = jax.jit(self._logprobs_impl)
        self.eos_ids = self.model_config.eos_token_ids or (self.tokenizer.eos_token_id,)
        self.pad_id = int(self.tokenizer.pad_token_id)

    # --- jitted pieces ---------------------------------------------------------------------------

    @property
    def _temperature(self) -> float:
        t = self.rollout_cfg.temperature
        return t if t > 0 else 1.0

    def _loss_fn(self, params, frozen, b):
        """The trainer's policy loss on one micro-batch (see `make_policy_loss`)."""
        loss = make_policy_loss(self.graphdef, self.loss_cfg, self.rollout_cfg.num_generations, self._temperature)
        return loss(params, frozen, b)

    def _logprobs_impl(self, params, frozen, prompt, completions, mask):
        model = nnx.merge(self.graphdef, params, frozen)
        return completion_logprobs(model, prompt, completions, mask, self.rollout_cfg.num_generations,
                                   self._temperature)

    # --- data ---------------------------------------------------------------------------------------

    def _make_loader(self) -> Any:
        """The training loader: over the run's sources, or over the current curriculum epoch's set."""
        loader_cfg = self.loader_cfg if self.curriculum is None else self.curriculum.loader_config()
        return make_loader(loader_cfg, self.tokenizer, self.model_config, prompt_builders(self.rollout_cfg.think))

    def drop_solved(self, step: int) -> dict[str, Any]:
        """Start the next curriculum epoch at `step`: score the current set greedily with the current policy,
        drop the solved samples, rebuild the loader; returns the `curriculum_*` metrics (`curriculum_s`: time)."""
        t0 = time.perf_counter()
        policy = nnx.merge(self.graphdef, self.state.params, self.frozen)
        ious = self.curriculum.score(policy, self.tokenizer, self.model_config,
                                     prompt_builders(self.rollout_cfg.think),
                                     max_new_tokens=self.rollout_cfg.max_new_tokens, mesh=self.mesh,
                                     layout=self.layout)
        metrics = self.curriculum.advance(step, ious)
        self.loader = self._make_loader()
        return {**metrics, "curriculum_s": time.perf_counter() - t0}

    # --- state ------------------------------------------------------------------------------------

    def _arrays(self) -> dict[str, Any]:
        # The key replicated on the mesh: orbax cannot save a single-device array with several processes.
        rng = jax.device_put(jax.random.key_data(self.rng), NamedSharding(self.mesh, PartitionSpec()))
        return {"state": self.state, "rng": rng}

    def restore(self) -> int:
        """Continue from the newest checkpoint in the workdir, if any; returns the step to start from."""
        step = self.checkpoints.latest_step()
        if step is None:
            return 0
        arrays, data_state, meta = self.checkpoints.restore(abstract_like(self._arrays()), step)
        self.state = self.train_step.place_state(arrays["state"], arrays["state"].params)
        self.rng = jax.random.wrap_key_data(arrays["rng"])
        if self.curriculum is not None and self.curriculum.restore(meta):
            self.loader = self._make_loader()
        elif self.curriculum is None and meta.get("curriculum_epoch", 1) > 1:
            log.warning("the checkpoint was trained on a filtered set (TrainConfig.drop_solved); resuming on "
                        "the full set, so the batches differ from the original run's")
        self.loader.set_state(data_state)
        log.info("resumed from the checkpoint of step %d", step)
        return int(step)

    def save(self, step: int, force: bool = False) -> bool:
        """Checkpoint weights, optimizer, counters, RNG and loader state (async; on the interval or forced)."""
        return self.checkpoints.save(step, self._arrays(), data_state=self.loader.get_state(),
                                     meta={"step": step, **(self.curriculum.meta() if self.curriculum else {})},
                                     force=force)

    def export(self, directory: str | pathlib.Path | None = None) -> pathlib.Path | None:
        """Write the current policy and the tokenizer as an HF directory (default `workdir/hf`); returns it.

        Skipped (None) with several processes, whose parameters are not all addressable from one host:
        `tempr1 convert orbax-to-hf WORKDIR OUT` exports the run's last checkpoint instead.
        """
        if jax.process_count() > 1:
            log.warning("HF export skipped with %d processes; run `tempr1 convert orbax-to-hf %s OUT`",
                        jax.process_count(), self.workdir)
            return None
        policy = nnx.merge(self.graphdef, self.state.params, self.frozen)
        return export_hf(policy, self.tokenizer, directory or self.workdir / HF_DIR)

    # --- one step ---------------------------------------------------------------------------------

    def _microbatches(self, prompts, r: Rollout, ref_logp, old_logp) -> list[dict[str, Any]]:
        g = self.rollout_cfg.num_generations
        n_prompts = prompts.input_ids.shape[0]
        k = self.cfg.micro_batches
        weights = (~r.equal_groups if self.loss_cfg.filter_equal_groups else np.ones(len(r.tasks), bool))
        rows = {"completions": r.tokens, "mask": r.mask.astype(np.float32), "advantages": r.advantages,
                "weights": weights.astype(np.float32), "ref_logp": ref_logp, "old_logp": old_logp}
        per = n_prompts // k
        out = []
        for i in range(k):
            lo, hi = i * per, (i + 1) * per
            mb = {name: None if v is None else place_rows(v[lo * g:hi * g], self.mesh) for name, v in rows.items()}
            mb["prompt"] = place_inputs(slice_inputs(prompts, lo, hi), self.mesh)
            out.append(mb)
        return out

    def _micro_logprobs(self, params, prompts, r: Rollout) -> np.ndarray:
        """Process-local log-probs [N, T], one jitted call per update micro-batch (the same memory bound)."""
        g = self.rollout_cfg.num_generations
        per = prompts.input_ids.shape[0] // self.cfg.micro_batches
        mask = r.mask.astype(np.float32)
        return np.concatenate([local_rows(self._logprobs(
            params, self.frozen, place_inputs(slice_inputs(prompts, lo, lo + per), self.mesh),
            place_rows(r.tokens[lo * g:(lo + per) * g], self.mesh), place_rows(mask[lo * g:(lo + per) * g], self.mesh)))
            for lo in range(0, prompts.input_ids.shape[0], per)])

    def step(self, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics."""
        t0 = time.perf_counter()
        batch = next(self.loader)
        host_prompts = batch["inputs"]
        # Each process's batch takes its own buckets; the processes' rows form one array of one shape.
        host_prompts = pad_inputs(host_prompts, multihost.common_shape(host_prompts.padded_shape), self.pad_id)
        prompts = place_inputs(host_prompts, self.mesh)
        key = jax.random.fold_in(self.rng, step)
        policy = nnx.merge(self.graphdef, self.state.params, self.frozen)
        r = rollout(policy, prompts, batch["samples"], self.tokenizer, self.rollout_cfg, key,
                    eos_token_id=self.eos_ids, pad_token_id=self.pad_id, mesh=self.mesh, layout=self.layout)
        t1 = time.perf_counter()

        ref_logp = old_logp = None
        if self.ref_params is not None:
            ref_logp = self._micro_logprobs(self.ref_params, host_prompts, r)
        if self.cfg.num_iterations > 1:
            old_logp = self._micro_logprobs(self.state.params, host_prompts, r)
        t2 = time.perf_counter()

        micro = self._microbatches(host_prompts, r, ref_logp, old_logp)
        sums: dict[str, float] = {}
        for _ in range(self.cfg.num_iterations):
            self.state, m = self.train_step(self.state, self.frozen, micro)
            for name, value in jax.device_get(m).items():
                sums[name] = sums.get(name, 0.0) + float(value)
        t3 = time.perf_counter()

        it = self.cfg.num_iterations
        tokens = max(sums["tokens"], 1.0)
        generated = float(r.mask.sum())
        metrics = {
            "loss": sums["loss"] / it,
            "grad_norm": sums["grad_norm"] / it,
            "kl": sums["kl"] / tokens,
            "clip_fraction": sums["clipped"] / tokens,
            "learning_rate": float(self.schedule(max(int(self.state.step) - 1, 0))),
            "updates_applied": int(sums["applied"]),
            "updates_skipped_total": int(self.state.skipped),
            **reward_metrics(r),
            "tokens_per_s": generated / max(t3 - t0, 1e-9),
            "step_time_s": t3 - t0,
            "rollout_s": t1 - t0,
            "generate_s": r.generate_s,
            "reward_s": r.score_s,
            "logprob_s": t2 - t1,
            "update_s": t3 - t2,
        }
        return metrics

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Train up to `TrainConfig.steps`, resuming from a checkpoint in the workdir, then export the
        policy (`TrainConfig.export_hf`) unless stopped by SIGTERM; returns 0."""
        start = self.restore()
        write_operative_config(self.workdir)
        # One process writes the shared metrics files (its reward metrics cover its own rows).
        logger = (MetricsLogger(self.workdir, total_steps=self.cfg.steps, start_step=start,
                                tensorboard=self.cfg.tensorboard, progress=self.cfg.progress)
                  if multihost.is_main() else None)
        last = start
        stopped = False
        try:
            with _StopFlag() as stop:
                for step in range(start, self.cfg.steps):
                    dropped = self.drop_solved(step) if self.curriculum and self.curriculum.due(step) else {}
                    metrics = {**self.step(step), **dropped}
                    last = step + 1
                    if logger:
                        logger.log(last, metrics)
                    final = last == self.cfg.steps or stop.requested
                    self.save(last, force=final)
                    if stop.requested:
                        log.warning("stopped by SIGTERM after step %d; checkpoint saved", last)
                        stopped = True
                        break
        finally:
            self.checkpoints.close()
            if logger:
                logger.close()
        if self.cfg.export_hf and not stopped:
            out = self.export()
            if out is not None:
                log.info("exported the policy of step %d to %s", last, out)
        return 0


def train(workdir: str | pathlib.Path) -> int:
    """Build a `GRPOTrainer` from the parsed gin config and run it in `workdir`."""
    return GRPOTrainer(workdir).run()


__all__ = ["GRPOTrainer", "TrainConfig", "train"]
