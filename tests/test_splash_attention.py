"""The Pallas splash attention path (Pallas interpret mode on CPU) against the XLA path, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_oracle import IMAGE_GRID, VIDEO_GRID, left_pad, pixels, vision_prompt

from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.inputs import build_model_inputs
from models.qwen2_5_vl.layers import masked_attention
from models.qwen2_5_vl.splash import resolve_attention_impl, splash_attention
from models.qwen2_5_vl.text import causal_mask
from models.qwen2_5_vl.vision import BlockLayout, block_attention
from tempr1_jax.training.model_setup import ModelSetup, base_model, init_model, set_attention_impl

TOL = 1e-5


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _qkv(seed, n, length, heads, kv, d=16):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(keys[0], (n, length, heads, d)),
        jax.random.normal(keys[1], (n, length, kv, d)),
        jax.random.normal(keys[2], (n, length, kv, d)),
    )


def _text_mask():
    """Row 0 left padded, row 1 with a hole (masked completion tokens), row 2 all padding."""
    mask = np.ones((3, 40), np.int32)
    mask[0, :7] = 0
    mask[1, 25:31] = 0
    mask[2] = 0
    return jnp.asarray(mask)


def test_text_causal_padding_gqa_outputs_and_gradients():
    q, k, v = _qkv(0, 3, 40, 4, 2)
    mask = _text_mask()
    valid = mask.astype(bool)[:, :, None, None]
    weights = jax.random.normal(jax.random.key(1), q.shape)
    scale = 16**-0.5

    def loss(attend, q, k, v):
        return jnp.sum(jnp.where(valid, attend(q, k, v), 0.0) * weights)

    xla = lambda q, k, v: masked_attention(q, k, v, causal_mask(mask), scale)
    splash = lambda q, k, v: splash_attention(q, k, v, mask, scale, causal=True)
    out = jax.jit(splash)(q, k, v)
    assert np.isfinite(np.asarray(out)).all()  # padded (and all-padding) rows stay finite
    assert rel(jnp.where(valid, out, 0), jnp.where(valid, xla(q, k, v), 0)) < TOL
    grads = jax.jit(jax.grad(lambda *a: loss(splash, *a), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(lambda *a: loss(xla, *a), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, expected):
        assert rel(got, want) < TOL


def _layout(batch_rows, width):
    """A BlockLayout of `batch_rows` (per sample: a list of row fill counts) over each sample's patches,
    patches assigned to rows in a shuffled order (rows partly filled, some patches in no row)."""
    rng = np.random.default_rng(0)
    patches = max(sum(rows) for rows in batch_rows) + 3
    n_rows = max(len(rows) for rows in batch_rows)
    blocks = np.full((len(batch_rows), n_rows, width), -1, np.int32)
    slot = np.full((len(batch_rows), patches), -1, np.int32)
    for b, rows in enumerate(batch_rows):
        order = rng.permutation(patches)
        used = 0
        for r, fill in enumerate(rows):
            blocks[b, r, :fill] = order[used : used + fill]
            slot[b, order[used : used + fill]] = r * width + np.arange(fill)
            used += fill
    return BlockLayout(jnp.asarray(blocks), jnp.asarray(slot)), patches


@pytest.mark.parametrize(
    "batch_rows, width",
    [([[16, 9, 16], [5, 16]], 16), ([[130, 40]], 136)],  # windows packed 8 per kernel row / frames one per row
)
def test_vision_blocks_outputs_and_gradients(batch_rows, width):
    layout, patches = _layout(batch_rows, width)
    q, k, v = _qkv(2, len(batch_rows), patches, 2, 2)
    weights = jax.random.normal(jax.random.key(3), q.shape)

    def loss(splash, q, k, v):
        return jnp.sum(block_attention(q, k, v, layout, 0.25, block=1024, splash=splash) * weights)

    out = jax.jit(lambda *a: block_attention(*a, layout, 0.25, block=1024, splash=True))(q, k, v)
    assert rel(out, block_attention(q, k, v, layout, 0.25, block=1024)) < TOL
    grads = jax.jit(jax.grad(lambda *a: loss(True, *a), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(lambda *a: loss(False, *a), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, expected):
        assert rel(got, want) < TOL


def test_on_a_mesh_equals_single_device():
    """Under shard_map over batch (2) and tensor (2) on 4 CPU devices."""
    mesh = sharding_lib.make_mesh(data=2, tensor=2)
    q, k, v = _qkv(4, 4, 40, 4, 2)
    mask = jnp.concatenate([_text_mask(), jnp.ones((1, 40), jnp.int32)])
    valid = mask.astype(bool)[:, :, None, None]
    run = jax.jit(lambda q, k, v, m: splash_attention(q, k, v, m, 0.25, causal=True, mesh=mesh))
    out = jnp.where(valid, run(q, k, v, mask), 0)
    assert rel(out, jnp.where(valid, masked_attention(q, k, v, causal_mask(mask), 0.25), 0)) < TOL


def _batch(config):
    """An image row and a left-padded video row, as prepared inputs."""
    rng = np.random.default_rng(5)
    rows = [
        vision_prompt(config, rng, [IMAGE_GRID], ["image"], text_len=5),
        vision_prompt(config, rng, [VIDEO_GRID], ["video"], text_len=9),
    ]
    ids, mask = left_pad(rows, config.pad_token_id)
    inputs = build_model_inputs(
        config,
        ids,
        mask,
        pixels(config, rng, [IMAGE_GRID]),
        np.array([IMAGE_GRID]),
        pixels(config, rng, [VIDEO_GRID]),
        np.array([VIDEO_GRID]),
        np.array([1.0]),
    )
    return jax.tree.map(jnp.asarray, inputs), mask.astype(bool)


def test_tiny_model_logits_and_prefill():
    config = tiny_config()
    xla = init_model(config, 0)
    splash = nnx.clone(xla)
    set_attention_impl(splash, "splash")
    assert splash.model.language_model.attention_impl == splash.model.visual.attention_impl == "splash"
    inputs, valid = _batch(config)
    forward = nnx.jit(lambda m, i: m.forward(i))
    got, want = np.asarray(forward(splash, inputs)), np.asarray(forward(xla, inputs))
    assert rel(got[valid], want[valid]) < TOL
    # Prefill attends its own keys through the kernel; its last logits are the forward's last column.
    last, _ = nnx.jit(lambda m, i: m.prefill(i, m.init_cache(2, valid.shape[1] + 4)))(splash, inputs)
    assert rel(last, want[:, -1]) < TOL


def test_auto_is_xla_on_cpu():
    assert jax.default_backend() == "cpu"
    assert resolve_attention_impl("auto") == "xla"
    assert resolve_attention_impl("auto", backend="tpu") == "splash"
    model = base_model(ModelSetup(), tiny_config())
    assert model.model.language_model.attention_impl == model.model.visual.attention_impl == "xla"
    with pytest.raises(ValueError, match="attention implementation"):
        resolve_attention_impl("flash")
