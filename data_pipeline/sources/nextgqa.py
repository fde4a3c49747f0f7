"""NExT-GQA (grounded video QA, GVQA): the questions csv plus the grounding json.

- csv (`test.csv` / `val.csv`): `video_id, frame_count, width, height, question, answer, qid,
  type, a0..a4`; `answer` is the text of the right option (NExT-GQA), or its index 0-4 (NExT-QA's
  original form).
- grounding json (`gsub_test.json` / `gsub_val.json`): `{video_id: {duration, fps,
  location: {qid: [[s, e], ...]}}}` evidence spans in seconds.
- optional video map json (NExT-QA's `map_vid_vidorID.json`): `{video_id: "dir/name"}` for
  videos stored as `videos_dir/dir/name.mp4`; without it videos are `videos_dir/{video_id}.mp4`.

One sample per csv row, id `"{video_id}_{qid}"`, options a0..a4 as letters A-E, answer the letter
of the answer: the one option whose text it is, or the option it indexes. An answer that fits
several options (3842638015_4 in test.csv: D and E are both "happy", and the file has no index) or
none is not guessed: the sample gets no answer and validation rejects it, naming its id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from data_pipeline.samples import LETTERS, Sample
from data_pipeline.sources._common import (
    PathLike,
    as_paths,
    find_video,
    optional_number,
    read_csv,
    read_json,
    segment_list,
)

SOURCE = "nextgqa"
NUM_OPTIONS = 5


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """GVQA samples from the csv and the grounding json (and optionally the video map json)."""
    rows, grounding, video_map = _read_files(as_paths(annotations))
    for row in rows:
        vid, qid = row.get("video_id", ""), row.get("qid", "")
        entry = grounding.get(vid) if isinstance(grounding.get(vid), dict) else {}
        location = entry.get("location") if isinstance(entry.get("location"), dict) else {}
        options = tuple(row.get(f"a{i}", "") or "" for i in range(NUM_OPTIONS))
        answer = row.get("answer")
        letter = answer_letter(answer, options)
        yield Sample(
            id=f"{vid}_{qid}",
            task="gvqa",
            source=SOURCE,
            query=(row.get("question") or "").strip(),
            video=find_video(videos_dir, [video_map.get(vid, vid)]),
            duration=optional_number(entry.get("duration")),
            options=options,
            answer=letter,
            segments=tuple(segment_list(location.get(qid))),
            extra={
                "type": row.get("type", ""),
                "answer_text": options[LETTERS.index(letter)] if letter else (answer or ""),
            },
        )


def answer_letter(answer: str | None, options: Sequence[str]) -> str | None:
    """The letter of the one option `answer` names, by its text or by its index; None if it names
    none or several."""
    answer = (answer or "").strip()
    if not answer:
        return None
    named = {i for i, text in enumerate(options) if text.strip() == answer}
    if answer.isdigit() and int(answer) < len(options):
        named.add(int(answer))
    return LETTERS[named.pop()] if len(named) == 1 else None


def _read_files(paths):
    """Tell the three files apart: the csv by suffix, the json files by their content."""
    csvs = [p for p in paths if p.suffix.lower() == ".csv"]
    jsons = [p for p in paths if p.suffix.lower() == ".json"]
    if len(csvs) != 1 or len(jsons) not in (1, 2) or len(csvs) + len(jsons) != len(paths):
        raise ValueError(
            "nextgqa reads one questions .csv, one grounding .json and optionally the video "
            f"map .json; got {[str(p) for p in paths]}"
        )
    grounding, video_map = None, {}
    for path in jsons:
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        if all(isinstance(v, str) for v in data.values()):
            video_map = data
        elif grounding is None:
            grounding = data
        else:
            raise ValueError(f"nextgqa got two grounding json files: {[str(p) for p in jsons]}")
    if grounding is None:
        raise ValueError(f"nextgqa needs the grounding json (gsub_*.json); got {jsons}")
    return read_csv(csvs[0]), grounding, video_map
