"""Helpers shared by the dataset adapters: annotation paths, video lookup, lenient numbers, drops.

Adapters never raise on a bad record: an unreadable number becomes NaN and a missing field an
empty value (None for a missing number), so that `samples.validate_sample` reports it with the
file and record and `tempr1 prepare --skip_bad` can count it. A native record that cannot become a
sample at all (not a JSON object, a timestamp without its sentence, ...) is yielded as a `Dropped`
in its place, so that nothing disappears uncounted. Only an unreadable file raises (a `ValueError`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from data_pipeline import paths


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A native record an adapter did not turn into a sample, yielded where the sample would be.

    kind: short reason for counting ("missing_sentence", "not_json", ...); where: the record in
    the annotation file ("video 'AO8RW' query 9", "line 7", "record 3"); message: what is wrong.
    `expected` marks records left out by design (another `subset`, test videos without
    annotations): counted and reported, never an error.
    """

    kind: str
    where: str
    message: str
    expected: bool = False


def not_an_object(where: str, value: Any) -> Dropped:
    """The drop of a record that should be a JSON object."""
    return Dropped("not_an_object", where, f"expected a JSON object, got {type(value).__name__}")


def sentence_pairs(
    vid: str, sentences: Any, segments: Sequence[tuple[float, float]]
) -> Iterator[tuple[int, Any, tuple[float, float]] | Dropped]:
    """(index, sentence, segment) of the index-aligned `sentences` and `timestamps` of one video.

    A timestamp without its sentence (or a sentence without its timestamp) is `Dropped`, one per
    query; `sentences` that is not a list counts as empty.
    """
    sentences = sentences if isinstance(sentences, list) else []
    counts = f"({len(sentences)} sentences, {len(segments)} timestamps)"
    for i in range(max(len(sentences), len(segments))):
        where = f"video {vid!r} query {i}"
        if i >= len(sentences):
            start, end = segments[i]
            yield Dropped("missing_sentence", where, f"timestamp [{start:g}, {end:g}] has no sentence {counts}")
        elif i >= len(segments):
            yield Dropped("missing_timestamp", where, f"sentence {i} has no timestamp {counts}")
        else:
            yield i, sentences[i], segments[i]


PathLike = str | os.PathLike
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")


def as_paths(annotations: PathLike | Sequence[PathLike]) -> list[pathlib.Path]:
    """One path or a sequence of paths -> a list of `Path`s."""
    if isinstance(annotations, (str, os.PathLike)):
        return [pathlib.Path(annotations)]
    return [pathlib.Path(p) for p in annotations]


def single_path(annotations: PathLike | Sequence[PathLike], dataset: str) -> pathlib.Path:
    """The one annotation file of a single-file format."""
    paths = as_paths(annotations)
    if len(paths) != 1:
        raise ValueError(f"{dataset} reads exactly one annotation file, got {len(paths)}")
    return paths[0]


def read_json(path: pathlib.Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read JSON annotations {path}: {err}") from err


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header line."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except OSError as err:
        raise ValueError(f"cannot read CSV annotations {path}: {err}") from err


def expect_type(obj: Any, kind: type, path: pathlib.Path, what: str) -> Any:
    """Check the top-level JSON type of an annotation file."""
    if not isinstance(obj, kind):
        raise ValueError(f"{path}: expected {what}, got {type(obj).__name__}")
    return obj


def number(x: Any) -> float:
    """A float, or NaN when `x` is not a number (validation then reports the record)."""
    if isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def optional_number(x: Any) -> float | None:
    """None (or an empty CSV cell) stays None, so that validation says it is missing; anything else
    goes through `number`."""
    return None if x is None or x == "" else number(x)


def segment_list(raw: Any) -> list[tuple[float, float]]:
    """[[s, e], ...] -> list of float pairs; a malformed pair becomes (NaN, NaN)."""
    if not isinstance(raw, (list, tuple)):
        return []
    out = []
    for seg in raw:
        if isinstance(seg, (list, tuple)) and len(seg) == 2:
            out.append((number(seg[0]), number(seg[1])))
        else:
            out.append((math.nan, math.nan))
    return out


def chronological(segments: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Segments sorted by (start, end); NaN sorts last so a malformed one never moves the rest."""
    return tuple(sorted(segments, key=lambda seg: tuple(math.inf if math.isnan(t) else t for t in seg)))


def find_video(
    videos_dir: PathLike | None,
    stems: Sequence[str],
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> str:
    """The video file for a set of candidate names (relative paths without extension).

    With `videos_dir`, returns the first `videos_dir/stem+ext` that exists, trying every stem
    with every extension, as an absolute path; if none exists, the first candidate (so that
    validation reports the missing file). Without `videos_dir`, returns `stems[0] + ext[0]`.
    """
    if videos_dir is None:
        return stems[0] + extensions[0]
    base = paths.absolute(videos_dir)
    for stem in stems:
        for ext in extensions:
            candidate = base / (stem + ext)
            if candidate.is_file():
                return str(candidate)
    return str(base / (stems[0] + extensions[0]))


def probe_duration(path: str) -> float | None:
    """Container duration of a video file (local or a URL) in seconds (PyAV), None if unreadable."""
    import av  # Only adapters without durations in their annotations need it.

    try:
        with paths.media(path) as source, av.open(source) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (OSError, av.error.FFmpegError, IndexError):
        return None
    return None


_LETTERED = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*?)\s*$", re.DOTALL)


def lettered(text: Any) -> tuple[str | None, str]:
    """An option written with its letter ("B. text", "(B) text", "B) text", "B: text") -> ("B", "text");
    (None, text) when it has none."""
    match = _LETTERED.match(str(text))
    return (match[1], match[2]) if match else (None, str(text).strip())
