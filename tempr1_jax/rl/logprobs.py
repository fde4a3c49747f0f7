"""Per-token log-probabilities of sampled completions under a policy (or the frozen reference).

The scored sequence of row `p * G + g` is prompt `p` (left padded, as generated from) followed by its
completion `g`. The prompt's embeddings (vision tower included) are computed once per prompt and
repeated for its G completions. Completion tokens take the M-RoPE ids generation gave them
(`models.qwen2_5_vl.rope_index.completion_position_ids` under the model config's rule). Only the T
positions that predict completion tokens go through the LM head, in chunks of `chunk` positions, so
the [N, T, V] logits of long completions never exist at once. With `row_chunks` k > 1 the N rows go
through the decoder and the LM head k chunks at a time (rows r with r mod k = c form chunk c, so every
device keeps its own rows), each chunk rematerialised: the backward pass holds the activations of N / k
rows at the cost of one more forward pass of the decoder; the prompt's embeddings are computed once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.qwen2_5_vl.config import Qwen2_5_VLConfig
from models.qwen2_5_vl.inputs import ModelInputs
from models.qwen2_5_vl.rope_index import completion_position_ids
from models.qwen2_5_vl.sharding import maybe_constrain
from models.qwen2_5_vl.text import causal_mask


def sequence_layout(
    config: Qwen2_5_VLConfig, prompt: ModelInputs, completion_mask: jax.Array, group_size: int
) -> tuple[jax.Array, jax.Array]:
    """(attention mask [N, Lp + T], M-RoPE ids [3, N, Lp + T]) of prompt + completion rows; jittable."""
    cmask = jnp.asarray(completion_mask)
    ids = completion_position_ids(config, prompt.position_ids, prompt.attention_mask, cmask.shape[1])
    prompt_pos = jnp.asarray(prompt.position_ids)
    positions = jnp.concatenate([prompt_pos, ids.astype(prompt_pos.dtype)], axis=2)
    prompt_mask = jnp.repeat(jnp.asarray(prompt.attention_mask), group_size, axis=0)
    return (
        jnp.concatenate([prompt_mask, cmask.astype(prompt_mask.dtype)], axis=1),
        jnp.repeat(positions, group_size, axis=1),
    )


def completion_logprobs(
    model,
    prompt: ModelInputs,
    completions: jax.Array,
    completion_mask: jax.Array,
    group_size: int,
    temperature: float = 1.0,
    chunk: int = 256,
    row_chunks: int = 1,
) -> jax.Array:
    """log p(completion token t | prompt, tokens < t) as float32 [N, T] (0 where the mask is 0).

    `temperature` divides the logits as sampling did (pass 1.0 for greedy rollouts); `model` is a
    `Qwen2_5_VLForConditionalGeneration` (typically `nnx.merge`d from traced params inside jit);
    `row_chunks` must divide N (see the module docstring).
    """

    def shard(y, name):
        return maybe_constrain(y, name, model.activation_mesh, model.activation_layout)

    targets = jnp.asarray(completions, jnp.int32)
    lm = model.model.language_model
    embeds = shard(
        jnp.concatenate([jnp.repeat(model.embed(prompt), group_size, axis=0), lm.embed_tokens(targets)], axis=1),
        "hidden",
    )
    attention_mask, positions = sequence_layout(model.config, prompt, completion_mask, group_size)
    lp = prompt.input_ids.shape[1]
    scale = 1.0 / temperature if temperature > 0 else 1.0
    if row_chunks == 1:
        logp = _score_rows(model, embeds, attention_mask, positions, targets, lp, scale, chunk)
    else:
        n = targets.shape[0]
        if n % row_chunks:
            raise ValueError(f"row_chunks={row_chunks} must divide the {n} rows")
        graphdef, state = nnx.split(model)

        def split(x, axis=0):  # [.., N, ..] -> [k, .., N / k, ..]: chunk c holds rows c, c + k, ...
            x = jnp.moveaxis(x, axis, 0)
            x = x.reshape(n // row_chunks, row_chunks, *x.shape[1:]).swapaxes(0, 1)
            return jnp.moveaxis(x, 1, axis + 1)

        def body(args):
            e, m, pos, tok = args
            return _score_rows(nnx.merge(graphdef, state), e, m, pos, tok, lp, scale, chunk)

        parts = (split(embeds), split(attention_mask), split(positions, 1), split(targets))
        logp = jax.lax.map(jax.checkpoint(body), parts).swapaxes(0, 1).reshape(n, -1)
    return jnp.where(jnp.asarray(completion_mask).astype(bool), logp, 0.0)


def _score_rows(model, embeds, attention_mask, positions, targets, lp: int, scale: float, chunk: int) -> jax.Array:
    """Decoder + LM head of rows `embeds` [n, Lp + T, D]: log-probs of `targets` [n, T] (unmasked)."""

    def shard(y, name):
        return maybe_constrain(y, name, model.activation_mesh, model.activation_layout)

    hidden, _ = model.model.language_model(
        shard(embeds, "hidden"), positions, causal_mask(attention_mask), attention_mask=attention_mask
    )
    t = targets.shape[1]
    # Position i predicts token i + 1: the last prompt position predicts completion token 0.
    hidden = shard(hidden[:, lp - 1 : lp + t - 1], "hidden")

    def score(h, tok):
        logits = shard(model.logits_from_hidden(h), "logits") * scale
        return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tok[..., None], axis=-1)[..., 0]

    pieces = [score(hidden[:, s : s + chunk], targets[:, s : s + chunk]) for s in range(0, t, chunk)]
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
