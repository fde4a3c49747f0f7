"""Time-R1 data recipe: Gaussian subset selection, the per-epoch solved filter, the difficulty score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempr1_jax import difficulty
from tempr1_jax.apps import curate


def test_gaussian_weights_peak_at_mean():
    d = np.array([0.3, 0.1, 0.5, 0.9, float("nan")])
    w = difficulty.gaussian_weights(d, mean=0.3, std=0.2)
    assert w[0] == 1.0
    np.testing.assert_allclose(w[1], w[2])  # symmetric around the mean
    np.testing.assert_allclose(w[3], math.exp(-0.5 * 9))
    assert w[4] == 0.0


def test_select_subset_distinct_sorted_deterministic():
    d = np.random.default_rng(123).uniform(0, 1, 500)
    a = difficulty.select_subset(d, 100, seed=7)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, difficulty.select_subset(d, 100, seed=7))
    assert not np.array_equal(a, difficulty.select_subset(d, 100, seed=8))


def test_select_subset_follows_the_gaussian():
    d = np.random.default_rng(123).uniform(0, 1, 20000)
    chosen = d[difficulty.select_subset(d, 2000, mean=0.3, std=0.2, seed=1)]
    # Most mass near 0.3; easy samples (IoU > 0.7) become rare.
    assert abs(np.median(chosen) - 0.3) < 0.05
    assert np.mean(chosen > 0.7) < 0.05 < np.mean(d > 0.7)


def test_single_draw_probability_is_proportional_to_weight():
    d = np.array([0.3, 0.5, 0.9])
    w = difficulty.gaussian_weights(d)
    picks = np.array([difficulty.select_subset(d, 1, seed=s)[0] for s in range(3000)])
    freq = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.03)


@pytest.mark.parametrize("size", [-1, 4])
def test_select_subset_bad_size(size):
    with pytest.raises(ValueError, match="subset size"):
        difficulty.select_subset([0.1, 0.2, float("nan")], size)


def test_bad_std_and_shape():
    with pytest.raises(ValueError, match="std"):
        difficulty.gaussian_weights([0.1], std=0.0)
    with pytest.raises(ValueError, match="1-D"):
        difficulty.gaussian_weights([[0.1]])


def test_drop_solved():
    samples = [{"id": str(i)} for i in range(4)]
    kept = difficulty.drop_solved(samples, [0.71, 0.7, float("nan"), 0.2], threshold=0.7)
    assert [s["id"] for s in kept] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="one IoU per sample"):
        difficulty.drop_solved(samples, [0.1])


TARGET = {"id": "x", "duration": 10.0, "segments": [[2.0, 4.0], [6.0, 8.0]], "answer": "B", "options": ["a", "b"]}


@pytest.mark.parametrize(
    "task,completion,expected",
    [
        ("tg", "<answer>2 to 4</answer>", 1.0),
        ("tg", "<answer>3 to 4, 6 to 8</answer>", 0.5),  # first segment only
        ("tg", "the moment is 2 to 3 seconds", 0.5),  # untagged text is read (lenient)
        ("tg", "no idea", 0.0),
        ("tvg", "<answer>0 to 1, 2 to 4</answer>", 1.0),  # Time-R1 reads the last segment
        ("dtg", "<answer>2 to 4</answer>", 0.5),  # Type 1: divided by max(n_pred, n_gt)
        ("vhd", "<answer>2 to 8</answer>", 4.0 / 6.0),  # union IoU
        ("gvqa", "<answer>A</answer><glue>2 to 4, 6 to 8</glue>", 1.0),
        ("tal", "<answer>6 to 8, 2 to 4</answer>", 1.0),  # DP matching is order free
        ("tal", "<answer>2 to 4, 6 to 8, 9 to 10</answer>", 0.8),  # F1: P = 2/3, R = 1
    ],
)
def test_sample_iou(task, completion, expected):
    assert difficulty.sample_iou(task, completion, TARGET) == pytest.approx(expected)


def test_sample_iou_letter_task():
    target = {"id": "m", "answer": "C", "options": ["a", "b", "c"], "images": ["1.png"]}
    assert difficulty.sample_iou("mcq", "<answer>C</answer>", target) == 1.0
    assert difficulty.sample_iou("mcq", "<answer>A</answer>", target) == 0.0


def test_sample_ious_lengths():
    ious = difficulty.sample_ious(["tg", "tg"], ["<answer>2 to 4</answer>", ""], [TARGET, TARGET])
    np.testing.assert_array_equal(ious, [1.0, 0.0])
    with pytest.raises(ValueError, match="lengths differ"):
        difficulty.sample_ious(["tg"], [], [TARGET])


def _preds(outputs):
    return [{"id": f"s{i}", "task": "tg", "output": o} for i, o in enumerate(outputs)]


def test_curate_select_and_filter():
    targets = [dict(TARGET, id=f"s{i}") for i in range(4)]
    outputs = ["<answer>2 to 4</answer>", "<answer>3 to 4</answer>", "<answer>0 to 1</answer>", "no"]
    cfg = difficulty.CurateConfig(size=2, seed=3)
    kept, ious, summary = curate.curate(_preds(outputs), targets, cfg, mode="select")
    np.testing.assert_allclose(ious, [1.0, 0.5, 0.0, 0.0])
    assert len(kept) == 2 and summary["kept"] == 2 and summary["samples"] == 4
    assert sum(summary["iou_histogram_0_to_1"]) == 4
    kept, _, summary = curate.curate(_preds(outputs), targets, cfg, mode="filter")
    assert [s["id"] for s in kept] == ["s1", "s2", "s3"]
    # Asking for more than there are keeps everything.
    kept, _, _ = curate.curate(_preds(outputs), targets, difficulty.CurateConfig(size=10), mode="select")
    assert len(kept) == 4
    with pytest.raises(ValueError, match="mode"):
        curate.curate(_preds(outputs), targets, cfg, mode="nope")
