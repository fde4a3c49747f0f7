"""Supervised cold start: next-token cross-entropy on each sample's reference answer.

Every row is prompt + `Task.reference_answer(sample)` + eos (the loader's SFT mode); the loss covers
only the answer and eos tokens (`completion_mask`), and only the positions that predict them go through
the LM head (`answer_window`: a prompt of thousands of video tokens adds no [L, vocab] logits). The run
reuses the GRPO trainer's parts: model and data setup, the jitted accumulate/apply update
(`training.train_step.TrainStep`, so micro-batches give the full batch's gradient and a non-finite loss
is skipped) and the shared loop (`training.loop`: orbax checkpoints with the loader state, exact resume,
SIGTERM, `metrics.jsonl` from process 0, export).

gin: the same `ModelSetup`, `DataConfig`, `LoaderConfig`, `MeshConfig`, `CheckpointConfig` as
`tempr1 train`; `SFTConfig` for the loop; the optimizer is `OptimizerConfig` in the gin scope `sft`
(`sft/OptimizerConfig.learning_rate = 1e-5`), falling back to the unscoped values.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.training import multihost
from tempr1_jax.training.batches import pad_inputs, place_inputs, place_rows, slice_inputs
from tempr1_jax.training.data_setup import LoaderConfig, prompt_builders
from tempr1_jax.training.loop import LoopSettings, Trainer
from tempr1_jax.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from tempr1_jax.training.train_step import TrainStep


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """SFT loop settings.

    steps: optimizer updates; micro_batches: gradient accumulation (must divide the loader's batch size); chunk: positions per
    LM-head chunk in the loss; export: write an HF checkpoint (+ tokenizer) to `workdir/hf` at the end.
    loss_mean: "token" averages the NLL over all answer tokens of the batch (a sample weighs as much as its
    answer is long); "sample" averages each sample's answer tokens first, then the samples (a two-number
    answer weighs as much as a list of eight).
    """

    steps: int = 100
    micro_batches: int = 1
    chunk: int = 256
    export: bool = True
    tensorboard: bool = True
    progress: bool = True
    loss_mean: str = "token"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.micro_batches < 1 or self.chunk < 1:
            raise ValueError("SFTConfig: steps >= 0, micro_batches >= 1 and chunk >= 1 are required")
        if self.loss_mean not in ("token", "sample"):
            raise ValueError(f"SFTConfig.loss_mean: 'token' or 'sample', got {self.loss_mean!r}")


def reference_answer(task: str, think: bool, sample: Mapping[str, Any]) -> str:
    """The SFT target of `sample` (picklable through functools.partial for loader workers)."""
    return tasks_lib.get_task(task).reference_answer(sample, think=think)


def answer_builders(think: bool) -> dict[str, Any]:
    """Task name -> `sample -> reference answer` for every registered task."""
    return {name: functools.partial(reference_answer, name, think) for name in tasks_lib.TASKS}


def _answer_spans(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) answer position of each row of the boolean `mask` (1 and 0 for a row without one)."""
    length = mask.shape[1]
    if length < 2 or mask[:, 0].any():
        raise ValueError("a completion mask needs at least one prompt token before the answer")
    has = mask.any(axis=1)
    return np.where(has, mask.argmax(axis=1), 1), np.where(has, length - 1 - mask[:, ::-1].argmax(axis=1), 0)


def answer_width(completion_mask: np.ndarray, multiple: int = 64) -> int:
    """The window width `answer_window` picks: the longest row's span rounded up to a multiple of
    `multiple`, at most L - 1 (each width compiles once)."""
    first, last = _answer_spans(np.asarray(completion_mask) != 0)
    span = int(np.max(last - first + 1, initial=1))
    return min(-(-span // multiple) * multiple, np.shape(completion_mask)[1] - 1)


def answer_window(
    completion_mask: np.ndarray, multiple: int = 64, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(starts [B] int32, window mask [B, W] float32): the positions that predict answer tokens.

    Position `starts[b] + j` of row b predicts token `starts[b] + j + 1`, which counts when
    `window[b, j]` is 1. W is `width` if given (at most L - 1), else `answer_width(completion_mask,
    multiple)`. Rows without answer tokens get an all-zero window.
    """
    mask = np.asarray(completion_mask) != 0
    length = mask.shape[1]
    first, last = _answer_spans(mask)
    span = int(np.max(last - first + 1, initial=1))
    if width is None:
        width = answer_width(mask, multiple)
    elif width < span:
        raise ValueError(f"answer window width {width} is shorter than an answer span of {span} tokens")
    width = min(width, length - 1)
    starts = np.minimum(first - 1, length - 1 - width).astype(np.int32)
    index = starts[:, None] + 1 + np.arange(width)
    window = np.take_along_axis(mask, index, axis=1).astype(np.float32)
    return starts, window


def answer_nll(
    model: Any, inputs: Any, starts: jax.Array, window: jax.Array, chunk: int = 256
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(weighted NLL sum, weight sum, correctly predicted tokens) of the answer tokens of `inputs`.

    `starts` and `window` come from `answer_window(completion_mask)`: only the W positions of each row
    that predict its answer go through the LM head (in `chunk` positions at a time), not the prompt's.
    A position counts with its `window` value as weight (1 for every answer token: the sums are the
    summed NLL and the token count; `sample_weights` makes them per-sample means).
    """
    hidden = model.hidden_states(inputs)
    width = window.shape[1]
    index = jnp.asarray(starts, jnp.int32)[:, None] + jnp.arange(width, dtype=jnp.int32)
    hidden = jnp.take_along_axis(hidden, index[..., None], axis=1)
    targets = jnp.take_along_axis(jnp.asarray(inputs.input_ids, jnp.int32), index + 1, axis=1)
    mask = jnp.asarray(window, jnp.float32)
    nll = jnp.zeros((), jnp.float32)
    correct = jnp.zeros((), jnp.float32)
    for start in range(0, width, chunk):
        h, t, m = hidden[:, start : start + chunk], targets[:, start : start + chunk], mask[:, start : start + chunk]
        logp = jax.nn.log_softmax(model.logits_from_hidden(h), axis=-1)
        picked = jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
        nll = nll - jnp.sum(picked * m)
        correct = correct + jnp.sum((jnp.argmax(logp, axis=-1) == t) * (m > 0))
    return nll, jnp.sum(mask), correct


def sample_weights(window: jax.Array) -> jax.Array:
    """`window` (from `answer_window`) with each row's answer tokens weighing 1 / its answer length, so that
    `answer_nll`'s sums are the sum of per-sample mean NLLs and the number of samples with an answer."""
    window = jnp.asarray(window, jnp.float32)
    return window / jnp.maximum(window.sum(axis=1, keepdims=True), 1.0)


def check_sft_scope() -> None:
    """Refuse gin bindings in the scope `sft` for anything but `OptimizerConfig`: SFT builds only its
    optimizer in that scope, so e.g. `sft/LoaderConfig.batch_size` would be ignored without a word."""
    scoped = {line.partition(".")[0] for line in gin.config_str().splitlines() if line.startswith("sft/")}
    ignored = sorted(scoped - {"sft/OptimizerConfig"})
    if ignored:
        raise ValueError(
            f"gin: the scope 'sft' applies to OptimizerConfig only; bindings of {', '.join(ignored)} would be "
            "ignored: bind them without the scope (they are SFT's settings in `tempr1 sft`)"
        )


class SFTTrainer(Trainer):
    """Builds the model, loader, optimizer and checkpoints from gin; `run()` trains in `workdir`."""

    def __init__(
        self, workdir: str | pathlib.Path, config: SFTConfig | None = None, allow_changed_config: bool = False
    ) -> None:
        self.cfg = config or SFTConfig()
        check_sft_scope()
        # Prompts and reference answers follow the RL template (with or without a <think> block).
        self.think = RolloutConfig().think
        with gin.config_scope("sft"):
            self.opt_cfg = OptimizerConfig()
        super().__init__(
            workdir,
            LoopSettings(self.cfg.steps, self.cfg.tensorboard, self.cfg.progress, self.cfg.export, desc="sft"),
            allow_changed_config,
        )
        params = self.build_policy(self.think)
        loader_cfg = LoaderConfig(sources=self.sources)
        self.padding_side = loader_cfg.padding_side
        self.loader = self.make_training_loader(loader_cfg, prompt_builders(self.think), answer_builders(self.think))
        total = max(self.cfg.steps, 1)
        self.schedule = make_schedule(self.opt_cfg, total)
        self.train_step = TrainStep(self._loss_fn, make_optimizer(self.opt_cfg, total))
        self.state = self.train_step.init_state(params)

    def definition(self) -> dict[str, Any]:
        """The shared loop's defining configs plus SFT's: its loop config, the template and its optimizer."""
        return {**super().definition(), "SFTConfig": self.cfg, "think": self.think, "OptimizerConfig": self.opt_cfg}

    def _loss_fn(self, params, frozen, batch):
        model = nnx.merge(self.graphdef, params, frozen)
        window = batch["window"]
        if self.cfg.loss_mean == "sample":
            window = sample_weights(window)
        nll, weight, correct = answer_nll(model, batch["inputs"], batch["starts"], window, self.cfg.chunk)
        return nll, weight, {"tokens": jnp.sum(window > 0), "correct": correct}

    def _common_shape(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch padded to the largest (rows, tokens, patches, block layout sizes, answer window) of all
        processes (each picks its own buckets; their rows form one global array), with the answer window
        (`answer_window`) the loss reads. Extra rows, if any, carry no answer tokens."""
        inputs, mask = batch["inputs"], batch["completion_mask"]
        *shape, width = multihost.common_shape((*inputs.padded_shape, answer_width(mask)))
        side = self.padding_side
        padded = pad_inputs(inputs, tuple(shape), self.pad_id, padding_side=side)
        extra = shape[1] - mask.shape[1]
        mask = np.pad(mask, ((0, shape[0] - mask.shape[0]), (extra, 0) if side == "left" else (0, extra)))
        starts, window = answer_window(mask, width=width)
        return {**batch, "inputs": padded, "completion_mask": mask, "starts": starts, "window": window}

    def _microbatches(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = batch["inputs"].input_ids.shape[0]
        k = self.cfg.micro_batches
        if rows % k:
            raise ValueError(f"SFTConfig.micro_batches={k} must divide the batch size {rows}")
        per = rows // k
        return [
            {
                "inputs": place_inputs(slice_inputs(batch["inputs"], i * per, (i + 1) * per), self.mesh),
                "starts": place_rows(batch["starts"][i * per : (i + 1) * per], self.mesh),
                "window": place_rows(batch["window"][i * per : (i + 1) * per], self.mesh),
            }
            for i in range(k)
        ]

    def step(self, step: int) -> dict[str, float]:
        """One update on the next batch; returns its metrics."""
        t0 = time.perf_counter()
        batch = self._common_shape(self.next_batch())
        self.state, m = self.train_step(self.state, self.frozen, self._microbatches(batch))
        m = jax.device_get(m)
        tokens = max(float(m["tokens"]), 1.0)
        dt = time.perf_counter() - t0
        return {
            "loss": float(m["loss"]),
            "token_accuracy": float(m["correct"]) / tokens,
            "grad_norm": float(m["grad_norm"]),
            "learning_rate": float(self.schedule(step)),
            "answer_tokens": int(tokens),
            "updates_skipped_total": int(self.state.skipped),
            "tokens_per_s": tokens / max(dt, 1e-9),
            "step_time_s": dt,
        }


def sft(workdir: str | pathlib.Path, steps: int | None = None, allow_changed_config: bool = False) -> int:
    """Build an `SFTTrainer` from the parsed gin config (`steps` overrides SFTConfig.steps) and run it (see
    `training.loop.Trainer` for `allow_changed_config`)."""
    cfg = SFTConfig()
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    return SFTTrainer(workdir, cfg, allow_changed_config).run()
