"""QVHighlights (highlight detection, VHD): moment_detr JSONL, one query per line.

Fields used: `qid`, `query`, `vid`, `duration`, `relevant_windows` ([[s, e], ...] seconds).
`relevant_clip_ids` and `saliency_scores` (2-s clips, 3 annotators) are kept in `extra` for the
official highlight metrics. Videos are `{vid}.mp4` (e.g. `NUsG9BgSes0_210.0_360.0`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import PathLike, find_video, number, segment_list, single_path

SOURCE = "qvhighlights"


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """One VHD sample per line; a line that is not a JSON object gives an empty sample."""
    path = single_path(annotations, SOURCE)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                # Empty fields: validation reports this line as unusable.
                record = {"qid": f"line{line_no}"}
            vid = str(record.get("vid", ""))
            yield Sample(
                id=str(record.get("qid", f"line{line_no}")),
                task="vhd",
                source=SOURCE,
                query=str(record.get("query", "")).strip(),
                video=find_video(videos_dir, [vid]),
                duration=number(record.get("duration")),
                segments=tuple(segment_list(record.get("relevant_windows"))),
                extra={key: record[key] for key in ("relevant_clip_ids", "saliency_scores") if key in record},
            )
