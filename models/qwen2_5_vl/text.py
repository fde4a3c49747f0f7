"""Qwen2 text decoder with chunked multimodal rotary embeddings (M-RoPE), in Flax NNX.

M-RoPE: position ids are [3, B, L] (temporal, row, column). The rotary frequency pairs of a head are
split in three consecutive chunks of `mrope_section` pairs, taking their angle from the temporal,
row and column id respectively (chunked, not interleaved), as in transformers' Qwen2.5-VL.

Attention over more than `TextModel.attn_block` queries runs one block of queries at a time
(`layers.query_blocked`), so score memory is [B, H, attn_block, S] instead of [B, H, L, S].
With `TextModel.attention_impl = "splash"`, a multi-token call given its `attention_mask` [B, L]
(causal self-attention over its own tokens: forward, training, prefill) runs the Pallas splash
kernel instead (`splash.splash_attention`; no score array at all); one-token decoding stays on XLA.

KV cache: a list with one `{"k": [B, T, KV, D], "v": [B, T, KV, D]}` per layer. A call with
`cache` and `cache_index` writes its keys/values at [cache_index, cache_index + L) and attends over
the whole cache under `mask` [B, L, T] (the caller builds it: causal, padding, unfilled slots).

Shared-prompt decoding (`SharedPromptCache`): N = B * G one-token rows whose G consecutive rows
continue the same prompt hold one copy of the prompt's cache [B, Lp] and each its own cache
[N, T]; attention reads the prompt part once per group (`layers.shared_prompt_attention`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .config import TextConfig
from .layers import RMSNorm, SwiGLU, apply_rotary, masked_attention, query_blocked, shared_prompt_attention
from .sharding import maybe_constrain
from .splash import splash_attention

KVCache = list  # list[dict[str, jax.Array]], one {"k", "v"} per layer


class SharedPromptCache(NamedTuple):
    """The cache of N = B * G decoding rows: rows b * G .. b * G + G - 1 share prompt b."""

    prompt: KVCache  # per layer {"k", "v"}: [B, Lp, KV, D], read-only while decoding
    prompt_mask: jax.Array  # [B, Lp] bool, the prompt keys a row attends to
    own: KVCache  # per layer {"k", "v"}: [N, T, KV, D], each row's generated tokens


def mrope_cos_sin(cfg: TextConfig, position_ids: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, L, head_dim] from position ids [3, B, L] (angles in float32, then cast to dtype)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    axis_of_pair = jnp.repeat(jnp.arange(3), jnp.asarray(cfg.mrope_section), total_repeat_length=hd // 2)
    pos = position_ids.astype(jnp.float32)[axis_of_pair]  # [hd/2, B, L]
    freqs = jnp.moveaxis(pos, 0, -1) * inv_freq  # [B, L, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        hd = cfg.head_dim
        self.q_proj = nnx.Linear(cfg.hidden_size, cfg.num_attention_heads * hd, use_bias=True, **kw)
        self.k_proj = nnx.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, use_bias=True, **kw)
        self.v_proj = nnx.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, use_bias=True, **kw)
        self.o_proj = nnx.Linear(cfg.num_attention_heads * hd, cfg.hidden_size, use_bias=False, **kw)
        self.num_heads, self.num_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding

    def __call__(
        self, x, cos, sin, mask, layer_cache=None, cache_index=None, attn_block=None, prompt=None, segments=None
    ):
        """`prompt`: (the layer's prompt cache {"k", "v"} [B, Lp, ...], prompt mask [B, Lp]) shared by
        the rows of one-token decoding, which then attend to it and to their own `layer_cache`.
        `segments` [B, L] (the attention mask of a causal call over its own keys): the splash kernel
        attends this call's keys instead of applying `mask`."""
        b, length, _ = x.shape
        mesh = self.activation_mesh if layer_cache is None or length > 1 else None  # see TextModel

        def heads(y, n):
            return maybe_constrain(y.reshape(b, length, n, self.head_dim), "heads", mesh, self.activation_layout)

        q = apply_rotary(heads(self.q_proj(x), self.num_heads), cos, sin)
        k = apply_rotary(heads(self.k_proj(x), self.num_kv), cos, sin)
        v = heads(self.v_proj(x), self.num_kv)
        own_k, own_v = k, v
        if layer_cache is not None:
            start = (0, cache_index, 0, 0)
            layer_cache = {
                "k": jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(layer_cache["k"].dtype), start),
                "v": jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(layer_cache["v"].dtype), start),
            }
            k, v = layer_cache["k"].astype(q.dtype), layer_cache["v"].astype(q.dtype)
        scale = self.head_dim**-0.5
        if prompt is not None:
            layer_prompt, prompt_mask = prompt
            out = shared_prompt_attention(
                q, layer_prompt["k"].astype(q.dtype), layer_prompt["v"].astype(q.dtype), prompt_mask, k, v, mask, scale
            )
        elif segments is not None:
            out = splash_attention(q, own_k, own_v, segments, scale, causal=True, mesh=mesh)
        elif attn_block is None or length <= attn_block:
            out = masked_attention(q, k, v, mask, scale)
        else:
            mask = jnp.broadcast_to(mask, (b, length, k.shape[1]))
            out = query_blocked(lambda qb, mb: masked_attention(qb, k, v, mb, scale), q, mask, attn_block)
        return self.o_proj(out.reshape(b, length, -1)), layer_cache


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.self_attn = Attention(cfg, rngs=rngs, **kw)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=False, rngs=rngs, **kw)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)

    def __call__(
        self, x, cos, sin, mask, layer_cache=None, cache_index=None, attn_block=None, prompt=None, segments=None
    ):
        h, layer_cache = self.self_attn(
            self.input_layernorm(x), cos, sin, mask, layer_cache, cache_index, attn_block, prompt, segments
        )
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), layer_cache


class TextModel(nnx.Module):
    """`model.language_model`: embeddings, decoder layers, final norm (no LM head)."""

    def __init__(self, cfg: TextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.cfg = cfg
        self.dtype = dtype
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, **kw)
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs, **kw) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.remat = False  # True: scan over rematerialised layers without a cache (training memory)
        self.attn_block = 1024  # queries per attention block for long inputs (bounds score memory)
        self.attention_impl = "xla"  # "splash": the Pallas kernel on calls given their attention_mask
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding

    def __call__(
        self,
        inputs_embeds: jax.Array,
        position_ids: jax.Array,
        mask: jax.Array,
        cache: KVCache | SharedPromptCache | None = None,
        cache_index: jax.Array | int | None = None,
        attention_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | SharedPromptCache | None]:
        """Final hidden states [B, L, H] (after the norm) and the updated cache (None without cache).

        mask [B, L, S] is True where query l may attend key s (S = L without cache, T with cache).
        With a `SharedPromptCache` (one-token decoding, B = N rows), mask covers the rows' own
        keys [N, 1, T] and each row also attends to its prompt's unmasked keys.
        `attention_mask` [B, L] (optional) states that `mask` is `causal_mask(attention_mask)` over
        this call's own keys (other cache slots masked, as in a prefill at slot 0); with
        `attention_impl = "splash"` and L > 1 the splash kernel then runs instead of `mask`.
        """
        if isinstance(cache, SharedPromptCache):
            hidden, own = self._run(
                inputs_embeds, position_ids, mask, cache.own, cache_index, (cache.prompt, cache.prompt_mask)
            )
            return hidden, cache._replace(own=own)
        splash = self.attention_impl == "splash" and attention_mask is not None and inputs_embeds.shape[1] > 1
        segments = attention_mask.astype(jnp.int32) if splash else None
        return self._run(inputs_embeds, position_ids, mask, cache, cache_index, segments=segments)

    def _run(self, inputs_embeds, position_ids, mask, cache, cache_index, shared=None, segments=None):
        """`__call__` on a plain cache; `shared` = (prompt cache, prompt mask) of a `SharedPromptCache`;
        `segments` [B, L]: run the splash kernel with these segment ids."""
        # One-token decode steps are left to XLA's propagation from the sharded cache: constraining
        # them made the compiled decode loop hold ~4x more temporaries (measured by `tempr1 plan`).
        mesh = self.activation_mesh if cache is None or inputs_embeds.shape[1] > 1 else None

        def shard(y, name):
            return maybe_constrain(y, name, mesh, self.activation_layout)

        cos, sin = (shard(c, "rope") for c in mrope_cos_sin(self.cfg, position_ids, self.dtype))
        x = shard(inputs_embeds.astype(self.dtype), "hidden")
        mask = shard(mask, "mask") if mask.ndim == 3 and mask.shape[0] == x.shape[0] else mask
        if segments is not None:
            segments = shard(segments, "tokens")
        if self.remat and cache is None:
            return self.norm(self._scan_layers(x, cos, sin, mask, shard, segments)), None
        new_cache = [] if cache is not None else None
        call = _layer_caller(self.attn_block)
        for i, layer in enumerate(self.layers):
            prompt = None if shared is None else (shared[0][i], shared[1])
            layer_cache = None if cache is None else cache[i]
            x, layer_cache = call(layer, x, cos, sin, mask, layer_cache, cache_index, prompt, segments)
            x = shard(x, "hidden")
            if cache is not None:
                new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def _scan_layers(self, x, cos, sin, mask, shard, segments=None):
        """The decoder layers as a `lax.scan` of a rematerialised layer over their stacked weights.

        A scan forces one layer's recomputation and backward at a time, whatever the compiler's
        scheduling; an unrolled loop of remat calls lets it hoist every layer's recomputation
        (activation memory of all layers). Stacking copies the (sharded) layer weights once.
        """
        graphdef = nnx.graphdef(self.layers[0])
        stacked = jax.tree.map(lambda *w: jnp.stack(w), *(nnx.state(layer) for layer in self.layers))
        call = _layer_caller(self.attn_block)

        def body(h, weights):
            h, _ = call(nnx.merge(graphdef, weights), h, cos, sin, mask, None, None, None, segments)
            return shard(h, "hidden"), None

        return jax.lax.scan(jax.checkpoint(body), x, stacked)[0]


def _layer_caller(attn_block: int | None):
    """`call(layer, x, cos, sin, mask, layer_cache, cache_index, prompt, segments)` with the static block size
    bound."""

    def call(layer: DecoderLayer, x, cos, sin, mask, layer_cache, cache_index, prompt, segments):
        return layer(
            x, cos, sin, mask, layer_cache, cache_index, attn_block=attn_block, prompt=prompt, segments=segments
        )

    return call


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """[B, L, L] mask: key s <= query l and key s is a real token."""
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return causal[None] & attention_mask[:, None, :].astype(bool)
