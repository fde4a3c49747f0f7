"""Time-R1's grounding reward forms (`compute_rewards(..., tvg_reward=FORM)`, `RolloutConfig.reward_options`):
hand-computed values from the equations of its reward ablation, and the kernel against the reference."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rewards_kernel import _pad, gt_segment, pred_segment

from tempr1_jax.rewards import compute_rewards, kernel
from tempr1_jax.rewards import reference as ref

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WIDTH = 8


def tvg(pred, gt=(10.0, 30.0), duration=100.0):
    return {
        "id": "t",
        "task": "tvg",
        "duration": duration,
        "segments": [list(gt)],
    }, f"<think>x</think><answer>{pred}</answer>"


@pytest.mark.parametrize(
    "form, pred, want",
    [
        # p = [20, 40] against g = [10, 30] in a 100 s video: IoU = 10 / 30, start and end off by 10
        ("tiou", "20 to 40", (1 / 3) * 0.9 * 0.9),
        ("iou", "20 to 40", 1 / 3),
        ("center", "20 to 40", 1 - 10 / 20),  # centres 30 and 20, g is 20 s long
        ("iou_center", "20 to 40", 1 / 3 + 0.5),
        ("abs", "20 to 40", -20.0),
        ("rmse", "20 to 40", -10.0),
        ("exact", "20 to 40", 0.0),
        ("exact", "10 to 30", 1.0),
        ("exact", "10 to 150", 0.0),  # clipped to [10, 100]
        # missing prediction: the worst prediction inside the video
        ("tiou", "none", 0.0),
        ("iou", "none", 0.0),
        ("exact", "none", 0.0),
        ("abs", "none", -(90.0 + 70.0)),  # max(10, 90) + max(30, 70)
        ("rmse", "none", -math.sqrt((90.0**2 + 70.0**2) / 2)),
        ("center", "none", 1 - 80 / 20),  # centre 20: the far end is 80 s away
        ("iou_center", "30 to 20", 1 - 80 / 20),  # reversed = invalid
    ],
)
def test_forms_by_hand(form, pred, want):
    target, completion = tvg(pred)
    got = compute_rewards("tvg", [completion], [target], tvg_reward=form)
    assert got["loc"][0] == pytest.approx(want, abs=1e-6)
    expected = ref.reward_reference("tvg", completion, target, tvg_reward=form)
    assert expected["loc"] == pytest.approx(want, abs=1e-9)
    assert got["total"][0] == pytest.approx(want + (pred != "none"), abs=1e-4)  # + format


def test_zero_length_ground_truth_floors_the_centre_term():
    target, completion = tvg("4 to 6", gt=(5.0, 5.0), duration=10.0)
    assert ref.reward_reference("tvg", completion, target, tvg_reward="center")["loc"] == pytest.approx(1.0)
    target, completion = tvg("6 to 8", gt=(5.0, 5.0), duration=10.0)
    want = 1 - 2 / ref.CENTER_MIN_LENGTH
    assert compute_rewards("tvg", [completion], [target], tvg_reward="center")["loc"][0] == pytest.approx(want)


def test_unknown_form_is_rejected():
    target, completion = tvg("1 to 2")
    with pytest.raises(ValueError, match="tvg_reward must be one of"):
        compute_rewards("tvg", [completion], [target], tvg_reward="giou")


@SETTINGS
@given(
    st.sampled_from(ref.TVG_REWARDS),
    st.lists(st.tuples(st.lists(pred_segment, max_size=2), gt_segment(), st.floats(1, 300)), min_size=1, max_size=8),
)
def test_kernel_matches_reference(form, rows):
    preds, gts, durations = zip(*rows)
    pred, pred_mask = _pad(preds)
    gt, gt_mask = _pad([[g] for g in gts])
    got = kernel.loc_rewards(
        pred, pred_mask, gt, gt_mask, np.array(durations), np.full(len(rows), kernel.KINDS["tiou"]), tvg_form=form
    )
    want = [ref.loc_reward("tiou", list(p), [g], d, tvg_form=form) for p, g, d in zip(preds, gts, durations)]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_reward_options_reach_the_rollout_scores():
    from tempr1_jax.rl.rollout import RolloutConfig, score_completions

    target, completion = tvg("20 to 40")
    cfg = RolloutConfig(num_generations=2, reward_options={"tvg_reward": "abs"})
    _, rewards, _, _ = score_completions([completion, completion], [target], 2, cfg)
    np.testing.assert_allclose(rewards["loc"], [-20.0, -20.0])
