"""Supervised cold start: next-token cross-entropy on each sample's reference answer.

Every row is prompt + `Task.reference_answer(sample)` + eos (the loader's SFT mode); the loss covers
only the answer and eos tokens (`completion_mask`). The run reuses the GRPO trainer's parts: model and
data setup (`rl.setup`), the jitted accumulate/apply update (`rl.train_step.TrainStep`, so micro-batches
give the full batch's gradient and a non-finite loss is skipped), orbax checkpoints with the loader
state (`rl.checkpointing`, resumed from the workdir) and `metrics.jsonl` (`rl.metrics_log`).

gin: the same `ModelSetup`, `DataConfig`, `LoaderConfig`, `MeshConfig`, `CheckpointConfig` as
`tempr1 train`; `SFTConfig` for the loop; the optimizer is `OptimizerConfig` in the gin scope `sft`
(`sft/OptimizerConfig.learning_rate = 1e-5`), falling back to the unscoped values.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipeline.loader import make_loader
from models.qwen2_5_vl import sharding as sharding_lib
from tempr1_jax import multihost, tasks as tasks_lib
from tempr1_jax.config import write_operative_config
from tempr1_jax.rl import setup
from tempr1_jax.rl.checkpointing import CheckpointConfig, CheckpointManager, abstract_like
from tempr1_jax.rl.export import export_hf
from tempr1_jax.rl.metrics_log import MetricsLogger
from tempr1_jax.rl.optimizer import OptimizerConfig, make_optimizer, make_schedule
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.rl.train_step import TrainStep

EXPORT_DIR = "hf"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """SFT loop settings.

    steps: optimizer updates; micro_batches: gradient accumulation (must divide the loader's batch size); chunk: positions per
    LM-head chunk in the loss; export: write an HF checkpoint (+ tokenizer) to `workdir/hf` at the end.
    """

    steps: int = 100
    micro_batches: int = 1
    chunk: int = 256
    export: bool = True
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0 or self.micro_batches < 1 or self.chunk < 1:
            raise ValueError("SFTConfig: steps >= 0, micro_batches >= 1 and chunk >= 1 are required")


def reference_answer(task: str, think: bool, sample: Mapping[str, Any]) -> str:
    """The SFT target of `sample` (picklable through functools.partial for loader workers)."""
    return tasks_lib.get_task(task).reference_answer(sample, think=think)


def answer_builders(think: bool) -> dict[str, Any]:
    """Task name -> `sample -> reference answer` for every registered task."""
    return {name: functools.partial(reference_answer, name, think) for name in tasks_lib.TASKS}


def answer_nll(model: Any, inputs: Any, completion_mask: jax.Array, chunk: int = 256
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(summed NLL, answer-token count, correctly predicted tokens) of the masked tokens of `inputs`.

    Position i predicts token i + 1; only targets with `completion_mask` 1 count. The LM head runs
    on `chunk` positions at a time so the [B, L, V] logits never exist at once.
    """
    hidden = model.hidden_states(inputs)[:, :-1]
    targets = jnp.asarray(inputs.input_ids, jnp.int32)[:, 1:]
    mask = jnp.asarray(completion_mask, jnp.float32)[:, 1:]
    nll = jnp.zeros((), jnp.float32)
    correct = jnp.zeros((), jnp.float32)
    for start in range(0, hidden.shape[1], chunk):
        h, t, m = hidden[:, start:start + chunk], targets[:, start:start + chunk], mask[:, start:start + chunk]
        logp = jax.nn.log_softmax(model.logits_from_hidden(h), axis=-1)
        picked = jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
        nll = nll - jnp.sum(picked * m)
        correct = correct + jnp.sum((jnp.argmax(logp, axis=-1) == t) * m)
    return nll, jnp.sum(mask), correct


class SFTTrainer:
    """Builds the model, loader, optimizer and checkpoints from gin; `run()` trains in `workdir`."""

    def __init__(self, workdir: str | pathlib.Path, config: SFTConfig | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = config or SFTConfig()
        mesh_cfg = setup.MeshConfig()
        model_setup = setup.ModelSetup()
        data_cfg = setup.DataConfig()
        # Prompts and reference answers follow the RL template (with or without a <think> block).
        think = RolloutConfig().think
        self.mesh = mesh_cfg.make()
        sources = setup.resolve_sources(data_cfg, self.workdir)
        model, self.tokenizer = setup.build_model(model_setup, self.workdir, sources, think)
        sharding_lib.shard_model(model, self.mesh, mesh_cfg.layout)
        self.graphdef, params, self.frozen = nnx.split(model, setup.trainable_filter(model_setup.freeze_vision), ...)
        loader_cfg = setup.LoaderConfig(sources=sources)
        self.padding_side = loader_cfg.padding_side
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.loader = make_loader(loader_cfg, self.tokenizer, model.config, setup.prompt_builders(think),
                                  answer_builders(think))
        with gin.config_scope("sft"):
            opt_cfg = OptimizerConfig()
        total = max(self.cfg.steps, 1)
        self.schedule = make_schedule(opt_cfg, total)
        self.train_step = TrainStep(self._loss_fn, make_optimizer(opt_cfg, total))
        self.state = self.train_step.init_state(params)
        self.checkpoints = CheckpointManager(self.workdir / "checkpoints", CheckpointConfig())

    def _loss_fn(self, params, frozen, batch):
        model = nnx.merge(self.graphdef, params, frozen)
        nll, count, correct = answer_nll(model, batch["inputs"], batch["completion_mask"], self.cfg.chunk)
        return nll, count, {"tokens": count, "correct": correct}

    def model(self) -> Any:
        """The current policy as a model (params merged back into the graph)."""
        return nnx.merge(self.graphdef, self.state.params, self.frozen)

    def restore(self) -> int:
        """Continue from the newest checkpoint in the workdir, if any; returns the next step."""
        step = self.checkpoints.latest_step()
        if step is None:
            return 0
        arrays, data_state, _ = self.checkpoints.restore(abstract_like({"state": self.state}), step)
        self.state = self.train_step.place_state(arrays["state"], arrays["state"].params)
        self.loader.set_state(data_state)
        return int(step)

    def _common_shape(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch padded to the largest (rows, tokens, patches, block layout sizes) of all processes (each
        picks its own buckets; their rows form one global array). Extra rows, if any, carry no answer tokens."""
        inputs, mask = batch["inputs"], batch["completion_mask"]
        shape = multihost.common_shape(inputs.padded_shape)
        side = self.padding_side
        padded = setup.pad_inputs(inputs, shape, self.pad_id, padding_side=side)
        extra = shape[1] - mask.shape[1]
        mask = np.pad(mask, ((0, shape[0] - mask.shape[0]), (extra, 0) if side == "left" else (0, extra)))
        return {**batch, "inputs": padded, "completion_mask": mask}

    def _microbatches(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = batch["inputs"].input_ids.shape[0]
        k = self.cfg.micro_batches
        if rows % k:
            raise ValueError(f"SFTConfig.micro_batches={k} must divide the batch size {rows}")
        per = rows // k
        return [{"inputs": setup.place_inputs(setup.slice_inputs(batch["inputs"], i * per, (i + 1) * per), self.mesh),
                 "completion_mask": setup.place_rows(batch["completion_mask"][i * per:(i + 1) * per], self.mesh)}
                for i in range(k)]

    def step(self, step: int) -> dict[str, float]:
        """One update on the next batch; returns its metrics."""
        t0 = time.perf_counter()
        batch = self._common_shape(next(self.loader))
        self.state, m = self.train_step(self.state, self.frozen, self._microbatches(batch))
        m = jax.device_get(m)
        tokens = max(float(m["tokens"]), 1.0)
        dt = time.perf_counter() - t0
        return {"loss": float(m["loss"]), "token_accuracy": float(m["correct"]) / tokens,
                "grad_norm": float(m["grad_norm"]), "learning_rate": float(self.schedule(step)),
                "answer_tokens": int(tokens), "updates_skipped_total": int(self.state.skipped),
                "tokens_per_s": tokens / max(dt, 1e-9), "step_time_s": dt}

    def export(self, directory: str | pathlib.Path | None = None) -> pathlib.Path:
        """Write the current model (HF safetensors + config) and the tokenizer to `directory`."""
        return export_hf(self.model(), self.tokenizer, directory or self.workdir / EXPORT_DIR)

    def run(self) -> int:
        """Train up to `SFTConfig.steps` (resuming from the workdir), then export; returns 0."""
        start = self.restore()
        write_operative_config(self.workdir)
        logger = MetricsLogger(self.workdir, total_steps=self.cfg.steps, start_step=start,
                               tensorboard=self.cfg.tensorboard, progress=self.cfg.progress, desc="sft")
        try:
            for step in range(start, self.cfg.steps):
                logger.log(step + 1, self.step(step))
                self.checkpoints.save(step + 1, {"state": self.state}, data_state=self.loader.get_state(),
                                      meta={"step": step + 1}, force=step + 1 == self.cfg.steps)
        finally:
            self.checkpoints.close()
            logger.close()
        if self.cfg.export:
            self.export()
        return 0


def sft(workdir: str | pathlib.Path, steps: int | None = None) -> int:
    """Build an `SFTTrainer` from the parsed gin config (`steps` overrides SFTConfig.steps) and run it."""
    cfg = SFTConfig()
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    return SFTTrainer(workdir, cfg).run()
