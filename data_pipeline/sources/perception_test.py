"""Perception Test multiple-choice video QA (`mc_question_{valid,test}.json`), a general video
benchmark of TempR1 Fig. 3.

    {video_id: {"metadata": {...}, "mc_question": [{"id": 0, "question": str,
                "options": [str, str, str], "answer_id": 1, "area": "memory",
                "reasoning": "descriptive", "tag": [str, ...]}, ...], ...}}

One `mcq` sample per question, id `"{video_id}_{id}"`, the answer the letter of `answer_id` (the
test split has none; its samples fail validation). `extra` keeps `area`, `reasoning` and `tag`,
which the official accuracy is broken down by. Videos are `{video_id}.mp4`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from data_pipeline.samples import LETTERS, Sample
from data_pipeline.sources._common import PathLike, expect_type, find_video, read_json, single_path

SOURCE = "perception_test"


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """One multiple-choice sample per question."""
    path = single_path(annotations, SOURCE)
    data = expect_type(read_json(path), dict, path, "an object {video_id: {metadata, mc_question}}")
    for vid, entry in data.items():
        questions = entry.get("mc_question") if isinstance(entry, dict) else None
        for k, question in enumerate(questions if isinstance(questions, list) else []):
            question = question if isinstance(question, dict) else {}
            options = tuple(str(o) for o in question.get("options") or ())
            answer_id = question.get("answer_id")
            valid = isinstance(answer_id, int) and not isinstance(answer_id, bool) and 0 <= answer_id < len(options)
            yield Sample(
                id=f"{vid}_{question.get('id', k)}",
                task="mcq",
                source=SOURCE,
                query=str(question.get("question", "")).strip(),
                video=find_video(videos_dir, [str(vid)]),
                options=options,
                answer=LETTERS[answer_id] if valid else None,
                extra={
                    "area": str(question.get("area", "")),
                    "reasoning": str(question.get("reasoning", "")),
                    "tag": [str(t) for t in question.get("tag") or ()],
                },
            )
