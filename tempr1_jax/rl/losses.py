"""Policy-gradient losses (registry `LOSSES`): GRPO, DAPO and GSPO, as sums plus counts.

Every loss returns `LossTerms(total, count, aux)`: the batch loss is `total / count`. Summing `total`
and `count` over micro-batches before dividing gives exactly the full-batch loss (and gradient), whatever
the split, because each variant's normaliser is itself a sum over samples:

- grpo: per-sequence mean of the per-token objective, mean over sequences (count = sequences);
- dapo: token-level mean over all completion tokens of the batch (count = tokens);
- gspo: one importance ratio per sequence, exp(mean_t(logp - old_logp)), mean over sequences.

Per token (DESIGN §5): ratio r = exp(logp - old_logp); objective min(r A, clip(r, 1 - eps_low, 1 + eps_high) A);
k3 KL to the reference exp(ref - logp) - (ref - logp) - 1 weighted by beta; loss = -(objective - beta KL).
`weights` (0 or 1 per sequence) removes sequences from both the sum and the count (DAPO's filtering of
groups whose rewards are all equal). `aux` holds sums for metrics: `kl` and `clipped` over tokens, `tokens`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which loss and its coefficients; `epsilon_high` None means the symmetric clip `epsilon`."""

    name: str = "grpo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    # DAPO's dynamic-sampling filter: sequences of equal-reward groups get weight 0.
    filter_equal_groups: bool = False

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; expected one of {sorted(LOSSES)}")
        if self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            raise ValueError(f"clip epsilons must be >= 0, got {self.epsilon}, {self.epsilon_high}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def eps_low(self) -> float:
        return self.epsilon

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


class LossBatch(NamedTuple):
    """Inputs of a loss; [N, T] per-token arrays over completion tokens, [N] per sequence."""

    logp: jax.Array
    old_logp: jax.Array | None  # None: one update per rollout, old policy = current (ratio 1)
    ref_logp: jax.Array | None  # None: no KL term (beta must then be 0 or the KL is dropped)
    mask: jax.Array  # 1 for real completion tokens
    advantages: jax.Array
    weights: jax.Array


class LossTerms(NamedTuple):
    total: jax.Array
    count: jax.Array
    aux: dict[str, jax.Array]


def _token_terms(b: LossBatch, cfg: LossConfig, ratio: jax.Array, adv: jax.Array):
    """Per-token loss (before any reduction), k3 KL and clipped indicator."""
    clipped_ratio = jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    objective = jnp.minimum(ratio * adv, clipped_ratio * adv)
    clipped = ((ratio < 1.0 - cfg.eps_low) & (adv < 0)) | ((ratio > 1.0 + cfg.eps_high) & (adv > 0))
    if b.ref_logp is None:
        kl = jnp.zeros_like(b.logp)
    else:
        d = b.ref_logp - b.logp
        kl = jnp.exp(d) - d - 1.0
    return -(objective - cfg.beta * kl), kl, clipped.astype(jnp.float32)


def _old(b: LossBatch) -> jax.Array:
    return jax.lax.stop_gradient(b.logp) if b.old_logp is None else b.old_logp


def _aux(b: LossBatch, kl: jax.Array, clipped: jax.Array, m: jax.Array) -> dict[str, jax.Array]:
    return {"kl": jnp.sum(kl * m), "clipped": jnp.sum(clipped * m), "tokens": jnp.sum(m)}


def _masks(b: LossBatch) -> tuple[jax.Array, jax.Array, jax.Array]:
    w = b.weights.astype(jnp.float32)
    m = b.mask.astype(jnp.float32) * w[:, None]
    return w, m, jnp.sum(b.mask.astype(jnp.float32), axis=1)


def grpo_loss(b: LossBatch, cfg: LossConfig) -> LossTerms:
    """GRPO: mean over each sequence's tokens, summed over sequences; count = sequences."""
    w, m, lengths = _masks(b)
    per_token, kl, clipped = _token_terms(b, cfg, jnp.exp(b.logp - _old(b)), b.advantages[:, None])
    per_seq = jnp.sum(per_token * m, axis=1) / jnp.maximum(lengths, 1.0)
    return LossTerms(jnp.sum(per_seq), jnp.sum(w), _aux(b, kl, clipped, m))


def dapo_loss(b: LossBatch, cfg: LossConfig) -> LossTerms:
    """DAPO: token-level sum over the batch; count = tokens (clip-higher via cfg.epsilon_high)."""
    _, m, _ = _masks(b)
    per_token, kl, clipped = _token_terms(b, cfg, jnp.exp(b.logp - _old(b)), b.advantages[:, None])
    return LossTerms(jnp.sum(per_token * m), jnp.sum(m), _aux(b, kl, clipped, m))


def gspo_loss(b: LossBatch, cfg: LossConfig) -> LossTerms:
    """GSPO: sequence ratio exp(mean_t(logp - old_logp)) clipped per sequence; count = sequences.

    The ratio's gradient is s_i * mean_t grad(logp): every token of a sequence shares one weight.
    """
    w, m, lengths = _masks(b)
    raw = b.mask.astype(jnp.float32)
    log_s = jnp.sum((b.logp - _old(b)) * raw, axis=1) / jnp.maximum(lengths, 1.0)
    ratio = jnp.exp(log_s)[:, None]
    per_token, kl, clipped = _token_terms(b, cfg, ratio * jnp.ones_like(b.logp), b.advantages[:, None])
    per_seq = jnp.sum(per_token * m, axis=1) / jnp.maximum(lengths, 1.0)
    return LossTerms(jnp.sum(per_seq), jnp.sum(w), _aux(b, kl, clipped, m))


LOSSES: dict[str, Callable[[LossBatch, LossConfig], LossTerms]] = {
    "grpo": grpo_loss,
    "dapo": dapo_loss,
    "gspo": gspo_loss,
}


def compute_loss(b: LossBatch, cfg: LossConfig) -> LossTerms:
    """Dispatch to the loss named by `cfg.name`."""
    return LOSSES[cfg.name](b, cfg)
