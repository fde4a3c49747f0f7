"""DiDeMo (temporal grounding) in the LocalizingMoments json form.

A list of `{"annotation_id": int, "video": "<flickr id>.<ext>", "description": str,
"times": [[s_idx, e_idx], ...] (one pair per annotator), "num_segments": 5|6}`. Times are
indices of 5-second segments, inclusive: [s_idx, e_idx] -> [5 * s_idx, 5 * (e_idx + 1)] seconds.
DiDeMo videos are cut to at most 30 s, so the duration is `5 * num_segments` (30 s when the
field is absent). The target is the pair most annotators chose (ties: the first such pair); all
annotators' pairs stay in `extra["times"]`. An entry that is not an object is dropped and counted
(`_common.Dropped`).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    VIDEO_EXTENSIONS,
    Dropped,
    PathLike,
    expect_type,
    find_video,
    not_an_object,
    number,
    read_json,
    segment_list,
    single_path,
)

SOURCE = "didemo"
SEGMENT_SECONDS = 5.0
MAX_SEGMENTS = 6


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample | Dropped]:
    """One TG sample per description, id the annotation id."""
    path = single_path(annotations, SOURCE)
    entries = expect_type(read_json(path), list, path, "a list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            yield not_an_object(f"record {index}", entry)
            continue
        name = pathlib.PurePosixPath(str(entry.get("video", "")))
        num_segments = min(number(entry.get("num_segments", MAX_SEGMENTS)), MAX_SEGMENTS)
        times = segment_list(entry.get("times"))
        segment = (float("nan"), float("nan"))
        if times:
            s_idx, e_idx = collections.Counter(times).most_common(1)[0][0]
            segment = (SEGMENT_SECONDS * s_idx, SEGMENT_SECONDS * (e_idx + 1))
        # The annotated extension first, then the usual ones (downloads are often re-encoded).
        extensions = tuple(dict.fromkeys((name.suffix.lower() or ".mp4",) + VIDEO_EXTENSIONS))
        yield Sample(
            id=str(entry.get("annotation_id", index)),
            task="tg",
            source=SOURCE,
            query=str(entry.get("description", "")).strip(),
            video=find_video(videos_dir, [name.stem], extensions),
            duration=SEGMENT_SECONDS * num_segments,
            segments=(segment,),
            extra={"times": [list(t) for t in times]},
        )
