"""Readers for the peers' prediction files: each peer's parsing rules, row layouts and matching by
ground truth."""

import json

import pytest

from tempr1_jax import prediction_formats as pf
from tempr1_jax.evaluation import score


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "text, segment",
    [
        ("<think>from 1 to 2</think><answer>3.5 to 7.25</answer>", (3.5, 7.25)),
        ("<answer>1 to 2, 4 and 9</answer>", (4.0, 9.0)),  # the last pair
        ("<answer>3.5-7.25</answer>", None),  # only "x to y" / "x and y" with single spaces
        ("<answer>3.5  to 7</answer>", None),
    ],
)
def test_last_to_segment(text, segment):
    assert pf.last_to_segment(text) == segment


@pytest.mark.parametrize(
    "text, segments",
    [
        ("<answer>1.5-3.0 4-6</answer>", [(1.5, 3.0), (4.0, 6.0)]),
        ("<think>x</think><answer>\n 12.54 - 17.83 \n</answer>", [(12.54, 17.83)]),
        ("<answer>1-3 4</answer>", []),  # odd count
        ("<answer>1-3 5-5</answer>", []),  # a point span drops the answer
        ("<answer>3-1</answer>", []),
        ("<answer>1-2</answer><answer>3-4</answer>", []),  # not exactly one block
        ("1-2", []),
    ],
)
def test_museg_rules(text, segments):
    assert pf.museg_segments(pf.museg_answer(text)) == segments


@pytest.mark.parametrize(
    "glue, spans",
    [
        ("[(5.2, 10.4)]", [(5.2, 10.4)]),
        ("[(1, 2), (3.5,4),]", [(1.0, 2.0), (3.5, 4.0)]),
        ("[]", []),
        ("[(2, 2)]", [(2.0, 2.0)]),
        ("[(4, 2)]", None),
        ("[ (1, 2)]", None),
        ("(1, 2)", None),
        ("1 to 2", None),
    ],
)
def test_videochat_glue(glue, spans):
    assert pf.videochat_glue(glue) == spans


@pytest.mark.parametrize(
    "answer, letter",
    [("B", "B"), ("(C) the cat", "C"), ("The answer is D.", "D"), ("the baby claps", None), ("Best answer: A", "B")],
)
def test_videochat_letter(answer, letter):
    # the script removes its answer phrases first; "Best answer:" alone is not one of them (its
    # list glues "Best answer:" "Best option:" into one string), so "Best" gives B
    assert pf.videochat_letter(answer) == letter


def test_text_rows_become_our_format(tmp_path):
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "output": "<glue>[(1.5, 3)]</glue><answer>(B) yes</answer>"},
            {"id": "b", "output": "<answer>C</answer><glue>1 to 2</glue>"},
            {"id": "c", "output": None},
        ],
    )
    rows = pf.read_predictions(path, "videochat_r1", "gvqa")
    assert [r.output for r in rows] == [
        "<answer>B</answer><glue>1.5 to 3.0</glue>",
        "<answer>C</answer><glue></glue>",
        None,
    ]
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "a", "output": "<answer>0.5-2 4-6</answer>"}])
    assert pf.read_predictions(path, "museg", "tal")[0].output == "<answer>0.5 to 2.0, 4.0 to 6.0</answer>"
    path = _jsonl(
        tmp_path / "t.jsonl", [{"id": "a", "output": "<answer>0.5 to 2, 4 to 6</answer>"}, {"id": "b", "output": "?"}]
    )
    assert [r.output for r in pf.read_predictions(path, "time_r1", "tvg")] == ["<answer>4.0 to 6.0</answer>", ""]


def test_time_r1_rows(tmp_path):
    path = _jsonl(
        tmp_path / "tg_0_1.jsonl",
        [
            {"qid": "charades_0", "pred": [1.0, 4.0], "target": [0.0, 4.0], "duration": 10.0, "output_text": "1 to 9"},
            {"qid": "charades_1", "pred": [None, None], "target": [2.0, 3.0], "duration": 10.0, "output_text": ""},
            {"qid": "x", "target": [5.0, 6.0], "duration": 10.0, "output_text": "<answer>5 to 6</answer>"},
        ],
    )
    rows = pf.read_predictions(path, "time_r1", "tg")
    assert [r.output for r in rows] == ["<answer>1.0 to 4.0</answer>", "", "<answer>5.0 to 6.0</answer>"]
    assert rows[0].ground_truth == ((0.0, 4.0),) and rows[0].duration == 10.0
    targets = [
        {"id": "v#0", "duration": 10.0, "segments": [[2, 3]]},
        {"id": "v#1", "duration": 10.0, "segments": [[0, 4]]},
        {"id": "w#0", "duration": 20.0, "segments": [[5, 6]]},
    ]
    outputs, unmatched = pf.align(rows, targets)
    # matched by ground truth and duration: the third row's 10 s video is not w (20 s)
    assert outputs == ["", "<answer>1.0 to 4.0</answer>", None] and unmatched == 1
    _jsonl(path, [{"qid": "charades_0", "pred": ["a", 2], "target": [0.0, 4.0]}])
    with pytest.raises(ValueError, match="row 1: not a time_r1 prediction"):
        pf.read_predictions(path, "time_r1", "tg")


def test_videochat_r1_grounding_log(tmp_path):
    path = _jsonl(
        tmp_path / "cuda:0.jsonl",
        [
            {
                "video_path": "/v/a.mp4",
                "query": "q",
                "answer": "<answer>2.00 to 4.00</answer>",
                "timestamp": [2.0, 4.0],
                "iou": 0.5,
                "ans": [0.0, 4.0],
            },
            {
                "video_path": "/v/b.mp4",
                "query": "q",
                "answer": "no idea",
                "timestamp": [None, None],
                "iou": 0,
                "ans": [0.0, 4.0],
            },
        ],
    )
    targets = [
        {"id": "b#0", "video": "b.mp4", "duration": 9.0, "segments": [[0, 4]]},
        {"id": "a#0", "video": "a.mp4", "duration": 9.0, "segments": [[0, 4]]},
    ]
    outputs, unmatched = pf.align(pf.read_predictions(path, "videochat_r1", "tg"), targets)
    assert outputs == ["", "<answer>2.0 to 4.0</answer>"] and unmatched == 0
    with pytest.raises(ValueError, match="row 1: not a videochat_r1 prediction"):
        pf.read_predictions(path, "videochat_r1", "gvqa")


def test_align_prefers_ids_and_counts_the_rest():
    targets = [
        {"id": "a", "duration": 9.0, "segments": [[1, 2]]},
        {"id": "b", "duration": 9.0, "segments": [[1, 2]]},
        {"id": "c", "duration": 9.0, "segments": [[3, 4]]},
    ]
    rows = [
        pf.Prediction("b", "B"),
        pf.Prediction(None, "X", ((1.0, 2.0),)),
        pf.Prediction(None, "Y", ((1.0, 2.0),)),
        pf.Prediction("zzz", "Z"),
    ]
    outputs, unmatched = pf.align(rows, targets)
    assert outputs == ["X", "B", None] and unmatched == 2  # "Y" finds no free target with [1, 2]


def test_museg_file_and_bad_rows(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(
        json.dumps(
            [
                {"video": "thumos14/v1.mp4", "groundtruth": [[3, 4], [1, 2]], "result": {"output": "1-2 3-4"}},
                {"video": "thumos14/v2.mp4", "groundtruth": [[1, 2]], "result": {"output": ""}},
                {"tot": 2, "f1_multi_0.1": 0.5},
            ]
        )
    )
    rows = pf.read_predictions(path, "museg", "tal")
    targets = [
        {"id": "v2#x", "video": "v2.mp4", "duration": 9.0, "segments": [[1, 2]]},
        {"id": "v1#x", "video": "v1.mp4", "duration": 9.0, "segments": [[1, 2], [3, 4]]},
    ]
    outputs, unmatched = pf.align(rows, targets)
    assert unmatched == 0
    assert score("tal", outputs, targets)["F1@0.7"] == 50.0
    path.write_text(json.dumps([{"video": "v.mp4"}]))
    with pytest.raises(ValueError, match="row 0: not a museg prediction"):
        pf.read_predictions(path, "museg", "tal")
    with pytest.raises(ValueError, match="covers tasks tg, tvg, gvqa, not 'tal'"):
        pf.read_predictions(path, "videochat_r1", "tal")
    with pytest.raises(ValueError, match="unknown prediction format 'x'"):
        pf.read_predictions(path, "x", "tg")
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not JSON"):
        pf.read_predictions(path, "museg", "tal")
