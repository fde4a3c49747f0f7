"""Evaluation harness: grouping and scoring, the paper table, the time-line figure, and `tempr1 eval`
end to end on a tiny exported model."""

from __future__ import annotations

import json
import pathlib

import gin
import numpy as np
import pytest

from tempr1_jax import evaluation
from tempr1_jax.apps import eval_report, evaluate


@pytest.fixture(autouse=True)
def _clear_gin():
    """Leave no gin bindings behind for other tests in this process."""
    yield
    gin.clear_config()


TARGETS = [
    {"id": "a", "task": "tg", "source": "charades_sta", "duration": 20.0, "segments": [[2.0, 6.0]], "query": "q"},
    {"id": "b", "task": "tg", "source": "charades_sta", "duration": 20.0, "segments": [[10.0, 12.0]], "query": "q"},
    {
        "id": "c",
        "task": "tal",
        "source": "activitynet13",
        "duration": 30.0,
        "segments": [[1.0, 3.0], [20.0, 25.0]],
        "query": "jump",
    },
]
PREDICTIONS = [
    {"id": "a", "task": "tg", "source": "charades_sta", "output": "<answer>2 to 6</answer>"},
    {"id": "b", "task": "tg", "source": "charades_sta", "output": "garbage"},
    {"id": "c", "task": "tal", "source": "activitynet13", "output": "<answer>1 to 3, 21 to 25, 40 to 50</answer>"},
]


def test_score_predictions_groups_by_dataset_and_task():
    metrics = evaluate.score_predictions(PREDICTIONS, TARGETS)
    assert list(metrics) == [("charades_sta", "tg"), ("activitynet13", "tal")]
    assert metrics[("charades_sta", "tg")] == evaluation.score(
        "tg", [p["output"] for p in PREDICTIONS[:2]], TARGETS[:2]
    )
    assert metrics[("charades_sta", "tg")]["mIoU"] == pytest.approx(50.0)


def test_reward_summary():
    rewards = evaluate.reward_summary(PREDICTIONS, TARGETS, think=False)
    per_sample = evaluate.per_sample_rewards(PREDICTIONS, TARGETS, think=False)
    assert rewards["tg/reward"] == pytest.approx((2.0 + 0.0) / 2)  # format + IoU 1, then nothing
    assert rewards["mean_reward"] == pytest.approx(float(np.mean(per_sample)))
    assert evaluate.reward_summary([], []) == {"mean_reward": 0.0}


def test_markdown_table_prints_the_paper_beside_ours():
    table = eval_report.markdown_table(
        {("charades_sta", "tg"): {"mIoU": 12.34, "R1@0.5": 5.0}, ("synthetic", "tal"): {"mF1": 3.0}}
    )
    assert "| mIoU | 12.3 | 61.4 | TempR1 |" in table
    assert "| R1@0.5 | 5.0 | 72.7 | TempR1 |" in table
    assert "| mF1 | 3.0 | - |  |" in table


def test_markdown_table_names_the_conventions():
    table = eval_report.markdown_table(
        {("charades_sta", "tg"): {"mIoU": 1.0}, ("tvgbench", "tvg"): {"R1@0.5": 2.0}}, score_options={"strict": True}
    )
    assert "### charades_sta (tg)\n\n- ours: IoU > thr; first predicted segment; raw annotation times\n" in table
    assert "- TempR1: not stated by the source\n" in table
    assert "- ours: IoU > thr; last 'x to y' of the answer; raw annotation times\n" in table
    assert "- Time-R1: IoU > thr, last 'x to y' of the answer, raw times (Time-R1 eval_all)\n" in table
    assert "- ours: IoU >= thr; first" in eval_report.markdown_table({("charades_sta", "tg"): {"mIoU": 1.0}})


def test_predicted_segments_drop_invalid_and_clip():
    segs = eval_report.predicted_segments("tal", "<answer>-1 to 3, 5 to 4, nan to 2, 8 to 99</answer>", 10.0)
    assert segs == [(0.0, 3.0), (8.0, 10.0)]


def test_timeline_png(tmp_path):
    path = eval_report.plot_timelines(PREDICTIONS, TARGETS, tmp_path / "t.png", per_task=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # letter-only tasks and empty input still give a figure
    empty = eval_report.plot_timelines([], [], tmp_path / "e.png")
    assert empty.stat().st_size > 0


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """A tiny random model + tiny tokenizer exported in HF format, and a 1-sample-per-task synthetic split."""
    from flax import nnx

    from data_pipeline.synthetic import write_synthetic_dataset
    from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
    from models.qwen2_5_vl.config import tiny_config
    from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
    from tempr1_jax import tasks

    root = tmp_path_factory.mktemp("eval")
    splits = write_synthetic_dataset(
        root / "data", tasks=("tg", "vhd"), include_images=False, samples_per_task=2, split_names=("test",)
    )
    samples = [json.loads(line) for line in splits["test"].read_text().splitlines()]
    text = [tasks.get_task(s["task"]).build_prompt(s, False) for s in samples]
    tok = train_tiny_tokenizer(text * 4, root / "tok", vocab_size=300)
    model = Qwen2_5_VLForConditionalGeneration(
        tiny_config(**special_token_ids(tok), num_hidden_layers=1, vision_depth=2, vision_fullatt_block_indexes=(1,)),
        rngs=nnx.Rngs(0),
    )
    model.save_pretrained(root / "hf")
    tok.save_pretrained(str(root / "hf"))
    return root


EVAL_BINDINGS = [
    "--gin.LoaderConfig.max_frames=4",
    "--gin.LoaderConfig.min_pixels=784",
    "--gin.LoaderConfig.max_pixels=3136",
    "--gin.LoaderConfig.total_pixels=12544",
    "--gin.LoaderConfig.token_buckets=(256,)",
    "--gin.LoaderConfig.patch_buckets=(64,)",
]


@pytest.mark.slow
def test_eval_command_end_to_end(exported_model, tmp_path):
    from tempr1_jax import cli

    out = tmp_path / "out"
    code = cli.main(
        [
            "eval",
            "--checkpoint",
            str(exported_model / "hf"),
            "--dataset",
            str(exported_model / "data" / "test.jsonl"),
            "--media_dir",
            str(exported_model / "data"),
            "--workdir",
            str(out),
            "--batch_size",
            "3",
            "--max_new_tokens",
            "6",
            *EVAL_BINDINGS,
        ]
    )
    assert code == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["metrics"]) == {"synthetic/tg", "synthetic/vhd"} and results["num_samples"] == 4
    assert "mean_reward" in results["rewards"]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [f"syn-test-{t}-000{i}" for t in ("tg", "vhd") for i in range(2)]
    assert "| metric | ours | paper | method |" in (out / "eval_table.md").read_text()
    assert (out / "eval_timeline.png").stat().st_size > 0
    assert (out / "operative_config.gin").is_file()


def test_eval_with_no_usable_sample_fails(exported_model, tmp_path, capsys):
    from tempr1_jax import cli

    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code = cli.main(
        [
            "eval",
            "--checkpoint",
            str(exported_model / "hf"),
            "--dataset",
            str(exported_model / "data" / "test.jsonl"),
            "--media_dir",
            str(tmp_path / "empty"),
            "--workdir",
            str(out),
            "--batch_size",
            "3",
            "--max_new_tokens",
            "6",
            *EVAL_BINDINGS,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no usable sample" in err and "all 4 were skipped" in err and "missing_file: 4" in err
    assert not (out / "eval_results.json").exists()


@pytest.mark.slow
def test_curate_command_end_to_end(exported_model, tmp_path):
    from tempr1_jax import cli

    out = tmp_path / "curated.jsonl"
    code = cli.main(
        [
            "curate",
            "--checkpoint",
            str(exported_model / "hf"),
            "--dataset",
            str(exported_model / "data" / "test.jsonl"),
            "--media_dir",
            str(exported_model / "data"),
            "--out",
            str(out),
            "--batch_size",
            "4",
            "--max_new_tokens",
            "6",
            "--gin.CurateConfig.size=3",
            *EVAL_BINDINGS,
        ]
    )
    assert code == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(kept) == 3
    scores = [json.loads(line) for line in pathlib.Path(f"{out}.difficulty.jsonl").read_text().splitlines()]
    assert len(scores) == 4 and all(0.0 <= s["iou"] <= 1.0 for s in scores)
    assert json.loads(pathlib.Path(f"{out}.report.json").read_text())["kept"] == 3
