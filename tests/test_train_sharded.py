"""The trainer's log-probs equal the sampler's; one GRPO update on a (2, 2, 2) mesh of 8 fake CPU
devices equals the same update on (1, 1, 1), also with the sequence-parallel layout, rematerialised
layers and two accumulated micro-batches; a bfloat16 reference copy scores as the float32 one does
under bfloat16 compute (up to bfloat16 rounding).

The policy is a tiny Qwen2.5-VL with a video in every prompt; completions, advantages and reference
log-probs are fixed arrays, so the comparison covers log-probs, loss, gradients and the update.
The update uses SGD: Adam's first step is lr * sign(g), which turns float noise in gradients that are
analytically zero (e.g. key biases, invisible to softmax) into +-lr and would hide real differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.inputs import build_model_inputs, collate_model_inputs
from tempr1_jax.rl.logprobs import completion_logprobs
from tempr1_jax.rl.losses import LossConfig
from tempr1_jax.rl.trainer import make_policy_loss, reference_copy
from tempr1_jax.training.batches import place_inputs, place_rows, slice_inputs
from tempr1_jax.training.model_setup import init_model, set_remat, trainable_filter
from tempr1_jax.training.train_step import TrainStep

G, T = 4, 6
CONFIG = tiny_config(
    num_hidden_layers=2, hidden_size=64, intermediate_size=128, vision_depth=2, vision_fullatt_block_indexes=(1,)
)


def prompts():
    """Two left-padded prompts, each text + a 2x4x4-patch video (8 video tokens)."""
    rng = np.random.default_rng(0)
    c = CONFIG
    rows = []
    for n_text in (5, 9):
        ids = np.concatenate(
            [
                rng.integers(0, 280, n_text),
                [c.vision_start_token_id],
                [c.video_token_id] * 8,
                [c.vision_end_token_id],
                rng.integers(0, 280, 3),
            ]
        )
        rows.append(
            build_model_inputs(
                c,
                ids[None],
                pixel_values_videos=rng.normal(size=(32, c.vision.patch_dim)).astype(np.float32),
                video_grid_thw=np.array([[2, 4, 4]]),
                second_per_grid_ts=np.array([1.0], np.float32),
            )
        )
    return collate_model_inputs(rows, pad_len_to=24, pad_patches_to=32, pad_token_id=0)


def rows():
    rng = np.random.default_rng(1)
    n = 2 * G
    lengths = rng.integers(2, T + 1, size=n)
    return {
        "completions": rng.integers(0, 280, size=(n, T)).astype(np.int32),
        "mask": (np.arange(T)[None] < lengths[:, None]).astype(np.float32),
        "advantages": rng.normal(size=n).astype(np.float32),
        "weights": np.ones(n, np.float32),
        "ref_logp": -rng.uniform(5.0, 6.0, size=(n, T)).astype(np.float32),
    }


def one_step(mesh_shape, layout="fsdp_tensor", remat=False, micro_batches=1, decoder_chunks=1):
    mesh = sharding_lib.make_mesh(*mesh_shape)
    model = init_model(CONFIG, seed=0)
    set_remat(model, remat)
    sharding_lib.shard_model(model, mesh, layout)
    graphdef, params, frozen = nnx.split(model, trainable_filter(False), ...)
    loss = make_policy_loss(graphdef, LossConfig(name="grpo", beta=0.04), G, decoder_chunks=decoder_chunks)
    step = TrainStep(loss, optax.sgd(0.5))
    state = step.init_state(params)
    per = 2 // micro_batches  # prompts per micro-batch, as the trainer splits them
    micro = []
    for lo in range(0, 2, per):
        batch = {k: place_rows(v[lo * G : (lo + per) * G], mesh) for k, v in rows().items()}
        batch["old_logp"] = None
        batch["prompt"] = place_inputs(slice_inputs(prompts(), lo, lo + per), mesh)
        micro.append(batch)
    state, metrics = step(state, frozen, micro)
    return jax.device_get(metrics), jax.device_get(nnx.to_pure_dict(state.params))


def assert_same_update(a, b):
    (m1, p1), (m2, p2) = a, b
    assert abs(float(m1["loss"])) > 1e-3  # a real signal, not a vacuous zero
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), atol=1e-5)
    np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
    flat2 = dict(jax.tree_util.tree_leaves_with_path(p2))
    for path, x in jax.tree_util.tree_leaves_with_path(p1):
        np.testing.assert_allclose(flat2[path], x, atol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_mesh_2x2x2_matches_single_device():
    assert jax.device_count() == 8, f"needs 8 fake CPU devices (tests/conftest.py), have {jax.device_count()}"
    assert_same_update(one_step((1, 1, 1)), one_step((2, 2, 2)))


@pytest.mark.slow
def test_sequence_layout_remat_micro_batches_and_decoder_chunks_match_single_device():
    """`fsdp_tensor_sequence` (residual streams split along the sequence over `tensor`), remat scans, two
    accumulated micro-batches of one prompt and the decoder in chunks of rows, all in one update: the
    update of one device and one micro-batch."""
    assert jax.device_count() == 8, f"needs 8 fake CPU devices (tests/conftest.py), have {jax.device_count()}"
    assert_same_update(
        one_step((1, 1, 1)),
        one_step((2, 2, 2), "fsdp_tensor_sequence", remat=True, micro_batches=2, decoder_chunks=2),
    )
    spec = sharding_lib.activation_spec("hidden", (4, 30, 64), sharding_lib.make_mesh(2, 2, 2), "fsdp_tensor_sequence")
    assert spec == jax.sharding.PartitionSpec(("data", "fsdp"), "tensor", None)


@pytest.mark.slow
def test_bfloat16_reference_scores_like_float32_under_bfloat16_compute():
    """Every weight is cast to the compute dtype before use, so a bfloat16 reference copy scores as the
    float32 one up to XLA's excess precision (it may skip a float32 -> bfloat16 -> float32 rounding):
    differences at the bfloat16 rounding level, far below the policy's own change in an update."""
    model = init_model(CONFIG, seed=0, dtype=jnp.bfloat16)
    graphdef, params, frozen = nnx.split(model, trainable_filter(False), ...)
    r = rows()
    score = jax.jit(lambda p, x, c, m: completion_logprobs(nnx.merge(graphdef, p, frozen), x, c, m, G))
    ref = reference_copy(params, "bfloat16")
    assert {x.dtype for x in jax.tree.leaves(ref)} == {jnp.dtype(jnp.bfloat16)}
    full = score(params, prompts(), r["completions"], r["mask"])
    np.testing.assert_allclose(np.asarray(score(ref, prompts(), r["completions"], r["mask"])), full, atol=2e-3, rtol=0)


@pytest.mark.slow
def test_logprobs_match_generation():
    """The trainer's log-probs of sampled completions equal the sampler's own (KV-cache path, M-RoPE ids)."""
    model = init_model(CONFIG, seed=0)
    inputs = prompts()
    out = generate(
        model,
        inputs,
        max_new_tokens=T,
        temperature=1.0,
        num_return_sequences=G,
        rng=3,
        eos_token_id=(),
        pad_token_id=0,
        return_logprobs=True,
    )
    graphdef, state = nnx.split(model)
    score = jax.jit(lambda s, p, c, m: completion_logprobs(nnx.merge(graphdef, s), p, c, m, G))
    logp = score(state, inputs, out.tokens, out.mask)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(out.logprobs), atol=2e-5)


@pytest.mark.slow
def test_cast_weights_gives_the_loss_and_gradient_of_bfloat16_compute():
    """`TrainConfig.cast_weights`: the weights cast to bfloat16 before the loss rather than in each layer;
    the same loss and gradient up to bfloat16 rounding (XLA may keep a float32 weight unrounded)."""
    model = init_model(CONFIG, seed=0, dtype=jnp.bfloat16)
    graphdef, params, frozen = nnx.split(model, trainable_filter(False), ...)
    batch = {**rows(), "old_logp": None, "prompt": prompts()}
    out = {}
    for dtype in (None, jnp.bfloat16):
        loss = make_policy_loss(graphdef, LossConfig(name="grpo", beta=0.04), G, weight_dtype=dtype)
        out[dtype] = jax.jit(jax.value_and_grad(lambda p, loss=loss: loss(p, frozen, batch)[0]))(params)
    (l32, g32), (l16, g16) = out[None], out[jnp.bfloat16]
    np.testing.assert_allclose(float(l16), float(l32), rtol=1e-2)
    assert {x.dtype for x in jax.tree.leaves(g16)} == {jnp.dtype(jnp.float32)}  # gradients of the float32 params
    for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16), strict=True):
        scale = float(np.abs(np.asarray(a)).max()) + 1e-6
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=0.05 * scale, rtol=0)
