"""THUMOS14 temporal action localisation in the MUSEG json form.

A list of `{"video": "thumos14/video_validation_0000051.mp4", "question": "... the action
category: 'billiards'.", "groundtruth": [[s, e], ...]}`, one entry per (video, class). The class
name is the quoted name in the question. The file has no durations: they are read from the video
files (PyAV) when `videos_dir` is given, else left unknown (validation then rejects the sample).
Video lookup tries the annotated relative path, then its file name, under `videos_dir`. An entry
that is not an object is dropped and counted (`_common.Dropped`).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    Dropped,
    PathLike,
    chronological,
    expect_type,
    find_video,
    not_an_object,
    probe_duration,
    read_json,
    segment_list,
    single_path,
)

SOURCE = "thumos14"
_CLASS = re.compile(r"'([^']+)'")


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample | Dropped]:
    """One TAL sample per entry, id `"{video stem}#{class}"`, instances in time order."""
    path = single_path(annotations, SOURCE)
    entries = expect_type(read_json(path), list, path, "a list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            yield not_an_object(f"record {index}", entry)
            continue
        rel = pathlib.PurePosixPath(str(entry.get("video", "")))
        question = str(entry.get("question", ""))
        found = _CLASS.findall(question)
        label = found[-1] if found else question.strip()
        video = find_video(videos_dir, [str(rel.with_suffix("")), rel.stem])
        duration = probe_duration(video) if videos_dir is not None else None
        yield Sample(
            id=f"{rel.stem}#{label}",
            task="tal",
            source=SOURCE,
            query=label,
            video=video,
            duration=duration,
            segments=chronological(segment_list(entry.get("groundtruth"))),
            extra={"question": question},
        )
