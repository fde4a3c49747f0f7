"""Generation (models/qwen2_5_vl/generation.py) against transformers' `generate` and a full forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from model_oracle import VIDEO_GRID, config_for_tests, hf_model, left_pad, pixels, vision_prompt
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, build_model_inputs, generation
from models.qwen2_5_vl.generation import SamplingParams, generate, sampling_log_probs, with_completions
from models.qwen2_5_vl.layers import masked_attention, shared_prompt_attention
from models.qwen2_5_vl.rope_index import token_types

# One xdist worker for the whole file: the module fixture and the compiled programs are shared.
pytestmark = pytest.mark.xdist_group("model_generation")

STEPS = 32
SAMPLE_STEPS = 12
SAMPLING = SamplingParams(temperature=0.7, top_p=0.9, top_k=40)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny HF model, our model loaded from its checkpoint, and a left-padded 2-prompt video batch."""
    config = config_for_tests()
    hf = hf_model(config)
    directory = tmp_path_factory.mktemp("gen_ckpt")
    hf.save_pretrained(directory)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(directory)
    rng = np.random.default_rng(0)
    rows = [
        vision_prompt(config, rng, [VIDEO_GRID], ["video"]),
        vision_prompt(config, rng, [VIDEO_GRID], ["video"], text_len=3),
    ]
    ids, mask = left_pad(rows, config.pad_token_id)
    hf_args = dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=pixels(config, rng, [VIDEO_GRID, VIDEO_GRID]),
        video_grid_thw=np.array([VIDEO_GRID] * 2),
        second_per_grid_ts=np.array([1.0, 0.5], np.float32),
    )
    inputs = build_model_inputs(config, **hf_args)
    return config, hf, model, hf_args, inputs


def _hf_greedy(hf, config, hf_args, steps: int) -> np.ndarray:
    t = {k: torch.as_tensor(v) for k, v in hf_args.items()}
    with torch.no_grad():
        out = hf.generate(
            **t,
            mm_token_type_ids=torch.as_tensor(token_types(config, hf_args["input_ids"])),
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=config.pad_token_id,
        )
    return out[:, hf_args["input_ids"].shape[1] :].numpy()


def test_greedy_matches_transformers_and_compiles_once(setup):
    config, hf, model, hf_args, inputs = setup
    ref = _hf_greedy(hf, config, hf_args, STEPS)
    assert ref.shape == (2, STEPS)
    ours = generate(model, inputs, max_new_tokens=STEPS, temperature=0.0, eos_token_id=())
    np.testing.assert_array_equal(np.asarray(ours), ref)
    # HF argument names through the model method (torch tensors accepted); same bucket: no retrace.
    sizes = (generation.prefill._cache_size(), generation.decode._cache_size())
    again = model.generate(
        **{k: torch.as_tensor(v) for k, v in hf_args.items()}, max_new_tokens=STEPS, do_sample=False, eos_token_id=()
    )
    np.testing.assert_array_equal(np.asarray(again), ref)
    assert (generation.prefill._cache_size(), generation.decode._cache_size()) == sizes


def test_sampling_reproducible_and_shares_prefill(setup, monkeypatch):
    _, _, model, _, inputs = setup
    calls = []
    real = generation.prefill

    def spy(graphdef, state, prefill_inputs, *args):
        calls.append(prefill_inputs.input_ids.shape[0])
        return real(graphdef, state, prefill_inputs, *args)

    monkeypatch.setattr(generation, "prefill", spy)
    kw = dict(
        max_new_tokens=SAMPLE_STEPS,
        temperature=SAMPLING.temperature,
        top_k=SAMPLING.top_k,
        top_p=SAMPLING.top_p,
        num_return_sequences=3,
        eos_token_id=(),
    )
    a = generate(model, inputs, rng=jax.random.key(7), **kw)
    b = generate(model, inputs, rng=jax.random.key(7), **kw)
    c = generate(model, inputs, rng=jax.random.key(8), **kw)
    assert calls == [2, 2, 2]  # one prefill of the 2 prompts per call, not 6
    assert a.shape == (6, SAMPLE_STEPS)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Samples of a prompt differ from each other (independent draws from the shared cache).
    assert len({tuple(r) for r in np.asarray(a)[:3]}) > 1
    # Greedy samples of one prompt are identical copies.
    g = np.asarray(
        generate(model, inputs, max_new_tokens=SAMPLE_STEPS, temperature=0.0, num_return_sequences=3, eos_token_id=())
    )
    np.testing.assert_array_equal(g[0:3], np.broadcast_to(g[0], (3, SAMPLE_STEPS)))
    np.testing.assert_array_equal(g[3:6], np.broadcast_to(g[3], (3, SAMPLE_STEPS)))


def test_eos_padding_mask_and_lengths(setup):
    config, _, model, _, inputs = setup
    free = np.asarray(generate(model, inputs, max_new_tokens=STEPS, temperature=0.0, eos_token_id=()))
    eos = int(free[0, 5])
    first = [int(np.flatnonzero(r == eos)[0]) if (r == eos).any() else None for r in free]
    out = generate(
        model,
        inputs,
        max_new_tokens=STEPS,
        temperature=0.0,
        eos_token_id=[eos, 299],
        pad_token_id=config.pad_token_id,
        return_dict=True,
    )
    tokens, mask, lengths = map(np.asarray, (out.tokens, out.mask, out.lengths))
    assert out.logprobs is None
    for row, stop in enumerate(first):
        n = STEPS if stop is None else stop + 1
        assert lengths[row] == n
        np.testing.assert_array_equal(tokens[row, :n], free[row, :n])
        assert (tokens[row, n:] == config.pad_token_id).all()
        assert mask[row, :n].all() and not mask[row, n:].any()


def test_logprobs_equal_full_forward(setup):
    _, _, model, _, inputs = setup
    params = SAMPLING
    g, steps = 3, SAMPLE_STEPS  # same static arguments as the sampling test: no new compilation
    out = generate(
        model,
        inputs,
        max_new_tokens=steps,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        num_return_sequences=g,
        rng=3,
        eos_token_id=[5, 7, 11],
        return_logprobs=True,
    )
    tokens, mask, logprobs = map(np.asarray, (out.tokens, out.mask, out.logprobs))
    full = with_completions(model.config, inputs, out.tokens, out.mask, g)
    assert full.input_ids.shape == (2 * g, inputs.input_ids.shape[1] + steps)
    logits = jax.jit(lambda m, x: m.forward(x))(model, full)
    length = inputs.input_ids.shape[1]
    lp = sampling_log_probs(logits[:, length - 1 : length - 1 + steps], params)
    expected = np.take_along_axis(np.asarray(lp), tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(logprobs[mask], expected[mask], atol=1e-5)
    assert np.isfinite(logprobs[mask]).all() and (logprobs[~mask] == 0).all()


def _repeated_cache_decode(model, inputs, g: int, steps: int, params: SamplingParams, key, eos_ids):
    """The reference decoding: each sample holds its own copy of its prompt's cache (prompt + `steps`
    slots) and attends to it with one softmax; positions as `with_completions` gives them."""
    graphdef, state = nnx.split(model)
    inputs = jax.tree.map(jnp.asarray, inputs)
    length = inputs.input_ids.shape[1]
    n = inputs.batch_size * g
    last, cache = generation.prefill(graphdef, state, inputs, length + steps)
    repeat = lambda x: jnp.repeat(x, g, axis=0)
    completions = with_completions(
        model.config, inputs, jnp.zeros((n, steps), jnp.int32), jnp.ones((n, steps), bool), g
    )
    positions = completions.position_ids[:, :, length:]
    prompt_keys = jnp.pad(repeat(inputs.attention_mask).astype(bool), ((0, 0), (0, steps)))
    slots = jnp.arange(length + steps)

    def run(state, cache, last, key):
        model = nnx.merge(graphdef, state)

        def step(cache, tokens, i):
            keys = prompt_keys | ((slots >= length) & (slots < length + i - 1))[None]
            return model.decode_step(tokens, positions[:, :, i - 1], cache, length + i - 1, keys)

        return generation.decode_loop(
            step,
            cache,
            last,
            key,
            params=params,
            max_new_tokens=steps,
            eos_ids=jnp.asarray(eos_ids, jnp.int32),
            pad_token_id=0,
        )

    return jax.jit(run)(state, jax.tree.map(repeat, cache), repeat(last), key)


@pytest.mark.parametrize("params", [SamplingParams(0.0), SAMPLING])
def test_shared_prompt_decode_equals_repeated_cache(setup, params):
    """The G samples read one copy of their prompt's cache: same tokens and log-probs as G copies."""
    _, _, model, _, inputs = setup
    g, steps, key = 3, SAMPLE_STEPS, jax.random.key(5)
    out = generate(
        model,
        inputs,
        max_new_tokens=steps,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        num_return_sequences=g,
        rng=key,
        eos_token_id=[5, 7, 11],
        pad_token_id=0,
        return_logprobs=True,
    )
    tokens, logprobs, mask = _repeated_cache_decode(model, inputs, g, steps, params, key, [5, 7, 11, -1])
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(tokens))
    np.testing.assert_array_equal(np.asarray(out.mask), np.asarray(mask))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(logprobs), atol=1e-5)


def test_decode_holds_one_prompt_cache_per_prompt(setup):
    """The decode program's temporaries stay below G copies of the prompt cache (they held them)."""
    config, _, model, _, inputs = setup
    graphdef, state = nnx.split(model)
    inputs = jax.tree.map(jnp.asarray, inputs)
    g, length, t = 8, inputs.input_ids.shape[1], config.text
    last, cache = generation.prefill(graphdef, state, inputs, length)
    compiled = generation.decode.lower(
        graphdef,
        state,
        cache,
        last,
        inputs.attention_mask,
        inputs.position_ids,
        jax.random.key(0),
        jnp.full((4,), -1, jnp.int32),
        jnp.int32(0),
        params=SamplingParams(0.0),
        max_new_tokens=SAMPLE_STEPS,
        num_return_sequences=g,
    ).compile()
    copies = inputs.batch_size * g * length * t.num_hidden_layers * 2 * t.num_key_value_heads * t.head_dim * 4
    assert compiled.memory_analysis().temp_size_in_bytes < copies


def test_shared_prompt_attention_equals_one_softmax_over_copies():
    """Prompt keys shared by G rows + own keys, merged by log-sum-exp = masked attention over both."""
    rng = np.random.default_rng(0)
    b, g, lp, t, kv, h, d = 2, 3, 7, 5, 2, 4, 8
    q = jnp.asarray(rng.standard_normal((b * g, 1, h, d)), jnp.float32)
    pk, pv = (jnp.asarray(rng.standard_normal((b, lp, kv, d)) * 3, jnp.float32) for _ in range(2))
    k, v = (jnp.asarray(rng.standard_normal((b * g, t, kv, d)) * 3, jnp.float32) for _ in range(2))
    prompt_mask = jnp.asarray(np.arange(lp) >= np.array([[0], [3]]))  # the second prompt left padded
    own_mask = jnp.asarray(rng.random((b * g, 1, t)) < 0.5).at[:, :, 0].set(True)
    got = shared_prompt_attention(q, pk, pv, prompt_mask, k, v, own_mask, 0.3)
    rep = lambda x: jnp.repeat(x, g, axis=0)
    mask = jnp.concatenate([rep(prompt_mask)[:, None], own_mask], axis=-1)
    want = masked_attention(q, jnp.concatenate([rep(pk), k], 1), jnp.concatenate([rep(pv), v], 1), mask, 0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.5, 20, 0.6)])
def test_filters_match_transformers_warpers(temperature, top_k, top_p):
    logits = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32) * 3
    scores = torch.from_numpy(logits)
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    ref = torch.log_softmax(scores, -1).numpy()
    ours = np.asarray(sampling_log_probs(jnp.asarray(logits), SamplingParams(temperature, top_p, top_k)))
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
    np.testing.assert_allclose(ours[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-5)


def test_bad_arguments(setup):
    _, _, model, hf_args, inputs = setup
    with pytest.raises(ValueError, match="temperature"):
        generate(model, inputs, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, inputs, max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, inputs, max_new_tokens=0)
    with pytest.raises(ValueError, match="unknown arguments"):
        generate(model, max_new_tokens=2, use_cache=True, **hf_args)
    with pytest.raises(ValueError, match="left padded"):
        generate(model, inputs.replace(attention_mask=np.asarray(inputs.attention_mask)[:, ::-1]), max_new_tokens=2)


def test_sample_tokens_equal_jax_categorical():
    """Our Gumbel-max draw (max, then the first index reaching it) is `jax.random.categorical`'s, ties included."""
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.standard_normal((6, 300)) * 4, jnp.float32)
    logits = logits.at[0].set(0.0).at[1, 7:].set(-jnp.inf)  # a uniform row and a row with filtered tokens
    params = SamplingParams(1.0)
    for seed in range(50):
        key = jax.random.key(seed)
        tokens, _ = generation.sample_tokens(key, logits, params)
        want = jax.random.categorical(key, sampling_log_probs(logits, params), axis=-1)
        np.testing.assert_array_equal(np.asarray(tokens), np.asarray(want))


def test_decode_with_transposed_weights_equals_plain(setup):
    """`decode_weights` + `transposed_weights=True` (the CPU path of `generate`): the same samples."""
    _, _, model, _, inputs = setup
    graphdef, state = nnx.split(model)
    inputs = jax.tree.map(jnp.asarray, inputs)
    last, cache = generation.prefill(graphdef, state, inputs, inputs.input_ids.shape[1])
    transposed = generation.decode_weights(state)
    assert transposed["lm_head"]["kernel"].shape == state["lm_head"]["kernel"].shape[::-1]
    outs = [
        generation.decode(
            graphdef,
            s,
            cache,
            last,
            inputs.attention_mask,
            inputs.position_ids,
            jax.random.key(3),
            jnp.full((4,), -1, jnp.int32),
            jnp.int32(0),
            params=SAMPLING,
            max_new_tokens=SAMPLE_STEPS,
            num_return_sequences=2,
            transposed_weights=t,
        )
        for s, t in ((state, False), (transposed, True))
    ]
    np.testing.assert_array_equal(np.asarray(outs[0][0]), np.asarray(outs[1][0]))
    np.testing.assert_allclose(np.asarray(outs[0][1]), np.asarray(outs[1][1]), atol=1e-5)
