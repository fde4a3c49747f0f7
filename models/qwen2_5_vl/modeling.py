"""`Qwen2_5_VLForConditionalGeneration` in Flax NNX (attribute paths mirror transformers 5).

Module tree: `model.visual` (vision.VisionTransformer), `model.language_model` (text.TextModel),
`lm_head` (absent when `tie_word_embeddings`; logits then use `embed_tokens`).

Entry points (B batch, L tokens, V vocab, T cache length):

* `forward(inputs: ModelInputs) -> logits [B, L, V] float32` (jittable; static shapes). Vision
  features are gathered into the token embeddings with `inputs.vision_token_index`.
* `hidden_states(inputs) -> [B, L, H]` and `logits_from_hidden(hidden) -> [..., V] float32`, the two
  halves of `forward`, for losses that chunk the vocabulary projection.
* `__call__(input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
  pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None, mm_token_type_ids=None)
  -> logits` (HF argument names; numpy, torch or jax inputs; builds `ModelInputs` on the host, then
  runs a jitted `forward`).
* KV cache, for generation (prompts left padded):
  - `init_cache(batch, max_len, dtype=None) -> cache`: list over layers of
    `{"k": [B, T, n_kv_heads, head_dim], "v": same}` zeros (dtype defaults to the compute dtype).
  - `prefill(inputs: ModelInputs, cache) -> (logits_last [B, V] float32, cache)`: runs the prompt
    (vision tower included), writes keys/values at [0, L), returns the logits of position L - 1.
  - `decode_step(tokens [B], position_ids [3, B] / [B] / scalar, cache, cache_index,
    attn_mask_full [B, T]) -> (logits [B, V] float32, cache)`: one new token per row written at
    slot `cache_index` (a scalar); it attends to the slots where `attn_mask_full` is nonzero plus
    its own slot. The M-RoPE ids of the generated tokens are `rope_index.completion_position_ids`
    (the config's `text_after_vision` rule: max prompt id + 1 + k by default, last prompt id + 1 + k
    under "transformers5"), which training log-probs and SFT use as well.
  - `decode_step` on a `text.SharedPromptCache` (N = B * G rows sharing B prompts' caches, as
    `generation.decode` builds it): the token is written in the row's own cache `cache.own`
    [N, T], `attn_mask_full` ([N, T] or [1, T]) masks the own slots, and every row also attends
    to its prompt's keys under `cache.prompt_mask`.
* Activation sharding: `sharding.set_activation_sharding(model, mesh, layout)` (done by
  `sharding.shard_model`) makes every submodule constrain its activations to the batch axes.
* Memory knobs (plain attributes, settable after construction): `model.visual.attn_block`
  (vision attention block size, see `vision.py`), `model.visual.remat` and
  `model.language_model.remat` (recompute each block/layer in the backward pass),
  `model.prefill_chunks` (`generation.prefill` runs the prompts this many at a time),
  `model.model.language_model.attention_impl` / `model.model.visual.attention_impl` ("xla" or
  "splash": the Pallas kernel for multi-token attention, see `splash.py`).
* `from_pretrained(dir, dtype=jnp.float32, param_dtype=None, sharding=None)` (classmethod) and
  `save_pretrained(dir, max_shard_bytes=...)`: HF safetensors checkpoints (see `checkpoint.py`).
* `generate(...)`: delegates to `generation.generate`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import Qwen2_5_VLConfig
from .inputs import ModelInputs, build_model_inputs
from .rope_index import token_types
from .text import KVCache, SharedPromptCache, TextModel, causal_mask
from .vision import BlockLayout, VisionTransformer


class Qwen2_5_VLModel(nnx.Module):
    """`model`: the vision tower and the language model."""

    def __init__(self, config: Qwen2_5_VLConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.visual = VisionTransformer(config.vision, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.language_model = TextModel(config.text, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class Qwen2_5_VLForConditionalGeneration(nnx.Module):
    """Qwen2.5-VL with its LM head; see the module docstring for the interface."""

    def __init__(
        self, config: Qwen2_5_VLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs | None = None
    ):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = config
        self.dtype = dtype
        self.activation_mesh, self.activation_layout = None, "fsdp_tensor"  # see sharding.set_activation_sharding
        self.prefill_chunks = 1  # see generation.prefill
        self.model = Qwen2_5_VLModel(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nnx.Linear(
                config.text.hidden_size,
                config.text.vocab_size,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )

    # --- forward -------------------------------------------------------------------------------

    def embed(self, inputs: ModelInputs) -> jax.Array:
        """Token embeddings [B, L, H] with the merged vision features placed at their tokens."""
        embeds = self.model.language_model.embed_tokens(jnp.asarray(inputs.input_ids))
        if inputs.pixel_values.shape[1] == 0:
            return embeds
        a = jnp.asarray
        feats = self.model.visual(
            a(inputs.pixel_values),
            a(inputs.vision_pos_ids),
            a(inputs.window_index),
            a(inputs.window_inverse),
            BlockLayout(a(inputs.window_blocks), a(inputs.window_slot)),
            BlockLayout(a(inputs.frame_blocks), a(inputs.frame_slot)),
        )
        index = jnp.asarray(inputs.vision_token_index)
        gathered = jnp.take_along_axis(feats, jnp.maximum(index, 0)[..., None], axis=1)
        return jnp.where(index[..., None] >= 0, gathered.astype(embeds.dtype), embeds)

    def hidden_states(self, inputs: ModelInputs) -> jax.Array:
        """Final-norm hidden states [B, L, H]."""
        attention_mask = jnp.asarray(inputs.attention_mask)
        hidden, _ = self.model.language_model(
            self.embed(inputs),
            jnp.asarray(inputs.position_ids),
            causal_mask(attention_mask),
            attention_mask=attention_mask,
        )
        return hidden

    def logits_from_hidden(self, hidden: jax.Array) -> jax.Array:
        """LM head (or tied embedding) applied to hidden states; float32 logits."""
        if self.lm_head is None:
            table = self.model.language_model.embed_tokens.embedding[...].astype(self.dtype)
            return jnp.einsum("...h,vh->...v", hidden, table, preferred_element_type=jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def forward(self, inputs: ModelInputs) -> jax.Array:
        """Logits [B, L, V] float32 for prepared inputs (jittable)."""
        return self.logits_from_hidden(self.hidden_states(inputs))

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        pixel_values=None,
        image_grid_thw=None,
        pixel_values_videos=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        mm_token_type_ids=None,
    ) -> jax.Array:
        """Logits [B, L, V] from HF-style arguments (host-side preparation, then a jitted forward).

        `mm_token_type_ids` (as the transformers 5 processor returns it) is optional: the token
        types follow from the placeholder ids; when given, it must agree with them. As in
        transformers, text-only inputs get positions 0..L-1 whatever the padding (`forward` on
        `build_model_inputs` skips padding instead, as generation does).
        """
        if mm_token_type_ids is not None and not np.array_equal(
            _host(mm_token_type_ids), token_types(self.config, _host(input_ids))
        ):
            raise ValueError("mm_token_type_ids disagree with the image/video placeholder ids in input_ids")
        inputs = build_model_inputs(
            self.config,
            _host(input_ids),
            _host(attention_mask),
            _host(pixel_values),
            _host(image_grid_thw),
            _host(pixel_values_videos),
            _host(video_grid_thw),
            _host(second_per_grid_ts),
        )
        if image_grid_thw is None and video_grid_thw is None:
            # transformers' forward numbers text-only inputs 0..L-1 even under left padding.
            b, length = inputs.input_ids.shape
            arange = np.broadcast_to(np.arange(length, dtype=np.int32), (3, b, length))
            inputs = inputs.replace(position_ids=arange, rope_deltas=np.zeros((b, 1), np.int32))
        return _jit_forward(self, inputs)

    # --- KV cache ------------------------------------------------------------------------------

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        """Zero KV cache: per layer {"k", "v"} of [batch, max_len, n_kv_heads, head_dim]."""
        t = self.config.text
        shape = (batch, max_len, t.num_key_value_heads, t.head_dim)
        dtype = self.dtype if dtype is None else dtype
        return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(t.num_hidden_layers)]

    def prefill(self, inputs: ModelInputs, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Run the prompt, fill cache slots [0, L); logits [B, V] of the last position."""
        attention_mask = jnp.asarray(inputs.attention_mask)
        b, length = attention_mask.shape
        total = cache[0]["k"].shape[1]
        key_valid = jnp.zeros((b, total), bool).at[:, :length].set(attention_mask.astype(bool))
        causal = jnp.arange(total)[None, :] <= jnp.arange(length)[:, None]
        mask = causal[None] & key_valid[:, None, :]
        hidden, cache = self.model.language_model(
            self.embed(inputs), jnp.asarray(inputs.position_ids), mask, cache, 0, attention_mask=attention_mask
        )
        return self.logits_from_hidden(hidden[:, -1]), cache

    def decode_step(
        self,
        tokens: jax.Array,
        position_ids: jax.Array,
        cache: KVCache | SharedPromptCache,
        cache_index: jax.Array | int,
        attn_mask_full: jax.Array,
    ) -> tuple[jax.Array, KVCache | SharedPromptCache]:
        """One token per row at slot `cache_index`; logits [B, V] (see the module docstring)."""
        tokens = jnp.asarray(tokens)
        b = tokens.shape[0]
        pos = jnp.asarray(position_ids)
        pos = jnp.broadcast_to(pos, (3, b))[:, :, None]
        total = (cache.own if isinstance(cache, SharedPromptCache) else cache)[0]["k"].shape[1]
        own = jnp.arange(total)[None, :] == cache_index
        mask = (jnp.asarray(attn_mask_full).astype(bool) | own)[:, None, :]
        embeds = self.model.language_model.embed_tokens(tokens[:, None])
        hidden, cache = self.model.language_model(embeds, pos, mask, cache, cache_index)
        return self.logits_from_hidden(hidden[:, 0]), cache

    # --- checkpoints ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        directory: str | pathlib.Path,
        dtype=jnp.float32,
        param_dtype=None,
        sharding: Callable[[tuple, tuple], jax.sharding.Sharding] | None = None,
    ) -> Qwen2_5_VLForConditionalGeneration:
        """Load an HF checkpoint directory (config.json + safetensors, hub or transformers-5 layout).

        Weights are stored as `param_dtype` (default: `dtype`); `sharding(path, shape)` places each
        parameter (path as in `nnx.state(model)`; e.g. `sharding.loader_sharding(mesh, layout)`), and each
        process then reads only the blocks its devices hold; default: the default device.
        """
        from .checkpoint import load_pretrained

        return load_pretrained(cls, directory, dtype=dtype, param_dtype=param_dtype, sharding=sharding)

    def save_pretrained(self, directory: str | pathlib.Path, **kwargs: Any) -> None:
        """Write config.json + safetensors that transformers loads (see `checkpoint.save_pretrained`)."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory, **kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        """Sampling / greedy decoding; see `generation.generate`."""
        from .generation import generate

        return generate(self, *args, **kwargs)


@nnx.jit
def _jit_forward(model: Qwen2_5_VLForConditionalGeneration, inputs: ModelInputs) -> jax.Array:
    return model.forward(inputs)


def _host(x):
    """Torch tensors / jax arrays / lists -> numpy (None passes through)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
