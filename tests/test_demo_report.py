"""The demo's report on hand-made evaluations: keys an outside check reads, paired changes, the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tempr1_jax.apps import demo
from tempr1_jax.apps.evaluate import EvalResult
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.training.live_eval import score_predictions

TARGETS = [
    {"id": "t0", "task": "tg", "source": "synthetic", "query": "the red square appears", "duration": 10.0,
     "segments": [[2.0, 4.0]]},
    {"id": "t1", "task": "tg", "source": "synthetic", "query": "the blue circle flashes", "duration": 10.0,
     "segments": [[6.0, 8.0]]},
    {"id": "d0", "task": "dtg", "source": "synthetic", "query": "a\nb", "duration": 10.0,
     "segments": [[0.0, 2.0], [5.0, 6.0]]},
    {"id": "d1", "task": "dtg", "source": "synthetic", "query": "a", "duration": 10.0, "segments": [[1.0, 3.0]]},
]  # fmt: skip
BEFORE = ["<answer>2 to 3</answer>", "<answer>0 to 10</answer>", "<answer>0 to 2, 0 to 1</answer>", "junk"]
AFTER = [
    "<answer>2 to 4</answer>",
    "<answer>6 to 7</answer>",
    "<answer>0 to 2, 5 to 6</answer>",
    "<answer>1 to 3</answer>",
]
CONSTANTS = {"tg": "<answer>2 to 4</answer>", "dtg": "<answer>0 to 2</answer>"}


def _result(outputs):
    predictions = [
        {"id": t["id"], "task": t["task"], "source": t["source"], "output": o} for t, o in zip(TARGETS, outputs)
    ]
    return EvalResult(predictions, list(TARGETS), score_predictions(predictions, TARGETS), {}, [])


@pytest.fixture(scope="module")
def report():
    cfg = demo.DemoConfig(tasks=("tg", "dtg"), test_samples_per_task=2, baseline_draws=2)
    out = demo.build_report(_result(BEFORE), _result(AFTER), CONSTANTS, RolloutConfig(think=False), cfg)
    out["timings"] = {"total_s": 1.0, "total_cpu_s": 1.0}
    return json.loads(json.dumps(out))  # what demo_report.json holds


def test_report_keys(report):
    for phase in ("before", "after"):
        assert set(report[phase]) == {"tg", "dtg", "mean_reward"}
        assert {"mIoU", "R1@0.5", "reward", "reward_terms"} <= set(report[phase]["tg"])
        assert set(report[phase]["tg"]["reward_terms"]) == {"format", "loc"}
    assert set(report["baselines"]) == {"whole_video", "random", "best_constant"}
    for name, tasks in report["baselines"].items():
        assert set(tasks) == {"tg", "dtg"} and "mIoU" in tasks["tg"], name
    assert set(report["changes"]["dtg"]["mIoU"]) == {"delta", "stderr"}
    assert {"delta", "stderr"} <= set(report["loc_reward_change"])
    assert set(report["vs_baselines"]["tg"]) == {"whole_video", "random", "best_constant"}


def test_report_numbers(report):
    # TG IoU per sample: before 0.5, 0.2; after 1, 0.5 -> mIoU 35 -> 75, differences 50, 30 (percent).
    assert report["before"]["tg"]["mIoU"] == pytest.approx(35.0)
    assert report["after"]["tg"]["mIoU"] == pytest.approx(75.0)
    assert report["changes"]["tg"]["mIoU"]["delta"] == pytest.approx(40.0)
    assert report["changes"]["tg"]["mIoU"]["stderr"] == pytest.approx(np.std([50, 30], ddof=1) / np.sqrt(2))
    # DTG IoU per event: before (1, 0) and (0) -> 1/3; after 1, 1, 1 -> 100. Per-sample contributions
    # (weights 2 and 1 of 3 events, times 2 samples): before 4/3 * 0.5, 0; after 4/3, 2/3.
    assert report["before"]["dtg"]["mIoU"] == pytest.approx(100 / 3)
    assert report["changes"]["dtg"]["mIoU"]["delta"] == pytest.approx(200 / 3)
    dtg_diff = 100 * np.array([4 / 3 - 2 / 3, 2 / 3])
    assert report["changes"]["dtg"]["mIoU"]["stderr"] == pytest.approx(np.std(dtg_diff, ddof=1) / np.sqrt(2))
    # Baselines on the same samples: whole video on TG is IoU 0.2 each; the constant "2 to 4" is exact
    # on t0 and misses t1; on DTG, "0 to 2" is exact for d0's first event only, IoU 1/3 for d1's.
    assert report["baselines"]["whole_video"]["tg"]["mIoU"] == pytest.approx(20.0)
    assert report["baselines"]["best_constant"]["tg"]["mIoU"] == pytest.approx(50.0)
    assert report["baselines"]["best_constant"]["dtg"]["mIoU"] == pytest.approx(100 * (1 + 0 + 1 / 3) / 3)
    assert report["best_constant_answers"] == CONSTANTS
    # Localisation reward over the 4 samples: before 0.5, 0.2, (1 + 0)/2, 0; after 1, 0.5, 1, 1.
    loc = report["loc_reward_change"]
    assert loc["delta"] == pytest.approx(np.mean([0.5, 0.3, 0.5, 1.0]))
    assert loc["stderr"] == pytest.approx(np.std([0.5, 0.3, 0.5, 1.0], ddof=1) / 2)
    assert loc["num_samples"] == 4
    # The junk answer fails the format: DTG format 0.5 -> 1.
    assert report["before"]["dtg"]["reward_terms"]["format"] == pytest.approx(0.5)
    assert report["after"]["dtg"]["reward_terms"]["format"] == pytest.approx(1.0)
    assert report["changes"]["dtg"]["reward_format"]["delta"] == pytest.approx(0.5)
    margin = report["vs_baselines"]["tg"]["whole_video"]["mIoU"]
    assert margin["delta"] == pytest.approx(75.0 - 20.0)


def test_summary_lists_baselines_and_changes(report):
    text = demo.format_report(report)
    assert "whole" in text and "const" in text and "tg    mIoU" in text and "+40.0 +- 10.0" in text
    assert "localisation reward change +0.575" in text and "loc 0.350 -> 0.750" in text


def test_unpaired_evaluations_are_refused():
    other = _result(AFTER)
    other.targets = other.targets[::-1]
    with pytest.raises(ValueError, match="different samples"):
        demo.build_report(_result(BEFORE), other, CONSTANTS, RolloutConfig(think=False), demo.DemoConfig())


def test_training_sources_weight_tasks(tmp_path):
    """Without weights SFT reads the training split as it is; with them one file per task, each weighted
    by its sample count times the task's weight (GVQA drawn twice as often per sample)."""
    from data_pipeline.samples import read_jsonl, write_jsonl
    from data_pipeline.synthetic import write_synthetic_dataset

    paths = write_synthetic_dataset(
        tmp_path, samples_per_task=3, tasks=("tg", "gvqa"), include_images=False, split_names=("train",)
    )
    train = paths["train"]
    assert demo.training_sources(train, tmp_path, {}) == [{"path": str(train), "media_dir": str(tmp_path)}]
    sources = demo.training_sources(train, tmp_path, {"gvqa": 2.0, "tal": 5.0})
    assert [(s["weight"], s["media_dir"]) for s in sources] == [(3.0, str(tmp_path)), (6.0, str(tmp_path))]
    for source, task in zip(sources, ("tg", "gvqa")):
        assert [s.task for s in read_jsonl(source["path"])] == [task] * 3
    write_jsonl(train, [])
    with pytest.raises(ValueError, match="sft_task_weights"):
        demo.DemoConfig(sft_task_weights={"gvqa": 0.0})


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    """The workdir keeps the run's gin settings: the same ones again continue, other ones are refused with
    each difference named."""
    import gin

    from tempr1_jax import configurables
    from tempr1_jax.training.run_record import ChangedConfigError

    try:
        configurables.parse_gin(files=["demo_e2e.gin"], bindings=["DemoConfig.sft_steps = 5"])
        demo.check_settings(tmp_path)
        assert json.loads((tmp_path / demo.SETTINGS).read_text())["DemoConfig.sft_steps"] == "5"
        configurables.parse_gin(files=["demo_e2e.gin"], bindings=["DemoConfig.sft_steps = 5"])
        demo.check_settings(tmp_path)  # the same settings: a resume
        configurables.parse_gin(files=["demo_e2e.gin"], bindings=["DemoConfig.sft_steps = 6"])
        with pytest.raises(ChangedConfigError, match="other settings") as err:
            demo.check_settings(tmp_path)
        assert err.value.differences == ['DemoConfig.sft_steps: "5" -> "6"']
    finally:
        gin.clear_config()
