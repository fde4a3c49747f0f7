"""Task registry: prompts, strict templates, lenient parsers, reference answers, target checks."""

import math

import pytest

from tempr1_jax import tasks
from tempr1_jax.rewards.reference import reward_reference

SAMPLES = {
    "tg": {
        "id": "tg1",
        "task": "tg",
        "video": "v.mp4",
        "duration": 30.0,
        "query": "a man opens a door",
        "segments": [[2.5, 7.25]],
    },
    "dtg": {
        "id": "d1",
        "task": "dtg",
        "duration": 60.0,
        "query": ["he sits", "he stands"],
        "segments": [[0, 10], [12.5, 30]],
    },
    "vhd": {"id": "v1", "task": "vhd", "duration": 150.0, "query": "cooking", "segments": [[82, 150], [10, 20]]},
    "gvqa": {
        "id": "g1",
        "task": "gvqa",
        "duration": 35.0,
        "query": "what did the baby do?",
        "options": ["clap", "lay on floor", "crawl"],
        "answer": "B",
        "segments": [[0.5, 12.6]],
    },
    "tal": {
        "id": "a1",
        "task": "tal",
        "duration": 200.0,
        "query": "billiards",
        "segments": [[67.5, 75.9], [85.9, 90.6], [139.3, 148.2]],
    },
    "tvg": {
        "id": "t1",
        "task": "tvg",
        "duration": 30.12,
        "query": "a person was sitting at a table.",
        "segments": [[13.4, 28.1]],
    },
    "order": {
        "id": "o1",
        "task": "order",
        "images": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        "query": "make tea",
        "answer": "CABD",
    },
    "mcq": {
        "id": "m1",
        "task": "mcq",
        "images": ["a.jpg", "b.jpg"],
        "query": "Which frame comes next?",
        "options": ["frame 1", "frame 2", "None of the choices provided."],
        "answer": "C",
    },
}
MAX_LOC = {"tg": 1.0, "dtg": 1.0, "vhd": 1.0, "gvqa": 1.0, "tal": 2.0, "tvg": 1.0, "order": 0.0, "mcq": 0.0}


def test_registry_names_and_unknown():
    assert set(tasks.TASKS) == {"tg", "dtg", "vhd", "gvqa", "tal", "tvg", "order", "mcq"}
    assert tasks.get_task("tal").reward == "type3"
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get_task("nope")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_prompt_has_query_and_no_vision_placeholders(name):
    task, sample = tasks.get_task(name), SAMPLES[name]
    with_think = task.build_prompt(sample, think=True)
    without = task.build_prompt(sample, think=False)
    first_query = sample["query"] if isinstance(sample["query"], str) else sample["query"][0]
    assert first_query in with_think
    assert "<think>" in with_think and "<think>" not in without
    for placeholder in ("<|vision_start|>", "<|video_pad|>", "<|image_pad|>", "<video>", "<image>"):
        assert placeholder not in with_think
    assert (
        task.build_prompt(sample, template="Q: {query}")
        == f"Q: {sample['query'] if isinstance(sample['query'], str) else '1. he sits' + chr(10) + '2. he stands'}"
    )


def test_prompt_lists_options_and_labels():
    assert "B. lay on floor" in tasks.get_task("gvqa").build_prompt(SAMPLES["gvqa"])
    assert "ABCD" in tasks.get_task("order").build_prompt(SAMPLES["order"])
    assert "30.12 seconds" in tasks.get_task("tvg").build_prompt(SAMPLES["tvg"])


@pytest.mark.parametrize("think", [False, True])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_reference_answer_is_well_formed_and_scores_max(name, think):
    task, sample = tasks.get_task(name), SAMPLES[name]
    answer = task.reference_answer(sample, think=think)
    assert task.format_ok(answer, think=think)
    assert answer.startswith("<think>") == think
    r = reward_reference(name, answer, sample, think=think)
    assert r["format"] == 1.0
    assert r["loc"] == pytest.approx(MAX_LOC[name])
    if task.has_cls:
        assert r["cls"] == 1.0


@pytest.mark.parametrize(
    "text, think, ok",
    [
        ("<think>x</think><answer>1 to 2</answer>", True, True),
        ("  <think>\nmulti\nline</think>\n<answer> 1.5 to 2 </answer>\n", True, True),
        ("<answer>1 to 2</answer>", True, False),  # think block required when the switch is on
        ("<answer>1 to 2</answer>", False, True),
        ("<think>x</think><answer>1 to 2</answer>", False, False),
        ("<think>x</think><answer>1 to 2</answer> trailing", True, False),
        ("<think>a</think><think>b</think><answer>1 to 2</answer>", True, False),
        ("<think>a <answer>3 to 4</answer></think><answer>1 to 2</answer>", True, False),
        ("<think>x</think><answer>1 to 2, 3 to 4</answer>", True, False),  # TG takes one segment
        ("<think>x</think><answer>-1 to 2</answer>", True, False),
        ("<think>x</think><answer>1s to 2s</answer>", True, False),
        ("<think>x</think><answer>nan to 2</answer>", True, False),
        ("", True, False),
    ],
)
def test_tg_strict_template(text, think, ok):
    assert tasks.get_task("tg").format_ok(text, think=think) is ok


def test_other_templates():
    dtg, gvqa, order, mcq = (tasks.get_task(n) for n in ("dtg", "gvqa", "order", "mcq"))
    assert dtg.format_ok("<think>.</think><answer>1 to 2, 3.5 to 4,5 to 6</answer>")
    assert not dtg.format_ok("<think>.</think><answer>1 to 2,, 3 to 4</answer>")
    assert not dtg.format_ok("<think>.</think><answer></answer>")
    assert gvqa.format_ok("<think>.</think><answer>B</answer><glue>1 to 2, 3 to 4</glue>")
    assert gvqa.format_ok("<think>.</think><answer> B </answer>\n<glue>1 to 2</glue>")
    assert not gvqa.format_ok("<think>.</think><answer>B</answer>")
    assert not gvqa.format_ok("<think>.</think><answer>(B) lay</answer><glue>1 to 2</glue>")
    assert order.format_ok("<think>.</think><answer>CABD</answer>")
    assert not order.format_ok("<think>.</think><answer>C</answer>")
    assert mcq.format_ok("<think>.</think><answer>C</answer>")
    assert not mcq.format_ok("<think>.</think><answer>CA</answer>")


def test_lenient_segment_parsing():
    tg = tasks.get_task("tg")
    assert tg.parse("<answer>12.5s to 20 seconds</answer>").segments == ((12.5, 20.0),)
    assert tg.parse("<answer>from 3 - 5, and 7 and 9</answer>").segments == ((3.0, 5.0), (7.0, 9.0))
    assert tg.parse("<answer>-4 to 1e3</answer>").segments == ((-4.0, 1000.0),)
    segs = tg.parse("<answer>nan to 5, 3 to inf, 9 to 2, 1e999 to 2</answer>").segments
    assert math.isnan(segs[0][0]) and segs[1][1] == math.inf and segs[2] == (9.0, 2.0) and segs[3][0] == math.inf
    # the last <answer> block counts; an unclosed block runs to the end
    assert tg.parse("<answer>1 to 2</answer> <answer>3 to 4</answer>").segments == ((3.0, 4.0),)
    assert tg.parse("<think>1 to 2</think><answer>5 to 6").segments == ((5.0, 6.0),)
    # without tags: nothing for rewards, the whole text for evaluation
    assert tg.parse("it happens 1 to 2").segments == ()
    assert tg.parse("it happens 1 to 2", fallback=True).segments == ((1.0, 2.0),)
    assert tg.parse(None).segments == ()


def test_segment_cap_and_tvg_last():
    text = "<answer>" + ", ".join(f"{i} to {i + 1}" for i in range(1000)) + "</answer>"
    assert len(tasks.get_task("tal").parse(text).segments) == tasks.MAX_SEGMENTS
    assert len(tasks.get_task("tal").parse(text, max_segments=5).segments) == 5
    assert tasks.get_task("tvg").parse(text).segments == ((999.0, 1000.0),)
    assert tasks.get_task("tvg").parse("<answer>1 to 2 or maybe 3 to 4</answer>").segments == ((3.0, 4.0),)


def test_choice_and_order_parsing():
    gvqa, mcq, order = (tasks.get_task(n) for n in ("gvqa", "mcq", "order"))
    p = gvqa.parse("<answer>(B) lay on floor</answer><glue>1 to 2</glue>")
    assert p.choice == "B" and p.segments == ((1.0, 2.0),)
    assert gvqa.parse("<answer>B</answer>").segments == ()
    assert mcq.parse("<answer>the answer is C.</answer>").choice == "C"
    assert order.parse("<answer>C, A, B, D</answer>").choice == "CABD"
    assert order.parse("<answer>order: CABD</answer>").choice == "CABD"
    assert order.parse("<answer>nothing</answer>").choice is None


def test_answer_letter_forms():
    base = {"id": "q", "options": ["x", "y", "z"]}
    assert tasks.answer_letter({**base, "answer": "b"}) == "B"
    assert tasks.answer_letter({**base, "answer": "z"}) == "C"
    assert tasks.answer_letter({**base, "answer": 1}) == "B"
    with pytest.raises(ValueError, match="'q'"):
        tasks.answer_letter({**base, "answer": "not an option"})
    with pytest.raises(ValueError, match="'q'"):
        tasks.answer_letter(base)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"segments": [[1, 2]]}, "duration"),
        ({"duration": 0, "segments": [[1, 2]]}, "duration"),
        ({"duration": float("nan"), "segments": [[1, 2]]}, "duration"),
        ({"duration": 10}, "missing ground-truth"),
        ({"duration": 10, "segments": []}, "missing ground-truth"),
        ({"duration": 10, "segments": [[5, 2]]}, "start > end"),
        ({"duration": 10, "segments": [[1, 2, 3]]}, "segments are not"),
        ({"duration": 10, "segments": [[1, float("inf")]]}, "non-finite"),
        ({"duration": 10, "segments": [["a", 2]]}, "segments are not"),
    ],
)
def test_malformed_targets_name_the_id(bad, message):
    with pytest.raises(ValueError, match=message) as err:
        tasks.target_segments({"id": "sample-42", **bad})
    assert "sample-42" in str(err.value)


def test_target_segments_roundtrip():
    segs, d = tasks.target_segments({"id": "x", "duration": "30", "segments": [(1, 2.5)]})
    assert segs == [(1.0, 2.5)] and d == 30.0
