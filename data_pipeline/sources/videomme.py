"""Video-MME, a general video benchmark of TempR1 Fig. 3.

Two published layouts are read:

- the Hugging Face release (`videomme/test-00000-of-00001.parquet`, or the same rows as a json
  list): one row per question with `video_id` ("001"), `duration` ("short" | "medium" | "long"),
  `domain`, `sub_category`, `videoID` (the YouTube id, the video file's name), `question_id`
  ("001-1"), `task_type`, `question`, `options` (["A. ...", ...]) and `answer` ("A");
- the official result layout (the json the official `eval_your_results.py` reads): a list of
  videos with `video_id`, `duration`, `domain`, `sub_category`, `videoID` (optional) and
  `questions` [{`question_id`, `task_type`, `question`, `options`, `answer`}].

One `mcq` sample per question, id = `question_id`, options without their "A. " prefixes, the answer
letter as given. `extra` keeps `duration`, `domain`, `sub_category` and `task_type`, which the
official accuracy is broken down by. Videos are `{videoID}.mp4` (else `{video_id}.mp4`).
Reading parquet needs `pyarrow`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

from data_pipeline.samples import Sample
from data_pipeline.sources._common import PathLike, expect_type, find_video, lettered, read_json, single_path

SOURCE = "videomme"
CATEGORY_FIELDS = ("duration", "domain", "sub_category")


def _rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """Question rows of either layout (video fields copied onto each question)."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ValueError(f"{path}: reading parquet needs pyarrow ({err}); or give the rows as json") from err
        return pq.read_table(path).to_pylist()
    rows = []
    for entry in expect_type(read_json(path), list, path, "a list of questions or of videos"):
        entry = entry if isinstance(entry, dict) else {}
        if isinstance(entry.get("questions"), list):
            video = {k: v for k, v in entry.items() if k != "questions"}
            rows += [{**video, **q} for q in entry["questions"] if isinstance(q, dict)]
        else:
            rows.append(entry)
    return rows


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """One multiple-choice sample per question."""
    path = single_path(annotations, SOURCE)
    for index, row in enumerate(_rows(path)):
        stems = [str(v) for v in (row.get("videoID"), row.get("video_id")) if v]
        _letters, options = zip(*(lettered(o) for o in row.get("options") or ())) if row.get("options") else ((), ())
        yield Sample(
            id=str(row.get("question_id") or index),
            task="mcq",
            source=SOURCE,
            query=str(row.get("question", "")).strip(),
            video=find_video(videos_dir, stems or [str(index)]),
            options=tuple(options),
            answer=str(row["answer"]).strip() if row.get("answer") is not None else None,
            extra={k: str(row.get(k, "")) for k in (*CATEGORY_FIELDS, "task_type")},
        )
