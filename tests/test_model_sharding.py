"""Sharding (models/qwen2_5_vl/sharding.py): rules cover every weight, specs are divisibility-safe, and a
model sharded over 8 fake devices (data=2, fsdp=2, tensor=2) computes what the unsharded one does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from model_oracle import IMAGE_GRID, VIDEO_GRID, config_for_tests, left_pad, pixels, vision_prompt

from models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, build_model_inputs, tiny_config
from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.sharding import (
    activation_spec,
    cache_specs,
    fit_spec,
    loader_sharding,
    make_mesh,
    param_specs,
    shard_batch,
    shard_model,
    weight_rule,
)


def _mesh():
    # Must fail, not skip: conftest.py provides 8 fake CPU devices.
    assert jax.device_count() == 8, f"sharding tests need 8 devices, got {jax.device_count()}"
    return make_mesh(data=2, fsdp=2, tensor=2)


def _flat(tree):
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(tree)}


def test_every_weight_has_a_rule_and_tiny_model_shards_without_fallback():
    mesh = _mesh()
    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(config_for_tests()))
    state = nnx.state(abstract, nnx.Param)
    missing = [p for p in _flat(state) if weight_rule(p) is None]
    assert not missing, f"parameters without a sharding rule: {missing}"
    specs, notes = param_specs(state, mesh, "fsdp_tensor")
    assert notes == []
    flat = _flat(specs)
    assert flat["model.language_model.layers.0.self_attn.q_proj.kernel"] == P("fsdp", "tensor")
    assert flat["model.language_model.layers.0.self_attn.o_proj.kernel"] == P("tensor", "fsdp")
    assert flat["model.visual.blocks.0.attn.qkv.kernel"] == P("fsdp", "tensor")
    assert flat["lm_head.kernel"] == P("fsdp", "tensor")
    assert all(s == P() for s in _flat(param_specs(state, mesh, "replicated")[0]).values())


def test_specs_fall_back_to_replication_when_not_divisible():
    mesh = _mesh()
    spec, notes = fit_spec((("data", "fsdp"), "tensor"), (6, 3), mesh, "x")
    assert spec == P("data", None) and len(notes) == 2
    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(tiny_config(vocab_size=301)))
    specs, notes = param_specs(nnx.state(abstract, nnx.Param), mesh)
    flat = _flat(specs)
    assert flat["lm_head.kernel"] == P("fsdp", None)
    assert flat["model.language_model.embed_tokens.embedding"] == P(None, "fsdp")
    assert any("lm_head.kernel" in n for n in notes)
    assert activation_spec("kv_cache", (3, 10, 2, 16), mesh) == P(None, None, "tensor", None)
    assert activation_spec("hidden", (4, 10, 64), mesh) == P(("data", "fsdp"), None, None)
    with pytest.raises(ValueError, match="layout"):
        param_specs({}, mesh, "zero3")
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh(2, 2, 4)


@pytest.fixture(scope="module")
def batch():
    config = config_for_tests()
    rng = np.random.default_rng(3)
    rows = [
        vision_prompt(config, rng, [IMAGE_GRID, VIDEO_GRID], ["image", "video"]),
        vision_prompt(config, rng, [VIDEO_GRID], ["video"], text_len=7),
    ]
    ids, mask = left_pad(rows, config.pad_token_id)
    inputs = build_model_inputs(
        config,
        ids,
        mask,
        pixel_values=pixels(config, rng, [IMAGE_GRID]),
        image_grid_thw=np.array([IMAGE_GRID]),
        pixel_values_videos=pixels(config, rng, [VIDEO_GRID, VIDEO_GRID]),
        video_grid_thw=np.array([VIDEO_GRID] * 2),
        second_per_grid_ts=np.array([1.5, 0.5], np.float32),
    )
    return config, inputs


@pytest.mark.slow
def test_sharded_forward_and_generate_equal_unsharded(batch, tmp_path):
    mesh = _mesh()
    config, inputs = batch
    model = Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(1))
    model.save_pretrained(tmp_path)
    forward = jax.jit(lambda m, x: m.forward(x))
    ref_logits = np.asarray(forward(model, jax.tree.map(jnp.asarray, inputs)))
    ref_tokens = np.asarray(generate(model, inputs, max_new_tokens=8, temperature=0.0, eos_token_id=()))
    sampled = dict(
        max_new_tokens=6, temperature=1.0, num_return_sequences=4, rng=1, eos_token_id=(), return_logprobs=True
    )
    ref_sampled = generate(model, inputs, **sampled)

    shard_model(model, mesh, "fsdp_tensor")
    kernel = model.model.language_model.layers[0].mlp.gate_proj.kernel[...]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 2, kernel.shape[1] // 2)
    placed = shard_batch(inputs, mesh)
    assert placed.position_ids.sharding.spec == P(None, "data", None)
    assert placed.input_ids.sharding.spec == P("data", None)
    logits = forward(model, placed)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=1e-5)
    # Loading straight into the sharded layout gives the same placement and logits.
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path, sharding=loader_sharding(mesh))
    assert loaded.lm_head.kernel[...].sharding.spec == P("fsdp", "tensor")
    np.testing.assert_allclose(np.asarray(forward(loaded, placed)), ref_logits, atol=1e-5, rtol=1e-5)

    tokens = generate(model, inputs, max_new_tokens=8, temperature=0.0, eos_token_id=(), mesh=mesh)
    np.testing.assert_array_equal(np.asarray(tokens), ref_tokens)
    # 2 prompts x 4 samples: the prompt caches (sharded over fewer devices than the 8 rows) are shared.
    out = generate(model, inputs, mesh=mesh, **sampled)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref_sampled.tokens))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref_sampled.logprobs), atol=1e-5)
    cache = model.init_cache(2, 16)
    assert cache_specs(cache, mesh)[0]["k"] == P("data", None, "tensor", None)


@pytest.mark.slow
def test_prefill_in_chunks_samples_what_one_prefill_does(batch):
    """`model.prefill_chunks` (ModelSetup.prefill_chunks): the prompts prefilled one chunk at a time on the
    mesh give the same cache, so the same samples and log-probs as one unsharded prefill."""
    mesh = _mesh()
    config, inputs = batch
    model = Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(1))
    sampled = dict(
        max_new_tokens=4, temperature=1.0, num_return_sequences=2, rng=1, eos_token_id=(), return_logprobs=True
    )
    ref = generate(model, inputs, **sampled)
    shard_model(model, mesh, "fsdp_tensor_sequence")
    model.prefill_chunks = 2
    out = generate(model, inputs, mesh=mesh, layout="fsdp_tensor_sequence", **sampled)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)
