"""The synthetic dataset: deterministic, valid unified samples, and videos/images that show the events."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from data_pipeline import synthetic
from data_pipeline.samples import read_jsonl, validate_sample
from data_pipeline.video import read_image, read_video

COUNTS = {"train": 3, "test": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    return out, synthetic.write_synthetic_dataset(out, seed=3, samples_per_task=COUNTS)


def _has_colour(frame: np.ndarray, colour: str, min_pixels: int = 100) -> bool:
    target = np.asarray(synthetic.COLOURS[colour], dtype=int)
    close = np.abs(frame.astype(int) - target).max(axis=-1) <= 50
    return int(close.sum()) >= min_pixels


def test_splits_tasks_and_validity(dataset):
    out, paths = dataset
    assert set(paths) == {"train", "test"}
    for split, path in paths.items():
        samples = read_jsonl(path)
        counts = collections.Counter(s.task for s in samples)
        assert counts == {t: COUNTS[split] for t in synthetic.VIDEO_TASKS + synthetic.IMAGE_TASKS}
        for s in samples:
            validate_sample(s, where=str(path), videos_dir=out)
            assert s.source == "synthetic"
            if s.task in synthetic.VIDEO_TASKS:
                assert 10 <= s.duration <= 30
                assert all(seg[0] % 0.5 == 0 and seg[1] % 0.5 == 0 for seg in s.segments)
        assert len({s.id for s in samples}) == len(samples)


def test_task_semantics(dataset):
    out, paths = dataset
    for s in read_jsonl(paths["train"]):
        events = s.extra.get("events", [])
        spans = [[e["start"], e["end"]] for e in events]
        if s.task == "tg":
            assert [list(x) for x in s.segments] in [[sp] for sp in spans]
        elif s.task == "dtg":
            assert [list(x) for x in s.segments] == spans and len(s.query.splitlines()) == len(events)
        elif s.task in ("vhd", "tal"):
            words = s.query.split()
            target = [[e["start"], e["end"]] for e in events if e["colour"] in words and e["shape"] in words]
            assert [list(x) for x in s.segments] == target
        elif s.task == "gvqa":
            assert len(s.options) == 4 and s.answer in "ABCD"
        elif s.task == "order":
            assert sorted(s.answer) == list("ABCD") and s.answer != "ABCD"


def test_videos_show_the_events(dataset):
    out, paths = dataset
    for s in read_jsonl(paths["test"]):
        if s.video is None:
            continue
        frames, info = read_video(out / s.video)
        assert info["native_fps"] == synthetic.NATIVE_FPS
        assert info["duration"] == pytest.approx(s.duration)
        for frame, t in zip(frames, info["timestamps"]):
            visible = [e for e in s.extra["events"] if e["start"] <= t < e["end"]]
            for e in visible:
                assert _has_colour(frame, e["colour"]), (s.id, t, e)
            if not visible:
                assert frame.max() < 40, (s.id, t)


def test_image_answers(dataset):
    out, paths = dataset
    for s in read_jsonl(paths["test"]):
        if s.task == "order":
            images = [read_image(out / p) for p in s.images]
            # Chronological order = the answer's labels; the shape's position moves monotonically.
            pos = [np.argwhere(img.max(axis=-1) > 100).mean(axis=0) for img in images]
            chrono = [pos["ABCD".index(letter)] for letter in s.answer]
            steps = np.diff(np.asarray(chrono), axis=0)
            axis = int(np.abs(steps).sum(axis=0).argmax())
            assert (np.sign(steps[:, axis]) == np.sign(steps[0, axis])).all() and steps[0, axis] != 0
        if s.task == "mcq":
            assert len(s.images) == 6 and s.answer in "ABCD"


def test_deterministic(dataset, tmp_path):
    """The same seed gives the same files, written in one process or in two; another seed other samples."""
    out, paths = dataset
    again = synthetic.write_synthetic_dataset(tmp_path, seed=3, samples_per_task=COUNTS, workers=2)
    for split in paths:
        assert again[split].read_bytes() == paths[split].read_bytes()
    for name in ("videos/syn-test-dtg-0001.mp4", "videos/syn-train-tal-0002.mp4"):
        np.testing.assert_array_equal(read_video(out / name)[0], read_video(tmp_path / name)[0])
    for png in sorted((out / "images").glob("*.png"))[:6]:
        assert (tmp_path / "images" / png.name).read_bytes() == png.read_bytes()
    other = synthetic.write_synthetic_dataset(
        tmp_path / "b", seed=4, samples_per_task=1, include_images=False, split_names=("train",)
    )
    assert other["train"].read_bytes() != again["train"].read_bytes()


def test_timeline_invariants():
    """Many timelines (no video written): 10-30 s, events on the 0.5 s grid, in order, not overlapping."""
    for task, build in synthetic._VIDEO_BUILDERS.items():
        for i in range(300):
            events, duration, fields = build(np.random.default_rng(i))
            assert 10 <= duration <= 30, (task, i, duration)
            times = [t for e in events for t in (e["start"], e["end"])]
            assert times == sorted(times) and times[0] >= 0 and times[-1] <= duration
            assert all(e["start"] < e["end"] and (2 * e["start"]) % 1 == 0 for e in events)
            assert all(0 <= s < e <= duration for s, e in fields["segments"])


def test_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic tasks"):
        synthetic.write_synthetic_dataset(tmp_path, tasks=("tg", "nope"))


def test_small_frames_at_2_fps(tmp_path):
    """28x28 clips at 2 FPS (one visual token per second): shapes scaled to the frame, every visible
    event's colour on its frames, nothing on the others."""
    paths = synthetic.write_synthetic_dataset(
        tmp_path, seed=1, samples_per_task=1, include_images=False, split_names=("test",), frame_size=(28, 28), fps=2
    )
    for s in read_jsonl(paths["test"]):
        validate_sample(s, where="small", videos_dir=tmp_path)
        frames, info = read_video(tmp_path / s.video, min_pixels=784, max_pixels=784)
        assert info["native_fps"] == 2 and frames.shape[1:3] == (28, 28)
        for frame, t in zip(frames, info["timestamps"]):
            visible = [e for e in s.extra["events"] if e["start"] <= t < e["end"]]
            for e in visible:
                assert _has_colour(frame, e["colour"], min_pixels=4), (s.id, t, e)
            if not visible:
                assert frame.max() < 40, (s.id, t)
    assert synthetic.shape_size("appears", 28, 28) == 9 and synthetic.shape_size("appears") == 36


def test_distinct_colours_and_gvqa_order():
    """One colour per event kind in a clip; gvqa asks for the event right after / before another, gives
    both events' spans as evidence and lists one option per colour of GVQA_COLOURS in their order."""
    for task, build in synthetic._VIDEO_BUILDERS.items():
        for i in range(100):
            events, _, fields = build(np.random.default_rng(i))
            kinds = {(e["colour"], e["shape"], e["action"]) for e in events}
            assert len({c for c, _, _ in kinds}) == len(kinds), (task, i, kinds)
            if task != "gvqa":
                continue
            right = fields["options"]["ABCD".index(fields["answer"])]
            sentences = [synthetic.describe(e) for e in events]
            k = sentences.index(right)
            if fields["query"].startswith("What happens right after"):
                assert fields["query"] == f"What happens right after {sentences[k - 1]}?" and k > 0
                pair = events[k - 1 : k + 1]
            else:
                assert fields["query"] == f"What happens right before {sentences[k + 1]}?"
                pair = events[k : k + 2]
            assert fields["segments"] == [[e["start"], e["end"]] for e in pair]
            assert [o.split()[1] for o in fields["options"]] == list(synthetic.GVQA_COLOURS)
            assert fields["answer"] == "ABCD"[synthetic.GVQA_COLOURS.index(events[k]["colour"])]


def test_spec_knobs():
    """Tick length, clip length range and event lengths come from the spec."""
    spec = synthetic.SyntheticSpec(
        tick=1.0, clip_ticks=(40, 40), event_ticks={"appears": (3, 3), "moves": (3, 3), "flashes": (2, 2)}
    )
    for build in synthetic._VIDEO_BUILDERS.values():
        for i in range(50):
            events, duration, _ = build(np.random.default_rng(i), spec)
            assert duration == 40.0
            for e in events:
                assert e["start"] % 1 == 0 and e["end"] - e["start"] == (2 if e["action"] == "flashes" else 3)
    # Events that need more room than clip_ticks allows make the clip as long as they need.
    tight = synthetic.SyntheticSpec(clip_ticks=(4, 4))
    events, duration, _ = synthetic._VIDEO_BUILDERS["dtg"](np.random.default_rng(0), tight)
    assert duration >= events[-1]["end"] + tight.tick
    # shape_scale sizes the shapes (at most the frame).
    assert synthetic.shape_size("appears", 28, 28, 1.75) == 16 and synthetic.shape_size("flashes", 28, 28, 3.0) == 28
    frame = synthetic.render_frame(
        0.0, [{**events[0], "start": 0.0, "end": 1.0, "action": "appears", "shape": "square"}], 28, 28, 1.75
    )
    assert (frame.max(-1) > 0).sum() == 16 * 16
    for bad in (
        {"fps": 3},
        {"clip_ticks": (5, 4)},
        {"event_ticks": {"appears": (1, 2)}},
        {"frame_size": (0, 28)},
        {"shape_scale": 0.0},
    ):
        with pytest.raises(ValueError, match="SyntheticSpec"):
            synthetic.SyntheticSpec(**bad)


def test_random_events():
    """random_events: distinct colours, only the given shapes and actions, one timeline without overlap."""
    spec = synthetic.SyntheticSpec(frame_size=(28, 28), fps=4, tick=0.5, clip_ticks=(10, 19))
    for i in range(30):
        events, duration = synthetic.random_events(np.random.default_rng(i), 3, spec, ("moves",), ("circle",))
        assert len({e["colour"] for e in events}) == 3
        assert {(e["shape"], e["action"]) for e in events} == {("circle", "moves")}
        spans = sorted((e["start"], e["end"]) for e in events)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)) and spans[-1][1] <= duration


def test_clock_bar():
    events = [{"colour": "red", "shape": "square", "action": "appears", "start": 0.0, "end": 10.0, "y": 1.0, "x": 0.0}]
    rows = synthetic.clock_rows(28)
    lengths = []
    for t in (0.0, 2.5, 5.0, 10.0, 12.0):
        frame = synthetic.render_frame(t, events, 28, 28, 1.75, clock_seconds=10.0)
        bar = (frame[28 - rows :] == synthetic.CLOCK_COLOUR).all(-1)
        assert (bar == bar[0]).all()  # every bar row alike
        lengths.append(int(bar[0].sum()))
        if t < 10.0:  # the shape sits right above the bar (y = 1: the lowest place it may take)
            assert (frame[28 - rows - 1, 0] == synthetic.COLOURS["red"]).all()
    assert lengths == [0, 7, 14, 28, 28]
    # without a clock the frame is as before: the shape reaches the bottom row
    plain = synthetic.render_frame(5.0, events, 28, 28, 1.75)
    assert (plain[27, 0] == synthetic.COLOURS["red"]).all()


def test_without_distractors_and_with_a_clock(tmp_path):
    """distractors=False: tg, vhd, tal and gvqa clips hold only the asked-for events; clock=True: the bar is in the mp4."""
    spec = synthetic.SyntheticSpec(distractors=False)
    for i in range(30):
        events, _, fields = synthetic._tg(np.random.default_rng(i), spec)
        assert len(events) == 1 and fields["segments"] == [[events[0]["start"], events[0]["end"]]]
        for build in (synthetic._vhd, synthetic._tal):
            events, _, fields = build(np.random.default_rng(i), spec)
            assert fields["segments"] == [[e["start"], e["end"]] for e in events]
        events, _, fields = synthetic._gvqa(np.random.default_rng(i), spec)
        assert fields["segments"] == [[e["start"], e["end"]] for e in events]  # the question's two events
    paths = synthetic.write_synthetic_dataset(
        tmp_path,
        samples_per_task=1,
        tasks=("tg",),
        include_images=False,
        split_names=("test",),
        frame_size=(28, 28),
        fps=4,
        clip_ticks=(10, 19),
        clock=True,
    )
    (sample,) = read_jsonl(paths["test"])
    frames, _ = read_video(tmp_path / sample.video, fps=4.0, min_pixels=784, max_pixels=784)
    bar = frames[:, 28 - synthetic.clock_rows(28) :, :, :].mean(axis=(1, 3))  # [frames, width] grey level
    filled = (bar > 64).sum(-1)
    assert filled[0] <= 1 and filled[-1] >= 10 and (np.diff(filled) >= -1).all()  # grows with time
