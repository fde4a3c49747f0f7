"""TPRU-style multi-image tasks, in this project's documented json form.

TPRU's public release has no fixed file layout, so the adapter reads a list of records

    {"id": "q1", "task": "order" | "mcq", "images": ["a.jpg", ...], "question": str,
     "options": [str, ...] (mcq only), "answer": "CABD" (order) | "B" (mcq)}

Image paths are relative to the media directory (`videos_dir`), or absolute. `order`: the images
are shown labelled A, B, ... and the answer is the letter string in true temporal order. `mcq`:
next- or previous-frame choice, one option letter (options may include a "none" choice). A record
that is not an object is dropped and counted (`_common.Dropped`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import Dropped, PathLike, expect_type, not_an_object, read_json, single_path

SOURCE = "tpru"


def load(
    annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None
) -> Iterator[Sample | Dropped]:
    """One multi-image sample per record."""
    path = single_path(annotations, SOURCE)
    records = expect_type(read_json(path), list, path, "a list of records")
    base = pathlib.Path(videos_dir).resolve() if videos_dir is not None else None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            yield not_an_object(f"record {index}", record)
            continue
        images = [str(p) for p in record.get("images") or []]
        options = record.get("options")
        yield Sample(
            id=str(record.get("id", index)),
            task=str(record.get("task", "")),
            source=SOURCE,
            query=str(record.get("question", "")).strip(),
            images=tuple(str(base / p) if base is not None else p for p in images),
            options=tuple(str(o) for o in options) if isinstance(options, list) else None,
            answer=str(record["answer"]) if record.get("answer") is not None else None,
        )
