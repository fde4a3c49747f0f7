"""Benchmark metrics: hand-worked cases, and the real annotation files (ground truth as predictions,
and perturbed predictions whose scores follow by hand)."""

import csv
import json

import pytest

from tempr1_jax import evaluation, tasks
from tempr1_jax.evaluation import score


def _ans(segs, tag="answer"):
    return f"<{tag}>" + ", ".join(f"{s:.6f} to {e:.6f}" for s, e in segs) + f"</{tag}>"


T10 = {"id": "a", "duration": 20.0, "segments": [[0, 10]]}


def test_tg_metrics_hand_worked():
    outs = ["<answer>0 to 5</answer>", "<answer>0 to 10, 50 to 60</answer>", "garbage", "<answer>2 to 8</answer>"]
    m = score("tg", outs, [T10] * 4)
    assert list(m) == ["mIoU", "R1@0.3", "R1@0.5", "R1@0.7"]
    assert m == pytest.approx({"mIoU": 52.5, "R1@0.3": 75.0, "R1@0.5": 75.0, "R1@0.7": 25.0})
    strict = score("tg", outs, [T10] * 4, strict=True)
    assert strict["R1@0.5"] == 50.0
    # untagged output is read whole in evaluation
    assert score("tg", ["from 0 to 10 seconds"], [T10])["mIoU"] == 100.0
    # tvg reads the last pair
    assert score("tvg", ["<answer>50 to 60 or 0 to 10</answer>"], [T10])["mIoU"] == 100.0


def test_dtg_pooled_over_events():
    targets = [
        {"id": "1", "duration": 40, "segments": [[0, 10], [20, 30]]},
        {"id": "2", "duration": 40, "segments": [[0, 10], [10, 20], [20, 30]]},
    ]
    m = score("dtg", ["<answer>0 to 10, 25 to 30</answer>", "<answer>0 to 5</answer>"], targets)
    assert m == pytest.approx({"mIoU": 40.0, "R@0.3": 60.0, "R@0.5": 60.0, "R@0.7": 20.0})


def test_vhd_union_and_official():
    target = {"id": "v", "duration": 40, "segments": [[0, 10], [20, 30]]}
    outs = ["<answer>0 to 30</answer>", "<answer>0 to 10, 20 to 30</answer>"]
    m = score("vhd", outs, [target] * 2)
    assert m == pytest.approx({"mIoU": (200 / 3 + 100) / 2, "R@0.3": 100.0, "R@0.5": 100.0, "R@0.7": 50.0})
    off = score("vhd", outs, [target] * 2, official=True)
    assert off["MR_R1@0.5"] == 50.0 and off["MR_R1@0.7"] == 50.0


def test_gvqa_hand_worked():
    target = {"id": "q", "duration": 20.0, "segments": [[0, 10]], "options": ["a", "b", "c"], "answer": "B"}
    outs = [
        "<answer>B</answer><glue>0 to 5</glue>",
        "<answer>C</answer><glue>5 to 15</glue>",
        "<answer>B</answer><glue>2 to 4, 6 to 8</glue>",
    ]
    m = score("gvqa", outs, [target] * 3)
    assert list(m) == [
        "Acc",
        "mIoU",
        "R@0.3",
        "R@0.5",
        "R@0.7",
        "gqa_mIoP",
        "gqa_IoP@0.3",
        "gqa_IoP@0.5",
        "gqa_mIoU",
        "gqa_IoU@0.3",
        "gqa_IoU@0.5",
        "Acc@GQA",
    ]
    assert m == pytest.approx(
        {
            "Acc": 200 / 3,
            "mIoU": (50 + 100 / 3 + 40) / 3,
            "R@0.3": 100.0,
            "R@0.5": 100 / 3,
            "R@0.7": 0.0,
            "gqa_mIoP": 250 / 3,
            "gqa_IoP@0.3": 100.0,
            "gqa_IoP@0.5": 100.0,
            "gqa_mIoU": (50 + 100 / 3 + 20) / 3,
            "gqa_IoU@0.3": 200 / 3,
            "gqa_IoU@0.5": 100 / 3,
            "Acc@GQA": 200 / 3,
        }
    )


def test_tal_f1_hand_worked():
    target = {"id": "t", "duration": 100, "segments": [[0, 10], [20, 30], [40, 50]]}
    m = score("tal", ["<answer>0 to 10, 20 to 25, 70 to 80</answer>", "nothing"], [target] * 2)
    third = 100 / 3
    assert m == pytest.approx(
        {"F1@0.1": third, "F1@0.3": third, "F1@0.5": third, "F1@0.7": third / 2, "mF1": (3 * third + third / 2) / 4}
    )
    assert score("tal", ["<answer>0 to 10, 20 to 25, 70 to 80</answer>"], [target], strict=True)[
        "F1@0.5"
    ] == pytest.approx(third)


def test_raw_times_by_default_clip_as_option():
    # ground truth [15, 25] in a 20 s video, prediction [15, 20]: raw IoU 0.5, clipped 1
    target = {"id": "p", "duration": 20.0, "segments": [[15, 25]]}
    assert score("tg", ["<answer>15 to 20</answer>"], [target])["mIoU"] == pytest.approx(50.0)
    assert score("tg", ["<answer>15 to 20</answer>"], [target], clip=True)["mIoU"] == pytest.approx(100.0)
    # a prediction past the end keeps its length: [10, 30] against [10, 20] is 0.5 raw, 1 clipped
    assert score("tg", ["<answer>10 to 30</answer>"], [T10 | {"segments": [[10, 20]]}])["mIoU"] == pytest.approx(50.0)
    assert score("tg", ["<answer>10 to 30</answer>"], [T10 | {"segments": [[10, 20]]}], clip=True)["mIoU"] == 100.0
    # negative numbers stay as they are; reversed and non-finite segments are still IoU 0
    assert score("tg", ["<answer>-10 to 10</answer>"], [T10])["mIoU"] == pytest.approx(50.0)
    assert score("tg", ["<answer>8 to 2</answer>", "<answer>nan to 5</answer>"], [T10] * 2)["mIoU"] == 0.0
    tal = {"id": "t", "duration": 10.0, "segments": [[8, 12]]}
    assert score("tal", ["<answer>8 to 10</answer>"], [tal])["F1@0.5"] == 100.0
    assert score("tal", ["<answer>8 to 10</answer>"], [tal])["F1@0.7"] == 0.0
    assert score("tal", ["<answer>8 to 10</answer>"], [tal], clip=True)["F1@0.7"] == 100.0
    vhd = {"id": "v", "duration": 10.0, "segments": [[0, 2], [8, 12]]}
    assert score("vhd", ["<answer>0 to 2, 8 to 10</answer>"], [vhd])["mIoU"] == pytest.approx(400 / 6)
    assert score("vhd", ["<answer>0 to 2, 8 to 10</answer>"], [vhd], clip=True)["mIoU"] == pytest.approx(100.0)


def test_tg_pick_first_or_last():
    outs = ["<answer>0 to 10, 50 to 60</answer>", "<answer>50 to 60, 0 to 10</answer>"]
    assert score("tg", outs, [T10] * 2)["mIoU"] == 50.0  # MUSEG: the first segment
    assert score("tg", outs, [T10] * 2, pick="last")["mIoU"] == 50.0
    assert score("tg", outs[:1], [T10], pick="last")["mIoU"] == 0.0
    assert score("tvg", outs[1:], [T10])["mIoU"] == 100.0  # Time-R1: the last
    assert score("tvg", outs[1:], [T10], pick="first")["mIoU"] == 0.0
    with pytest.raises(ValueError, match="pick"):
        score("tg", outs, [T10] * 2, pick="middle")


def test_gvqa_point_span_iop_and_official_subset():
    target = {"id": "q", "duration": 30.0, "segments": [[0, 10], [20, 25]], "options": ["a", "b"], "answer": "A"}
    outs = [
        "<answer>A</answer><glue>5 to 5</glue>",  # a point inside evidence: IoP 1, IoU 0
        "<answer>A</answer><glue>15 to 15</glue>",  # a point outside: 0
        "<answer>A</answer><glue>20 to 30</glue>",  # IoP 0.5, IoU 0.5 on raw times
        "<answer>B</answer>",
    ]  # no span
    m = score("gvqa", outs, [target] * 4)
    assert m["gqa_mIoP"] == pytest.approx(150 / 4) and m["gqa_IoP@0.5"] == pytest.approx(50.0)
    assert m["gqa_mIoU"] == pytest.approx(50 / 4) and m["Acc@GQA"] == pytest.approx(50.0)
    # NExT-GQA's script leaves the question without a span out of the means
    off = score("gvqa", outs, [target] * 4, official=True)
    assert off["gqa_mIoP"] == pytest.approx(50.0) and off["gqa_IoP@0.5"] == pytest.approx(200 / 3)
    assert off["gqa_mIoU"] == pytest.approx(50 / 3) and off["Acc@GQA"] == pytest.approx(200 / 3)
    assert off["Acc"] == m["Acc"] == 75.0 and off["mIoU"] == m["mIoU"]


def test_conventions_name_the_options():
    assert evaluation.conventions("tg") == "IoU >= thr; first predicted segment; raw annotation times"
    assert evaluation.conventions("tvg", strict=True) == "IoU > thr; last 'x to y' of the answer; raw annotation times"
    assert "clipped" in evaluation.conventions("tal", clip=True)
    assert "left out" in evaluation.conventions("gvqa", official=True)
    assert "moment_detr" in evaluation.conventions("vhd", official=True)
    assert evaluation.conventions("mcq") == "exact match"


def test_accuracy_tasks():
    order = [{"id": "o", "answer": "CABD"}] * 2
    assert score("order", ["<answer>CABD</answer>", "<answer>ABCD</answer>"], order) == {"Acc": 50.0}
    mcq = [{"id": "m", "options": ["x", "y"], "answer": "B"}]
    assert score("mcq", ["<answer>B</answer>"], mcq) == {"Acc": 100.0}


def test_length_mismatch_and_bad_target():
    with pytest.raises(ValueError, match="outputs"):
        score("tg", ["a"], [])
    with pytest.raises(ValueError, match="'x'"):
        score("tg", ["a"], [{"id": "x", "duration": 5}])


# --- real annotation files ------------------------------------------------------------------


def _dict_form(path, task):
    """Charades-STA / ActivityNet Captions {vid: {duration, timestamps, sentences}} -> targets."""
    data = json.loads(path.read_text())
    if task == "dtg":
        return [
            {"id": vid, "duration": v["duration"], "query": v["sentences"], "segments": v["timestamps"]}
            for vid, v in data.items()
        ]
    return [
        {"id": f"{vid}#{i}", "duration": v["duration"], "query": q, "segments": [seg]}
        for vid, v in data.items()
        for i, (q, seg) in enumerate(zip(v["sentences"], v["timestamps"]))
    ]


def test_charades_ground_truth_and_shrunk(annotations_dir):
    targets = _dict_form(annotations_dir / "charades_sta_test.json", "tg")
    assert len(targets) == 3720
    truth = [_ans(t["segments"]) for t in targets]
    assert score("tg", truth, targets) == {"mIoU": 100.0, "R1@0.3": 100.0, "R1@0.5": 100.0, "R1@0.7": 100.0}
    # Keep the middle 60% of each (duration-clipped) GT: IoU = 0.6 exactly, up to print rounding;
    # a GT starting at or after the video end clips to an empty segment, which scores 0.
    shrunk, empty = [], 0
    for t in targets:
        s, e = t["segments"][0]
        e = min(e, t["duration"])
        empty += e <= s
        length = e - s
        shrunk.append(_ans([(s + 0.2 * length, e - 0.2 * length)]))
    kept = 100.0 * (len(targets) - empty) / len(targets)
    m = score("tg", shrunk, targets, clip=True)
    assert m["mIoU"] == pytest.approx(0.6 * kept, abs=1e-3)
    assert m["R1@0.5"] == pytest.approx(kept) and m["R1@0.7"] == 0.0
    # On the raw times (the default) the 562 queries that end past the video score less: their
    # ground truth keeps its length past the end, which the shrunk prediction does not cover.
    past = {i for i, t in enumerate(targets) if t["segments"][0][1] > t["duration"]}
    assert len(past) == 562
    assert score("tg", shrunk, targets)["mIoU"] < m["mIoU"] - 1.0
    assert score("tg", [shrunk[i] for i in past], [targets[i] for i in past])["mIoU"] < 60.0
    others = [i for i in range(len(targets)) if i not in past]
    assert score("tg", [shrunk[i] for i in others], [targets[i] for i in others])["mIoU"] == pytest.approx(
        60.0, abs=1e-3
    )


def test_activitynet_dtg_drop_last(annotations_dir):
    targets = _dict_form(annotations_dir / "activitynet_captions_val_2.json", "dtg")
    assert score("dtg", [_ans(t["segments"]) for t in targets], targets)["mIoU"] == 100.0
    # dropping each video's last event: those events score 0, all others 1
    events = sum(len(t["segments"]) for t in targets)
    m = score("dtg", [_ans(t["segments"][:-1]) for t in targets], targets)
    assert m["mIoU"] == pytest.approx(100.0 * (events - len(targets)) / events)
    assert m["R@0.7"] == pytest.approx(m["mIoU"])


def test_qvhighlights(annotations_dir):
    rows = [
        json.loads(line)
        for line in (annotations_dir / "qvhighlights_highlight_val_release.jsonl").read_text().splitlines()
        if line
    ]
    targets = [
        {"id": r["qid"], "duration": r["duration"], "query": r["query"], "segments": r["relevant_windows"]}
        for r in rows
    ]
    assert len(targets) == 1550
    m = score("vhd", [_ans(t["segments"]) for t in targets], targets)
    assert m == {"mIoU": 100.0, "R@0.3": 100.0, "R@0.5": 100.0, "R@0.7": 100.0}
    # qid 2579: one window [82, 150] in a 150 s video; predicting the whole video gives 68 / 150
    one = [t for t in targets if t["id"] == 2579]
    assert one[0]["segments"] == [[82, 150]]
    assert score("vhd", ["<answer>0 to 150</answer>"], one)["mIoU"] == pytest.approx(100 * 68 / 150)


def test_nextgqa(annotations_dir):
    locations = json.loads((annotations_dir / "nextgqa_gsub_test.json").read_text())
    targets = []
    with open(annotations_dir / "nextgqa_test.csv", newline="") as f:
        for row in csv.DictReader(f):
            video = locations.get(row["video_id"])
            if video is None or row["qid"] not in video["location"]:
                continue
            options = [row[f"a{i}"] for i in range(5)]
            targets.append(
                {
                    "id": f"{row['video_id']}_{row['qid']}",
                    "duration": video["duration"],
                    "query": row["question"],
                    "options": options,
                    "answer": options.index(row["answer"]),
                    "segments": video["location"][row["qid"]],
                }
            )
    assert len(targets) > 5000
    gqa = tasks.get_task("gvqa")
    truth = [gqa.reference_answer(t) for t in targets]
    m = score("gvqa", truth, targets)
    assert all(v == pytest.approx(100.0) for v in m.values()), m
    wrong = [
        f"<answer>{'ABCDE'[(t['answer'] + 1) % 5]}</answer><glue>{_ans(t['segments'], 'x')[3:-4]}</glue>"
        for t in targets
    ]
    m = score("gvqa", wrong, targets)
    assert m["Acc"] == 0.0 and m["Acc@GQA"] == 0.0 and m["mIoU"] == pytest.approx(100.0)


def test_thumos_tal(annotations_dir):
    rows = json.loads((annotations_dir / "museg_thumos14_tal.json").read_text())
    # the MUSEG file has no durations: any duration past the last segment leaves the GT unclipped
    targets = [
        {
            "id": r["video"] + str(i),
            "duration": max(e for _, e in r["groundtruth"]) + 10.0,
            "segments": r["groundtruth"],
        }
        for i, r in enumerate(rows)
    ]
    assert len(targets) == 227
    m = score("tal", [_ans(t["segments"]) for t in targets], targets)
    assert all(v == 100.0 for v in m.values()), m
    # as many extra predictions past the video's end (IoU 0 with every GT): P = 1/2, R = 1
    padded = [_ans(t["segments"] + [[1e9, 2e9]] * len(t["segments"])) for t in targets]
    m = score("tal", padded, targets)
    assert all(v == pytest.approx(200 / 3) for v in m.values()), m


def test_tvgbench(annotations_dir):
    rows = json.loads((annotations_dir / "tvgbench.json").read_text())
    targets = [
        {"id": i, "duration": r["duration"], "segments": [[float(x) for x in r["answer"].split("-")]]}
        for i, r in enumerate(rows)
    ]
    assert len(targets) == 800
    m = score("tvg", [f"<think>.</think>{_ans(t['segments'])}" for t in targets], targets, strict=True)
    # a few TVGBench moments are instants (start == end): an empty union has IoU 0 by definition
    empty = sum(t["segments"][0][0] == t["segments"][0][1] for t in targets)
    assert 0 < empty < 20
    kept = 100.0 * (len(targets) - empty) / len(targets)
    assert m == pytest.approx({"mIoU": kept, "R1@0.3": kept, "R1@0.5": kept, "R1@0.7": kept}, abs=1e-4)
