"""One position rule for generated tokens: sampling (`generate`), training log-probs (`completion_logprobs`),
SFT (`get_rope_index` over prompt + answer) agree under both `text_after_vision` rules, on long-video prompts
whose temporal ids run past the trailing text; a GRPO step on freshly sampled completions has ratio 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_oracle import left_pad, pixels, vision_prompt

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.inputs import build_model_inputs
from models.qwen2_5_vl.rope_index import completion_position_ids, get_rope_index
from tempr1_jax.rl.logprobs import completion_logprobs
from tempr1_jax.rl.losses import LossConfig
from tempr1_jax.rl.trainer import make_policy_loss
from tempr1_jax.training.model_setup import init_model

RULES = ("max_plus_one", "transformers5")
G, STEPS = 3, 10
EOS = (5, 7, 11)
LONG_VIDEO = (16, 4, 4)  # merged 16 x 2 x 2: temporal ids run 15 * interval past the block's start


def _prompts(config, rng):
    """Two left-padded prompts: a long video with short trailing text, and an image plus a long video."""
    rows = [
        vision_prompt(config, rng, [LONG_VIDEO], ["video"], text_len=2),
        vision_prompt(config, rng, [(1, 4, 4), (12, 2, 4)], ["image", "video"], text_len=3),
    ]
    ids, mask = left_pad(rows, config.pad_token_id)
    return build_model_inputs(
        config,
        ids,
        mask,
        pixel_values=pixels(config, rng, [(1, 4, 4)]),
        image_grid_thw=np.array([(1, 4, 4)]),
        pixel_values_videos=pixels(config, rng, [LONG_VIDEO, (12, 2, 4)]),
        video_grid_thw=np.array([LONG_VIDEO, (12, 2, 4)]),
        second_per_grid_ts=np.array([2 / 3, 1.5], np.float32),
    )


@pytest.mark.parametrize("rule", RULES)
def test_completion_start_by_rule(rule):
    """Hand-worked: text, a 3-group video (merged 2x2) at interval 4 (temporal ids 3, 7, 11), 2 text tokens."""
    config = tiny_config(text_after_vision=rule)
    row = [5, 6, config.vision_start_token_id] + [config.video_token_id] * 12 + [config.vision_end_token_id, 7, 8]
    ids, mask = left_pad([row, row[:1]], config.pad_token_id)
    pos, deltas = get_rope_index(
        config, ids, video_grid_thw=np.array([(3, 4, 4)]), second_per_grid_ts=[2.0], attention_mask=mask
    )
    # max_plus_one: the trailing text is 12, 13, 14 and generation goes on at 15 (= n_valid + rope_delta);
    # transformers5: the trailing text is 5, 6, 7 and transformers 5's generate goes on at 8, below max + 1 = 12.
    first = {"max_plus_one": 15, "transformers5": 8}[rule]
    assert pos[0, 0, -1] == first - 1 and pos[:, 0].max() + 1 == {"max_plus_one": 15, "transformers5": 12}[rule]
    got = np.asarray(completion_position_ids(config, pos, mask, 3))
    np.testing.assert_array_equal(got[:, 0], np.broadcast_to([first, first + 1, first + 2], (3, 3)))
    np.testing.assert_array_equal(got[:, 1], np.broadcast_to([1, 2, 3], (3, 3)))  # a left-padded text-only row
    if rule == "max_plus_one":
        np.testing.assert_array_equal(got[0, :, 0], mask.sum(1) + deltas[:, 0])


@pytest.mark.parametrize("rule", RULES)
def test_sft_positions_are_the_generation_positions(rule):
    """SFT numbers prompt + answer with `get_rope_index` (the loader); the answer gets the ids of generation."""
    config = tiny_config(text_after_vision=rule)
    rng = np.random.default_rng(0)
    grids = [(1, 4, 4), LONG_VIDEO]
    prompt = vision_prompt(config, rng, grids, ["image", "video"], text_len=2)
    answer = list(rng.integers(0, 280, 7))
    vision = dict(image_grid_thw=np.array(grids[:1]), video_grid_thw=np.array(grids[1:]), second_per_grid_ts=[0.5])
    full, _ = get_rope_index(config, np.array([prompt + answer]), **vision)
    alone, _ = get_rope_index(config, np.array([prompt]), **vision)
    assert alone.max() > alone[0, 0, -1] or rule == "max_plus_one"  # the video runs past the trailing text
    generated = completion_position_ids(config, alone, np.ones((1, len(prompt))), len(answer))
    np.testing.assert_array_equal(full[:, :, len(prompt) :], generated)


@pytest.fixture(scope="module", params=RULES)
def models(request):
    """(config, policy, reference, prompts): two tiny models with different weights under one rule."""
    config = tiny_config(text_after_vision=request.param, vision_depth=2, vision_fullatt_block_indexes=(1,))
    policy, reference = (init_model(config, seed, std=0.2) for seed in (0, 1))
    prompts = _prompts(config, np.random.default_rng(3))
    if request.param == "transformers5":  # the case where last + 1 and max + 1 differ
        assert (prompts.position_ids.max(axis=(0, 2)) > prompts.position_ids[0, :, -1]).all()
    return config, policy, reference, prompts


@jax.jit
def _scored(model, prompts, tokens, mask):
    return completion_logprobs(model, prompts, tokens, mask, G)


@pytest.mark.parametrize("which", ["policy", "reference"])
def test_sampled_logprobs_equal_trainer_logprobs(models, which):
    _, policy, reference, prompts = models
    model = policy if which == "policy" else reference
    out = generate(
        model,
        prompts,
        max_new_tokens=STEPS,
        temperature=1.0,
        num_return_sequences=G,
        rng=4,
        eos_token_id=EOS,
        return_logprobs=True,
    )
    mask = np.asarray(out.mask)
    assert mask.sum() > G * 2  # several tokens per sample
    scored = np.asarray(_scored(model, prompts, out.tokens, mask.astype(np.float32)))
    np.testing.assert_allclose(scored[mask], np.asarray(out.logprobs)[mask], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_first_grpo_ratio_is_one(models):
    """The sampler's log-probs as the old policy: the first update is on-policy (ratio 1, same loss and
    gradient as with `old_logp=None`); the reference's KL uses the same positions."""
    _, policy, reference, prompts = models
    out = generate(
        policy,
        prompts,
        max_new_tokens=STEPS,
        temperature=1.0,
        num_return_sequences=G,
        rng=5,
        eos_token_id=EOS,
        return_logprobs=True,
    )
    mask = np.asarray(out.mask, np.float32)
    ref_logp = _scored(reference, prompts, out.tokens, mask)
    graphdef, params, frozen = nnx.split(policy, nnx.Param, ...)
    loss_fn = make_policy_loss(graphdef, LossConfig(name="grpo", beta=0.04), G)
    batch = {
        "prompt": jax.tree.map(jnp.asarray, prompts),
        "completions": out.tokens,
        "mask": mask,
        "advantages": jnp.asarray(np.random.default_rng(0).normal(size=2 * G), jnp.float32),
        "weights": jnp.ones(2 * G),
        "old_logp": out.logprobs,
        "ref_logp": ref_logp,
    }

    def value(p, b):
        total, count, aux = loss_fn(p, frozen, b)
        return total / count, aux

    grad = jax.jit(jax.value_and_grad(value, has_aux=True))
    (sampled, aux), g_sampled = grad(params, batch)
    (on_policy, _), g_on_policy = grad(params, {**batch, "old_logp": None})
    ratio = np.exp(np.asarray(_scored(policy, prompts, out.tokens, mask)) - np.asarray(out.logprobs))
    assert np.abs(ratio - 1)[mask > 0].max() <= 1e-5
    assert float(aux["clipped"]) == 0.0
    np.testing.assert_allclose(float(sampled), float(on_policy), rtol=0, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_sampled), jax.tree.leaves(g_on_policy)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
