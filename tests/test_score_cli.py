"""`tempr1 score`: predictions JSONL against unified targets JSONL."""

import json

import pytest

from tempr1_jax import cli
from tempr1_jax.paper_results import PAPER_RESULTS, canonical_dataset, paper_figure


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


TARGETS = [
    {
        "id": "a",
        "task": "tg",
        "video": "a.mp4",
        "duration": 20.0,
        "query": "q",
        "segments": [[0, 10]],
        "source": "Charades-STA",
    },
    {
        "id": "b",
        "task": "tg",
        "video": "b.mp4",
        "duration": 20.0,
        "query": "q",
        "segments": [[0, 10]],
        "source": "Charades-STA",
    },
    {
        "id": "c",
        "task": "tg",
        "video": "c.mp4",
        "duration": 20.0,
        "query": "q",
        "segments": [[0, 10]],
        "source": "Charades-STA",
    },
]


def test_score_prints_table_and_writes_json(tmp_path, capsys):
    targets = _write(tmp_path / "t.jsonl", TARGETS)
    preds = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "output": "<answer>0 to 10</answer>"},
            {"id": "b", "output": "<answer>0 to 5</answer>"},
            {"id": "zzz", "output": "<answer>0 to 5</answer>"},
        ],
    )
    out = tmp_path / "m" / "metrics.json"
    rc = cli.main(["score", "--task", "tg", "--predictions", preds, "--targets", targets, "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["missing"] == 1 and report["unmatched"] == 1 and report["n"] == 3
    assert report["dataset"] == "charades_sta"
    assert report["metrics"] == pytest.approx({"mIoU": 50.0, "R1@0.3": 200 / 3, "R1@0.5": 200 / 3, "R1@0.7": 100 / 3})
    text = capsys.readouterr().out
    assert "1 without a prediction" in text
    assert "61.4 (TempR1)" in text and "83.2 (TempR1)" in text


def test_score_dataset_override_and_strict(tmp_path, capsys):
    targets = _write(tmp_path / "t.jsonl", TARGETS[:1])
    preds = _write(tmp_path / "p.jsonl", [{"id": "a", "output": "<answer>0 to 5</answer>"}])
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "score",
                "--task",
                "tg",
                "--predictions",
                preds,
                "--targets",
                targets,
                "--dataset",
                "tvgbench",
                "--strict",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["metrics"]["R1@0.5"] == 0.0
    assert "(Time-R1)" in capsys.readouterr().out


def test_score_bad_input_returns_2(tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "duration": 5, "segments": [[3, 1]]}\n')
    assert cli.main(["score", "--task", "tg", "--predictions", preds, "--targets", str(bad)]) == 2
    assert "'x'" in capsys.readouterr().err
    bad.write_text("not json\n")
    assert cli.main(["score", "--task", "tg", "--predictions", preds, "--targets", str(bad)]) == 2
    assert (
        cli.main(
            ["score", "--task", "nope", "--predictions", preds, "--targets", _write(tmp_path / "t.jsonl", TARGETS)]
        )
        == 2
    )
    assert (
        cli.main(["score", "--task", "tg", "--predictions", str(tmp_path / "missing.jsonl"), "--targets", str(bad)])
        == 2
    )


def test_paper_results_lookup():
    assert PAPER_RESULTS[("charades_sta", "mIoU")]["TempR1"] == 61.4
    assert paper_figure("QVHighlights", "mIoU", "vhd") == ("TempR1", 71.1)
    assert paper_figure("activitynet", "mIoU", "dtg") == ("TempR1", 59.8)
    assert paper_figure("activitynet", "mIoU", "tg") == ("TempR1", 32.2)
    assert paper_figure("NExT-GQA", "Acc", "gvqa") == ("TempR1", 70.1)
    assert paper_figure("activitynet-1.3", "mF1", "tal") == ("TempR1", 71.0)
    assert paper_figure("thumos14", "mF1", "tal") is None
    assert canonical_dataset(None) is None


def test_score_peer_formats_and_conventions(tmp_path, capsys):
    targets = _write(
        tmp_path / "t.jsonl",
        [
            {
                "id": "a",
                "task": "tvg",
                "video": "a.mp4",
                "duration": 20.0,
                "query": "q",
                "segments": [[10, 30]],
                "source": "tvgbench",
            },
            {
                "id": "b",
                "task": "tvg",
                "video": "b.mp4",
                "duration": 20.0,
                "query": "q",
                "segments": [[0, 10]],
                "source": "tvgbench",
            },
        ],
    )
    # Time-R1's evaluate.py rows: its own qids, matched by ground truth and duration
    preds = _write(
        tmp_path / "tg_0_1.jsonl",
        [
            {"qid": "tvgbench_0", "pred": [10.0, 20.0], "target": [10.0, 30.0], "duration": 20.0, "output_text": "..."},
            {"qid": "tvgbench_1", "pred": [0.0, 5.0], "target": [0.0, 10.0], "duration": 20.0, "output_text": "..."},
        ],
    )
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "score",
                "--task",
                "tvg",
                "--predictions",
                preds,
                "--targets",
                targets,
                "--format",
                "time_r1",
                "--strict",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["missing"] == 0 and report["unmatched"] == 0 and report["format"] == "time_r1"
    # raw times: [10, 20] against [10, 30] is 0.5, not above 0.5 with --strict
    assert report["metrics"] == pytest.approx({"mIoU": 50.0, "R1@0.3": 100.0, "R1@0.5": 0.0, "R1@0.7": 0.0})
    assert report["conventions"] == "IoU > thr; last 'x to y' of the answer; raw annotation times"
    assert "conventions: IoU > thr" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "score",
                "--task",
                "tvg",
                "--predictions",
                preds,
                "--targets",
                targets,
                "--format",
                "time_r1",
                "--clip",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["metrics"]["mIoU"] == pytest.approx(75.0)


def test_score_pick_and_bad_peer_file(tmp_path, capsys):
    targets = _write(tmp_path / "t.jsonl", TARGETS[:1])
    preds = _write(tmp_path / "p.jsonl", [{"id": "a", "output": "<answer>0-10 12-14</answer>"}])
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "score",
                "--task",
                "tg",
                "--predictions",
                preds,
                "--targets",
                targets,
                "--format",
                "museg",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["metrics"]["mIoU"] == 100.0
    assert (
        cli.main(
            [
                "score",
                "--task",
                "tg",
                "--predictions",
                preds,
                "--targets",
                targets,
                "--format",
                "museg",
                "--pick",
                "last",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["metrics"]["mIoU"] == 0.0
    bad = _write(tmp_path / "bad.jsonl", [{"video": "a.mp4"}])
    assert cli.main(["score", "--task", "tg", "--predictions", bad, "--targets", targets, "--format", "time_r1"]) == 2
    assert "row 1: not a time_r1 prediction" in capsys.readouterr().err
    assert (
        cli.main(["score", "--task", "tal", "--predictions", preds, "--targets", targets, "--format", "time_r1"]) == 2
    )
