"""Fast generation: one jitted prefill per prompt batch, then a jitted ``lax.while_loop`` decode.

The prefill runs the vision tower and the decoder over the (left-padded, bucketed) prompts and
fills a KV cache of the prompt length. The ``num_return_sequences`` samples of a prompt (HF order:
a prompt's samples are adjacent) share that cache: each decode step reads a prompt's keys and
values once for its G samples and each sample's own keys (a cache of ``max_new_tokens`` slots per
sample), merging the two partial attention results (``layers.shared_prompt_attention``). The
decode loop runs until every sequence has emitted EOS or ``max_new_tokens`` were made.
Shapes depend only on (batch, prompt bucket, patch bucket, max_new_tokens, num_return_sequences),
so a second call with the same bucket reuses the compiled functions (``jax.jit`` caches on the
static arguments: the model's graphdef and the sampling parameters).

Generated tokens take the M-RoPE ids of `rope_index.completion_position_ids` (the model config's
`text_after_vision` rule), as training log-probs and SFT do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from .inputs import ModelInputs, build_model_inputs
from .rope_index import completion_position_ids, completion_start
from .sharding import constrain_cache
from .text import SharedPromptCache

_NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``temperature == 0`` is greedy; ``top_k == 0`` and ``top_p == 1``
    disable those filters. Applied in the HF order: temperature, top-k, top-p."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class GenerationOutput(NamedTuple):
    """Result of :func:`generate`; rows are ``prompt * num_return_sequences + sample``."""

    tokens: jax.Array  # [B * G, max_new_tokens] int32, pad_token_id after EOS
    mask: jax.Array  # [B * G, max_new_tokens] bool, True up to and including EOS
    lengths: jax.Array  # [B * G] int32, number of completion tokens (EOS included)
    logprobs: jax.Array | None  # [B * G, max_new_tokens] float32 (0 where masked), if requested


def sampling_log_probs(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """Log-probabilities of the distribution tokens are drawn from (``-inf`` on filtered tokens).

    For greedy decoding this is the model's plain ``log_softmax`` (temperature 1, no filter), the
    useful quantity for scoring a greedy completion.
    """
    logits = logits.astype(jnp.float32)
    if params.greedy:
        return jax.nn.log_softmax(logits, axis=-1)
    logits = logits / params.temperature
    vocab = logits.shape[-1]
    sorted_logits = None
    if 0 < params.top_k < vocab:
        sorted_logits = jax.lax.top_k(logits, params.top_k)[0]  # descending
        logits = jnp.where(logits < sorted_logits[..., -1:], _NEG_INF, logits)
    if params.top_p < 1.0:
        # Keep the smallest prefix (by descending probability) whose mass reaches top_p: a token is
        # dropped when the mass strictly above it is already >= top_p (the top token always stays).
        # After top-k only the k survivors matter, so the full-vocabulary sort is skipped.
        if sorted_logits is None:
            sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_above = jnp.cumsum(probs, axis=-1) - probs
        keep = mass_above < params.top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, _NEG_INF, logits)
    return jax.nn.log_softmax(logits, axis=-1)


def sample_tokens(key: jax.Array, logits: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """Draw one token per row of ``logits [N, V]``; returns (tokens int32 [N], their log-probs [N])."""
    logprobs = sampling_log_probs(logits, params)
    if params.greedy:
        tokens = jnp.argmax(logits, axis=-1)
    else:
        # `jax.random.categorical` (Gumbel-max) with the same noise and the same first-maximum rule:
        # a max then a min over matching indices, which XLA:CPU runs ~3x faster than the fused
        # variadic argmax over the Gumbel logs.
        tokens = _first_argmax(logprobs + jax.random.gumbel(key, logprobs.shape, logprobs.dtype))
    tokens = tokens.astype(jnp.int32)
    return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]


def _first_argmax(x: jax.Array) -> jax.Array:
    """Index of the first maximum along the last axis of `x` (no NaN), as `jnp.argmax`."""
    top = jnp.max(x, axis=-1, keepdims=True)
    return jnp.min(jnp.where(x == top, jnp.arange(x.shape[-1]), x.shape[-1]), axis=-1)


def _eos_tuple(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, int):
        return (eos_token_id,)
    return tuple(int(e) for e in eos_token_id)


def decode_loop(
    step_fn: Any,
    cache: Any,
    first_logits: jax.Array,
    key: jax.Array,
    *,
    params: SamplingParams,
    max_new_tokens: int,
    eos_ids: jax.Array,
    pad_token_id: jax.Array | int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample ``max_new_tokens`` tokens with a ``lax.while_loop`` that stops once every row has finished.

    ``step_fn(cache, tokens [N], i) -> (logits [N, V], cache)`` feeds the token generated at step
    ``i - 1`` and returns the logits for step ``i``. ``first_logits [N, V]`` come from the prefill.
    ``eos_ids`` is an int32 array of stop ids (entries < 0 never match), ``pad_token_id`` a scalar.
    Returns (tokens [N, T] padded after EOS, log-probs [N, T] (0 where padded), done-mask [N, T]).
    Call inside jit.
    """
    n = first_logits.shape[0]
    tokens0, logp0 = sample_tokens(jax.random.fold_in(key, 0), first_logits, params)
    done0 = jnp.isin(tokens0, eos_ids)
    buf = jnp.full((n, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(tokens0)
    lp_buf = jnp.zeros((n, max_new_tokens), jnp.float32).at[:, 0].set(logp0)
    valid = jnp.zeros((n, max_new_tokens), bool).at[:, 0].set(True)

    def cond(carry):
        i, _, _, _, done, _, _ = carry
        return jnp.logical_and(i < max_new_tokens, jnp.logical_not(jnp.all(done)))

    def body(carry):
        i, buf, lp_buf, valid, done, last, cache = carry
        logits, cache = step_fn(cache, last, i)
        tok, logp = sample_tokens(jax.random.fold_in(key, i), logits, params)
        active = jnp.logical_not(done)
        tok = jnp.where(active, tok, pad_token_id)
        buf = jax.lax.dynamic_update_slice(buf, tok[:, None], (0, i))
        lp_buf = jax.lax.dynamic_update_slice(lp_buf, jnp.where(active, logp, 0.0)[:, None], (0, i))
        valid = jax.lax.dynamic_update_slice(valid, active[:, None], (0, i))
        done = jnp.logical_or(done, jnp.isin(tok, eos_ids))
        return i + 1, buf, lp_buf, valid, done, tok, cache

    carry = (jnp.int32(1), buf, lp_buf, valid, done0, tokens0, cache)
    _, buf, lp_buf, valid, _, _, _ = jax.lax.while_loop(cond, body, carry)
    return buf, lp_buf, valid


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", "mesh", "layout"))
def prefill(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    inputs: ModelInputs,
    cache_len: int,
    mesh: Mesh | None = None,
    layout: str = "fsdp_tensor",
):
    """Vision tower + decoder over the prompts; logits of the last position and the filled cache.

    With `model.prefill_chunks` k > 1 (and k dividing the B prompts) the prompts run k chunks one after
    the other (`lax.map`; chunk c holds rows c, c + k, ..., so every device keeps its own rows): the
    activations of B / k prompts at a time, the same logits and cache.
    """
    model = nnx.merge(graphdef, state)
    b, k = inputs.input_ids.shape[0], model.prefill_chunks

    def run(model, inputs):
        cache = model.init_cache(inputs.input_ids.shape[0], cache_len)
        if mesh is not None:
            cache = constrain_cache(cache, mesh, layout)
        return model.prefill(inputs, cache)

    if k == 1 or b % k:
        return run(model, inputs)

    def split(x, axis):  # [.., B, ..] -> [k, .., B / k, ..]
        x = jnp.moveaxis(x, axis, 0)
        return jnp.moveaxis(x.reshape(b // k, k, *x.shape[1:]).swapaxes(0, 1), 1, axis + 1)

    def merge(x):  # [k, B / k, ..] -> [B, ..]
        return x.swapaxes(0, 1).reshape(b, *x.shape[2:])

    chunks = jax.tree_util.tree_map_with_path(
        lambda path, x: split(x, 1 if jax.tree_util.keystr(path).endswith("position_ids") else 0), inputs
    )
    out = jax.lax.map(lambda c: run(nnx.merge(graphdef, state), c), chunks)
    return jax.tree.map(merge, out)


def _transpose_decoder_kernels(state: nnx.State) -> nnx.State:
    """`state` with the 2-D kernels of the decoder layers and the LM head transposed."""

    def swap(path, x):
        name = jax.tree_util.keystr(path)
        decoder = "language_model" in name or "lm_head" in name
        return x.T if decoder and "['kernel']" in name and x.ndim == 2 else x

    return jax.tree_util.tree_map_with_path(swap, state)


@jax.jit
def decode_weights(state: nnx.State) -> nnx.State:
    """The ``state`` argument of :func:`decode` with ``transposed_weights=True``: a copy of ``state``
    whose decoder and LM head kernels are transposed to [out, in]."""
    return _transpose_decoder_kernels(state)


def _dot_out_in(x: jax.Array, kernel: jax.Array, dimension_numbers, **kwargs) -> jax.Array:
    """`nnx.Linear.dot_general` for a kernel stored [out, in] (contracted on its axis 1)."""
    (x_axes, _), batch = dimension_numbers
    return jax.lax.dot_general(x, kernel, ((x_axes, (1,)), batch), **kwargs)


def _read_kernels_out_in(model: nnx.Module) -> None:
    """Make the decoder's and the LM head's `nnx.Linear`s contract [out, in] kernels (`decode_weights`)."""
    for root in (model.model.language_model, model.lm_head):
        for _, module in nnx.iter_graph(root) if root is not None else ():
            if isinstance(module, nnx.Linear):
                module.dot_general = _dot_out_in


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "params",
        "max_new_tokens",
        "num_return_sequences",
        "mesh",
        "layout",
        "transposed_weights",
    ),
)
def decode(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cache: Any,
    last_logits: jax.Array,
    attention_mask: jax.Array,
    position_ids: jax.Array,
    key: jax.Array,
    eos_ids: jax.Array,
    pad_token_id: jax.Array,
    *,
    params: SamplingParams,
    max_new_tokens: int,
    num_return_sequences: int,
    mesh: Mesh | None = None,
    layout: str = "fsdp_tensor",
    transposed_weights: bool = False,
):
    """Run :func:`decode_loop` with the model's decode step on a :class:`text.SharedPromptCache`: the
    G samples of a prompt share its cache (``cache`` from :func:`prefill`, slots past the prompt
    unused), each sample writes its tokens to its own cache of ``max_new_tokens`` slots.

    ``transposed_weights``: ``state`` holds the decoder's and the LM head's kernels transposed to
    [out, in] (:func:`decode_weights`). The steps' matrix products of a few rows then contract each
    kernel along its rows, which XLA:CPU does ~1.3x faster than with [in, out] kernels. (Transposing
    inside this program would not do: XLA picks the layouts that cancel the transposes.)
    """
    model = nnx.merge(graphdef, state)
    if transposed_weights:
        _read_kernels_out_in(model)
    g = num_return_sequences
    prompt_len = attention_mask.shape[1]
    last_logits, position_ids = jnp.repeat(last_logits, g, axis=0), jnp.repeat(position_ids, g, axis=1)
    cache = SharedPromptCache(
        prompt=jax.tree.map(lambda x: x[:, :prompt_len], cache),
        prompt_mask=attention_mask.astype(bool),
        own=model.init_cache(last_logits.shape[0], max_new_tokens),
    )
    if mesh is not None:
        cache = constrain_cache(cache, mesh, layout)
    slots = jnp.arange(max_new_tokens)
    next_pos = completion_start(model.config, position_ids, jnp.repeat(attention_mask, g, axis=0))  # [3, N]

    def step(cache, tokens, i):
        slot = i - 1  # own slot of the token fed at step i (generated at step i - 1)
        keys = (slots < slot)[None, :]
        return model.decode_step(tokens, next_pos + (i - 1), cache, slot, keys)

    return decode_loop(
        step,
        cache,
        last_logits,
        key,
        params=params,
        max_new_tokens=max_new_tokens,
        eos_ids=eos_ids,
        pad_token_id=pad_token_id,
    )


def generate(
    model: nnx.Module,
    inputs: ModelInputs | Any = None,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_return_sequences: int = 1,
    rng: jax.Array | int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    return_logprobs: bool = False,
    return_dict: bool = False,
    do_sample: bool | None = None,
    mesh: Mesh | None = None,
    layout: str = "fsdp_tensor",
    **hf_inputs: Any,
) -> jax.Array | GenerationOutput:
    """Generate ``max_new_tokens`` tokens for each of ``num_return_sequences`` samples of every prompt.

    Args:
      model: a ``Qwen2_5_VLForConditionalGeneration`` (any module with ``init_cache``, ``prefill``,
        ``decode_step``).
      inputs: prepared prompts (``inputs.build_model_inputs`` / ``collate_model_inputs``), left padded;
        or, HF style, ``input_ids`` (positional or keyword) with the other HF model arguments
        (``attention_mask``, ``pixel_values``, ``image_grid_thw``, ``pixel_values_videos``,
        ``video_grid_thw``, ``second_per_grid_ts``, ``mm_token_type_ids`` (ignored: derived from the
        ids)) as keywords, numpy / torch / jax; ``pad_patches_to`` buckets the patches.
      temperature: 0 for greedy decoding; top_p, top_k: nucleus / top-k filters (1.0 / 0 = off).
      rng: a JAX key or an int seed (default 0); the same key gives the same samples.
      eos_token_id: id(s) that end a sequence (default: the model config's); None/() = never stop.
      pad_token_id: written after EOS (default: the config's, else the first EOS id, else 0).
      return_logprobs: also return the log-prob of each token under the sampling distribution
        (temperature-scaled and filtered; for greedy the plain model log-softmax).
      return_dict: return a :class:`GenerationOutput` (implied by ``return_logprobs``).
      do_sample: HF switch; False forces greedy decoding, None/True keep ``temperature``.
      mesh, layout: when given, the KV cache is constrained to ``sharding.cache_specs`` on ``mesh``
        (weights are placed beforehand with ``sharding.shard_model``).

    Returns:
      tokens ``[B * num_return_sequences, max_new_tokens]`` int32 (a prompt's samples adjacent),
      ``pad_token_id`` after the first EOS; or a :class:`GenerationOutput` with mask, lengths and
      log-probs.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    config = getattr(model, "config", None)
    if not isinstance(inputs, ModelInputs):
        if inputs is not None:
            if "input_ids" in hf_inputs:
                raise ValueError("generate: input_ids given both positionally and by name")
            hf_inputs["input_ids"] = inputs
        inputs = hf_model_inputs(config, **hf_inputs)
    elif hf_inputs:
        raise ValueError(f"generate: unexpected arguments {sorted(hf_inputs)} with prepared ModelInputs")
    if not _last_column_set(inputs.attention_mask):
        raise ValueError("generate: prompts must be left padded (attention_mask[:, -1] must be 1 for every row)")
    params = SamplingParams(0.0 if do_sample is False else float(temperature), float(top_p), int(top_k))
    if eos_token_id is None and config is not None:
        eos_token_id = config.eos_token_ids
    eos_ids = _eos_tuple(eos_token_id)
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
    if pad_token_id is None:
        pad_token_id = eos_ids[0] if eos_ids else 0
    if rng is None or isinstance(rng, int):
        rng = jax.random.key(0 if rng is None else rng)

    graphdef, state = nnx.split(model)
    inputs = jax.tree.map(jnp.asarray, inputs)
    last_logits, cache = prefill(graphdef, state, inputs, inputs.input_ids.shape[1], mesh, layout)
    # Stop ids are data, padded to a multiple of 4 with -1, so changing them rarely recompiles.
    eos_arr = np.full(max(4, -(-len(eos_ids) // 4) * 4), -1, np.int32)
    eos_arr[: len(eos_ids)] = eos_ids
    # On CPU the decode steps read a transposed copy of the decoder's weights (see `decode`).
    transposed = jax.default_backend() == "cpu"
    tokens, logprobs, mask = decode(
        graphdef,
        decode_weights(state) if transposed else state,
        cache,
        last_logits,
        inputs.attention_mask,
        inputs.position_ids,
        rng,
        eos_arr,
        jnp.int32(pad_token_id),
        params=params,
        max_new_tokens=int(max_new_tokens),
        num_return_sequences=int(num_return_sequences),
        mesh=mesh,
        layout=layout,
        transposed_weights=transposed,
    )
    if not (return_dict or return_logprobs):
        return tokens
    return GenerationOutput(tokens, mask, mask.sum(axis=1, dtype=jnp.int32), logprobs if return_logprobs else None)


def _last_column_set(mask: Any) -> bool:
    """Whether every row of `mask` ends in 1 (left padding); of a global array spanning several
    processes, the rows this process holds."""
    if isinstance(mask, jax.Array) and not mask.is_fully_addressable:
        return all(np.asarray(shard.data)[:, -1].all() for shard in mask.addressable_shards)
    return bool(np.asarray(mask)[:, -1].all())


def with_completions(
    config: Any, inputs: ModelInputs, tokens: jax.Array, mask: jax.Array, num_return_sequences: int = 1
) -> ModelInputs:
    """Prompt + completion as one ``ModelInputs`` row per sample (for scoring with ``model.forward``).

    Rows follow :func:`generate`'s order (a prompt's samples adjacent); every prompt array is
    repeated ``num_return_sequences`` times, completion tokens are appended with their mask as
    attention and the M-RoPE ids decoding gave them (``completion_position_ids`` under ``config``).
    The logits of completion token ``k`` are at position ``prompt_len - 1 + k``.
    """
    g = num_return_sequences
    prompt = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x), g, axis=0), inputs)
    positions = jnp.repeat(jnp.asarray(inputs.position_ids), g, axis=1)
    steps = tokens.shape[1]
    new_positions = completion_position_ids(config, positions, prompt.attention_mask, steps).astype(positions.dtype)
    return prompt.replace(
        input_ids=jnp.concatenate([prompt.input_ids, tokens.astype(prompt.input_ids.dtype)], axis=1),
        attention_mask=jnp.concatenate([prompt.attention_mask, mask.astype(prompt.attention_mask.dtype)], axis=1),
        position_ids=jnp.concatenate([positions, new_positions], axis=2),
        vision_token_index=jnp.pad(prompt.vision_token_index, ((0, 0), (0, steps)), constant_values=-1),
    )


def hf_model_inputs(
    config: Any, *, mm_token_type_ids: Any = None, pad_patches_to: int | None = None, **arrays: Any
) -> ModelInputs:
    """``ModelInputs`` from HF-named arguments (numpy, torch or jax; ``mm_token_type_ids`` is ignored).

    ``arrays`` may hold ``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw``,
    ``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``; anything else is refused.
    """
    del mm_token_type_ids  # token types follow from the placeholder ids
    names = {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
    }
    unknown = sorted(set(arrays) - names)
    if unknown:
        raise ValueError(f"generate: unknown arguments {unknown}")
    if arrays.get("input_ids") is None:
        raise ValueError("generate: input_ids (or prepared ModelInputs) are required")
    return build_model_inputs(config, pad_patches_to=pad_patches_to, **{k: _to_numpy(v) for k, v in arrays.items()})


def _to_numpy(x: Any) -> Any:
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)
