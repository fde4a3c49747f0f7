"""Time-R1 grounding json: TimeRFT training sets and TVGBench.

A list of records in either of Time-R1's two layouts (both may appear in one file):

- TimeRFT (`train_2k5.json`): `video` (path), `duration`, `timestamp: [s, e]`, `sentence`,
  `video_start`, `video_end`, optional `qid`, `difficulty`.
- TVGBench (`tvgbench.json`): `path`, `duration`, `answer: "s-e"`, `question`, `start`, `end`,
  optional `dataset_name`, `qsemtype`.

Clip windows follow Time-R1's protocol: its datasets read `video_start`/`video_end`, so a TimeRFT
record with them set is that clip of the file, with `duration` and the segment relative to its start.
Time-R1's TVGBench evaluation ignores the TVGBench `start`/`end` fields (252 of the 800 records set
them): by default the sample is the whole file at `path`, with the record's `duration` and answer as
given, and the fields are kept in `extra["clip"]`. `windows=True` turns them into decode windows
instead (the file's [start, end] clip), a departure from the published protocol.

Ids are `"{video stem}#{record index}"` (TVGBench repeats some queries). Task `tvg` (Time-R1's
timestamp-aware IoU reward) by default. A record that is not an object is dropped and counted
(`_common.Dropped`).
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    Dropped,
    PathLike,
    expect_type,
    find_video,
    not_an_object,
    optional_number,
    read_json,
    segment_list,
    single_path,
)

_FLOAT = r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_ANSWER = re.compile(rf"^\s*({_FLOAT})\s*-\s*({_FLOAT})\s*$")
_EXTRA_KEYS = ("qid", "difficulty", "dataset_name", "qsemtype")


def parse_answer(answer: Any) -> tuple[float, float]:
    """TVGBench's "s-e" answer -> (s, e) seconds; (NaN, NaN) if it does not parse."""
    match = _ANSWER.match(answer) if isinstance(answer, str) else None
    return (float(match[1]), float(match[2])) if match else (math.nan, math.nan)


def load(
    annotations: PathLike | Sequence[PathLike],
    videos_dir: PathLike | None = None,
    *,
    source: str,
    task: str = "tvg",
    windows: bool = False,
) -> Iterator[Sample | Dropped]:
    """One grounding sample per record; `windows`: TVGBench `start`/`end` become decode windows."""
    path = single_path(annotations, source)
    records = expect_type(read_json(path), list, path, "a list of records")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            yield not_an_object(f"record {index}", record)
            continue
        extra = {key: record[key] for key in _EXTRA_KEYS if record.get(key) is not None}
        if "answer" in record:
            segment = parse_answer(record.get("answer"))
            file, query = record.get("path"), record.get("question")
            clip = (record.get("start"), record.get("end"))
            if not windows and clip != (None, None):
                extra["clip"], clip = list(clip), (None, None)
        else:
            segment = segment_list([record.get("timestamp")])[0]
            file, query = record.get("video"), record.get("sentence")
            clip = (record.get("video_start"), record.get("video_end"))
        stem = pathlib.PurePosixPath(str(file or "")).stem
        yield Sample(
            id=f"{stem}#{index}",
            task=task,
            source=source,
            query=str(query or "").strip(),
            video=find_video(videos_dir, [stem]),
            duration=optional_number(record.get("duration")),
            segments=(segment,),
            video_start=optional_number(clip[0]),
            video_end=optional_number(clip[1]),
            extra=extra,
        )
