"""QVHighlights (highlight detection, VHD): moment_detr JSONL, one query per line.

Fields used: `qid`, `query`, `vid`, `duration`, `relevant_windows` ([[s, e], ...] seconds).
`relevant_clip_ids` and `saliency_scores` (2-s clips, 3 annotators) are kept in `extra` for the
official highlight metrics. Videos are `{vid}.mp4` (e.g. `NUsG9BgSes0_210.0_360.0`). Dropped
(counted, see `_common.Dropped`): a line that is not valid JSON or not a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    Dropped,
    PathLike,
    find_video,
    not_an_object,
    optional_number,
    segment_list,
    single_path,
)

SOURCE = "qvhighlights"


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample | Dropped]:
    """One VHD sample per line."""
    path = single_path(annotations, SOURCE)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield Dropped("not_json", f"line {line_no}", f"not valid JSON ({err.msg}, column {err.colno})")
                continue
            if not isinstance(record, dict):
                yield not_an_object(f"line {line_no}", record)
                continue
            vid = str(record.get("vid", ""))
            yield Sample(
                id=str(record.get("qid", f"line{line_no}")),
                task="vhd",
                source=SOURCE,
                query=str(record.get("query", "")).strip(),
                video=find_video(videos_dir, [vid]),
                duration=optional_number(record.get("duration")),
                segments=tuple(segment_list(record.get("relevant_windows"))),
                extra={key: record[key] for key in ("relevant_clip_ids", "saliency_scores") if key in record},
            )
