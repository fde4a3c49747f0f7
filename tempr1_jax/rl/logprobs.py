"""Per-token log-probabilities of sampled completions under a policy (or the frozen reference).

The scored sequence of row `p * G + g` is prompt `p` (left padded, as generated from) followed by its
completion `g`. Completion tokens continue the prompt's M-RoPE ids as generation placed them: the k-th
generated token has id `n_valid_prompt_tokens + k + rope_delta` on all three axes (see
`Qwen2_5_VLForConditionalGeneration.decode_step`). Only the T positions that predict completion tokens
go through the LM head, in chunks of `chunk` positions, so the [N, T, V] logits never exist at once
for long completions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.qwen2_5_vl.inputs import ModelInputs


def repeat_prompts(prompt: ModelInputs, group_size: int) -> ModelInputs:
    """Each prompt row repeated `group_size` times (prompt-major), all fields; jittable."""
    def rep(name: str, x):
        return jnp.repeat(jnp.asarray(x), group_size, axis=1 if name == "position_ids" else 0)

    return ModelInputs(**{f: rep(f, getattr(prompt, f)) for f in ModelInputs.__dataclass_fields__})


def sequence_inputs(prompt: ModelInputs, completions: jax.Array, completion_mask: jax.Array,
                    group_size: int) -> ModelInputs:
    """ModelInputs of prompt + completion for every row [N = B * G, Lp + T]; jittable."""
    rep = repeat_prompts(prompt, group_size)
    completions = jnp.asarray(completions, jnp.int32)
    cmask = jnp.asarray(completion_mask).astype(rep.attention_mask.dtype)
    n, t = completions.shape
    n_valid = jnp.sum(rep.attention_mask, axis=1).astype(jnp.int32)
    ids = n_valid[:, None] + jnp.arange(t, dtype=jnp.int32)[None] + rep.rope_deltas.reshape(n, 1).astype(jnp.int32)
    positions = jnp.broadcast_to(ids[None], (3, n, t)).astype(rep.position_ids.dtype)
    return rep.replace(
        input_ids=jnp.concatenate([rep.input_ids.astype(jnp.int32), completions], axis=1),
        attention_mask=jnp.concatenate([rep.attention_mask, cmask], axis=1),
        position_ids=jnp.concatenate([rep.position_ids, positions], axis=2),
        vision_token_index=jnp.concatenate(
            [rep.vision_token_index, jnp.full((n, t), -1, rep.vision_token_index.dtype)], axis=1),
    )


def completion_logprobs(model, prompt: ModelInputs, completions: jax.Array, completion_mask: jax.Array,
                        group_size: int, temperature: float = 1.0, chunk: int = 256) -> jax.Array:
    """log p(completion token t | prompt, tokens < t) as float32 [N, T] (0 where the mask is 0).

    `temperature` divides the logits as sampling did (1.0 for greedy rollouts); `model` is a
    `Qwen2_5_VLForConditionalGeneration` (typically `nnx.merge`d from traced params inside jit).
    """
    inputs = sequence_inputs(prompt, completions, completion_mask, group_size)
    hidden = model.hidden_states(inputs)
    lp = prompt.input_ids.shape[1]
    t = completions.shape[1]
    # Position i predicts token i + 1: the last prompt position predicts completion token 0.
    hidden = hidden[:, lp - 1:lp + t - 1]
    scale = 1.0 / temperature if temperature > 0 else 1.0
    targets = jnp.asarray(completions, jnp.int32)

    def score(h, tok):
        logits = model.logits_from_hidden(h) * scale
        return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tok[..., None], axis=-1)[..., 0]

    if t <= chunk:
        logp = score(hidden, targets)
    else:
        pieces = [score(hidden[:, s:s + chunk], targets[:, s:s + chunk]) for s in range(0, t, chunk)]
        logp = jnp.concatenate(pieces, axis=1)
    return jnp.where(jnp.asarray(completion_mask).astype(bool), logp, 0.0)
