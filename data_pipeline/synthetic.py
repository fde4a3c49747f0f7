"""A deterministic synthetic dataset: real mp4 clips of coloured shapes with known events, for all tasks.

Clips are small (140x112 at 4 fps native by default; `SyntheticSpec.frame_size` and `fps` choose
others, e.g. 28x28 at 2 fps: one visual token per second), 10-20 s long (longer where the events need
it) on a black background, written with PyAV (libx264, or mpeg4 where libx264 is missing). An event
is a solid shape of one colour that is visible during [start, end): it `appears` (still), `moves`
across the screen (left to right) or `flashes` (a short, larger still shape). Shape sizes scale with
the frame. Event boundaries lie on a grid of `SyntheticSpec.tick` seconds (0.5 s), so the 2 FPS
sampling sees them exactly. The events of one clip have distinct colours (the repeats of one event in
vhd and tal share theirs), so a query's colour singles its event out even in a 28x28 frame. From
these the generator builds unified samples (`data_pipeline.samples.Sample`):

* tg: one event among 1-2 distractors, the query names its colour, shape and action;
* dtg: 2-4 events, one query line per event in chronological order;
* vhd: 2-3 windows of one event (and maybe a distractor), all windows are the answer;
* gvqa: a lettered question about the order of two consecutive events ("what happens right after
  ...?" or "... right before ...?") with the spans of both events as evidence. The clip's events take
  distinct colours of `GVQA_COLOURS`, and the four options are one event sentence per colour, always in
  that order (A red, B green, C blue, D yellow): the clip's event of that colour or, for a colour the
  clip lacks, an event it does not hold. The letter names the colour of the asked-for event, which
  only the frames tell;
* tal: every instance of one action class (e.g. "red square flashes") among distractors;
* order / mcq (TPRU style, PNG images): four steps of a shape's motion, shuffled (answer e.g.
  "CABD", the labels in chronological order), or steps 1, 2, 4 plus three candidates for step 3
  and "none of these".

Media paths in the JSONL are relative to `out_dir`. Every sample has its own random generator
seeded from (seed, split, task, index), so the same seed gives the same JSONL bytes and frames.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import av
import numpy as np
from PIL import Image

from data_pipeline.samples import LETTERS, Sample, write_jsonl

VIDEO_TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")
IMAGE_TASKS = ("order", "mcq")
WIDTH, HEIGHT = 140, 112  # multiples of 28 and >= 16*28*28 pixels: read_video keeps them as they are
NATIVE_FPS = 4
IMAGE_SIZE = 112
TICK = 0.5  # seconds; the default grid of event times
COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 255),
    "yellow": (240, 220, 30),
    "white": (240, 240, 240),
    "magenta": (220, 40, 220),
}
GVQA_COLOURS = ("red", "green", "blue", "yellow")  # the colours of gvqa's four options, in their order
CLOCK_COLOUR = (128, 128, 128)
SHAPES = ("square", "circle", "triangle")
ACTIONS = {"appears": "appears", "moves": "moves across the screen", "flashes": "flashes"}
# Default event length range per action, in ticks (inclusive). At most 5 events of <= 10 ticks with
# gaps (5 * 10 + 5 + 2 = 57 ticks) keep every clip within 30 s.
EVENT_TICKS = {"appears": (4, 10), "moves": (6, 10), "flashes": (2, 4)}
_SIZES = {"appears": 36, "moves": 32, "flashes": 56}  # pixels in a HEIGHT-high frame, scaled with the frame
_DIRECTIONS = {
    "from the left to the right": (0, 1),
    "from the right to the left": (0, -1),
    "from the top to the bottom": (1, 0),
    "from the bottom to the top": (-1, 0),
}
Event = dict  # {"colour", "shape", "action", "start", "end", "y", "x"} (seconds; y, x in [0, 1] of the free room)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """How the clips look and how long things in them last (the defaults are the dataset's own).

    frame_size: (height, width) in pixels; fps: frames per second written (fps * tick must be a whole
    number, so that a frame falls on every event boundary). tick: seconds of the grid event times lie
    on. clip_ticks: (min, max) clip length in ticks, drawn uniformly; a clip whose events (with a tick
    between them and around them) need more is as long as they need. event_ticks: action ->
    (min, max) event length in ticks, inclusive. shape_scale: shapes are this many times their default
    size (a fraction of the frame; at most the frame), e.g. larger in tiny frames. distractors: False
    leaves out the events a query does not ask for (a tg clip holds its target alone, vhd and tal clips
    the target's instances alone, a gvqa clip the two events of its question; dtg is unchanged). clock:
    a progress bar along the bottom of every frame, spanning the width at the longest drawn clip length
    (`render_frame`'s `clock_seconds`).
    """

    frame_size: tuple[int, int] = (HEIGHT, WIDTH)
    fps: int = NATIVE_FPS
    tick: float = TICK
    clip_ticks: tuple[int, int] = (20, 40)
    event_ticks: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=lambda: dict(EVENT_TICKS))
    shape_scale: float = 1.0
    distractors: bool = True
    clock: bool = False

    @property
    def clock_seconds(self) -> float | None:
        """Seconds at which the clock bar spans the frame (the longest drawn clip), or None without a clock."""
        return self.clip_ticks[1] * self.tick if self.clock else None

    def __post_init__(self) -> None:
        height, width = self.frame_size
        lo, hi = self.clip_ticks
        frames_per_tick = self.fps * self.tick
        if (
            min(height, width) < 1
            or self.fps < 1
            or self.tick <= 0
            or abs(frames_per_tick - round(frames_per_tick)) > 1e-9
            or not self.shape_scale > 0
        ):
            raise ValueError(
                f"SyntheticSpec: frame_size, fps > 0 and fps * tick a whole number required, and shape_scale > 0, got {self}"
            )
        if not 1 <= lo <= hi:
            raise ValueError(f"SyntheticSpec.clip_ticks must be (min, max) with 1 <= min <= max, got {self.clip_ticks}")
        bad = {a: r for a, r in self.event_ticks.items() if a not in ACTIONS or not 1 <= r[0] <= r[1]}
        if bad or set(self.event_ticks) != set(ACTIONS):
            raise ValueError(
                f"SyntheticSpec.event_ticks needs (min, max) >= 1 for each of {list(ACTIONS)}, got {dict(self.event_ticks)}"
            )


DEFAULT_SPEC = SyntheticSpec()


@functools.cache
def _mask(shape: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a solid shape."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        r = size / 2
        return (yy - r) ** 2 + (xx - r) ** 2 <= r * r
    if shape == "triangle":  # apex at the top centre
        return np.abs(xx - size / 2) <= yy / 2
    raise ValueError(f"unknown shape {shape!r}")


def _paint(canvas: np.ndarray, shape: str, colour: str, size: int, y: int, x: int) -> None:
    """Draw a shape with its top-left corner at (y, x), clipped to the canvas."""
    mask = _mask(shape, size)
    h, w = canvas.shape[:2]
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + size, h), min(x + size, w)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1][mask[y0 - y : y1 - y, x0 - x : x1 - x]] = COLOURS[colour]


def shape_size(action: str, height: int = HEIGHT, width: int = WIDTH, scale: float = 1.0) -> int:
    """Side in pixels of an event's shape in a height x width frame (the default sizes scaled to it,
    times `scale`, at most the frame's shorter side)."""
    side = min(height, width)
    return min(side, max(2, round(_SIZES[action] * scale * side / HEIGHT)))


def clock_rows(height: int) -> int:
    """Rows at the bottom of a frame `height` pixels high that a clock bar takes."""
    return max(1, height // 14)


def render_frame(
    t: float,
    events: Sequence[Event],
    height: int = HEIGHT,
    width: int = WIDTH,
    shape_scale: float = 1.0,
    clock_seconds: float | None = None,
) -> np.ndarray:
    """The RGB uint8 frame at time t: every event with start <= t < end drawn on black (shapes
    `shape_scale` times their default size). With `clock_seconds`, a grey bar along the bottom rows
    grows from the left edge and spans the width at `clock_seconds` (time written into the pixels, as
    a player's progress bar or frame-numbering methods for video LLMs do; shapes keep out of those rows)."""
    canvas = np.zeros((height, width, 3), np.uint8)
    room = height
    if clock_seconds is not None:
        room = height - clock_rows(height)
        canvas[room:, : min(width, round(t / clock_seconds * width))] = CLOCK_COLOUR
    for ev in events:
        if not ev["start"] <= t < ev["end"]:
            continue
        size = min(shape_size(ev["action"], height, width, shape_scale), room)
        y, x = round(ev["y"] * (room - size)), round(ev["x"] * (width - size))
        if ev["action"] == "moves":
            x = round(-size / 2 + (t - ev["start"]) / (ev["end"] - ev["start"]) * width)
        _paint(canvas[:room], ev["shape"], ev["colour"], size, y, x)
    return canvas


def _encoder() -> tuple[str, dict[str, str]]:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264", {"preset": "ultrafast", "crf": "12", "threads": "1"}
    except (av.FFmpegError, ValueError):  # FFmpeg builds without libx264 (PyAV raises UnknownCodecError)
        return "mpeg4", {"qscale": "2", "threads": "1"}


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = NATIVE_FPS) -> None:
    """Write RGB uint8 frames as an mp4 (libx264 or mpeg4, yuv420p)."""
    codec, options = _encoder()
    height, width = frames[0].shape[:2]
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def describe(ev: Event) -> str:
    """The event as a sentence, e.g. "the red square moves across the screen"."""
    return f"the {ev['colour']} {ev['shape']} {ACTIONS[ev['action']]}"


# --- timelines ---------------------------------------------------------------------------------


def _kinds(rng: np.random.Generator, n: int, exclude: Sequence[str] = ()) -> list[tuple[str, str]]:
    """n (colour, shape) pairs of distinct colours, none in `exclude`, with random shapes."""
    colours = [c for c in COLOURS if c not in exclude]
    return [
        (colours[i], SHAPES[int(rng.integers(len(SHAPES)))]) for i in rng.choice(len(colours), size=n, replace=False)
    ]


def _timeline(
    rng: np.random.Generator, specs: Sequence[tuple[str, str, str]], spec: SyntheticSpec
) -> tuple[list[Event], float]:
    """Place events (colour, shape, action) in the given order without overlap; returns (events, duration)."""
    lengths = [int(rng.integers(lo, hi + 1)) for lo, hi in (spec.event_ticks[a] for _, _, a in specs)]
    needed = sum(lengths) + len(specs) + 2
    lo, hi = spec.clip_ticks
    total = int(rng.integers(max(lo, needed), max(hi, needed) + 1))
    # Gaps summing to the free time, drawn uniformly among all ways to split it (so an event is as likely
    # near the ends of a clip as in its middle: no constant answer fits most clips), then at least one
    # tick between consecutive events.
    free, n = total - sum(lengths) - (len(specs) - 1), len(specs)
    cuts = np.sort(rng.choice(free + n, size=n, replace=False))
    gaps = np.diff(np.concatenate([[-1], cuts, [free + n]])) - 1
    gaps[1:-1] += 1
    events, t = [], 0
    for (colour, shape, action), length, gap in zip(specs, lengths, gaps):
        t += int(gap)
        events.append(
            {
                "colour": colour,
                "shape": shape,
                "action": action,
                "start": t * spec.tick,
                "end": (t + length) * spec.tick,
                "y": float(rng.random()),
                "x": float(rng.random()),
            }
        )
        t += length
    return events, total * spec.tick


def random_events(
    rng: np.random.Generator,
    n: int,
    spec: SyntheticSpec = DEFAULT_SPEC,
    actions: Sequence[str] = tuple(ACTIONS),
    shapes: Sequence[str] = SHAPES,
) -> tuple[list[Event], float]:
    """n events of distinct colours (shapes and actions drawn from the given ones) on one timeline,
    as the tasks place them; returns (events, duration). For probes that render frames in memory."""
    colours = [list(COLOURS)[int(i)] for i in rng.choice(len(COLOURS), size=n, replace=False)]
    specs = [
        (c, str(shapes[int(rng.integers(len(shapes)))]), str(actions[int(rng.integers(len(actions)))])) for c in colours
    ]
    return _timeline(rng, specs, spec)


def _action(rng: np.random.Generator, choices: Sequence[str] = tuple(ACTIONS)) -> str:
    return str(choices[int(rng.integers(len(choices)))])


def _seg(ev: Event) -> list[float]:
    return [ev["start"], ev["end"]]


# --- per-task samples (return the sample fields; events drive the video) -------------------------


def _tg(rng: np.random.Generator, spec: SyntheticSpec = DEFAULT_SPEC) -> tuple[list[Event], float, dict]:
    n = int(rng.integers(2, 4)) if spec.distractors else 1
    specs = [(c, s, _action(rng)) for c, s in _kinds(rng, n)]
    events, duration = _timeline(rng, specs, spec)
    target = events[int(rng.integers(len(events)))]
    return events, duration, {"query": describe(target), "segments": [_seg(target)]}


def _dtg(rng: np.random.Generator, spec: SyntheticSpec = DEFAULT_SPEC) -> tuple[list[Event], float, dict]:
    specs = [(c, s, _action(rng)) for c, s in _kinds(rng, int(rng.integers(2, 5)))]
    events, duration = _timeline(rng, specs, spec)
    return (
        events,
        duration,
        {"query": "\n".join(describe(e) for e in events), "segments": [_seg(e) for e in events]},
    )


def _repeated(rng: np.random.Generator, n_target: int, n_other: int, actions: Sequence[str], spec: SyntheticSpec):
    """A timeline with n_target instances of one (colour, shape, action) among n_other distractors."""
    kinds = _kinds(rng, 1 + n_other)
    action = _action(rng, actions)
    specs = [(*kinds[0], action)] * n_target + [(c, s, _action(rng)) for c, s in kinds[1:]]
    specs = [specs[i] for i in rng.permutation(len(specs))]
    events, duration = _timeline(rng, specs, spec)
    targets = [e for e in events if (e["colour"], e["shape"], e["action"]) == (*kinds[0], action)]
    return events, duration, targets


def _vhd(rng: np.random.Generator, spec: SyntheticSpec = DEFAULT_SPEC) -> tuple[list[Event], float, dict]:
    n_other = int(rng.integers(0, 2)) if spec.distractors else 0
    events, duration, targets = _repeated(rng, int(rng.integers(2, 4)), n_other, ("appears", "flashes"), spec)
    return events, duration, {"query": describe(targets[0]), "segments": [_seg(e) for e in targets]}


def _tal(rng: np.random.Generator, spec: SyntheticSpec = DEFAULT_SPEC) -> tuple[list[Event], float, dict]:
    events, duration, targets = _repeated(rng, int(rng.integers(1, 5)), int(spec.distractors), tuple(ACTIONS), spec)
    t = targets[0]
    query = f"{t['colour']} {t['shape']} {ACTIONS[t['action']]}"
    return events, duration, {"query": query, "segments": [_seg(e) for e in targets]}


def _gvqa(rng: np.random.Generator, spec: SyntheticSpec = DEFAULT_SPEC) -> tuple[list[Event], float, dict]:
    n = int(rng.integers(2, 4)) if spec.distractors else 2
    colours = [GVQA_COLOURS[i] for i in rng.choice(len(GVQA_COLOURS), size=n, replace=False)]
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=n, replace=False)]
    specs = [(c, s, _action(rng)) for c, s in zip(colours, shapes)]
    events, duration = _timeline(rng, specs, spec)
    target = int(rng.integers(n - 1))  # the earlier of two consecutive events
    first, second = events[target], events[target + 1]
    if rng.random() < 0.5:
        question, right = f"What happens right after {describe(first)}?", second
    else:
        question, right = f"What happens right before {describe(second)}?", first
    # One option per colour of GVQA_COLOURS, in that order: the clip's event of that colour, or an event
    # the clip does not hold.
    shown = {e["colour"]: e for e in events}
    options = [
        describe(shown.get(c) or {"colour": c, "shape": SHAPES[int(rng.integers(len(SHAPES)))], "action": _action(rng)})
        for c in GVQA_COLOURS
    ]
    answer = LETTERS[GVQA_COLOURS.index(right["colour"])]
    segments = [_seg(first), _seg(second)]
    return events, duration, {"query": question, "options": options, "answer": answer, "segments": segments}


# --- TPRU-style image sequences ----------------------------------------------------------------


def _motion(rng: np.random.Generator) -> tuple[Callable[..., np.ndarray], str, str]:
    """A renderer draw(progress, colour=...) of one shape moving in one direction, its sentence, its colour."""
    ((colour, shape),) = _kinds(rng, 1)
    direction = list(_DIRECTIONS)[int(rng.integers(len(_DIRECTIONS)))]
    dy, dx = _DIRECTIONS[direction]
    size = 32
    cross = int(rng.integers(0, IMAGE_SIZE - size + 1))

    def draw(progress: float, col: str = colour) -> np.ndarray:
        along = round(progress * (IMAGE_SIZE - size))
        along = along if dy + dx > 0 else IMAGE_SIZE - size - along
        y, x = (along, cross) if dy else (cross, along)
        canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        _paint(canvas, shape, col, size, y, x)
        return canvas

    return draw, f"the {colour} {shape} moves {direction}", colour


def _order(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    draw, description, _ = _motion(rng)
    n = 4
    shown = rng.permutation(n)
    while (shown == np.arange(n)).all():
        shown = rng.permutation(n)
    answer = "".join(LETTERS[int(np.flatnonzero(shown == k)[0])] for k in range(n))
    return [draw(k / (n - 1)) for k in shown], {"query": description, "answer": answer}


def _mcq(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    draw, description, colour = _motion(rng)
    steps = [draw(k / 3) for k in range(4)]
    other = [c for c in COLOURS if c != colour][int(rng.integers(len(COLOURS) - 1))]
    wrong = [draw(1 / 6), draw(2 / 3, other), draw(0.95)]  # wrong place, wrong colour, overshoot
    if rng.random() < 0.25:  # "none of these" a quarter of the time, as in TPRU
        candidates, answer = [wrong[i] for i in rng.permutation(3)], "D"
    else:
        order = rng.permutation(3)  # position 0 of `order` holds the right frame
        pool = [steps[2], *(wrong[i] for i in rng.choice(3, size=2, replace=False))]
        candidates, answer = [pool[i] for i in order], LETTERS[int(np.flatnonzero(order == 0)[0])]
    query = (
        f'The first three images are steps 1, 2 and 4 of: "{description}". The 4th, 5th and 6th images '
        "are candidates for step 3. Which one is step 3?"
    )
    options = ["the 4th image", "the 5th image", "the 6th image", "none of these"]
    return [steps[0], steps[1], steps[3], *candidates], {"query": query, "options": options, "answer": answer}


_VIDEO_BUILDERS = {"tg": _tg, "dtg": _dtg, "vhd": _vhd, "gvqa": _gvqa, "tal": _tal}
_IMAGE_BUILDERS = {"order": _order, "mcq": _mcq}


def _rng(seed: int, split: str, task: str, index: int) -> np.random.Generator:
    key = [seed, zlib.crc32(split.encode()), zlib.crc32(task.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def _video_sample(
    out_dir: pathlib.Path, sample_id: str, task: str, rng: np.random.Generator, spec: SyntheticSpec
) -> Sample:
    events, duration, fields = _VIDEO_BUILDERS[task](rng, spec)
    rel = f"videos/{sample_id}.mp4"
    n = round(duration * spec.fps)
    clock = spec.clock_seconds
    write_video(
        out_dir / rel,
        [render_frame(i / spec.fps, events, *spec.frame_size, spec.shape_scale, clock) for i in range(n)],
        spec.fps,
    )
    extra = {"events": [{k: e[k] for k in ("colour", "shape", "action", "start", "end")} for e in events]}
    return Sample(id=sample_id, task=task, source="synthetic", video=rel, duration=duration, extra=extra, **fields)


def _image_sample(out_dir: pathlib.Path, sample_id: str, task: str, rng: np.random.Generator) -> Sample:
    images, fields = _IMAGE_BUILDERS[task](rng)
    paths = []
    for j, image in enumerate(images):
        rel = f"images/{sample_id}_{j}.png"
        Image.fromarray(image).save(out_dir / rel)
        paths.append(rel)
    return Sample(id=sample_id, task=task, source="synthetic", images=paths, **fields)


def _write_sample(job: tuple[pathlib.Path, str, str, int, int, SyntheticSpec]) -> Sample:
    """Write one sample's media and return the sample: job = (out_dir, split, task, index, seed, spec)."""
    out, split, task, index, seed, spec = job
    sample_id = f"syn-{split}-{task}-{index:04d}"
    rng = _rng(seed, split, task, index)
    if task in _VIDEO_BUILDERS:
        return _video_sample(out, sample_id, task, rng, spec)
    return _image_sample(out, sample_id, task, rng)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    samples_per_task: int | Mapping[str, int] = 8,
    tasks: Sequence[str] = VIDEO_TASKS,
    include_images: bool = True,
    split_names: Sequence[str] = ("train", "test"),
    spec: SyntheticSpec | None = None,
    progress: bool = False,
    workers: int = 1,
    **spec_fields: Any,
) -> dict[str, pathlib.Path]:
    """Write videos, PNG images and one unified-sample JSONL per split; returns split -> JSONL path.

    `samples_per_task` is a count per (split, task), or a mapping split -> count. `tasks` are video
    tasks (tg, dtg, vhd, gvqa, tal); `include_images` adds the TPRU-style order and mcq tasks. The
    clips follow `spec`, with any `SyntheticSpec` field given as a keyword (e.g. `frame_size=(28, 28),
    fps=2`) replacing the spec's. Media paths in the JSONL are relative to `out_dir`. Existing files of
    the same names are overwritten. `progress` shows a progress bar (clips written / all) on stderr.
    `workers` > 1 writes the samples in that many processes (each sample has its own random generator:
    the same files as one process writes).
    """
    unknown = set(tasks) - set(_VIDEO_BUILDERS) - set(_IMAGE_BUILDERS)
    if unknown:
        raise ValueError(f"unknown synthetic tasks {sorted(unknown)}; known: {VIDEO_TASKS + IMAGE_TASKS}")
    spec = dataclasses.replace(spec or SyntheticSpec(), **spec_fields)
    all_tasks = list(dict.fromkeys([*tasks, *(IMAGE_TASKS if include_images else ())]))
    out = pathlib.Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    counts = {
        s: samples_per_task[s] if isinstance(samples_per_task, Mapping) else samples_per_task for s in split_names
    }
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(counts.values()) * len(all_tasks), desc="data", unit="sample", dynamic_ncols=True)
    paths = {}
    pool = None
    if workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for split in split_names:
            jobs = [(out, split, task, i, seed, spec) for task in all_tasks for i in range(counts[split])]
            samples = []
            for sample in pool.map(_write_sample, jobs, chunksize=16) if pool else map(_write_sample, jobs):
                samples.append(sample)
                if bar is not None:
                    bar.update(1)
            paths[split] = out / f"{split}.jsonl"
            write_jsonl(paths[split], samples)
    finally:
        if pool is not None:
            pool.shutdown()
    if bar is not None:
        bar.close()
    return paths
