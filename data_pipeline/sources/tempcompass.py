"""TempCompass multi-choice questions (`questions/multi-choice.json`), a general video benchmark of
TempR1 Fig. 3.

    {video_id: {dimension: [{"question": "What ...?\\nA. ...\\nB. ...", "answer": "B. ..."}, ...]}}

dimensions: action, speed, direction, order, attribute_change; some videos are `{id}_reverse`.
One `mcq` sample per question, id `"{video_id}_{dimension}_{k}"`; the option lines become `options`
and the answer is the letter the answer string starts with (the official script compares that
letter). `extra["dimension"]` is what the official accuracy is broken down by. Videos are
`{video_id}.mp4` (as in the release) under the videos directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from data_pipeline.samples import LETTERS, Sample
from data_pipeline.sources._common import PathLike, expect_type, find_video, lettered, read_json, single_path

SOURCE = "tempcompass"


def split_question(text: str) -> tuple[str, tuple[str, ...]]:
    """ "Question?\\nA. x\\nB. y" -> ("Question?", ("x", "y")): the trailing lines lettered A, B, ... in order."""
    lines = str(text).split("\n")
    options: list[str] = []
    start = len(lines)
    while start > 0:
        letter, body = lettered(lines[start - 1])
        if letter is None:
            break
        options.insert(0, (letter, body))
        start -= 1
    if [letter for letter, _ in options] != list(LETTERS[: len(options)]):
        return str(text).strip(), ()
    return "\n".join(lines[:start]).strip(), tuple(body for _, body in options)


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """One multiple-choice sample per question of the multi-choice file."""
    path = single_path(annotations, SOURCE)
    data = expect_type(read_json(path), dict, path, "an object {video_id: {dimension: [questions]}}")
    for vid, dimensions in data.items():
        for dimension, questions in (dimensions if isinstance(dimensions, dict) else {}).items():
            for k, record in enumerate(questions if isinstance(questions, list) else []):
                record = record if isinstance(record, dict) else {}
                query, options = split_question(record.get("question", ""))
                letter, _ = lettered(record.get("answer", ""))
                yield Sample(
                    id=f"{vid}_{dimension}_{k}",
                    task="mcq",
                    source=SOURCE,
                    query=query,
                    video=find_video(videos_dir, [str(vid)]),
                    options=options,
                    answer=letter,
                    extra={"dimension": str(dimension), "answer_text": str(record.get("answer", ""))},
                )
