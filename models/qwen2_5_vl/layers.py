"""Building blocks shared by the vision tower and the text decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .sharding import maybe_constrain


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
    """down(silu(gate(x)) * up(x)); with biases in the vision tower, without in the decoder.

    On a mesh (`sharding.set_activation_sharding`) the intermediate of a multi-token input is
    constrained to the `activation` spec (its features over `tensor`), so that XLA gathers the
    sequence-split activations rather than the weights under the sequence-parallel layout.
    """

    def __init__(
        self, dim: int, hidden: int, *, use_bias: bool, dtype, param_dtype, rngs: nnx.Rngs, activation: str = "mlp"
    ):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(dim, hidden, **kw)
        self.up_proj = nnx.Linear(dim, hidden, **kw)
        self.down_proj = nnx.Linear(hidden, dim, **kw)
        self.activation = activation
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        if x.ndim == 3 and x.shape[1] > 1:  # one-token decode steps are left to propagation (see text.py)
            h = maybe_constrain(h, self.activation, self.activation_mesh, self.activation_layout)
        return self.down_proj(h)


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


def shared_prompt_attention(
    q: jax.Array,
    prompt_k: jax.Array,
    prompt_v: jax.Array,
    prompt_mask: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    scale: float,
) -> jax.Array:
    """One-token grouped-query attention of N = B * G rows over a prompt shared by G consecutive rows
    and each row's own keys; softmax in float32.

    q [N, 1, H, D]; prompt_k/v [B, Lp, KV, D] with prompt_mask [B, Lp] (the prompt of rows
    b * G .. b * G + G - 1, read once for the G rows); k/v [N, T, KV, D] with mask broadcastable to
    [N, 1, T] (each row's own keys). The two partial softmaxes are merged with their log-sum-exp:
    a common maximum, the sum of both partial denominators and of both partial outputs. Every row
    must have at least one valid key.
    """
    n, _, h, d = q.shape
    b, _, kv, _ = prompt_k.shape
    g, t = n // b, k.shape[1]
    qg = q.reshape(b, g, kv, h // kv, d)
    low = jnp.finfo(jnp.float32).min
    prompt_scores = jnp.einsum("bgkhd,bskd->bgkhs", qg, prompt_k, preferred_element_type=jnp.float32) * scale
    prompt_scores = jnp.where(prompt_mask[:, None, None, None, :], prompt_scores, low)
    # The own part is a matrix-vector product per row: a fused multiply-reduce reads the cache in place.
    own_k = k.reshape(b, g, t, kv, 1, d).astype(jnp.float32)
    own_scores = jnp.sum(qg[:, :, None].astype(jnp.float32) * own_k, axis=-1) * scale  # [b, g, t, kv, h/kv]
    own_mask = jnp.broadcast_to(mask, (n, 1, t)).reshape(b, g, t, 1, 1)
    own_scores = jnp.where(own_mask, own_scores, low)
    top = jnp.maximum(jnp.max(prompt_scores, axis=-1), jnp.max(own_scores, axis=2))  # [b, g, kv, h/kv]
    prompt_p = jnp.exp(prompt_scores - top[..., None])
    own_p = jnp.exp(own_scores - top[:, :, None])
    denom = jnp.sum(prompt_p, axis=-1) + jnp.sum(own_p, axis=2)
    out = jnp.einsum("bgkhs,bskd->bgkhd", prompt_p.astype(prompt_v.dtype), prompt_v, preferred_element_type=jnp.float32)
    own_v = v.reshape(b, g, t, kv, 1, d).astype(jnp.float32)
    out = out + jnp.sum(own_p[..., None] * own_v, axis=2)
    return (out / denom[..., None]).astype(q.dtype).reshape(n, 1, h, d)


def query_blocked(attend, q: jax.Array, aux: jax.Array | None, block: int) -> jax.Array:
    """`attend(q_block, aux_block)` over blocks of at most `block` queries, one block at a time.

    q [B, Lq, ...] and aux [B, Lq, ...] (e.g. the mask rows or segment ids of the queries; None:
    `attend` gets None) are split along Lq into ceil(Lq / block) equal blocks (padded; padded rows
    are dropped). Each block is rematerialised under autodiff, so memory holds one block's scores
    instead of Lq of them.
    """
    b, lq = q.shape[:2]
    nb = -(-lq // block)
    size = -(-lq // nb)
    pad = nb * size - lq

    def split(a):
        a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        return a.reshape(b, nb, size, *a.shape[2:]).swapaxes(0, 1)

    blocks = (split(q), None if aux is None else split(aux))
    out = jax.lax.map(jax.checkpoint(lambda args: attend(*args)), blocks)
    return out.swapaxes(0, 1).reshape(b, nb * size, *out.shape[3:])[:, :lq]
