"""Building blocks shared by the vision tower and the text decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, scaled by `weight` (HF `Qwen2RMSNorm`)."""

    def __init__(self, dim: int, eps: float, *, dtype=jnp.float32, param_dtype=jnp.float32):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)); with biases in the vision tower, without in the decoder."""

    def __init__(self, dim: int, hidden: int, *, use_bias: bool, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(dim, hidden, **kw)
        self.up_proj = nnx.Linear(dim, hidden, **kw)
        self.down_proj = nnx.Linear(hidden, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x: jax.Array) -> jax.Array:
    """(x1, x2) -> (-x2, x1) over the last axis halves."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x * cos + rotate_half(x) * sin; cos/sin broadcast over the head axis (-2)."""
    return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float) -> jax.Array:
    """Grouped-query attention with a boolean mask; softmax in float32.

    q [B, Lq, H, D], k/v [B, Lk, KV, D] (H a multiple of KV), mask broadcastable to [B, Lq, Lk].
    A fully masked row gets a uniform (finite) distribution instead of NaN.
    """
    b, lq, h, d = q.shape
    kv = k.shape[2]
    qg = q.reshape(b, lq, kv, h // kv, d)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
    return out.reshape(b, lq, h, d)


def query_blocked(attend, q: jax.Array, aux: jax.Array, block: int) -> jax.Array:
    """`attend(q_block, aux_block)` over blocks of `block` queries, one block at a time.

    q [B, Lq, ...] and aux [B, Lq, ...] (e.g. the mask rows or segment ids of the queries) are
    split along Lq (padded to a multiple of `block`; padded rows are dropped). Each block is
    rematerialised under autodiff, so memory holds one block's scores instead of Lq of them.
    """
    b, lq = q.shape[:2]
    nb = -(-lq // block)
    pad = nb * block - lq
    blocks = []
    for a in (q, aux):
        a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        blocks.append(a.reshape(b, nb, block, *a.shape[2:]).swapaxes(0, 1))
    out = jax.lax.map(jax.checkpoint(lambda args: attend(*args)), tuple(blocks))
    return out.swapaxes(0, 1).reshape(b, nb * block, *out.shape[3:])[:, :lq]
