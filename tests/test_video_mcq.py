"""General video multiple-choice benchmarks of TempR1 Fig. 3 on the `mcq` task: adapters (TempCompass on
its real file; MVBench, Video-MME and Perception Test on hand-made files in their published layouts),
per-dimension accuracy against the official scripts' rules, and the eval tables."""

import json
import pathlib

import numpy as np
import pytest

from data_pipeline.samples import validate_sample
from data_pipeline.sources import ValidationReport, load, load_validated
from tempr1_jax import evaluation, paper_results
from tempr1_jax.apps import eval_report, evaluate
from tempr1_jax.cli import main
from tempr1_jax.tasks import get_task

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture(scope="module")
def tempcompass(annotations_dir):
    path = annotations_dir / "tempcompass_multi-choice.json"
    return path, json.loads(path.read_text()), list(load("tempcompass", path))


def dicts(samples):
    return [s.to_dict() for s in samples]


# ---- TempCompass, real file -----------------------------------------------------------------------


def test_tempcompass_real_file(tempcompass):
    path, raw, samples = tempcompass
    report = ValidationReport()
    assert len(list(load_validated("tempcompass", path, check_files=False, report=report))) == 1580
    assert report.kept == 1580 and not report.skipped
    dims = {}
    for s in samples:
        dims[s.extra["dimension"]] = dims.get(s.extra["dimension"], 0) + 1
    assert dims == {"action": 338, "direction": 335, "speed": 317, "order": 302, "attribute_change": 288}
    assert sorted({len(s.options) for s in samples}) == [2, 3, 4]
    assert len({s.id for s in samples}) == 1580 and len({s.video for s in samples}) == 410
    first = samples[0]
    assert (first.id, first.task, first.video, first.answer) == ("1034419625_action_0", "mcq", "1034419625.mp4", "A")
    assert first.query == "What is the man doing in the video?"
    assert first.options == ("dunking a basketball", "dribbling a basketball", "passing a basketball")
    # the answer letter's option is the answer text, for every question
    assert all(s.extra["answer_text"] == f"{s.answer}. {s.options[ord(s.answer) - 65]}" for s in samples)
    assert sum(s.video.endswith("_reverse.mp4") for s in samples) > 0


def official_tempcompass_rating(prediction, answer):
    """The rule-based part of TempCompass's eval_multi-choice.py (without its LLM fallback)."""
    if prediction == answer:
        return 1
    if prediction in ["A", "B", "C", "D"]:
        return int(prediction == answer[0])
    for sep in (".", ")"):
        if any(prediction.startswith(f"{x}{sep}") for x in "ABCD"):
            return int(prediction.split(sep)[0] == answer[0])
    return 0


def test_tempcompass_accuracy_per_dimension_matches_the_official_rules(tempcompass):
    _, raw, samples = tempcompass
    rng = np.random.default_rng(0)
    outputs, ratings = [], {}
    for s in samples:
        letter = "ABCD"[rng.integers(0, 4)]
        text = s.options[ord(letter) - 65] if ord(letter) - 65 < len(s.options) else "x"
        output = [letter, f"{letter}. {text}", f"{letter}) {text}", s.extra["answer_text"]][rng.integers(0, 4)]
        outputs.append(output)
        ratings.setdefault(s.extra["dimension"], []).append(official_tempcompass_rating(output, s.extra["answer_text"]))
    got = evaluation.video_mcq_scores("tempcompass", outputs, dicts(samples))
    total = [r for values in ratings.values() for r in values]
    assert got["Acc"] == pytest.approx(round(sum(total) * 100 / len(total), 1), abs=0.05)
    for dim, values in ratings.items():
        assert got[f"dimension/{dim}"] == pytest.approx(round(sum(values) * 100 / len(values), 1), abs=0.05)
    oracle = [get_task("mcq").reference_answer(s.to_dict(), think=True) for s in samples]
    assert set(evaluation.video_mcq_scores("tempcompass", oracle, dicts(samples)).values()) == {100.0}


def test_prepare_tempcompass(tempcompass, tmp_path):
    path, _, samples = tempcompass
    out = tmp_path / "tempcompass"
    assert (
        main(["prepare", "--dataset", "tempcompass", "--annotations", str(path), "--out", str(out), "--no_video_check"])
        == 0
    )
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["test"]
    assert report["kept"] == 1580 and report["by_task"] == {"mcq": 1580}


# ---- MVBench, Video-MME, Perception Test: hand-made files in the published layouts ------------------


def test_mvbench_tasks_bounds_and_video_paths(tmp_path):
    samples = list(load("mvbench", FIXTURES / "mvbench", tmp_path))
    assert [s.id for s in samples] == ["action_sequence_0", "action_sequence_1", "object_shuffle_0"]
    first, _, shuffle = samples
    assert first.video == str(tmp_path.resolve() / "star/Charades_v1_480/3HN6Q.mp4")
    assert (first.video_start, first.video_end, first.answer) == (12.3, 30.1, "B")
    assert first.extra == {"task_type": "Action Sequence"} and len(first.options) == 4
    assert (shuffle.video_start, shuffle.answer, shuffle.extra["task_type"]) == (None, "C", "Object Shuffle")
    assert (
        load("mvbench", FIXTURES / "mvbench" / "object_shuffle.json").__next__().video
        == "perception/videos/video_7213.mp4"
    )
    for s in samples:
        validate_sample(s, where="fixture")
    got = evaluation.video_mcq_scores(
        "mvbench", ["<answer>B</answer>", "B", "(C) Under the third object"], dicts(samples)
    )
    assert got == pytest.approx({"Acc": 200 / 3, "task_type/Action Sequence": 50.0, "task_type/Object Shuffle": 100.0})
    with pytest.raises(ValueError, match="not MVBench task files"):
        list(load("mvbench", FIXTURES / "videomme.json"))


def test_videomme_layouts_and_breakdowns(tmp_path):
    flat = list(load("videomme", FIXTURES / "videomme.json"))
    assert [s.id for s in flat] == ["001-1", "001-2", "601-1"]
    assert flat[0].options == ("1.", "2.", "3.", "4.") and flat[0].answer == "C"
    assert flat[0].video == "fFjv93ACGo8.mp4" and flat[0].extra["duration"] == "short"
    # the official result layout: videos with their questions
    rows = json.loads((FIXTURES / "videomme.json").read_text())
    nested = [
        {
            **{k: rows[0][k] for k in ("video_id", "duration", "domain", "sub_category", "videoID")},
            "questions": [
                {k: r[k] for k in ("question_id", "task_type", "question", "options", "answer")} for r in rows[:2]
            ],
        },
        {
            **{k: rows[2][k] for k in ("video_id", "duration", "domain", "sub_category", "videoID")},
            "questions": [{k: rows[2][k] for k in ("question_id", "task_type", "question", "options", "answer")}],
        },
    ]
    (tmp_path / "results.json").write_text(json.dumps(nested))
    assert [s.to_dict() for s in load("videomme", tmp_path / "results.json")] == dicts(flat)
    outputs = ["The best answer is C.", "I think it is B", "<think>four goals?</think><answer>D</answer>"]
    got = evaluation.video_mcq_scores("videomme", outputs, dicts(flat))
    assert got["Acc"] == pytest.approx(200 / 3)
    assert got["duration/short"] == 50.0 and got["duration/long"] == 100.0
    assert got["task_type/Counting Problem"] == 100.0 and got["task_type/Information Synopsis"] == 0.0
    assert got["domain/Sports Competition"] == 100.0


def test_videomme_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = json.loads((FIXTURES / "videomme.json").read_text())
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    got = list(load("videomme", tmp_path / "test-00000-of-00001.parquet"))
    assert dicts(got) == dicts(load("videomme", FIXTURES / "videomme.json"))


def test_perception_test_areas_and_reasoning():
    samples = list(load("perception_test", FIXTURES / "perception_test_mc.json"))
    assert [s.id for s in samples] == ["video_10909_0", "video_10909_1", "video_8017_0"]
    assert [s.answer for s in samples] == ["C", "A", "B"] and samples[0].video == "video_10909.mp4"
    assert samples[0].extra == {"area": "physics", "reasoning": "descriptive", "tag": ["motion"]}
    got = evaluation.video_mcq_scores("perception_test", ["C", "B", "B"], dicts(samples))
    assert got == pytest.approx(
        {
            "Acc": 200 / 3,
            "area/physics": 100.0,
            "area/semantics": 0.0,
            "area/memory": 100.0,
            "reasoning/descriptive": 100.0,
            "reasoning/predictive": 0.0,
        }
    )


def test_mcq_choice_reads_option_letters_only():
    assert evaluation.mcq_choice("I think B", 4) == "B"
    assert evaluation.mcq_choice("A. one <answer>C</answer>", 4) == "C"
    assert evaluation.mcq_choice("E", 4) is None and evaluation.mcq_choice(None, 4) is None
    assert evaluation.mcq_choice("ABC", 4) is None


def test_eval_harness_scores_per_dimension_and_prints_fig3():
    samples = dicts(load("perception_test", FIXTURES / "perception_test_mc.json"))
    predictions = [
        {"id": s["id"], "task": "mcq", "source": s["source"], "output": o} for s, o in zip(samples, ["C", "B", "B"])
    ]
    metrics = evaluate.score_predictions(predictions, samples)
    assert metrics[("perception_test", "mcq")]["area/memory"] == 100.0
    table = eval_report.markdown_table(metrics)
    assert "### General video understanding (TempR1 Fig. 3)" in table
    assert "| perception_test | 66.7 | - | - | - |" in table
    assert paper_results.general_video_table({("charades_sta", "tg"): {"mIoU": 1.0}}) == ""
    assert set(paper_results.FIG3) == {"videomme", "perception_test", "tempcompass", "mvbench"}
