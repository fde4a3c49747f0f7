"""Helpers shared by the dataset adapters: annotation paths, video lookup, lenient numbers.

Adapters never raise on a bad record: an unreadable number becomes NaN and a missing field an
empty value, so that `samples.validate_sample` reports it with the file and record and
`tempr1 prepare --skip_bad` can count it. Only an unreadable file raises (a `ValueError`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from data_pipeline import paths

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
    """None stays None; anything else goes through `number`."""
    return None if x is None else number(x)


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
    """Container duration of a video file in seconds (PyAV), None if unreadable."""
    import av  # Only adapters without durations in their annotations need it.

    try:
        with av.open(path) as container:
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
