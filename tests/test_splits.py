"""Split hygiene at `tempr1 prepare`: `--task` relabelling (TimeRFT as TG) and `--disjoint_from`, the guard
that keeps NExT-GQA's test questions and videos out of the GVQA training split (prepared from its val files)."""

import json
import pathlib

import pytest

from data_pipeline.samples import read_jsonl
from data_pipeline.sources import load
from data_pipeline.splits import LeakError, check_disjoint, overlap, video_key
from tempr1_jax.cli import main

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "sources"
VAL = [FIXTURES / "nextgqa_val.csv", FIXTURES / "nextgqa_gsub_val.json"]


def prepare(*args):
    return main(["prepare", *map(str, args)])


@pytest.fixture(scope="module")
def test_split(annotations_dir, tmp_path_factory):
    """NExT-GQA test prepared from the real files (no videos here); 3842638015_4, whose answer text is two
    options', is rejected."""
    out = tmp_path_factory.mktemp("nextgqa")
    files = [annotations_dir / "nextgqa_test.csv", annotations_dir / "nextgqa_gsub_test.json"]
    assert (
        prepare(
            "--dataset",
            "nextgqa",
            "--annotations",
            files[0],
            "--annotations",
            files[1],
            "--out",
            out,
            "--split",
            "test",
            "--no_video_check",
            "--skip_bad",
        )
        == 0
    )
    return out / "test.jsonl"


def test_real_test_split_ids_and_videos(test_split):
    samples = read_jsonl(test_split)
    assert len(samples) == 5552 and len({s.id for s in samples}) == 5552
    assert len({video_key(s) for s in samples}) == 990


def test_training_split_from_val_is_disjoint_from_test(test_split, tmp_path):
    out = tmp_path / "nextgqa"
    assert (
        prepare(
            "--dataset",
            "nextgqa",
            "--annotations",
            VAL[0],
            "--annotations",
            VAL[1],
            "--out",
            out,
            "--split",
            "val",
            "--no_video_check",
            "--disjoint_from",
            test_split,
        )
        == 0
    )
    train, test = read_jsonl(out / "val.jsonl"), read_jsonl(test_split)
    assert len(train) == 3
    assert not {s.id for s in train} & {s.id for s in test}
    assert not {video_key(s) for s in train} & {video_key(s) for s in test}
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["val"]
    assert report["disjoint_from"] == [str(test_split)]


def test_a_test_video_in_the_training_split_is_refused(test_split, tmp_path, capsys):
    """One training question on a test video (another qid, so a fresh sample id): nothing is written."""
    csv = tmp_path / "leaky_val.csv"
    rows = VAL[0].read_text().splitlines()
    rows.append(
        "2574374895,719,320,240,what did the baby hold at the start,green cup,99,TP,ball,green cup,spoon,hat,shoe"
    )
    csv.write_text("\n".join(rows) + "\n")
    gsub = json.loads(VAL[1].read_text())
    gsub["2574374895"] = {"duration": 30, "fps": 24, "location": {"99": [[0.0, 3.0]]}}
    grounding = tmp_path / "leaky_gsub_val.json"
    grounding.write_text(json.dumps(gsub))
    out = tmp_path / "out"
    assert (
        prepare(
            "--dataset",
            "nextgqa",
            "--annotations",
            csv,
            "--annotations",
            grounding,
            "--out",
            out,
            "--split",
            "val",
            "--no_video_check",
            "--disjoint_from",
            test_split,
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "0 sample id(s) and 1 video(s)" in err and "2574374895" in err and str(test_split) in err
    assert not out.exists()


def test_overlap_by_id_and_by_video_stem():
    a = [{"id": "x", "video": "/data/a/123.mp4"}, {"id": "y", "images": ["i.png"]}]
    b = [{"id": "y", "video": "other/dir/123.webm"}]
    assert overlap(a, b) == {"ids": ["y"], "videos": ["123"]}
    with pytest.raises(LeakError, match="1 sample id"):
        check_disjoint(a, b, "b")
    check_disjoint(a[:1], [{"id": "z", "video": "9.mp4"}], "c")


def test_prepare_relabels_timerft_as_tg(tmp_path):
    out = tmp_path / "timerft"
    annotations = FIXTURES / "timerft.json"
    assert (
        prepare(
            "--dataset",
            "timerft",
            "--annotations",
            annotations,
            "--out",
            out,
            "--split",
            "train",
            "--no_video_check",
            "--task",
            "tg",
        )
        == 0
    )
    samples = read_jsonl(out / "train.jsonl")
    assert [s.task for s in samples] == ["tg", "tg"]
    assert [s.segments for s in samples] == [s.segments for s in load("timerft", annotations)]
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["train"]
    assert report["by_task"] == {"tg": 2} and report["relabelled_as"] == "tg"


def test_prepare_refuses_a_relabel_to_another_answer_form(tmp_path, capsys):
    out = tmp_path / "bad"
    assert (
        prepare(
            "--dataset",
            "timerft",
            "--annotations",
            FIXTURES / "timerft.json",
            "--out",
            out,
            "--no_video_check",
            "--task",
            "dtg",
        )
        == 2
    )
    assert "cannot relabel sample" in capsys.readouterr().err and not out.exists()
    assert (
        prepare(
            "--dataset",
            "timerft",
            "--annotations",
            FIXTURES / "timerft.json",
            "--out",
            out,
            "--no_video_check",
            "--task",
            "nope",
        )
        == 2
    )
    assert "unknown task 'nope'" in capsys.readouterr().err
