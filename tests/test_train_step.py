"""The generic update: accumulation over micro-batches equals the full batch; a planted NaN is skipped."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tempr1_jax.rl.losses import LossBatch, LossConfig, compute_loss
from tempr1_jax.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from tempr1_jax.training.train_step import TrainStep

N, T, F, V = 8, 5, 6, 11


def toy_batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=N)
    return {
        "x": rng.normal(size=(N, T, F)).astype(np.float32),
        "tokens": rng.integers(0, V, size=(N, T)).astype(np.int32),
        "mask": (np.arange(T)[None] < lengths[:, None]).astype(np.float32),
        "adv": rng.normal(size=N).astype(np.float32),
        "old": -rng.uniform(1.5, 3.0, size=(N, T)).astype(np.float32),
        "ref": -rng.uniform(1.5, 3.0, size=(N, T)).astype(np.float32),
    }


def make_loss(name):
    cfg = LossConfig(name=name, epsilon=0.2, epsilon_high=0.3, beta=0.04)

    def loss_fn(params, frozen, b):
        logits = b["x"] @ params["w"] + frozen["bias"]
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), b["tokens"][..., None], -1)[..., 0]
        terms = compute_loss(LossBatch(logp, b["old"], b["ref"], b["mask"], b["adv"], jnp.ones(b["adv"].shape)), cfg)
        return terms.total, terms.count, terms.aux

    return loss_fn


def params0():
    return {"w": jnp.asarray(np.random.default_rng(1).normal(size=(F, V)) * 0.1, jnp.float32)}


FROZEN = {"bias": jnp.linspace(-1.0, 1.0, V)}
OPT = OptimizerConfig(learning_rate=0.05, warmup_steps=1, max_grad_norm=10.0)


def split(b, parts):
    return [{k: v[i::parts] for k, v in b.items()} for i in range(parts)]


@pytest.mark.parametrize("name", ["grpo", "dapo", "gspo"])
def test_accumulation_equals_full_batch(name):
    b = toy_batch()
    results = []
    for parts in (1, 2, 4):
        step = TrainStep(make_loss(name), make_optimizer(OPT, total_steps=3))
        state = step.init_state(params0())
        for _ in range(2):
            state, metrics = step(state, FROZEN, split(b, parts))
        results.append((np.asarray(state.params["w"]), float(metrics["loss"]), float(metrics["grad_norm"])))
    for w, loss, gnorm in results[1:]:
        np.testing.assert_allclose(w, results[0][0], atol=1e-6)
        np.testing.assert_allclose(loss, results[0][1], rtol=1e-5)
        np.testing.assert_allclose(gnorm, results[0][2], rtol=1e-5)


def test_planted_nan_is_skipped_and_counted():
    step = TrainStep(make_loss("grpo"), make_optimizer(OPT, total_steps=4))
    state = step.init_state(params0())
    state, _ = step(state, FROZEN, [toy_batch(0)])
    w_before = np.asarray(state.params["w"])
    mu_before = [np.asarray(x) for x in jax.tree.leaves(state.opt_state)]
    bad = toy_batch(1)
    bad["x"][3, 0, 2] = np.nan
    state, metrics = step(state, FROZEN, split(bad, 2))
    assert not bool(metrics["applied"])
    assert int(state.skipped) == 1 and int(state.step) == 1
    np.testing.assert_array_equal(np.asarray(state.params["w"]), w_before)
    for a, b in zip(jax.tree.leaves(state.opt_state), mu_before, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    state, metrics = step(state, FROZEN, [toy_batch(2)])
    assert bool(metrics["applied"]) and int(state.step) == 2 and int(state.skipped) == 1
    assert np.all(np.isfinite(np.asarray(state.params["w"])))


def test_schedule_warmup_then_decay():
    sched = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=2, decay="linear"), total_steps=6)
    np.testing.assert_allclose([float(sched(i)) for i in range(7)], [0, 0.5, 1, 0.75, 0.5, 0.25, 0], atol=1e-6)


def test_bfloat16_moments_train_close_to_float32():
    """AdamW moments stored in bfloat16 (`OptimizerConfig.moment_dtype`): not exact, but the loss falls as
    with float32 moments and the weights stay within a small fraction of their movement."""
    b = toy_batch()
    runs = {}
    for dtype in ("float32", "bfloat16"):
        opt = dataclasses.replace(OPT, moment_dtype=dtype)
        step = TrainStep(make_loss("grpo"), make_optimizer(opt, total_steps=20))
        state = step.init_state(params0())
        losses = []
        for _ in range(20):
            state, metrics = step(state, FROZEN, split(b, 2))
            losses.append(float(metrics["loss"]))
        floats = {x.dtype for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floats == {jnp.dtype(dtype)}
        runs[dtype] = (np.asarray(state.params["w"]), losses)
    (w32, l32), (w16, l16) = runs["float32"], runs["bfloat16"]
    assert l16[-1] < l16[0] - 0.1 and l32[-1] < l32[0] - 0.1
    moved = np.abs(w32 - np.asarray(params0()["w"])).max()
    assert np.abs(w16 - w32).max() < 0.05 * moved
    np.testing.assert_allclose(l16, l32, atol=0.02 * abs(l32[0]))
    with pytest.raises(ValueError, match="moment_dtype"):
        OptimizerConfig(moment_dtype="float16")
