"""optax AdamW with linear warm-up, then cosine / linear / constant decay, and global-norm clipping.

`OptimizerConfig.moment_dtype = "bfloat16"` stores AdamW's moments in bfloat16 (half their memory):
each update reads them as float32, runs AdamW in float32 and rounds the new moments back.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax

DECAYS: tuple[str, ...] = ("cosine", "linear", "constant")
MOMENT_DTYPES: tuple[str, ...] = ("float32", "bfloat16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW hyper-parameters; `decay_steps` None means "the run's number of optimizer steps"."""

    learning_rate: float = 1e-6
    warmup_steps: int = 0
    decay: str = "cosine"
    decay_steps: int | None = None
    end_learning_rate_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    moment_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.moment_dtype not in MOMENT_DTYPES:
            raise ValueError(f"OptimizerConfig.moment_dtype must be one of {MOMENT_DTYPES}, got {self.moment_dtype!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"OptimizerConfig.decay must be one of {DECAYS}, got {self.decay!r}")
        if self.learning_rate < 0 or self.warmup_steps < 0:
            raise ValueError("OptimizerConfig.learning_rate and warmup_steps must be >= 0")


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate per optimizer step: linear warm-up from 0, then the configured decay."""
    steps = max(int(cfg.decay_steps or total_steps) - cfg.warmup_steps, 1)
    end = cfg.learning_rate * cfg.end_learning_rate_ratio
    if cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(cfg.learning_rate, steps, alpha=cfg.end_learning_rate_ratio)
    elif cfg.decay == "linear":
        decay = optax.linear_schedule(cfg.learning_rate, end, steps)
    else:
        decay = optax.constant_schedule(cfg.learning_rate)
    if cfg.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm (if `max_grad_norm`), then AdamW on the schedule of `make_schedule`, its
    moments stored in `moment_dtype`."""
    adamw = optax.adamw(
        make_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    if cfg.moment_dtype != "float32":
        adamw = stored_as(adamw, jnp.dtype(cfg.moment_dtype))
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


def stored_as(inner: optax.GradientTransformation, dtype: jnp.dtype) -> optax.GradientTransformation:
    """`inner` with its floating-point state kept in `dtype` between updates, computed in float32."""

    def cast(state, to):
        return jax.tree.map(lambda x: x.astype(to) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)

    def init(params):
        return cast(inner.init(params), dtype)

    def update(updates, state, params=None):
        updates, state = inner.update(updates, cast(state, jnp.float32), params)
        return updates, cast(state, dtype)

    return optax.GradientTransformation(init, update)
