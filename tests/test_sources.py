"""Dataset adapters: every real annotation file (hand-checked counts and first records) and
small fixtures written from the published formats for the others."""

import json
import pathlib

import av
import numpy as np
import pytest

from data_pipeline.samples import InvalidSampleError, validate_sample
from data_pipeline.sources import (
    SOURCES,
    ValidationReport,
    load,
    load_validated,
    nextgqa,
)
from data_pipeline.sources._common import find_video, probe_duration
from data_pipeline.sources.time_r1 import parse_answer

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "sources"


def _skipped(dataset, annotations, **kwargs):
    report = ValidationReport()
    kept = list(load_validated(dataset, annotations, skip_bad=True, report=report, **kwargs))
    return kept, report


# ---- real files -------------------------------------------------------------------------------


def test_charades_sta_json(annotations_dir):
    samples, report = _skipped("charades_sta", annotations_dir / "charades_sta_test.json")
    assert report.total == len(samples) == 3720 and not report.skipped
    assert len({s.video for s in samples}) == 1334
    first = samples[0]
    assert (first.id, first.task, first.source) == ("3MSZA#0", "tg", "charades_sta")
    assert first.query == "person turn a light on."
    assert (first.video, first.duration, first.segments) == ("3MSZA.mp4", 30.96, ((24.3, 30.4),))
    assert samples[3].id == "3MSZA#3" and samples[3].query == "person is playing with the switch for the light."


def test_activitynet_captions_tg_and_dtg(annotations_dir):
    path = annotations_dir / "activitynet_captions_val_2.json"
    tg, tg_report = _skipped("activitynet_captions_tg", path)
    dtg, dtg_report = _skipped("activitynet_captions_dtg", path)
    assert len(tg) == 17031 and len(dtg) == 4885
    assert not tg_report.skipped and not dtg_report.skipped
    assert sum(len(s.segments) for s in dtg) == 17031
    assert (tg[0].id, tg[0].duration, tg[0].segments) == ("v_uqiMw7tQ1Cc#0", 55.15, ((0.0, 4.14),))
    video = dtg[0]
    assert (video.id, video.task) == ("v_uqiMw7tQ1Cc", "dtg")
    assert video.segments == ((0.0, 4.14), (4.14, 33.36), (33.36, 55.15))
    lines = video.query.splitlines()
    assert len(lines) == 3 and lines[1].startswith("One man is holding onto a rope")
    # Sentences with line breaks inside are collapsed so that DTG keeps one sentence per line.
    broken = next(s for s in dtg if s.id == "v_FWbCX1wBVoE")
    assert len(broken.query.splitlines()) == len(broken.segments) == 5


def test_qvhighlights(annotations_dir):
    samples, report = _skipped("qvhighlights", annotations_dir / "qvhighlights_highlight_val_release.jsonl")
    assert len(samples) == 1550 and not report.skipped
    assert sum(len(s.segments) for s in samples) == 2803
    first = samples[0]
    assert (first.id, first.task, first.duration) == ("2579", "vhd", 150.0)
    assert first.video == "NUsG9BgSes0_210.0_360.0.mp4" and first.segments == ((82.0, 150.0),)
    assert len(first.extra["saliency_scores"]) == len(first.extra["relevant_clip_ids"]) == 34


def test_nextgqa(annotations_dir):
    files = [annotations_dir / "nextgqa_test.csv", annotations_dir / "nextgqa_gsub_test.json"]
    samples, report = _skipped("nextgqa", files)
    # 3842638015_4's answer "happy" is the text of both D and E, and the csv has no answer index
    assert report.total == 5553 and len(samples) == 5552 and dict(report.skipped) == {"answer": 1}
    assert "(id '3842638015_4')" in report.examples["answer"]
    assert sum(len(s.segments) for s in samples) == 6599
    first = samples[0]
    assert (first.id, first.task, first.duration, first.answer) == ("2574374895_8", "gvqa", 30.0, "C")
    assert first.options[2] == "lay on floor" and len(first.options) == 5
    assert first.segments == ((23.0, 27.7),)
    assert {s.answer for s in samples} == set("ABCDE")
    # The two files may come in either order.
    assert next(load("nextgqa", files[::-1])) == first
    with pytest.raises(InvalidSampleError, match="record 3084 \\(id '3842638015_4'\\): answer"):
        list(load_validated("nextgqa", files))


@pytest.mark.parametrize(
    "answer, options, letter",
    [
        ("happy", ("sad", "happy", "calm", "x", "y"), "B"),
        ("happy", ("sad", "calm", "x", "happy", "happy"), None),  # two options carry the text
        ("3", ("a", "b", "c", "d", "e"), "D"),  # NExT-QA's answer index
        ("3", ("a", "b", "c", "3", "e"), "D"),  # text and index name the same option
        ("2", ("a", "b", "c", "2", "e"), None),  # text and index disagree
        ("nothing", ("a", "b", "c", "d", "e"), None),
        ("", ("a", "b", "c", "d", ""), None),
    ],
)
def test_nextgqa_answer_letter(answer, options, letter):
    assert nextgqa.answer_letter(answer, options) == letter


def test_thumos14_museg(annotations_dir):
    samples = list(load("thumos14", annotations_dir / "museg_thumos14_tal.json"))
    assert len(samples) == 227
    assert sum(len(s.segments) for s in samples) == 3007
    assert max(len(s.segments) for s in samples) == 128
    first = samples[0]
    assert (first.id, first.task, first.query) == ("video_validation_0000051#billiards", "tal", "billiards")
    assert first.segments == ((67.5, 75.9), (85.9, 90.6), (139.3, 148.2))
    assert all(list(s.segments) == sorted(s.segments) for s in samples)
    # No durations in the file: without the videos every sample is rejected, and says why.
    with pytest.raises(InvalidSampleError, match="museg_thumos14_tal.json record 0 .*duration"):
        validate_sample(first, where=f"{annotations_dir / 'museg_thumos14_tal.json'} record 0")


def test_tvgbench(annotations_dir):
    samples, report = _skipped("tvgbench", annotations_dir / "tvgbench.json")
    assert report.total == 800
    # One NLQ clip's answer ends 4.85 s after its 27.9 s clip: a real annotation error.
    assert dict(report.skipped) == {"segment_out_of_range": 1}
    assert "tvgbench.json record 718" in report.examples["segment_out_of_range"]
    first = samples[0]
    assert (first.id, first.task, first.duration, first.segments) == (
        "KWZSA#0",
        "tvg",
        30.12,
        ((13.4, 28.1),),
    )
    assert first.extra == {"dataset_name": "charades", "qsemtype": "Human Pose"}
    # Time-R1's protocol (the default): TVGBench's start/end are not decode windows; 252 records set them
    # (one of them is record 718 above), and keep them in `extra`.
    assert all(s.video_start is None and s.video_end is None for s in samples)
    assert sum("clip" in s.extra for s in samples) == 251
    clip = next(s for s in samples if s.id == "aHDGMOQgHUE#154")
    assert clip.extra["clip"] == pytest.approx([53.05562446378865, 152.42562446378867])
    assert clip.duration == 99.37 and clip.segments[0][0] == pytest.approx(9.944375536211354)
    # windows=True: the file's [start, end] clip is decoded instead
    windowed = list(load("tvgbench", annotations_dir / "tvgbench.json", windows=True))
    assert sum(s.video_start is not None for s in windowed) == 252
    clip = next(s for s in windowed if s.id == "aHDGMOQgHUE#154")
    assert clip.video_start == pytest.approx(53.05562446378865)
    assert clip.video_end == pytest.approx(152.42562446378867)
    assert clip.duration == 99.37 and clip.segments[0][0] == pytest.approx(9.944375536211354)
    assert "clip" not in clip.extra


# ---- fixtures ---------------------------------------------------------------------------------


def test_charades_text_form_equals_json_form():
    from_text = list(load("charades_sta", [FIXTURES / "charades_sta_test.txt", FIXTURES / "Charades_v1_test.csv"]))
    from_json = list(load("charades_sta", FIXTURES / "charades_sta_test.json"))
    assert from_text == from_json
    assert [s.id for s in from_text] == ["AO8RW#0", "AO8RW#1", "Y6R7T#0"]
    assert from_text[1].segments == ((13.5, 19.4),) and from_text[1].duration == 29.12


def test_charades_text_form_reports_bad_lines(tmp_path):
    text = tmp_path / "sta.txt"
    text.write_text("AO8RW 0.0 6.9##ok\nAO8RW 1.0##missing end\nZZZZZ 1.0 2.0##unknown video\n")
    samples = list(load("charades_sta", [text, FIXTURES / "Charades_v1_test.csv"]))
    with pytest.raises(InvalidSampleError, match="finite"):
        validate_sample(samples[1], where="t")
    with pytest.raises(InvalidSampleError, match="duration"):
        validate_sample(samples[2], where="t")
    with pytest.raises(ValueError, match="one .txt file and one .csv"):
        list(load("charades_sta", [text]))


def test_activitynet13_and_hacs_one_sample_per_video_and_class():
    samples = list(load("activitynet13", FIXTURES / "activitynet13.json"))
    assert [s.id for s in samples] == [
        "sJFgo9H6zNo#Long jump",
        "sJFgo9H6zNo#Triple jump",
        "V1zhqaGFY2A#Bathing dog",
    ]
    assert samples[0].segments == ((0.0, 21.9), (71.2, 89.9))  # chronological
    assert (samples[0].task, samples[0].query, samples[0].duration) == ("tal", "Long jump", 139.042)
    val = list(load("activitynet13", FIXTURES / "activitynet13.json", subset="validation"))
    assert [s.id for s in val] == ["sJFgo9H6zNo#Long jump", "sJFgo9H6zNo#Triple jump"]
    hacs = list(load("hacs", FIXTURES / "hacs_segments.json"))
    assert len(hacs) == 1 and hacs[0].source == "hacs" and hacs[0].segments == ((3.5, 12.0), (24.25, 38.08))
    for sample in samples + hacs:
        validate_sample(sample, where="t")


def test_didemo_segment_indices_to_seconds():
    samples = list(load("didemo", FIXTURES / "didemo.json"))
    first, second = samples
    assert (first.id, first.task, first.duration) == ("9001", "tg", 30.0)
    assert first.segments == ((10.0, 20.0),)  # [2, 3] chosen by two of four annotators
    assert first.video == "12345678@N00_2000000001_abcdef0123.mov"
    assert first.extra["times"] == [[2, 3], [2, 3], [3, 3], [2, 2]]
    assert second.duration == 25.0 and second.segments == ((0.0, 5.0),)  # tie: the first pair
    for sample in samples:
        validate_sample(sample, where="t")


def test_timerft_records():
    first, clip = load("timerft", FIXTURES / "timerft.json")
    assert (first.id, first.task, first.source) == ("QtWT8rxUuNk#0", "tvg", "timerft")
    assert first.segments == ((1.0, 4.0),) and first.video_start is None
    assert first.extra == {"qid": "my|cosmo|QtWT8rxUuNk|q", "difficulty": 50.0}
    assert clip.id == "4jujhM5qhEc_00:00:39:000_00:01:24:700#1"
    assert (clip.video_start, clip.video_end, clip.duration) == (39.0, 84.7, 45.7)
    for sample in (first, clip):
        validate_sample(sample, where="t")


@pytest.mark.parametrize(
    "text, expected",
    [("13.4-28.1", (13.4, 28.1)), (" 0 - 5 ", (0.0, 5.0)), ("9.94e-01-2.5", (0.994, 2.5))],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "13.4", "a-b", None, 12])
def test_parse_answer_bad_is_nan(text):
    assert all(np.isnan(parse_answer(text)))


def test_tpru_multi_image(tmp_path):
    order, mcq = load("tpru", FIXTURES / "tpru.json")
    assert (order.task, order.answer, len(order.images)) == ("order", "CABD", 4)
    assert (mcq.task, mcq.answer, mcq.options[-1]) == ("mcq", "B", "none of the choices")
    assert order.video is None and order.duration is None
    for sample in (order, mcq):
        validate_sample(sample, where="t")
    resolved = next(load("tpru", FIXTURES / "tpru.json", tmp_path))
    assert resolved.images[0] == str(tmp_path.resolve() / "clip1" / "f0.jpg")
    with pytest.raises(InvalidSampleError, match="image file not found"):
        validate_sample(resolved, where="t", videos_dir=tmp_path)


# ---- shared behaviour -------------------------------------------------------------------------


def test_registry_names():
    assert set(SOURCES) == {
        "charades_sta",
        "activitynet_captions_tg",
        "activitynet_captions_dtg",
        "qvhighlights",
        "nextgqa",
        "activitynet13",
        "hacs",
        "thumos14",
        "didemo",
        "timerft",
        "tvgbench",
        "tpru",
        "tpru_sequences",
        "tempcompass",
        "mvbench",
        "videomme",
        "perception_test",
    }
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        load("kinetics", "x.json")


def test_find_video_tries_stems_and_extensions(tmp_path):
    assert find_video(None, ["abc"]) == "abc.mp4"
    assert find_video(tmp_path, ["abc"]) == str(tmp_path.resolve() / "abc.mp4")  # missing: first candidate
    (tmp_path / "xyz.webm").write_bytes(b"")
    assert find_video(tmp_path, ["v_xyz", "xyz"]) == str(tmp_path.resolve() / "xyz.webm")


def test_activitynet_video_names_with_or_without_prefix(tmp_path):
    (tmp_path / "uqiMw7tQ1Cc.mkv").write_bytes(b"")
    data = '{"v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0, 4.14]], "sentences": ["a"]}}'
    (tmp_path / "ann.json").write_text(data)
    sample = next(load("activitynet_captions_tg", tmp_path / "ann.json", tmp_path))
    assert sample.video == str(tmp_path.resolve() / "uqiMw7tQ1Cc.mkv")
    validate_sample(sample, where="t", videos_dir=tmp_path)


def test_nextgqa_video_map(tmp_path, annotations_dir):
    (tmp_path / "1106").mkdir()
    (tmp_path / "1106" / "2574374895.mp4").write_bytes(b"")
    mapping = tmp_path / "map_vid_vidorID.json"
    mapping.write_text('{"2574374895": "1106/2574374895"}')
    files = [annotations_dir / "nextgqa_test.csv", annotations_dir / "nextgqa_gsub_test.json", mapping]
    first = next(load("nextgqa", files, tmp_path))
    assert first.video == str(tmp_path.resolve() / "1106" / "2574374895.mp4")


def _write_clip(path, seconds=2.0, fps=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_thumos14_reads_durations_from_the_videos(tmp_path):
    _write_clip(tmp_path / "video_validation_0000051.mp4")
    assert probe_duration(str(tmp_path / "video_validation_0000051.mp4")) == pytest.approx(2.0, abs=0.2)
    assert probe_duration(str(tmp_path / "missing.mp4")) is None
    ann = tmp_path / "thumos.json"
    ann.write_text(
        '[{"video": "thumos14/video_validation_0000051.mp4", "groundtruth": [[1.5, 1.9], [0.2, 0.8]],'
        ' "question": "find all the visual events belonging to the action category: \'billiards\'."}]'
    )
    (sample,) = load("thumos14", ann, tmp_path)
    assert sample.duration == pytest.approx(2.0, abs=0.2)
    assert sample.segments == ((0.2, 0.8), (1.5, 1.9))
    validate_sample(sample, where="t", videos_dir=tmp_path)


def test_unreadable_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        list(load("tvgbench", bad))
    bad.write_text("{}")
    with pytest.raises(ValueError, match="expected a list of records"):
        list(load("tvgbench", bad))


def test_duplicate_ids_are_bad_records(tmp_path):
    ann = tmp_path / "dup.json"
    ann.write_text(
        '[{"annotation_id": 1, "video": "a.mp4", "description": "x", "times": [[0, 1]]},'
        ' {"annotation_id": 1, "video": "b.mp4", "description": "y", "times": [[1, 1]]}]'
    )
    with pytest.raises(InvalidSampleError, match="record 1 .*duplicate id"):
        list(load_validated("didemo", ann))


# ---- what adapters drop is counted ------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["charades_sta", "activitynet_captions_tg"])
def test_queries_without_sentence_or_timestamp_are_counted(tmp_path, dataset):
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "AO8RW": {"duration": 29.12, "timestamps": [[0, 6.9], [13.5, 19.4], [1, 2]], "sentences": ["a.", "b."]},
                "Y6R7T": {"duration": 30.25, "timestamps": [[20.8, 30.0]]},
                "ZZZZZ": {"duration": 30.0, "timestamps": [[1, 2]], "sentences": ["c.", "d."]},
            }
        )
    )
    with pytest.raises(InvalidSampleError, match=r"ann.json video 'AO8RW' query 2: timestamp \[1, 2\] has no sentence"):
        list(load_validated(dataset, ann))
    kept, report = _skipped(dataset, ann)
    assert [s.id for s in kept] == ["AO8RW#0", "AO8RW#1", "ZZZZZ#0"]
    assert (report.total, report.kept) == (6, 3)  # 6 queries in the file
    assert dict(report.skipped) == {"missing_sentence": 2, "missing_timestamp": 1}
    assert "video 'ZZZZZ' query 1: sentence 1 has no timestamp" in report.examples["missing_timestamp"]
    dropped = []
    assert len(list(load(dataset, ann, dropped=dropped))) == 3
    assert [d.kind for d in dropped] == ["missing_sentence", "missing_sentence", "missing_timestamp"]


def test_entries_that_are_not_objects_are_counted(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "AO8RW": ["not", "an", "object"],
                "Y6R7T": {"duration": 30.25, "timestamps": [[1, 2]], "sentences": ["a."]},
            }
        )
    )
    for dataset in ("charades_sta", "activitynet_captions_tg", "activitynet_captions_dtg"):
        kept, report = _skipped(dataset, ann)
        assert len(kept) == 1 and dict(report.skipped) == {"not_an_object": 1}, dataset
    records = tmp_path / "records.json"
    records.write_text(json.dumps([7, {"video": "a.mp4", "duration": 10, "timestamp": [1, 2], "sentence": "x"}]))
    kept, report = _skipped("timerft", records)
    assert len(kept) == 1 and "record 0: expected a JSON object, got int" in report.examples["not_an_object"]


def test_qvhighlights_bad_lines_are_named(tmp_path):
    ann = tmp_path / "qvh.jsonl"
    good = {"qid": 1, "query": "q", "vid": "v", "duration": 150, "relevant_windows": [[0, 2]]}
    ann.write_text(json.dumps(good) + "\n{not json\n[1, 2]\n")
    with pytest.raises(InvalidSampleError, match="qvh.jsonl line 2: not valid JSON"):
        list(load_validated("qvhighlights", ann))
    _, report = _skipped("qvhighlights", ann)
    assert (report.total, report.kept) == (3, 1)
    assert dict(report.skipped) == {"not_json": 1, "not_an_object": 1}
    assert "line 3: expected a JSON object, got list" in report.examples["not_an_object"]


def test_tal_videos_left_out_by_design_are_counted_but_not_errors():
    kept, report = _skipped("activitynet13", FIXTURES / "activitynet13.json", subset="validation")
    assert len(kept) == 2 and not report.skipped
    assert dict(report.left_out) == {"not_in_subset": 2}
    kept, report = _skipped("activitynet13", FIXTURES / "activitynet13.json")
    assert len(kept) == 3 and dict(report.left_out) == {"no_annotations": 1}
    assert report.to_dict()["left_out_by_reason"] == {"no_annotations": 1}


def test_a_missing_duration_is_called_missing(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"AO8RW": {"timestamps": [[0, 6.9]], "sentences": ["a."]}}))
    with pytest.raises(InvalidSampleError, match="duration is missing"):
        list(load_validated("charades_sta", ann))
    ann.write_text(json.dumps({"AO8RW": {"duration": "long", "timestamps": [[0, 6.9]], "sentences": ["a."]}}))
    with pytest.raises(InvalidSampleError, match="got nan"):
        list(load_validated("charades_sta", ann))


def test_video_durations_are_checked_against_the_files(tmp_path):
    _write_clip(tmp_path / "AO8RW.mp4", seconds=2.0)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"AO8RW": {"duration": 3600, "timestamps": [[0, 1]], "sentences": ["a."]}}))
    with pytest.raises(
        InvalidSampleError,
        match=r"record 0 \(id 'AO8RW#0'\): annotated duration 3600 s but the video "
        r"lasts 2 s",
    ) as info:
        list(load_validated("charades_sta", ann, tmp_path))
    assert info.value.kind == "duration_mismatch"
    assert list(load_validated("charades_sta", ann, tmp_path, check_files=False))  # not checked
    ann.write_text(json.dumps({"AO8RW": {"duration": 2.5, "timestamps": [[0, 1]], "sentences": ["a."]}}))
    assert len(list(load_validated("charades_sta", ann, tmp_path))) == 1  # within 2 s
    (tmp_path / "AO8RW.mp4").write_bytes(b"")
    with pytest.raises(InvalidSampleError, match="cannot read the video") as info:
        list(load_validated("charades_sta", ann, tmp_path))
    assert info.value.kind == "unreadable_video"
