"""Qwen2.5-VL vision tower in Flax NNX.

Input is batched per sample (see `inputs.ModelInputs`): patches [B, P, C*T*p*p] in HF patch order.
The tower embeds every patch (the 3-D conv with stride = kernel is one matmul per patch), permutes
patches into window order (`window_index`), runs the blocks with window attention or, in
`fullatt_block_indexes`, attention within each temporal group (both as segment-id masks, so any
mix of images and videos runs in one static-shape program), merges groups of 2x2 patches, and
returns merged features [B, P // merge_unit, out_hidden] back in HF order (`window_inverse`).

Attention cost: segments are contiguous runs in the permuted order. A window holds at most
`window_merged**2 * merge_unit` patches, so window layers attend, per block of `attn_block`
queries, to a static band of keys around the block (O(P) work and memory). Full-attention layers
(a temporal group can be a whole large image) run one query block at a time against all keys,
rematerialised under autodiff (O(P^2) work, O(attn_block * P) memory). Inputs of at most
`attn_block` patches use one dense masked attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import VISION_RMS_EPS, VisionConfig
from .layers import RMSNorm, SwiGLU, apply_rotary, masked_attention, query_blocked
from .sharding import maybe_constrain


class PatchEmbed(nnx.Module):
    """Conv3d(kernel = stride = (T, p, p), no bias) as a linear map of each flattened patch."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj = nnx.Linear(cfg.patch_dim, cfg.hidden_size, use_bias=False, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.proj(pixels)


def vision_rotary(cfg: VisionConfig, pos_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [..., head_dim] of the 2-D rotary from (row, col) ids [..., 2] (float32)."""
    quarter = cfg.head_dim // 4
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, 2 * quarter, 2, dtype=jnp.float32) / (2 * quarter)))
    freqs = pos_ids.astype(jnp.float32)[..., None] * inv_freq  # [..., 2, quarter]
    freqs = freqs.reshape(*freqs.shape[:-2], 2 * quarter)  # rows then cols
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


class VisionAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(cfg.hidden_size, 3 * cfg.hidden_size, use_bias=True, **kw)
        self.proj = nnx.Linear(cfg.hidden_size, cfg.hidden_size, use_bias=True, **kw)
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array,
                 max_segment: int | None, block: int) -> jax.Array:
        b, p, _ = x.shape
        qkv = self.qkv(x).reshape(b, p, 3, self.num_heads, self.head_dim)
        q, k, v = (maybe_constrain(qkv[:, :, i], "vision_heads", self.activation_mesh, self.activation_layout)
                   for i in range(3))
        # Rotary in float32, as in the reference.
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = segment_attention(q, k, v, segment_ids, self.head_dim**-0.5, block=block, max_segment=max_segment)
        return self.proj(out.reshape(b, p, -1))


class VisionBlock(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(cfg.hidden_size, VISION_RMS_EPS, **kw)
        self.norm2 = RMSNorm(cfg.hidden_size, VISION_RMS_EPS, **kw)
        self.attn = VisionAttention(cfg, rngs=rngs, **kw)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=True, rngs=rngs, **kw)

    def __call__(self, x, cos, sin, segment_ids, max_segment, block):
        x = x + self.attn(self.norm1(x), cos, sin, segment_ids, max_segment, block)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm per patch, concatenate each 2x2 group, Linear -> GELU (exact) -> Linear."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        dm = cfg.hidden_size * cfg.merge_unit
        self.ln_q = RMSNorm(cfg.hidden_size, VISION_RMS_EPS, **kw)
        self.mlp_0 = nnx.Linear(dm, dm, rngs=rngs, **kw)
        self.mlp_2 = nnx.Linear(dm, cfg.out_hidden_size, rngs=rngs, **kw)
        self.merge_unit = cfg.merge_unit

    def __call__(self, x: jax.Array) -> jax.Array:
        b, p, d = x.shape
        x = self.ln_q(x).reshape(b, p // self.merge_unit, d * self.merge_unit)
        return self.mlp_2(jax.nn.gelu(self.mlp_0(x), approximate=False))


def segment_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, scale: float, *,
                      block: int, max_segment: int | None) -> jax.Array:
    """Attention within contiguous segments: q/k/v [B, P, H, D], segment_ids [B, P].

    `max_segment` bounds every segment's length (None: unbounded); see the module docstring.
    """
    b, p, h, d = q.shape
    if p <= block:
        return masked_attention(q, k, v, segment_ids[:, :, None] == segment_ids[:, None, :], scale)
    nb = -(-p // block)
    total = nb * block
    if max_segment is None or block + 2 * max_segment >= total:
        return query_blocked(
            lambda qb, sb: masked_attention(qb, k, v, sb[:, :, None] == segment_ids[:, None, :], scale),
            q, segment_ids, block)
    # A query's segment lies within max_segment - 1 of it: a band of keys around each block suffices.
    pad = total - p
    q, k, v = (jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))) for a in (q, k, v))
    segment_ids = jnp.pad(segment_ids, ((0, 0), (0, pad)), constant_values=-1)
    width = block + 2 * max_segment
    starts = np.clip(np.arange(nb) * block - max_segment, 0, total - width)
    key_index = starts[:, None] + np.arange(width)  # [nb, width], static
    mask = segment_ids.reshape(b, nb, block)[..., :, None] == segment_ids[:, key_index][..., None, :]
    out = masked_attention(
        q.reshape(b * nb, block, h, d), k[:, key_index].reshape(b * nb, width, h, d),
        v[:, key_index].reshape(b * nb, width, h, d), mask.reshape(b * nb, block, width), scale)
    return out.reshape(b, total, h, d)[:, :p]


def _block_caller(max_segment: int | None, attn_block: int):
    """`call(block, x, cos, sin, segment_ids)` with the static attention settings bound (remat-friendly)."""
    def call(block: VisionBlock, x, cos, sin, segment_ids):
        return block(x, cos, sin, segment_ids, max_segment, attn_block)

    return call


def _scan_blocks(call, blocks, x, cos, sin, segment_ids, shard):
    """`blocks` as a `lax.scan` of a rematerialised block over their stacked weights (one block's
    recomputation and backward at a time; see `text.TextModel._scan_layers`)."""
    graphdef = nnx.graphdef(blocks[0])
    stacked = jax.tree.map(lambda *w: jnp.stack(w), *(nnx.state(block) for block in blocks))

    def body(h, weights):
        return shard(call(nnx.merge(graphdef, weights), h, cos, sin, segment_ids), "vision_hidden"), None

    return jax.lax.scan(jax.checkpoint(body), x, stacked)[0]


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [B, N, ...] gathered along N with index [B, M]."""
    return jax.vmap(lambda a, i: a[i])(x, index)


class VisionTransformer(nnx.Module):
    """`model.visual`: patches -> merged features in the language model's width."""

    def __init__(self, cfg: VisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
                 attn_block: int = 256):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cfg = cfg
        self.attn_block = attn_block
        self.remat = False  # True: scan over rematerialised blocks (recomputed in the backward pass)
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding
        self.dtype = dtype
        self.patch_embed = PatchEmbed(cfg, **kw)
        self.blocks = nnx.List([VisionBlock(cfg, **kw) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, **kw)

    def __call__(
        self,
        pixel_values: jax.Array,
        vision_pos_ids: jax.Array,
        window_index: jax.Array,
        window_inverse: jax.Array,
        full_segment_ids: jax.Array,
        window_segment_ids: jax.Array,
    ) -> jax.Array:
        """Merged features [B, P // merge_unit, out_hidden] in HF order (see module docstring)."""
        def shard(y, name):
            return maybe_constrain(y, name, self.activation_mesh, self.activation_layout)

        unit = self.cfg.merge_unit
        x = shard(self.patch_embed(_take(pixel_values, window_index).astype(self.dtype)), "vision_hidden")
        cos, sin = (shard(c, "rope") for c in vision_rotary(self.cfg, _take(vision_pos_ids, window_index)))
        window_max = self.cfg.window_merged**2 * unit
        full = [i in self.cfg.fullatt_block_indexes for i in range(len(self.blocks))]
        start = 0
        while start < len(self.blocks):  # runs of consecutive blocks with the same attention kind
            stop = start + 1
            while stop < len(self.blocks) and full[stop] == full[start]:
                stop += 1
            # Segment bound and block size are static: bind them outside the (optional) remat.
            call = _block_caller(None if full[start] else window_max, self.attn_block)
            segments = full_segment_ids if full[start] else window_segment_ids
            if self.remat:
                x = _scan_blocks(call, self.blocks[start:stop], x, cos, sin, segments, shard)
            else:
                for block in self.blocks[start:stop]:
                    x = shard(call(block, x, cos, sin, segments), "vision_hidden")
            start = stop
        merged = self.merger(x)
        return _take(merged, window_inverse[:, ::unit] // unit)
