"""Qwen2.5-VL in Flax against transformers (float32): components, whole model, KV-cache decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from model_oracle import (
    IMAGE_GRID,
    VIDEO_GRID,
    config_for_tests,
    hf_logits,
    hf_model,
    left_pad,
    pixels,
    rel_err,
    vision_prompt,
)

from models.qwen2_5_vl.inputs import build_model_inputs, collate_model_inputs
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from models.qwen2_5_vl.rope_index import token_types
from models.qwen2_5_vl.text import causal_mask, mrope_cos_sin
from models.qwen2_5_vl.vision import BlockLayout, vision_rotary

TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(config, transformers model, our model loaded from its save_pretrained)."""
    config = config_for_tests()
    ref = hf_model(config)
    path = tmp_path_factory.mktemp("hf")
    ref.save_pretrained(path)
    return config, ref, Qwen2_5_VLForConditionalGeneration.from_pretrained(path)


def _batch(config, rng, trailing_text=5):
    """Row 0: an image (non-square, partial windows); row 1: a video with 3 temporal groups (left padded)."""
    rows = [
        vision_prompt(config, rng, [IMAGE_GRID], ["image"], text_len=trailing_text),
        vision_prompt(config, rng, [VIDEO_GRID], ["video"], text_len=trailing_text + 4),
    ]
    ids, mask = left_pad(rows, config.pad_token_id)
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels(config, rng, [IMAGE_GRID]),
        image_grid_thw=np.array([IMAGE_GRID]),
        pixel_values_videos=pixels(config, rng, [VIDEO_GRID]),
        video_grid_thw=np.array([VIDEO_GRID]),
        second_per_grid_ts=np.array([1.25]),
    )


@pytest.mark.parametrize("attn_block", [256, 16])  # whole blocks / temporal groups a block of queries at a time
def test_vision_tower(pair, attn_block):
    config, ref, ours = pair
    rng = np.random.default_rng(1)
    grids = [IMAGE_GRID, VIDEO_GRID, (2, 4, 8)]
    px = pixels(config, rng, grids)
    with torch.no_grad():
        expected = torch.cat(
            [
                ref.model.visual(torch.as_tensor(p), grid_thw=torch.tensor([g])).pooler_output
                for p, g in zip(np.split(px, np.cumsum([np.prod(g) for g in grids])[:-1]), grids)
            ]
        )
    ids = np.array([vision_prompt(config, rng, grids, ["image"] * 3)])
    inputs = build_model_inputs(
        config, ids, pixel_values=px, image_grid_thw=np.array(grids), pad_patches_to=px.shape[0] + 12
    )
    visual = nnx.jit(
        lambda m, i: m(
            i.pixel_values,
            i.vision_pos_ids,
            i.window_index,
            i.window_inverse,
            BlockLayout(i.window_blocks, i.window_slot),
            BlockLayout(i.frame_blocks, i.frame_slot),
        )
    )
    tower = nnx.clone(ours.model.visual)
    tower.attn_block = attn_block
    got = np.asarray(visual(tower, jax.tree.map(jnp.asarray, inputs)))[0, : expected.shape[0]]
    assert rel_err(got, expected.numpy()) < TOL


def test_vision_rotary_table_equals_angles(pair):
    """cos / sin looked up in a table over the ids equal cos / sin of each (row, col) id's angles."""
    v = pair[0].vision
    ids = np.random.default_rng(0).integers(0, 40, (2, 40, 2))
    quarter = v.head_dim // 4
    inv_freq = 1.0 / (v.rope_theta ** (np.arange(0, 2 * quarter, 2) / (2 * quarter)))
    angles = (ids[..., None] * inv_freq).reshape(2, 40, 2 * quarter)
    angles = np.concatenate([angles, angles], axis=-1)
    cos, sin = vision_rotary(v, jnp.asarray(ids))
    np.testing.assert_allclose(cos, np.cos(angles), atol=2e-6)
    np.testing.assert_allclose(sin, np.sin(angles), atol=2e-6)


def test_mrope_cos_sin(pair):
    config, ref, _ = pair
    pos = np.random.default_rng(0).integers(0, 300, (3, 2, 7))
    cos, sin = ref.model.language_model.rotary_emb(torch.zeros(1, dtype=torch.float32), torch.as_tensor(pos))
    ours_cos, ours_sin = mrope_cos_sin(config.text, jnp.asarray(pos), jnp.float32)
    np.testing.assert_allclose(ours_cos, cos.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours_sin, sin.numpy(), atol=1e-6)


def test_text_decoder(pair):
    """Decoder stack on given embeddings and 3-D positions, with left padding."""
    config, ref, ours = pair
    rng = np.random.default_rng(6)
    embeds = rng.standard_normal((2, 11, config.text.hidden_size)).astype(np.float32)
    pos = np.sort(rng.integers(0, 40, (3, 2, 11)), axis=-1)
    mask = np.ones((2, 11), np.int64)
    mask[1, :4] = 0
    with torch.no_grad():
        expected = ref.model.language_model(
            inputs_embeds=torch.as_tensor(embeds),
            position_ids=torch.as_tensor(pos),
            attention_mask=torch.as_tensor(mask),
        ).last_hidden_state.numpy()
    got, _ = ours.model.language_model(jnp.asarray(embeds), jnp.asarray(pos), causal_mask(jnp.asarray(mask)))
    valid = mask.astype(bool)
    assert rel_err(np.asarray(got)[valid], expected[valid]) < TOL


def test_logits_image_and_video_batch_left_padded(pair):
    config, ref, ours = pair
    kwargs = _batch(config, np.random.default_rng(2))
    got = np.asarray(ours(**kwargs, mm_token_type_ids=token_types(config, kwargs["input_ids"])))
    expected = hf_logits(ref, config, **kwargs)
    valid = kwargs["attention_mask"].astype(bool)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert rel_err(got[valid], expected[valid]) < TOL
    with pytest.raises(ValueError, match="mm_token_type_ids disagree"):
        ours(**kwargs, mm_token_type_ids=np.zeros_like(kwargs["input_ids"]))


def test_logits_long_prompt(pair):
    """A 500+ token prompt: long text around a video with fractional seconds per group."""
    config, ref, ours = pair
    rng = np.random.default_rng(3)
    grid = (4, 4, 6)
    row = vision_prompt(config, rng, [grid], ["video"], text_len=250)
    kwargs = dict(
        input_ids=np.array([row]),
        pixel_values_videos=pixels(config, rng, [grid]),
        video_grid_thw=np.array([grid]),
        second_per_grid_ts=np.array([0.7]),
    )
    assert len(row) > 500
    blocked = nnx.clone(ours)  # exercise the blocked attention paths of both towers
    blocked.model.language_model.attn_block = 128
    blocked.model.visual.attn_block = 16
    assert rel_err(np.asarray(blocked(**kwargs)), hf_logits(ref, config, **kwargs)) < TOL


def test_tied_embeddings_text_only(tmp_path):
    config = config_for_tests(tie_word_embeddings=True, num_hidden_layers=1)
    ref = hf_model(config, seed=1)
    ref.save_pretrained(tmp_path)
    ours = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    assert ours.lm_head is None
    ids = np.random.default_rng(0).integers(0, 280, (2, 9))
    assert rel_err(np.asarray(ours(ids)), hf_logits(ref, config, ids)) < TOL
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding: transformers' forward still numbers positions 0..L-1
    valid = mask.astype(bool)
    got, expected = np.asarray(ours(ids, mask)), hf_logits(ref, config, ids, mask)
    assert rel_err(got[valid], expected[valid]) < TOL


def test_prefill_and_decode_equal_full_forward(pair):
    config, _, ours = pair
    rng = np.random.default_rng(4)
    kwargs = _batch(config, rng, trailing_text=6)
    prompt = build_model_inputs(config, **kwargs)
    b, length = prompt.input_ids.shape
    steps = 3
    new = rng.integers(0, 280, (b, steps))
    full = build_model_inputs(
        config,
        **{
            **kwargs,
            "input_ids": np.concatenate([kwargs["input_ids"], new], 1),
            "attention_mask": np.pad(kwargs["attention_mask"], ((0, 0), (0, steps)), constant_values=1),
        },
    )
    expected = np.asarray(nnx.jit(lambda m, i: m.forward(i))(ours, jax.tree.map(jnp.asarray, full)))

    cache = ours.init_cache(b, length + steps + 2)
    logits, cache = nnx.jit(lambda m, i, c: m.prefill(i, c))(ours, jax.tree.map(jnp.asarray, prompt), cache)
    assert rel_err(logits, expected[:, length - 1]) < TOL
    decode = nnx.jit(lambda m, t, p, c, k, a: m.decode_step(t, p, c, k, a))
    attn = np.zeros((b, length + steps + 2), np.int32)
    attn[:, :length] = prompt.attention_mask
    last = prompt.position_ids[0, :, -1]
    for k in range(steps):
        position = last + 1 + k
        logits, cache = decode(
            ours, jnp.asarray(new[:, k]), jnp.asarray(position), cache, length + k, jnp.asarray(attn)
        )
        attn[:, length + k] = 1
        assert rel_err(logits, expected[:, length + k]) < TOL
    # the positions used for decoding are those of the full sequence
    np.testing.assert_array_equal(
        full.position_ids[:, :, length:], np.broadcast_to(last[:, None] + 1 + np.arange(steps), (3, b, steps))
    )


@pytest.mark.slow
def test_decode_positions_match_transformers_generate(pair):
    """A long video before short text (max id > last id): greedy decoding follows HF generate."""
    config, ref, ours = pair
    rng = np.random.default_rng(8)
    grid = (8, 2, 2)
    row = vision_prompt(config, rng, [grid], ["video"], text_len=2)
    kwargs = dict(
        input_ids=np.array([row]),
        pixel_values_videos=pixels(config, rng, [grid]),
        video_grid_thw=np.array([grid]),
        second_per_grid_ts=np.array([2.0]),
    )
    prompt = build_model_inputs(config, **kwargs)
    assert prompt.position_ids.max() > prompt.position_ids[0, 0, -1]
    t = lambda x, dt=torch.long: torch.as_tensor(np.asarray(x), dtype=dt)
    out = ref.generate(
        input_ids=t(row)[None],
        attention_mask=torch.ones(1, len(row), dtype=torch.long),
        pixel_values_videos=t(kwargs["pixel_values_videos"], torch.float32),
        video_grid_thw=t([grid]),
        second_per_grid_ts=t([2.0], torch.float32),
        mm_token_type_ids=t(token_types(config, kwargs["input_ids"])),
        max_new_tokens=4,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    length = len(row)
    cache = ours.init_cache(1, length + 4)
    logits, cache = ours.prefill(jax.tree.map(jnp.asarray, prompt), cache)
    attn = np.zeros((1, length + 4), np.int32)
    attn[:, :length] = 1
    for k in range(4):
        assert rel_err(logits[0], out.logits[k][0].numpy()) < TOL
        if k == 3:
            break
        position = prompt.position_ids[0, :, -1] + 1 + k
        token = out.sequences[:, length + k].numpy()
        logits, cache = ours.decode_step(
            jnp.asarray(token), jnp.asarray(position), cache, length + k, jnp.asarray(attn)
        )
        attn[:, length + k] = 1


@pytest.mark.slow
def test_collated_batch_equals_single_samples(pair):
    """Right padding, padded patches and batching do not change a sample's logits."""
    config, _, ours = pair
    rng = np.random.default_rng(5)
    kwargs = _batch(config, rng)
    singles = [
        build_model_inputs(
            config,
            kwargs["input_ids"][i : i + 1][:, kwargs["attention_mask"][i] > 0],
            **(
                {"pixel_values": kwargs["pixel_values"], "image_grid_thw": kwargs["image_grid_thw"]}
                if i == 0
                else {
                    "pixel_values_videos": kwargs["pixel_values_videos"],
                    "video_grid_thw": kwargs["video_grid_thw"],
                    "second_per_grid_ts": kwargs["second_per_grid_ts"],
                }
            ),
        )
        for i in range(2)
    ]
    batch = collate_model_inputs(singles, pad_len_to=48, pad_patches_to=96, padding_side="right")
    forward = nnx.jit(lambda m, i: m.forward(i))
    got = np.asarray(forward(ours, jax.tree.map(jnp.asarray, batch)))
    for i, s in enumerate(singles):
        alone = np.asarray(forward(ours, jax.tree.map(jnp.asarray, s)))[0]
        assert rel_err(got[i, : s.seq_len], alone) < 1e-5


@pytest.mark.slow
def test_remat_gives_the_same_gradients(pair):
    config, _, ours = pair
    rng = np.random.default_rng(7)
    row = vision_prompt(config, rng, [VIDEO_GRID], ["video"])
    inputs = jax.tree.map(
        jnp.asarray,
        build_model_inputs(
            config,
            np.array([row]),
            pixel_values_videos=pixels(config, rng, [VIDEO_GRID]),
            video_grid_thw=np.array([VIDEO_GRID]),
        ),
    )
    grad = nnx.jit(nnx.grad(lambda m, i: jnp.mean(m.forward(i) ** 2)))
    plain = grad(ours, inputs)
    remat = nnx.clone(ours)
    remat.model.visual.remat = remat.model.language_model.remat = True
    again = grad(remat, inputs)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(again)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
