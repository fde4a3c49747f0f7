"""Qwen2.5-VL vision tower in Flax NNX.

Input is batched per sample (see `inputs.ModelInputs`): patches [B, P, C*T*p*p] in HF patch order.
The tower embeds every patch (the 3-D conv with stride = kernel is one matmul per patch), permutes
patches into window order (`window_index`), runs the blocks with window attention or, in
`fullatt_block_indexes`, attention within each temporal group, merges groups of 2x2 patches, and
returns merged features [B, P // merge_unit, out_hidden] back in HF order (`window_inverse`).

Attention runs on blocks (`BlockLayout`, built on the host by `inputs`): the queries, keys and
values of each window (or temporal group) are gathered into one row of a [B, R, S] block array
padded with empty slots, attention runs within each row (empty slots masked as keys), and the
results are gathered back to the patches. No score is computed between two windows (or temporal
groups); the only waste is the padding of each row to the static length S. Rows longer than
`attn_block` run one block of queries at a time, rematerialised under autodiff (memory
O(attn_block * S) per row). With `VisionTransformer.attention_impl = "splash"` the blocks run
through the Pallas splash kernel instead (`splash.splash_attention`, rows packed as segments).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from .config import VISION_RMS_EPS, VisionConfig
from .layers import RMSNorm, SwiGLU, apply_rotary, masked_attention, query_blocked
from .sharding import maybe_constrain
from .splash import LANES, splash_attention


class BlockLayout(NamedTuple):
    """Blocks of the permuted patch order that attend within themselves (see `inputs.ModelInputs`)."""

    blocks: jax.Array  # [B, R, S] int32 permuted patch index of each slot, -1 = empty
    slot: jax.Array  # [B, P] int32 flat slot (row * S + offset) of each permuted patch, -1 = none


class PatchEmbed(nnx.Module):
    """Conv3d(kernel = stride = (T, p, p), no bias) as a linear map of each flattened patch."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj = nnx.Linear(
            cfg.patch_dim, cfg.hidden_size, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.proj(pixels)


def vision_rotary(cfg: VisionConfig, pos_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [..., head_dim] of the 2-D rotary from (row, col) ids [..., 2] (float32).

    cos / sin are taken from a table over the ids 0 .. N - 1 (N = id pairs per sample: a sample's
    row and column ids stay below its number of patches, whatever the batch size): XLA does not fuse an expensive op into a gather that reuses its elements,
    so the transcendentals run once per table entry instead of once per element of every layer's
    q and k (into which XLA fuses them otherwise). Same values as cos / sin of the ids' angles.
    """
    quarter = cfg.head_dim // 4
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, 2 * quarter, 2, dtype=jnp.float32) / (2 * quarter)))
    size = max(1, pos_ids.shape[-2]) if pos_ids.ndim >= 2 else 1
    angles = jnp.arange(size, dtype=jnp.float32)[:, None] * inv_freq  # [N, quarter]

    def lookup(table):
        rows = table[pos_ids]  # [..., 2, quarter]: rows then cols
        rows = rows.reshape(*rows.shape[:-2], 2 * quarter)
        return jnp.concatenate([rows, rows], axis=-1)

    return lookup(jnp.cos(angles)), lookup(jnp.sin(angles))


class VisionAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(cfg.hidden_size, 3 * cfg.hidden_size, use_bias=True, **kw)
        self.proj = nnx.Linear(cfg.hidden_size, cfg.hidden_size, use_bias=True, **kw)
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, layout: BlockLayout, block: int, splash: bool = False
    ) -> jax.Array:
        b, p, _ = x.shape
        qkv = self.qkv(x).reshape(b, p, 3, self.num_heads, self.head_dim)
        q, k, v = (
            maybe_constrain(qkv[:, :, i], "vision_heads", self.activation_mesh, self.activation_layout)
            for i in range(3)
        )
        # Rotary in float32, as in the reference.
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = block_attention(
            q, k, v, layout, self.head_dim**-0.5, block=block, splash=splash, mesh=self.activation_mesh
        )
        return self.proj(out.reshape(b, p, -1))


class VisionBlock(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(cfg.hidden_size, VISION_RMS_EPS, **kw)
        self.norm2 = RMSNorm(cfg.hidden_size, VISION_RMS_EPS, **kw)
        self.attn = VisionAttention(cfg, rngs=rngs, **kw)
        self.mlp = SwiGLU(
            cfg.hidden_size, cfg.intermediate_size, use_bias=True, rngs=rngs, activation="vision_mlp", **kw
        )

    def __call__(self, x, cos, sin, layout, block, splash=False):
        x = x + self.attn(self.norm1(x), cos, sin, layout, block, splash)
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


def block_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    layout: BlockLayout,
    scale: float,
    *,
    block: int,
    splash: bool = False,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Attention within the blocks of `layout`: q/k/v [B, P, H, D] -> [B, P, H, D] (zero on patches
    in no block). Rows longer than `block` slots run `block` queries at a time. `splash`: the rows
    run through the splash kernel (`_splash_rows`; `mesh` for its shard_map) instead."""
    b, _, h, d = q.shape
    _, rows, width = layout.blocks.shape
    index = jnp.maximum(layout.blocks, 0).reshape(b, rows * width)
    qb, kb, vb = (_take(a, index).reshape(b * rows, width, h, d) for a in (q, k, v))
    keys = (layout.blocks >= 0).reshape(b * rows, 1, width)
    if splash:
        out = _splash_rows(qb, kb, vb, keys[:, 0], b, scale, mesh)
    elif width <= block:
        out = masked_attention(qb, kb, vb, keys, scale)
    else:
        out = query_blocked(lambda x, _: masked_attention(x, kb, vb, keys, scale), qb, None, block)
    out = _take(out.reshape(b, rows * width, h, d), jnp.maximum(layout.slot, 0))
    return jnp.where((layout.slot >= 0)[..., None, None], out, 0)


def _splash_rows(qb, kb, vb, filled, batch: int, scale: float, mesh: Mesh | None) -> jax.Array:
    """Attention within each row of qb/kb/vb [B * R, S, H, D] over its `filled` [B * R, S] slots, by
    the splash kernel: `LANES // S` rows (at least one) per kernel row, each its own segment (empty
    slots segment 0), so short windows share a kernel tile instead of each being padded to one."""
    n, width, h, d = qb.shape
    group = max(1, LANES // width)
    rows = n // batch
    per_sample = -(-rows // group) * group
    ids = ((jnp.arange(rows) % group + 1)[None, :, None] * filled.reshape(batch, rows, width)).reshape(n, width)

    def pack(x):
        x = x.reshape(batch, rows, *x.shape[1:])
        x = jnp.pad(x, [(0, 0), (0, per_sample - rows)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(batch * per_sample // group, group * width, *x.shape[3:])

    out = splash_attention(pack(qb), pack(kb), pack(vb), pack(ids), scale, causal=False, mesh=mesh)
    out = out.reshape(batch, per_sample, width, h, d)[:, :rows]
    return out.reshape(n, width, h, d)


def _block_caller(attn_block: int, splash: bool = False):
    """`call(block, x, cos, sin, layout)` with the static attention block size (and kernel choice) bound
    (remat-friendly)."""

    def call(block: VisionBlock, x, cos, sin, layout):
        return block(x, cos, sin, layout, attn_block, splash)

    return call


def _scan_blocks(call, blocks, x, cos, sin, layout, shard):
    """`blocks` as a `lax.scan` of a rematerialised block over their stacked weights (one block's
    recomputation and backward at a time; see `text.TextModel._scan_layers`)."""
    graphdef = nnx.graphdef(blocks[0])
    stacked = jax.tree.map(lambda *w: jnp.stack(w), *(nnx.state(block) for block in blocks))

    def body(h, weights):
        return shard(call(nnx.merge(graphdef, weights), h, cos, sin, layout), "vision_hidden"), None

    return jax.lax.scan(jax.checkpoint(body), x, stacked)[0]


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [B, N, ...] gathered along N with index [B, M]."""
    return jax.vmap(lambda a, i: a[i])(x, index)


class VisionTransformer(nnx.Module):
    """`model.visual`: patches -> merged features in the language model's width."""

    def __init__(
        self, cfg: VisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs, attn_block: int = 256
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cfg = cfg
        self.attn_block = attn_block
        self.attention_impl = "xla"  # "splash": block attention by the Pallas kernel (see block_attention)
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
        windows: BlockLayout,
        frames: BlockLayout,
    ) -> jax.Array:
        """Merged features [B, P // merge_unit, out_hidden] in HF order (see module docstring)."""

        def shard(y, name):
            return maybe_constrain(y, name, self.activation_mesh, self.activation_layout)

        unit = self.cfg.merge_unit
        x = shard(self.patch_embed(_take(pixel_values, window_index).astype(self.dtype)), "vision_hidden")
        cos, sin = (shard(c, "rope") for c in vision_rotary(self.cfg, _take(vision_pos_ids, window_index)))
        full = [i in self.cfg.fullatt_block_indexes for i in range(len(self.blocks))]
        start = 0
        while start < len(self.blocks):  # runs of consecutive blocks with the same attention kind
            stop = start + 1
            while stop < len(self.blocks) and full[stop] == full[start]:
                stop += 1
            # The block size is static: bind it outside the (optional) remat.
            call = _block_caller(self.attn_block, self.attention_impl == "splash")
            layout = frames if full[start] else windows
            if self.remat:
                x = _scan_blocks(call, self.blocks[start:stop], x, cos, sin, layout, shard)
            else:
                for block in self.blocks[start:stop]:
                    x = shard(call(block, x, cos, sin, layout), "vision_hidden")
            start = stop
        merged = self.merger(x)
        return _take(merged, window_inverse[:, ::unit] // unit)
