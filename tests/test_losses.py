"""Each loss of the registry against values worked out token by token with `math`, and the advantages."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tempr1_jax.rl.advantages import group_advantages
from tempr1_jax.rl.losses import LOSSES, LossBatch, LossConfig, compute_loss

# Two sequences of up to two completion tokens; the second sequence has one real token.
LOGP = [[-1.0, -2.0], [-0.2, -1.5]]
OLD = [[-1.3, -2.0], [-0.5, -1.0]]
REF = [[-1.0, -1.8], [-0.4, -1.5]]
MASK = [[1, 1], [1, 0]]
ADV = [1.0, -0.5]


def batch(weights=(1.0, 1.0), old=True, ref=True):
    return LossBatch(
        logp=jnp.array(LOGP),
        old_logp=jnp.array(OLD) if old else None,
        ref_logp=jnp.array(REF) if ref else None,
        mask=jnp.array(MASK, jnp.float32),
        advantages=jnp.array(ADV),
        weights=jnp.array(weights),
    )


def k3(ref, logp):
    d = ref - logp
    return math.exp(d) - d - 1.0


def token_loss(i, t, ratio, lo, hi, beta):
    a = ADV[i]
    objective = min(ratio * a, min(max(ratio, 1 - lo), 1 + hi) * a)
    return -(objective - beta * k3(REF[i][t], LOGP[i][t]))


def real_tokens(i):
    return [t for t in range(2) if MASK[i][t]]


def test_registry_names():
    assert set(LOSSES) == {"grpo", "dapo", "gspo"}
    with pytest.raises(ValueError, match="unknown loss"):
        LossConfig(name="ppo")


def test_grpo_matches_hand_computation():
    cfg = LossConfig(name="grpo", epsilon=0.2, beta=0.04)
    out = compute_loss(batch(), cfg)
    seq = []
    for i in range(2):
        toks = [token_loss(i, t, math.exp(LOGP[i][t] - OLD[i][t]), 0.2, 0.2, 0.04) for t in real_tokens(i)]
        seq.append(sum(toks) / len(toks))
    assert float(out.count) == 2.0
    np.testing.assert_allclose(float(out.total), sum(seq), rtol=1e-6)
    # Token 0 of sequence 0 has ratio e^0.3 > 1.2 with A > 0: the only clipped token.
    assert float(out.aux["clipped"]) == 1.0
    assert float(out.aux["tokens"]) == 3.0
    kl = sum(k3(REF[i][t], LOGP[i][t]) for i in range(2) for t in real_tokens(i))
    np.testing.assert_allclose(float(out.aux["kl"]), kl, rtol=1e-6)
    # Literal value, worked out by hand: seq0 = (-1.2 - (1 - 0.04 k3(0.2))) / 2, seq1 = e^0.3 * 0.5 + 0.04 k3(-0.2).
    np.testing.assert_allclose(float(out.total), -1.0996 + 0.6757, atol=2e-4)


def test_dapo_token_mean_clip_higher_and_filtering():
    cfg = LossConfig(name="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0)
    out = compute_loss(batch(), cfg)
    toks = [
        token_loss(i, t, math.exp(LOGP[i][t] - OLD[i][t]), 0.2, 0.28, 0.0) for i in range(2) for t in real_tokens(i)
    ]
    assert float(out.count) == 3.0
    np.testing.assert_allclose(float(out.total), sum(toks), rtol=1e-6)
    np.testing.assert_allclose(toks[0], -1.28, rtol=1e-6)  # clip-higher bound
    # Filtering the second sequence drops its token from both the sum and the count.
    filtered = compute_loss(batch(weights=(1.0, 0.0)), cfg)
    assert float(filtered.count) == 2.0
    np.testing.assert_allclose(float(filtered.total), sum(toks[:2]), rtol=1e-6)


def test_gspo_sequence_ratio():
    cfg = LossConfig(name="gspo", epsilon=0.2, beta=0.04)
    out = compute_loss(batch(), cfg)
    seq = []
    for i in range(2):
        toks = real_tokens(i)
        ratio = math.exp(sum(LOGP[i][t] - OLD[i][t] for t in toks) / len(toks))
        seq.append(sum(token_loss(i, t, ratio, 0.2, 0.2, 0.04) for t in toks) / len(toks))
    assert float(out.count) == 2.0
    np.testing.assert_allclose(float(out.total), sum(seq), rtol=1e-6)


def test_single_update_has_unit_ratio_and_no_kl_without_reference():
    out = compute_loss(batch(old=False, ref=False), LossConfig(name="grpo"))
    # ratio 1 everywhere: loss = -mean over sequences of A.
    np.testing.assert_allclose(float(out.total), -(ADV[0] + ADV[1]), rtol=1e-6)
    assert float(out.aux["kl"]) == 0.0 and float(out.aux["clipped"]) == 0.0


@pytest.mark.parametrize("std_form,ddof", [("sample", 1), ("population", 0)])
def test_group_advantages(std_form, ddof):
    rewards = np.array([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    adv, equal = group_advantages(rewards, 4, eps=1e-4, std_form=std_form)
    g = rewards[:4]
    np.testing.assert_allclose(adv[:4], (g - g.mean()) / (g.std(ddof=ddof) + 1e-4), rtol=1e-6)
    assert np.all(adv[4:] == 0.0)
    assert equal.tolist() == [False] * 4 + [True] * 4
    adv_none, _ = group_advantages(rewards, 4, std_form="none")
    np.testing.assert_allclose(adv_none[:4], g - g.mean(), rtol=1e-6)


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="groups of size"):
        group_advantages(np.zeros(5), 2)
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages(np.array([np.nan, 1.0]), 2)
