"""The GRPO trainer (GRPO, DAPO or GSPO through `LossConfig.name`) on the shared loop (`training.loop`).

One step: next batch of prompts (mixed tasks) -> rollout (jitted generate, host rewards, advantages)
-> reference (and, with `num_iterations` > 1, old-policy) log-probs (jitted) -> `num_iterations`
updates, each accumulated over `micro_batches` (jitted) -> metrics.jsonl -> checkpoint.

Determinism, which exact resume and mesh-independence rest on: the step's key is
fold_in(run key, step); the loader's state is checkpointed with the weights; the reference policy is
rebuilt from the same source (seed or checkpoint) on resume; nothing else carries state.
Resume, stop requests, metrics and export are the shared loop's (`training.loop.Trainer`). Stop points of
a step: after its batch is drawn and after its rollout (before any update).

Metrics: the reward statistics cover every process's rows (`gather_rollout`). With `TrainConfig.eval_every`,
every `eval_every` steps (and after the last) the policy is evaluated greedily on a held-out slice
(`training.live_eval`: the first `eval_samples` samples of each of `eval_sources`, which must share no
sample with the training sources) and the benchmark metrics join that step's record as
`eval/<dataset>/<task>/<metric>`.

With `TrainConfig.drop_solved`, each epoch from the second on starts by dropping the samples the policy
solves (Time-R1's filter, `rl.curriculum`); the epoch is part of the checkpoint, its set in `curriculum/`.

Workdir: `model/` (what rebuilds the model, written at the start; see `training.export`), `checkpoints/`,
`metrics.jsonl`, `operative_config.gin`, `run.json` and `run_history.jsonl` (`training.run_record`),
`curriculum/` (with `drop_solved`) and, after a run that reached `TrainConfig.steps`, `hf/`: the final policy
and tokenizer as a Hugging Face directory (`TrainConfig.export_hf`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tempr1_jax.difficulty import CurateConfig
from tempr1_jax.rl.curriculum import Curriculum
from tempr1_jax.rl.dynamic_sampling import refill_equal_groups
from tempr1_jax.rl.logprobs import completion_logprobs
from tempr1_jax.rl.losses import LossBatch, LossConfig, compute_loss
from tempr1_jax.rl.rollout import Rollout, RolloutConfig, reward_metrics, rollout
from tempr1_jax.training import multihost
from tempr1_jax.training.batches import local_rows, pad_inputs, place_inputs, place_rows, slice_inputs
from tempr1_jax.training.data_setup import LoaderConfig, prompt_builders, source_config
from tempr1_jax.training.live_eval import HeldOut
from tempr1_jax.training.loop import LoopSettings, Trainer
from tempr1_jax.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from tempr1_jax.training.train_step import TrainStep

log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. steps: rollout batches (each gives `num_iterations` optimizer updates).
    export_hf: at the end of the run (not after a SIGTERM), write the policy to `workdir/hf`.
    drop_solved: before each epoch from the second on, drop the training samples whose greedy IoU under the
      current policy exceeds `CurateConfig.solved_iou` (Time-R1; see `rl.curriculum`).
    epoch_steps: steps per epoch for `drop_solved`; None: one pass over the epoch's samples
      (samples // (LoaderConfig.batch_size * processes), so epochs shrink with the set).
    eval_every: every this many steps (and after the last), greedy evaluation of the policy on the first
      `eval_samples` samples of each of `eval_sources` (JSONL paths or dicts of SourceConfig fields, like
      DataConfig.sources; none may be a training sample), with at most `eval_max_new_tokens` new tokens
      (None: RolloutConfig.max_new_tokens); None: no evaluation during training.
    reference_dtype: the dtype the frozen reference copy of the policy is stored in (None: the params'
      dtype). "bfloat16" halves its memory; when `ModelSetup.dtype` is "bfloat16" every weight is cast to
      bfloat16 before use anyway, so its log-probs differ only where XLA keeps a float32 weight in
      float32 (excess precision): at the bfloat16 rounding level.
    cast_weights: cast the trained weights to `ModelSetup.dtype` once at the start of the loss, on their
      shards, so the FSDP all-gathers move compute-dtype weights (see `make_policy_loss`).
    decoder_chunks: in the update, each micro-batch's sequences run through the decoder in this many
      rematerialised chunks (the vision tower once): activation memory of 1 / decoder_chunks of the
      sequences for one more decoder forward pass; the same gradient (see `rl.logprobs`)."""

    steps: int = 100
    seed: int = 0
    num_iterations: int = 1
    micro_batches: int = 1
    tensorboard: bool = True
    progress: bool = True
    export_hf: bool = True
    drop_solved: bool = False
    epoch_steps: int | None = None
    eval_every: int | None = None
    eval_sources: Sequence[Any] = ()
    eval_samples: int = 64
    eval_max_new_tokens: int | None = None
    reference_dtype: str | None = None
    cast_weights: bool = False
    decoder_chunks: int = 1

    def __post_init__(self) -> None:
        if self.decoder_chunks < 1:
            raise ValueError(f"TrainConfig.decoder_chunks must be >= 1, got {self.decoder_chunks}")
        if self.reference_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(
                f"TrainConfig.reference_dtype must be None, 'float32' or 'bfloat16', got {self.reference_dtype!r}"
            )
        if self.steps < 0 or self.num_iterations < 1 or self.micro_batches < 1:
            raise ValueError("TrainConfig: steps >= 0, num_iterations >= 1 and micro_batches >= 1 are required")
        if self.epoch_steps is not None and self.epoch_steps < 1:
            raise ValueError(f"TrainConfig.epoch_steps must be >= 1 or None, got {self.epoch_steps}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"TrainConfig.eval_every must be >= 1 or None, got {self.eval_every}")


def make_policy_loss(
    graphdef: Any,
    loss_cfg: LossConfig,
    group_size: int,
    temperature: float = 1.0,
    weight_dtype: Any = None,
    decoder_chunks: int = 1,
):
    """The `TrainStep` loss of a policy split as (graphdef, params, frozen) on RL micro-batches.

    A micro-batch is a dict: `prompt` (ModelInputs, P rows), `completions` / `mask` [P * G, T],
    `advantages` / `weights` [P * G], `old_logp` / `ref_logp` [P * G, T] or None.
    `weight_dtype` (e.g. the compute dtype bfloat16): cast the trained weights to it once, on their
    shards, before the model runs (`TrainConfig.cast_weights`); every layer casts them to the compute
    dtype anyway, so only where the cast happens changes: the gathered weights are half the bytes.
    `decoder_chunks`: the micro-batch's sequences go through the decoder this many at a time
    (`completion_logprobs(row_chunks=...)`, `TrainConfig.decoder_chunks`).
    """

    def loss_fn(params, frozen, b):
        if weight_dtype is not None:
            params = cast_floating(params, weight_dtype)
        model = nnx.merge(graphdef, params, frozen)
        logp = completion_logprobs(
            model, b["prompt"], b["completions"], b["mask"], group_size, temperature, row_chunks=decoder_chunks
        )
        terms = compute_loss(
            LossBatch(logp, b["old_logp"], b["ref_logp"], b["mask"], b["advantages"], b["weights"]), loss_cfg
        )
        return terms.total, terms.count, terms.aux

    return loss_fn


def cast_floating(tree: Any, dtype: Any) -> Any:
    """`tree` with its floating-point leaves cast to `dtype` (jittable)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def reference_copy(params: Any, dtype: str | None = None) -> Any:
    """A copy of `params` on the same shardings, its floating-point leaves stored in `dtype` (None: as
    they are). Abstract `params` (ShapeDtypeStructs, as the planner has) give the abstract copy."""

    def one(x):
        if dtype is None or not jnp.issubdtype(x.dtype, jnp.floating):
            return x.copy()
        return x.astype(dtype)

    copy = jax.jit(lambda p: jax.tree.map(one, p), out_shardings=jax.tree.map(lambda x: x.sharding, params))
    abstract = all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    return copy.eval_shape(params) if abstract else copy(params)


class GRPOTrainer(Trainer):
    """Builds every part of a run from the gin configuration, then `run()` trains in `workdir`."""

    def __init__(
        self, workdir: str | pathlib.Path, config: TrainConfig | None = None, allow_changed_config: bool = False
    ) -> None:
        self.cfg = config or TrainConfig()
        self.rollout_cfg = RolloutConfig()
        self.loss_cfg = LossConfig()
        self.opt_cfg = OptimizerConfig()
        super().__init__(
            workdir,
            LoopSettings(self.cfg.steps, self.cfg.tensorboard, self.cfg.progress, self.cfg.export_hf),
            allow_changed_config,
        )
        self.held_out = (
            HeldOut(tuple(source_config(s) for s in self.cfg.eval_sources), self.cfg.eval_samples)
            if self.cfg.eval_every is not None
            else None
        )
        if self.held_out is not None:
            self.held_out.check_disjoint(self.sources)
        params = self.build_policy(self.rollout_cfg.think)
        # A separate copy: the policy's buffers are donated to the update.
        self.ref_params = reference_copy(params, self.cfg.reference_dtype) if self.loss_cfg.beta > 0 else None

        self.loader_cfg = LoaderConfig(sources=self.sources)
        if self.loader_cfg.batch_size % self.cfg.micro_batches:
            raise ValueError(
                f"TrainConfig.micro_batches={self.cfg.micro_batches} must divide "
                f"LoaderConfig.batch_size={self.loader_cfg.batch_size}"
            )
        self.curriculum = (
            Curriculum(self.workdir, self.loader_cfg, CurateConfig().solved_iou, self.cfg.epoch_steps)
            if self.cfg.drop_solved
            else None
        )
        self.loader = self._make_loader()
        total_updates = max(self.cfg.steps * self.cfg.num_iterations, 1)
        self.schedule = make_schedule(self.opt_cfg, total_updates)
        self.train_step = TrainStep(self._loss_fn, make_optimizer(self.opt_cfg, total_updates))
        self.state = self.train_step.init_state(params)
        self.rng = jax.random.key(self.cfg.seed)
        self._logprobs = jax.jit(self._logprobs_impl)
        self.eos_ids = self.model_config.eos_token_ids or (self.tokenizer.eos_token_id,)

    def definition(self) -> dict[str, Any]:
        """The shared loop's defining configs plus GRPO's: the trainer's, rollout (G, sampling), loss, optimizer."""
        return {
            **super().definition(),
            "TrainConfig": self.cfg,
            "RolloutConfig": self.rollout_cfg,
            "LossConfig": self.loss_cfg,
            "OptimizerConfig": self.opt_cfg,
        }

    # --- jitted pieces ---------------------------------------------------------------------------

    @property
    def _temperature(self) -> float:
        t = self.rollout_cfg.temperature
        return t if t > 0 else 1.0

    def _loss_fn(self, params, frozen, b):
        """The trainer's policy loss on one micro-batch (see `make_policy_loss`)."""
        loss = make_policy_loss(
            self.graphdef,
            self.loss_cfg,
            self.rollout_cfg.num_generations,
            self._temperature,
            jnp.dtype(self.model_setup.dtype) if self.cfg.cast_weights else None,
            self.cfg.decoder_chunks,
        )
        return loss(params, frozen, b)

    def _logprobs_impl(self, params, frozen, prompt, completions, mask):
        model = nnx.merge(self.graphdef, params, frozen)
        return completion_logprobs(
            model, prompt, completions, mask, self.rollout_cfg.num_generations, self._temperature
        )

    # --- data ---------------------------------------------------------------------------------------

    def _make_loader(self) -> Any:
        """The training loader: over the run's sources, or over the current curriculum epoch's set."""
        loader_cfg = self.loader_cfg if self.curriculum is None else self.curriculum.loader_config()
        return self.make_training_loader(loader_cfg, prompt_builders(self.rollout_cfg.think))

    def drop_solved(self, step: int) -> dict[str, Any]:
        """Start the next curriculum epoch at `step`: score the current set greedily with the current policy,
        drop the solved samples, rebuild the loader; returns the `curriculum_*` metrics (`curriculum_s`: time)."""
        t0 = time.perf_counter()
        policy = self.model()
        ious = self.curriculum.score(
            policy,
            self.tokenizer,
            self.model_config,
            prompt_builders(self.rollout_cfg.think),
            max_new_tokens=self.rollout_cfg.max_new_tokens,
            mesh=self.mesh,
            layout=self.layout,
            should_stop=self.stop,
        )
        metrics = self.curriculum.advance(step, ious)
        self.loader = self._make_loader()
        return {**metrics, "curriculum_s": time.perf_counter() - t0}

    # --- state ------------------------------------------------------------------------------------

    def before_step(self, step: int) -> dict[str, Any]:
        """Start the next curriculum epoch when one is due at `step`."""
        return self.drop_solved(step) if self.curriculum and self.curriculum.due(step) else {}

    def after_step(self, step: int) -> dict[str, Any]:
        """The held-out evaluation when due after `step` steps (every `eval_every` and after the last)."""
        if self.held_out is None or not (step % self.cfg.eval_every == 0 or step == self.cfg.steps):
            return {}
        t0 = time.perf_counter()
        metrics = self.held_out.evaluate(
            self.model(),
            self.tokenizer,
            self.loader_cfg,
            prompt_builders(self.rollout_cfg.think),
            max_new_tokens=self.cfg.eval_max_new_tokens or self.rollout_cfg.max_new_tokens,
            mesh=self.mesh,
            layout=self.layout,
            should_stop=self.stop,
        )
        return {**metrics, "eval_s": time.perf_counter() - t0}

    def checkpoint_arrays(self) -> dict[str, Any]:
        # The key replicated on the mesh: orbax cannot save a single-device array with several processes. Built
        # from each process's (equal) host copy: a device_put of a device array gives one orbax cannot read then.
        key = np.asarray(jax.random.key_data(self.rng))
        rng = jax.make_array_from_callback(key.shape, NamedSharding(self.mesh, PartitionSpec()), lambda i: key[i])
        return {"state": self.state, "rng": rng}

    def load_checkpoint_arrays(self, arrays: dict[str, Any]) -> None:
        super().load_checkpoint_arrays(arrays)
        self.rng = jax.random.wrap_key_data(arrays["rng"])

    def checkpoint_meta(self) -> dict[str, Any]:
        return self.curriculum.meta() if self.curriculum else {}

    def on_restore(self, meta: dict[str, Any]) -> None:
        if self.curriculum is not None and self.curriculum.restore(meta):
            self.loader = self._make_loader()
        elif self.curriculum is None and meta.get("curriculum_epoch", 1) > 1:
            log.warning(
                "the checkpoint was trained on a filtered set (TrainConfig.drop_solved); resuming on "
                "the full set, so the batches differ from the original run's"
            )

    # --- one step ---------------------------------------------------------------------------------

    def _microbatches(self, prompts, r: Rollout, ref_logp, old_logp) -> list[dict[str, Any]]:
        g = self.rollout_cfg.num_generations
        n_prompts = prompts.input_ids.shape[0]
        k = self.cfg.micro_batches
        weights = ~r.equal_groups if self.loss_cfg.filter_equal_groups else np.ones(len(r.tasks), bool)
        rows = {
            "completions": r.tokens,
            "mask": r.mask.astype(np.float32),
            "advantages": r.advantages,
            "weights": weights.astype(np.float32),
            "ref_logp": ref_logp,
            "old_logp": old_logp,
        }
        per = n_prompts // k
        out = []
        for i in range(k):
            lo, hi = i * per, (i + 1) * per
            mb = {name: None if v is None else place_rows(v[lo * g : hi * g], self.mesh) for name, v in rows.items()}
            mb["prompt"] = place_inputs(slice_inputs(prompts, lo, hi), self.mesh)
            out.append(mb)
        return out

    def _micro_logprobs(self, params, prompts, r: Rollout) -> np.ndarray:
        """Process-local log-probs [N, T], one jitted call per update micro-batch (the same memory bound)."""
        g = self.rollout_cfg.num_generations
        per = prompts.input_ids.shape[0] // self.cfg.micro_batches
        mask = r.mask.astype(np.float32)
        return np.concatenate(
            [
                local_rows(
                    self._logprobs(
                        params,
                        self.frozen,
                        place_inputs(slice_inputs(prompts, lo, lo + per), self.mesh),
                        place_rows(r.tokens[lo * g : (lo + per) * g], self.mesh),
                        place_rows(mask[lo * g : (lo + per) * g], self.mesh),
                    )
                )
                for lo in range(0, prompts.input_ids.shape[0], per)
            ]
        )

    def _refill(self, policy, host_prompts, samples, r: Rollout, key) -> tuple[Any, Rollout, dict[str, int]]:
        """DAPO's dynamic sampling (`rl.dynamic_sampling`): (prompts, rollout, `resample_*` metrics)."""

        def roll(inputs, rows, k):
            return rollout(
                policy,
                place_inputs(inputs, self.mesh),
                rows,
                self.tokenizer,
                self.rollout_cfg,
                k,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                mesh=self.mesh,
                layout=self.layout,
            )

        out = refill_equal_groups(
            host_prompts,
            samples,
            r,
            self.loader,
            roll,
            key,
            max_rounds=self.rollout_cfg.max_resample_rounds,
            pad_token_id=self.pad_id,
        )
        return out.prompts, out.rollout, out.metrics

    def step(self, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics."""
        t0 = time.perf_counter()
        batch = self.next_batch()
        host_prompts = batch["inputs"]
        # Each process's batch takes its own buckets; the processes' rows form one array of one shape.
        host_prompts = pad_inputs(host_prompts, multihost.common_shape(host_prompts.padded_shape), self.pad_id)
        prompts = place_inputs(host_prompts, self.mesh)
        key = jax.random.fold_in(self.rng, step)
        policy = self.model()
        r = rollout(
            policy,
            prompts,
            batch["samples"],
            self.tokenizer,
            self.rollout_cfg,
            key,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            mesh=self.mesh,
            layout=self.layout,
        )
        resample: dict[str, int] = {}
        if self.rollout_cfg.dynamic_sampling:
            host_prompts, r, resample = self._refill(policy, host_prompts, batch["samples"], r, key)
        t1 = time.perf_counter()
        self.stop_point("after the rollout")

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
        everyone = gather_rollout(r)
        generated = float(everyone.mask.sum())
        metrics = {
            "loss": sums["loss"] / it,
            "grad_norm": sums["grad_norm"] / it,
            "kl": sums["kl"] / tokens,
            "clip_fraction": sums["clipped"] / tokens,
            "learning_rate": float(self.schedule(max(int(self.state.step) - 1, 0))),
            "updates_applied": int(sums["applied"]),
            "updates_skipped_total": int(self.state.skipped),
            **reward_metrics(everyone),
            **resample,
            "tokens_per_s": generated / max(t3 - t0, 1e-9),
            "step_time_s": t3 - t0,
            "rollout_s": t1 - t0,
            "generate_s": r.generate_s,
            "reward_s": r.score_s,
            "logprob_s": t2 - t1,
            "update_s": t3 - t2,
        }
        return metrics


def gather_rollout(r: Rollout, gather: multihost.Gather = multihost.allgather) -> Rollout:
    """The rows of every process's rollout `r` (each process's share of the global batch), in process order.

    Every process must call it (collectives). A reward term a process lacks (`cls` when its rows have no
    task with a class reward) is 0 on its rows, as `compute_rewards` gives it within one batch.
    """
    terms = sorted(set().union(*multihost.gather_objects(sorted(r.rewards), gather)))
    rows = len(r.tasks)

    def stacked(x: np.ndarray) -> np.ndarray:
        out = np.asarray(gather(np.asarray(x)))
        return out.reshape(-1, *out.shape[2:])

    texts, tasks = zip(*multihost.gather_objects([r.texts, r.tasks], gather), strict=True)
    rewards = {t: stacked(r.rewards[t] if t in r.rewards else np.zeros(rows, np.float32)) for t in terms}
    return Rollout(
        stacked(r.tokens),
        stacked(r.mask),
        [x for part in texts for x in part],
        [x for part in tasks for x in part],
        rewards,
        stacked(r.advantages),
        stacked(r.equal_groups),
        r.generate_s,
        r.score_s,
    )


def train(workdir: str | pathlib.Path, allow_changed_config: bool = False) -> int:
    """Build a `GRPOTrainer` from the parsed gin config and run it in `workdir` (see `Trainer` for
    `allow_changed_config`)."""
    return GRPOTrainer(workdir, allow_changed_config=allow_changed_config).run()


__all__ = ["GRPOTrainer", "TrainConfig", "gather_rollout", "reference_copy", "train"]
