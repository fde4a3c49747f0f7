"""Baseline answers and paired standard errors (`tempr1_jax.baselines`), on small hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempr1_jax import baselines, evaluation


def _tg(sid, segment, duration=10.0):
    return {"id": sid, "task": "tg", "query": "the red square appears", "duration": duration, "segments": [segment]}


def test_paired_change_unweighted():
    # Per-sample IoU (%) before 50, 0, 100 and after 100, 50, 100: differences 50, 50, 0.
    change = baselines.paired_change([50.0, 0.0, 100.0], [100.0, 50.0, 100.0])
    assert change["delta"] == pytest.approx(100 / 3)
    # std(50, 50, 0; ddof 1) = sqrt((2 * (50/3)^2 + (100/3)^2) / 2) = 28.87; / sqrt(3) = 16.67.
    assert change["stderr"] == pytest.approx(50 / 3)


def test_paired_change_weighted_by_events():
    # DTG: sample A has 2 events, B has 1. Mean IoU per sample before (0.5, 0), after (1, 0.5):
    # the metric averages over events, (0.5*2 + 0)/3 = 1/3 -> (1*2 + 0.5)/3 = 5/6, a change of 1/2.
    # Contributions v * w * N / W: before (2/3, 0), after (4/3, 1/3); differences (2/3, 1/3).
    change = baselines.paired_change([0.5, 0.0], [1.0, 0.5], weights=[2.0, 1.0])
    assert change["delta"] == pytest.approx(0.5)
    assert change["stderr"] == pytest.approx(1 / 6)  # std(2/3, 1/3; ddof 1) / sqrt(2)
    assert math.isnan(baselines.paired_change([1.0], [2.0])["stderr"])
    with pytest.raises(ValueError, match="one length"):
        baselines.paired_change([1.0, 2.0], [1.0])


def test_per_sample_scores_average_to_the_split_metrics():
    """The weighted mean of per-sample scores is `evaluation.score` of the whole split, for every task."""
    rng = np.random.default_rng(0)
    targets = {
        "tg": [_tg("a", [1, 4]), _tg("b", [5, 9], 12.0)],
        "dtg": [
            {"id": "c", "task": "dtg", "query": "x\ny", "duration": 10.0, "segments": [[0, 2], [5, 8]]},
            {"id": "d", "task": "dtg", "query": "x", "duration": 8.0, "segments": [[1, 3]]},
        ],
        "vhd": [
            {"id": "e", "task": "vhd", "query": "x", "duration": 10.0, "segments": [[0, 2], [5, 6]]},
            {"id": "f", "task": "vhd", "query": "x", "duration": 10.0, "segments": [[3, 7]]},
        ],
        "gvqa": [
            {
                "id": "g",
                "task": "gvqa",
                "query": "q",
                "options": ["a", "b", "c", "d"],
                "answer": "B",
                "duration": 10.0,
                "segments": [[2, 5]],
            },
            {
                "id": "h",
                "task": "gvqa",
                "query": "q",
                "options": ["a", "b", "c", "d"],
                "answer": "C",
                "duration": 10.0,
                "segments": [[1, 2], [6, 9]],
            },
        ],
        "tal": [
            {"id": "i", "task": "tal", "query": "x", "duration": 10.0, "segments": [[0, 1], [4, 6], [8, 9]]},
            {"id": "j", "task": "tal", "query": "x", "duration": 10.0, "segments": [[2, 5]]},
        ],
    }
    for task, rows in targets.items():
        outputs = baselines.random_answers(task, rows, rng)
        values, weights = baselines.per_sample_scores(task, outputs, rows)
        assert baselines.weighted_means(values, weights) == pytest.approx(evaluation.score(task, outputs, rows))
    assert list(baselines.per_sample_scores("dtg", ["", ""], targets["dtg"])[1]) == [2.0, 1.0]


def test_whole_video_and_random_answers():
    rows = [_tg("a", [5, 10], 20.0)]
    assert baselines.whole_video_answers("tg", rows) == ["<answer>0 to 20</answer>"]
    assert evaluation.score("tg", baselines.whole_video_answers("tg", rows), rows)["mIoU"] == pytest.approx(25.0)
    dtg = [{"id": "d", "task": "dtg", "query": "one\ntwo", "duration": 8.5, "segments": [[0, 1], [2, 3]]}]
    assert baselines.whole_video_answers("dtg", dtg) == ["<answer>0 to 8.5, 0 to 8.5</answer>"]
    gvqa = [
        {
            "id": "g",
            "task": "gvqa",
            "query": "q",
            "options": ["w", "x", "y", "z"],
            "answer": "D",
            "duration": 6.0,
            "segments": [[1, 2]],
        }
    ]
    assert baselines.whole_video_answers("gvqa", gvqa) == ["<answer>A</answer><glue>0 to 6</glue>"]
    rng = np.random.default_rng(1)
    draws = [baselines.random_answers("dtg", dtg * 50, rng) for _ in range(2)]
    assert draws[0] != draws[1]  # the generator advances
    assert draws[0] == baselines.random_answers("dtg", dtg * 50, np.random.default_rng(1))  # and is seeded
    for text in draws[0]:
        from tempr1_jax.tasks import get_task

        segs = get_task("dtg").parse(text).segments
        assert len(segs) == 2 and all(0 <= s <= e <= 8.5 for s, e in segs)


def test_best_constant_answer():
    # Both events at 0-2 s: the constant "0 to 2" is exact.
    assert (
        baselines.best_constant_answer("tg", [_tg("a", [0, 2]), _tg("b", [0, 2])], grid=1.0)
        == "<answer>0 to 2</answer>"
    )
    # Events at 0-2 and 4-6: "0 to 2" (or "4 to 6") scores IoU 1 and 0, mean 0.5; nothing constant does
    # better ("0 to 6" scores 1/3 on each); ties go to the earlier candidate.
    rows = [_tg("a", [0, 2]), _tg("b", [4, 6])]
    answer = baselines.best_constant_answer("tg", rows, grid=1.0)
    assert answer == "<answer>0 to 2</answer>"
    assert evaluation.score("tg", [answer] * 2, rows)["mIoU"] == pytest.approx(50.0)
    # VHD (union IoU), windows 0-2 and 6-8 in every video: "0 to 2", "6 to 8" and "0 to 8" tie at 0.5
    # (the earliest candidate wins); the second round adds "6 to 8" for an IoU of 1.
    vhd = [
        {"id": str(i), "task": "vhd", "query": "x", "duration": 10.0, "segments": [[0, 2], [6, 8]]} for i in range(2)
    ]
    assert baselines.best_constant_answer("vhd", vhd, grid=1.0) == "<answer>0 to 2, 6 to 8</answer>"
    # Greedy, not exhaustive: with windows 0-2 and 4-6, "0 to 6" (IoU 2/3) wins the first round and no
    # second interval improves on it, although "0 to 2, 4 to 6" would score 1.
    vhd = [{**row, "segments": [[0, 2], [4, 6]]} for row in vhd]
    assert baselines.best_constant_answer("vhd", vhd, grid=1.0) == "<answer>0 to 6</answer>"
    # GVQA: the most frequent letter.
    gvqa = [
        {
            "id": str(i),
            "task": "gvqa",
            "query": "q",
            "options": ["a", "b", "c", "d"],
            "answer": letter,
            "duration": 4.0,
            "segments": [[0, 4]],
        }
        for i, letter in enumerate("CCB")
    ]
    assert baselines.best_constant_answer("gvqa", gvqa, grid=1.0) == "<answer>C</answer><glue>0 to 4</glue>"


def test_fit_constants_and_baseline_scores():
    train = [_tg("a", [0, 2]), _tg("b", [0, 2]), {**_tg("c", [4, 6]), "task": "vhd"}]
    constants = baselines.fit_constants(train, grid=1.0)
    assert constants == {"tg": "<answer>0 to 2</answer>", "vhd": "<answer>4 to 6</answer>"}
    # Each task's answer is fitted on its first max_per_task targets.
    later = [_tg(f"d{i}", [6, 9]) for i in range(3)]
    assert baselines.fit_constants([*train, *later], grid=1.0, max_per_task=2)["tg"] == "<answer>0 to 2</answer>"
    assert baselines.fit_constants([*train, *later], grid=1.0)["tg"] == "<answer>6 to 9</answer>"
    held_out = [_tg("x", [0, 2]), _tg("y", [4, 6])]
    scores = baselines.baseline_scores(held_out, constants, draws=3)
    assert set(scores) == set(baselines.BASELINES) and set(scores["random"]) == {"tg"}
    np.testing.assert_allclose(scores["whole_video"]["tg"]["mIoU"], [20.0, 20.0])  # 2 s of 10
    np.testing.assert_allclose(scores["best_constant"]["tg"]["mIoU"], [100.0, 0.0])  # "0 to 2" on each
    # The random baseline is the mean over its draws, each drawn in turn from the seeded generator.
    rng = np.random.default_rng(0)
    draws = [
        baselines.per_sample_scores("tg", baselines.random_answers("tg", held_out, rng), held_out)[0]["mIoU"]
        for _ in range(3)
    ]
    np.testing.assert_allclose(scores["random"]["tg"]["mIoU"], np.mean(draws, axis=0))
    with pytest.raises(ValueError, match="no constant answer"):
        baselines.baseline_scores([{**held_out[0], "task": "dtg"}], constants)
