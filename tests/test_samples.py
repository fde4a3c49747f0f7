"""The unified sample: JSON round trip, JSONL files and every validation rule."""

import dataclasses
import json
import math

import pytest

from data_pipeline.samples import (
    InvalidSampleError,
    Sample,
    default_tolerance,
    duration_mismatch,
    read_jsonl,
    validate_sample,
    write_jsonl,
)

TG = Sample(
    id="v1#0",
    task="tg",
    source="charades_sta",
    query="person opens the door.",
    video="v1.mp4",
    duration=30.0,
    segments=((20.8, 30.0),),
)
GVQA = Sample(
    id="42_3",
    task="gvqa",
    source="nextgqa",
    query="what did the lady do while turning back",
    video="42.mp4",
    duration=35.0,
    options=("walk away", "thumbs up", "sit", "jump", "wave"),
    answer="B",
    segments=((0.5, 12.6), (20.0, 25.0)),
    extra={"type": "TC"},
)
ORDER = Sample(
    id="o1",
    task="order",
    source="tpru",
    query="Order the frames.",
    images=("a.jpg", "b.jpg", "c.jpg"),
    answer="CAB",
)


def test_json_round_trip_keeps_every_field():
    for sample in (TG, GVQA, ORDER):
        text = sample.to_json()
        obj = json.loads(text)
        assert set(obj) == {f.name for f in dataclasses.fields(Sample)}
        assert Sample.from_json(text) == sample
        assert Sample.from_json(text.encode()) == sample


def test_lists_become_tuples_so_samples_compare_by_value():
    from_lists = Sample(**{**TG.to_dict(), "segments": [[20.8, 30.0]]})
    assert from_lists == TG and from_lists.segments == ((20.8, 30.0),)


def test_from_json_rejects_unknown_and_missing_fields():
    with pytest.raises(InvalidSampleError, match="unknown sample fields.*colour"):
        Sample.from_dict({**TG.to_dict(), "colour": "red"})
    with pytest.raises(InvalidSampleError, match="missing sample fields.*query"):
        Sample.from_dict({"id": "x", "task": "tg", "source": "s"})


def test_samples_hash_by_value():
    assert len({TG, Sample.from_json(TG.to_json()), GVQA}) == 2


def test_jsonl_write_then_read(tmp_path):
    path = tmp_path / "s.jsonl"
    assert write_jsonl(path, [TG, GVQA, ORDER]) == 3
    assert read_jsonl(path) == [TG, GVQA, ORDER]


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(TG.to_json() + "\n\n{not json}\n")
    with pytest.raises(InvalidSampleError, match=r"bad\.jsonl line 3"):
        read_jsonl(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(InvalidSampleError, match=r"line 1: expected a JSON object, got list"):
        read_jsonl(path)


def test_valid_samples_pass():
    for sample in (TG, GVQA, ORDER):
        validate_sample(sample, where="t")


def test_tolerance_is_two_seconds_or_five_percent():
    assert default_tolerance(10.0) == 2.0
    assert default_tolerance(200.0) == 10.0
    # Charades-STA-like overshoot of 1.5 s on a 30 s video is accepted, 2.5 s is not.
    validate_sample(dataclasses.replace(TG, segments=((20.0, 31.5),)), where="t")
    with pytest.raises(InvalidSampleError, match="outside"):
        validate_sample(dataclasses.replace(TG, segments=((20.0, 32.5),)), where="t")


@pytest.mark.parametrize(
    "change, kind, message",
    [
        ({"task": "vqa"}, "task", "unknown task 'vqa'"),
        ({"query": "  "}, "empty_field", "query must be a non-empty string"),
        ({"images": ("a.jpg",)}, "media", "exactly one of video and images"),
        ({"duration": None}, "duration", "duration must be a finite number > 0, got None"),
        ({"duration": None}, "duration", "duration is missing"),
        ({"duration": 0.0}, "duration", "finite number > 0"),
        ({"duration": math.inf}, "duration", "finite number > 0"),
        ({"segments": ((math.nan, 3.0),)}, "segment_not_finite", r"segment 0 must be two finite numbers"),
        (
            {"segments": ((1.0, 2.0), (5.0, 4.0))},
            "segment_reversed",
            r"segment 1 has start > end: \[5.0, 4.0\]",
        ),
        ({"segments": ((-3.0, 2.0),)}, "segment_out_of_range", "outside"),
        ({"segments": ()}, "no_segments", "task tg needs at least one segment"),
        ({"video_start": 3.0}, "clip", "video_start and video_end must be given together"),
        ({"video_start": 5.0, "video_end": 4.0}, "clip", "0 <= video_start < video_end"),
    ],
)
def test_each_rule_names_where_id_and_problem(change, kind, message):
    with pytest.raises(InvalidSampleError, match=message) as info:
        validate_sample(dataclasses.replace(TG, **change), where="ann.json record 7")
    assert str(info.value).startswith("ann.json record 7 (id 'v1#0'): ")
    assert info.value.kind == kind


@pytest.mark.parametrize(
    "change, message",
    [
        ({"answer": "F"}, "one of the option letters 'ABCDE', got 'F'"),
        ({"answer": None}, "got None"),
        ({"answer": "AB"}, "got 'AB'"),
        ({"options": ()}, "task gvqa needs options"),
    ],
)
def test_letter_answers(change, message):
    with pytest.raises(InvalidSampleError, match=message):
        validate_sample(dataclasses.replace(GVQA, **change), where="t")


def test_order_answer_must_permute_image_letters():
    for bad in ("CAA", "ABCD", None):
        with pytest.raises(InvalidSampleError, match="permutation of 'ABC'"):
            validate_sample(dataclasses.replace(ORDER, answer=bad), where="t")


def test_dtg_needs_one_segment_per_query_line():
    dtg = Sample(
        id="v",
        task="dtg",
        source="activitynet_captions_dtg",
        query="first event\nsecond event",
        video="v.mp4",
        duration=50.0,
        segments=((0.0, 10.0), (10.0, 30.0)),
    )
    validate_sample(dtg, where="t")
    with pytest.raises(InvalidSampleError, match="2 sentences .* but 1 segments"):
        validate_sample(dataclasses.replace(dtg, segments=((0.0, 10.0),)), where="t")


def test_media_files_checked_against_the_directory(tmp_path):
    with pytest.raises(InvalidSampleError, match="video file not found: .*v1.mp4") as info:
        validate_sample(TG, where="t", videos_dir=tmp_path)
    assert info.value.kind == "missing_file"
    (tmp_path / "v1.mp4").write_bytes(b"")
    validate_sample(TG, where="t", videos_dir=tmp_path)
    absolute = dataclasses.replace(TG, video=str(tmp_path / "v1.mp4"))
    validate_sample(absolute, where="t", videos_dir=tmp_path / "elsewhere")

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InvalidSampleError, match="image file not found: .*c.jpg"):
        validate_sample(ORDER, where="t", videos_dir=tmp_path)


def test_a_bad_jsonl_line_is_reported_as_not_json(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(TG.to_json() + '\n{"id": \n')
    with pytest.raises(InvalidSampleError, match=r"s.jsonl line 2: not valid JSON"):
        read_jsonl(path)


def test_duration_mismatch_uses_the_tolerance():
    assert duration_mismatch(18.5, 18.5) is None
    assert duration_mismatch(31.0, 30.0) is None  # within 2 s
    assert duration_mismatch(200.0, 191.0) is None  # within 5 %
    assert "annotated duration 3600 s but the video lasts 18.5 s" in duration_mismatch(3600.0, 18.5)
    assert duration_mismatch(45.7, 90.0, video_start=39.0, video_end=84.7) is None
    assert "clip" in duration_mismatch(45.7, 50.0, video_start=39.0, video_end=84.7)  # the file ends at 50 s
    assert duration_mismatch(None, 18.5) is None  # validation reports a missing duration
