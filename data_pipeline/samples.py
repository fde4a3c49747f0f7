"""The unified sample (DESIGN §6): one JSON object per training or evaluation example.

Every dataset adapter in `data_pipeline.sources` produces `Sample`s; `tempr1 prepare` validates
them with `validate_sample` and writes them as JSONL and ArrayRecord. Times are seconds. When
`video_start` / `video_end` are set, the sample is the clip [video_start, video_end] of the file
and `duration` and `segments` are relative to `video_start` (the Time-R1 convention).

Timestamp tolerance: public annotations often end a little past the stated video duration
(Charades-STA test: 562 of 3720 queries, by up to 1.5 s, because its durations are rounded
down). A segment may therefore lie up to `max(TOLERANCE_SECONDS, TOLERANCE_FRACTION * duration)`
outside [0, duration] (2 s or 5 %); anything beyond that is an annotation error (e.g. frames or
milliseconds mistaken for seconds). Values are kept as annotated; rewards and metrics clip.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from etils import epath

from data_pipeline import paths

TASKS = ("tg", "dtg", "vhd", "gvqa", "tal", "tvg", "order", "mcq")
LOCALISATION_TASKS = frozenset({"tg", "dtg", "vhd", "gvqa", "tal", "tvg"})
LETTER_TASKS = frozenset({"gvqa", "mcq"})
LETTERS = string.ascii_uppercase
TOLERANCE_SECONDS = 2.0
TOLERANCE_FRACTION = 0.05

PathLike = str | os.PathLike


class InvalidSampleError(ValueError):
    """A record that cannot be used; the message names the file and the record.

    `kind` is a short name of the failed check (e.g. "missing_file", "segment_out_of_range")
    so that `tempr1 prepare --skip_bad` can summarise the reasons.
    """

    def __init__(self, message: str, kind: str = "format"):
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Sample:
    """One unified sample (DESIGN §6).

    Exactly one of `video` (a path) and `images` (paths, multi-image tasks) is set. `duration` is
    required for video samples with times (not for a video multiple-choice question). `segments`
    are [start, end] pairs in seconds, in the order the task defines (DTG: one per line of the
    query, in that order; TAL: chronological). `answer` is an option letter (gvqa, mcq) or an order
    string such as "CABD" (order). `extra` carries
    source-specific fields (e.g. Time-R1 difficulty, QVHighlights saliency) that no task needs.
    """

    id: str
    task: str
    source: str
    query: str
    video: str | None = None
    images: tuple[str, ...] | None = None
    duration: float | None = None
    options: tuple[str, ...] | None = None
    answer: str | None = None
    segments: tuple[tuple[float, float], ...] = ()
    video_start: float | None = None
    video_end: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Normalise list inputs to tuples so samples compare and hash by value.
        if self.images is not None:
            object.__setattr__(self, "images", tuple(self.images))
        if self.options is not None:
            object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "segments", tuple(tuple(seg) for seg in self.segments))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form (lists instead of tuples, every field present)."""
        out = dataclasses.asdict(self)
        for key in ("images", "options"):
            if out[key] is not None:
                out[key] = list(out[key])
        out["segments"] = [list(seg) for seg in self.segments]
        out["extra"] = dict(self.extra)
        return out

    def to_json(self) -> str:
        """One-line JSON text of `to_dict()`."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Sample:
        """Build a sample from its JSON object; unknown keys are an error."""
        if not isinstance(obj, Mapping):
            raise InvalidSampleError(f"expected a JSON object, got {type(obj).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise InvalidSampleError(f"unknown sample fields {sorted(unknown)}")
        missing = {"id", "task", "source", "query"} - set(obj)
        if missing:
            raise InvalidSampleError(f"missing sample fields {sorted(missing)}")
        fields = dict(obj)
        fields["segments"] = fields.get("segments") or ()
        fields["extra"] = fields.get("extra") or {}
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> Sample:
        """Parse one JSON object (text or UTF-8 bytes)."""
        return cls.from_dict(json.loads(text))


def read_jsonl(path: PathLike) -> list[Sample]:
    """Read a JSONL file of unified samples; a bad line raises naming file and line."""
    samples = []
    with paths.as_path(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                samples.append(Sample.from_json(line))
            except json.JSONDecodeError as err:
                raise InvalidSampleError(
                    f"{path} line {line_no}: not valid JSON ({err.msg}, column {err.colno})", kind="not_json"
                ) from err
            except (ValueError, TypeError) as err:
                raise InvalidSampleError(f"{path} line {line_no}: {err}") from err
    return samples


def write_jsonl(path: PathLike, samples: Iterable[Sample]) -> int:
    """Write samples one JSON object per line; returns the number written."""
    count = 0
    with paths.as_path(path).open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(sample.to_json() + "\n")
            count += 1
    return count


def default_tolerance(duration: float) -> float:
    """How far (seconds) a segment may extend outside [0, duration]; see the module docstring."""
    return max(TOLERANCE_SECONDS, TOLERANCE_FRACTION * duration)


def duration_mismatch(
    duration: float | None,
    file_duration: float,
    video_start: float | None = None,
    video_end: float | None = None,
) -> str | None:
    """Why an annotated `duration` disagrees with the video file's, or None when they agree.

    They agree within `default_tolerance(duration)` (2 s or 5 %). For a clip ([video_start,
    video_end] both set) the annotated duration is compared with the part of that window the file
    holds. A missing or non-finite annotated duration is not compared (`validate_sample` reports it).
    """
    if not (_finite(duration) and _finite(file_duration)):
        return None
    clip = _finite(video_start) and _finite(video_end)
    actual = max(min(video_end, file_duration) - video_start, 0.0) if clip else file_duration
    tol = default_tolerance(duration)
    if abs(actual - duration) <= tol:
        return None
    what = (
        f"the clip [{video_start:g}, {video_end:g}] s of the {file_duration:g} s video lasts"
        if clip
        else "the video lasts"
    )
    return f"annotated duration {duration:g} s but {what} {actual:g} s (more than {tol:g} s apart)"


def resolve_path(path: str, base_dir: PathLike | None) -> epath.Path:
    """A sample's media path: absolute (or a URL) as is, relative to `base_dir` (a directory or URL) otherwise."""
    return paths.as_path(path) if base_dir is None else paths.join(base_dir, path)


def validate_sample(
    sample: Sample,
    *,
    where: str,
    videos_dir: PathLike | None = None,
    tolerance: Callable[[float], float] = default_tolerance,
) -> None:
    """Raise `InvalidSampleError` ("{where} (id ...): problem") if the sample cannot be used.

    Checks: known task; non-empty id, source and query; exactly one of video / images; video
    samples have a finite duration > 0 (optional for a question without times, e.g. a video `mcq`)
    and a valid optional clip window; segments are finite,
    start <= end and inside [0, duration] up to `tolerance(duration)` seconds; localisation
    tasks have at least one segment (DTG: one per query line); gvqa/mcq answers are a letter of
    the options; order answers permute the image letters; with `videos_dir`, the media files
    exist (relative paths resolve against it). The error's `kind` names the check that failed.
    """
    for kind, problem in _problems(sample, videos_dir, tolerance):
        raise InvalidSampleError(f"{where} (id {sample.id!r}): {problem}", kind=kind)


def _problems(sample: Sample, videos_dir, tolerance) -> Iterator[tuple[str, str]]:
    if sample.task not in TASKS:
        yield "task", f"unknown task {sample.task!r} (expected one of {', '.join(TASKS)})"
    for name in ("id", "source", "query"):
        value = getattr(sample, name)
        if not isinstance(value, str) or not value.strip():
            yield "empty_field", f"{name} must be a non-empty string, got {value!r}"
    if (sample.video is None) == (sample.images is None):
        yield "media", "exactly one of video and images must be set"
    if sample.video is not None:
        yield from _video_problems(sample, videos_dir, tolerance)
    if sample.images is not None:
        yield from _image_problems(sample, videos_dir)
    if sample.task in LOCALISATION_TASKS and not sample.segments:
        yield "no_segments", f"task {sample.task} needs at least one segment"
    if sample.task == "dtg" and len(sample.query.splitlines()) != len(sample.segments):
        yield (
            "dtg_count",
            (
                f"dtg query has {len(sample.query.splitlines())} sentences (one per line) "
                f"but {len(sample.segments)} segments"
            ),
        )
    if sample.task in LETTER_TASKS:
        yield from _letter_problems(sample)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _video_problems(sample: Sample, videos_dir, tolerance) -> Iterator[tuple[str, str]]:
    if videos_dir is not None:
        path = resolve_path(sample.video, videos_dir)
        if not path.is_file():
            yield "missing_file", f"video file not found: {path}"
    duration = sample.duration
    # a video question without times (mcq) needs no duration; a given one must still be valid
    needs_duration = sample.task in LOCALISATION_TASKS or sample.segments or duration is not None
    if needs_duration and duration is None:
        yield "duration", "duration is missing (duration must be a finite number > 0, got None)"
        return
    if needs_duration and not (_finite(duration) and duration > 0):
        yield "duration", f"duration must be a finite number > 0, got {duration!r}"
        return
    start, end = sample.video_start, sample.video_end
    if (start is None) != (end is None):
        yield "clip", "video_start and video_end must be given together"
    elif start is not None and not (_finite(start) and _finite(end) and 0 <= start < end):
        yield "clip", f"clip window must satisfy 0 <= video_start < video_end, got [{start}, {end}]"
    if not needs_duration:
        return
    tol = tolerance(duration)
    for i, seg in enumerate(sample.segments):
        if len(seg) != 2 or not all(_finite(t) for t in seg):
            yield "segment_not_finite", f"segment {i} must be two finite numbers, got {list(seg)}"
        elif seg[0] > seg[1]:
            yield "segment_reversed", f"segment {i} has start > end: {list(seg)}"
        elif seg[0] < -tol or seg[1] > duration + tol:
            yield (
                "segment_out_of_range",
                (
                    f"segment {i} {list(seg)} lies outside [0, duration={duration:g}] "
                    f"by more than the tolerance {tol:g} s"
                ),
            )


def _image_problems(sample: Sample, videos_dir) -> Iterator[tuple[str, str]]:
    if not sample.images:
        yield "media", "images must not be empty"
    if videos_dir is not None:
        for image in sample.images:
            path = resolve_path(image, videos_dir)
            if not path.is_file():
                yield "missing_file", f"image file not found: {path}"
    if sample.task == "order":
        letters = LETTERS[: len(sample.images)]
        if not isinstance(sample.answer, str) or sorted(sample.answer) != sorted(letters):
            yield "answer", (f"order answer must be a permutation of {letters!r}, got {sample.answer!r}")


def _letter_problems(sample: Sample) -> Iterator[tuple[str, str]]:
    if not sample.options:
        yield "options", f"task {sample.task} needs options"
        return
    letters = LETTERS[: len(sample.options)]
    if not isinstance(sample.answer, str) or len(sample.answer) != 1 or sample.answer not in letters:
        yield "answer", (f"answer must be one of the option letters {letters!r}, got {sample.answer!r}")
