"""`tempr1 prepare` end to end, ArrayRecord splits read back through Grain, and TFDS builds."""

import json
import pathlib

import av
import grain
import numpy as np
import pytest

from data_pipeline import arrayrecord_io
from data_pipeline.samples import Sample, read_jsonl
from data_pipeline.sources import load
from tempr1_jax.cli import main

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "sources"
CHARADES = FIXTURES / "charades_sta_test.json"


def _write_clip(path, seconds):
    """A tiny 1-fps clip of `seconds` seconds: prepare reads its duration."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(seconds):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture
def videos(tmp_path):
    """The fixture's videos, as long as the annotations say (29.12 s and 30.25 s, within tolerance)."""
    directory = tmp_path / "videos"
    directory.mkdir()
    for vid in ("AO8RW", "Y6R7T"):
        _write_clip(directory / f"{vid}.mp4", 30)
    return directory


def _prepare(out, *extra, dataset="charades_sta", annotations=CHARADES, videos=None):
    args = ["--dataset", dataset, "--annotations", annotations, "--out", out, *extra]
    if videos is not None:
        args += ["--videos", videos]
    return main(["prepare", *map(str, args)])


def test_prepare_writes_arrayrecord_jsonl_and_report(tmp_path, videos, capsys):
    out = tmp_path / "out"
    assert _prepare(out, videos=videos) == 0
    assert "kept 3 of 3 records" in capsys.readouterr().out
    expected = list(load("charades_sta", CHARADES, videos))
    assert expected[0].video == str(videos.resolve() / "AO8RW.mp4")
    assert read_jsonl(out / "test.jsonl") == expected
    assert [p.name for p in arrayrecord_io.split_files(out, "test")] == [
        "charades_sta-test.array_record-00000-of-00001"
    ]
    assert arrayrecord_io.read_split(out, "test") == expected
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["test"]
    assert (report["total"], report["kept"], report["skipped"], report["by_task"]) == (3, 3, 0, {"tg": 3})

    # A second split lands beside the first; both stay in the report.
    didemo = FIXTURES / "didemo.json"
    assert _prepare(out, "--split", "train", "--no_video_check", dataset="didemo", annotations=didemo) == 0
    report = json.loads((out / "prepare_report.json").read_text())["splits"]
    assert set(report) == {"test", "train"} and report["train"]["kept"] == 2


def test_split_reads_through_grain(tmp_path, videos):
    out = tmp_path / "out"
    assert _prepare(out, videos=videos) == 0
    source = arrayrecord_io.open_split(out, "test")
    assert isinstance(source, grain.sources.RandomAccessDataSource) and len(source) == 3
    dataset = grain.MapDataset.source(source).map(Sample.from_json)
    assert [s.id for s in dataset] == ["AO8RW#0", "AO8RW#1", "Y6R7T#0"]
    assert dataset[2].segments == ((20.8, 30.0),)


def test_missing_video_stops_naming_file_and_record(tmp_path, videos, capsys):
    (videos / "Y6R7T.mp4").unlink()
    out = tmp_path / "out"
    assert _prepare(out, videos=videos) == 1
    err = capsys.readouterr().err
    assert f"{CHARADES} record 2 (id 'Y6R7T#0'): video file not found: " in err
    assert "--skip_bad" in err
    assert not out.exists()  # nothing is written unless validation finishes
    # Without the existence check the same annotations prepare fine.
    assert _prepare(out, "--no_video_check", videos=videos) == 0


def _malformed(tmp_path):
    ann = tmp_path / "bad_charades.json"
    ann.write_text(
        json.dumps(
            {
                "AO8RW": {
                    "duration": 29.12,
                    "timestamps": [[0.0, 6.9], [19.4, 13.5], [1.0, "x"]],
                    "sentences": ["ok.", "reversed.", "not a number."],
                },
                "Y6R7T": {"duration": 30.25, "timestamps": [[20.8, 90.0]], "sentences": ["far outside."]},
            }
        )
    )
    return ann


def test_malformed_record_message(tmp_path, videos, capsys):
    ann = _malformed(tmp_path)
    assert _prepare(tmp_path / "o", annotations=ann, videos=videos) == 1
    err = capsys.readouterr().err
    assert f"error: {ann} record 1 (id 'AO8RW#1'): segment 0 has start > end: [19.4, 13.5]" in err


def test_skip_bad_counts_and_reasons(tmp_path, videos, capsys):
    ann = _malformed(tmp_path)
    out = tmp_path / "out"
    assert _prepare(out, "--skip_bad", "--split", "val", annotations=ann, videos=videos) == 0
    printed = capsys.readouterr().out
    assert "kept 1 of 4 records" in printed and "skipped 3 bad records" in printed
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["val"]
    assert report["skipped_by_reason"] == {
        "segment_reversed": 1,
        "segment_not_finite": 1,
        "segment_out_of_range": 1,
    }
    assert "record 3 (id 'Y6R7T#0')" in report["example_by_reason"]["segment_out_of_range"]
    assert [s.id for s in read_jsonl(out / "val.jsonl")] == ["AO8RW#0"]
    assert len(arrayrecord_io.open_split(out, "val")) == 1


def test_nothing_usable_exits_1_with_reasons(tmp_path, annotations_dir, capsys):
    thumos = annotations_dir / "museg_thumos14_tal.json"  # no durations without the videos
    assert _prepare(tmp_path / "o", "--skip_bad", dataset="thumos14", annotations=thumos) == 1
    err = capsys.readouterr().err
    assert "skipped 227 bad records" in err and "duration: 227" in err and "no usable records" in err
    assert not (tmp_path / "o").exists()


def test_bad_inputs_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("[")
    out = tmp_path / "o"
    assert _prepare(out, dataset="tvgbench", annotations=broken) == 2
    assert "broken.json" in capsys.readouterr().err
    assert _prepare(out, "--subset", "validation", dataset="tvgbench", annotations=broken) == 2
    assert _prepare(out, dataset="tvgbench", annotations=broken, videos=tmp_path / "nope") == 2


def test_write_split_shards_keep_order(tmp_path):
    samples = list(load("activitynet13", FIXTURES / "activitynet13.json"))
    paths = arrayrecord_io.write_split(tmp_path, "train", samples, name="anet", num_shards=2)
    assert [p.name for p in paths] == [
        "anet-train.array_record-00000-of-00002",
        "anet-train.array_record-00001-of-00002",
    ]
    assert arrayrecord_io.read_split(tmp_path, "train") == samples
    with pytest.raises(FileNotFoundError, match="no ArrayRecord shards for split 'test'"):
        arrayrecord_io.split_files(tmp_path, "test")
    arrayrecord_io.write_split(tmp_path, "train", samples, name="other")
    with pytest.raises(ValueError, match="mixes datasets"):
        arrayrecord_io.split_files(tmp_path, "train")


def test_tfds_builder_writes_a_tfds_dataset(tmp_path, videos):
    tfds = pytest.importorskip("tensorflow_datasets")
    from data_pipeline import tfds_builders

    build_dir, report = tfds_builders.build(
        "charades_sta", CHARADES, data_dir=tmp_path / "tfds", videos_dir=videos, split="test"
    )
    assert build_dir == tmp_path / "tfds" / "tempr1_charades_sta" / "1.0.0"
    assert (build_dir / "dataset_info.json").is_file()
    assert [p.name for p in arrayrecord_io.split_files(build_dir, "test")] == [
        "tempr1_charades_sta-test.array_record-00000-of-00001"
    ]
    assert (report.total, report.kept) == (3, 3)
    expected = list(load("charades_sta", CHARADES, videos))
    assert arrayrecord_io.read_split(build_dir, "test") == expected
    # A second build regenerates the split from the annotations.
    _, again = tfds_builders.build(
        "charades_sta", CHARADES, data_dir=tmp_path / "tfds", videos_dir=videos, split="test"
    )
    assert (again.total, again.kept) == (3, 3)
    # Plain TFDS reads it too, in file order.
    source = tfds.builder_from_directory(str(build_dir)).as_data_source(split="test")
    assert Sample.from_json(source[1]["sample"]) == expected[1]


def test_queries_dropped_by_the_adapter_are_counted(tmp_path, videos, capsys):
    ann = tmp_path / "ten.json"
    ann.write_text(
        json.dumps(
            {
                "AO8RW": {
                    "duration": 29.12,
                    "timestamps": [[i, i + 1] for i in range(10)],
                    "sentences": [f"query {i}." for i in range(9)],
                }
            }
        )
    )
    assert _prepare(tmp_path / "o", annotations=ann, videos=videos) == 1
    assert "video 'AO8RW' query 9: timestamp [9, 10] has no sentence" in capsys.readouterr().err
    out = tmp_path / "out"
    assert _prepare(out, "--skip_bad", annotations=ann, videos=videos) == 0
    printed = capsys.readouterr().out
    assert "kept 9 of 10 records" in printed and "missing_sentence: 1" in printed
    report = json.loads((out / "prepare_report.json").read_text())["splits"]["test"]
    assert (report["total"], report["kept"], report["skipped_by_reason"]) == (10, 9, {"missing_sentence": 1})


def test_a_wrong_duration_is_rejected_with_the_videos(tmp_path, videos, capsys):
    ann = tmp_path / "long.json"
    ann.write_text(json.dumps({"AO8RW": {"duration": 3600, "timestamps": [[0, 6.9]], "sentences": ["a."]}}))
    assert _prepare(tmp_path / "o", annotations=ann, videos=videos) == 1
    err = capsys.readouterr().err
    assert "record 0 (id 'AO8RW#0'): annotated duration 3600 s but the video lasts 30 s" in err
    assert not (tmp_path / "o").exists()
    assert _prepare(tmp_path / "o", "--skip_bad", annotations=ann, videos=videos) == 1  # nothing usable
    assert "duration_mismatch: 1" in capsys.readouterr().err


def test_without_videos_prepare_says_that_files_were_not_checked(tmp_path, capsys):
    out = tmp_path / "out"
    assert _prepare(out) == 0
    printed = capsys.readouterr().out
    assert "media files were not checked" in printed and "--videos" in printed
    assert json.loads((out / "prepare_report.json").read_text())["splits"]["test"]["media_checked"] is False
    assert _prepare(tmp_path / "o2", "--no_video_check", videos=tmp_path) == 0
    assert "media files were not checked" in capsys.readouterr().out


def test_tal_videos_left_out_are_reported(tmp_path, capsys):
    out = tmp_path / "out"
    anet = FIXTURES / "activitynet13.json"
    assert _prepare(out, "--subset", "validation", dataset="activitynet13", annotations=anet) == 0
    printed = capsys.readouterr().out
    assert "left out 2 by design" in printed and "not_in_subset: 2" in printed
