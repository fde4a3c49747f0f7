"""Charades-STA (temporal grounding), in both published forms.

- JSON form (VideoChat-R1 / Time-R1 repackaging): `{vid: {duration, timestamps: [[s, e], ...],
  sentences: [...]}}`.
- Original release: a text file with one `vid start end##sentence` per line, plus the Charades
  `Charades_v1_{split}.csv` (columns `id, ..., length`) for the video durations. Pass both files.

One TG sample per sentence, id `"{vid}#{i}"` with i the sentence's index within its video (the
same ids in both forms). Dropped (counted, see `_common.Dropped`): in the JSON form an entry that
is not an object, a timestamp without its sentence and a sentence without its timestamp; in the
text form a line without the `##` separator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    Dropped,
    PathLike,
    as_paths,
    expect_type,
    find_video,
    not_an_object,
    number,
    optional_number,
    read_csv,
    read_json,
    segment_list,
    sentence_pairs,
)

SOURCE = "charades_sta"


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample | Dropped]:
    """Charades-STA samples from a `.json` file, or from a `.txt` file plus a durations `.csv`."""
    paths = as_paths(annotations)
    by_suffix = {p.suffix.lower(): p for p in paths}
    if set(by_suffix) == {".json"} and len(paths) == 1:
        yield from _from_json(paths[0], videos_dir)
    elif set(by_suffix) == {".txt", ".csv"} and len(paths) == 2:
        yield from _from_text(by_suffix[".txt"], by_suffix[".csv"], videos_dir)
    else:
        raise ValueError(
            f"charades_sta reads one .json file, or one .txt file and one .csv of durations; "
            f"got {[str(p) for p in paths]}"
        )


def _sample(vid: str, index: int, sentence, segment, duration, videos_dir) -> Sample:
    return Sample(
        id=f"{vid}#{index}",
        task="tg",
        source=SOURCE,
        query=str(sentence).strip(),
        video=find_video(videos_dir, [vid]),
        duration=duration,
        segments=(segment,),
    )


def _from_json(path, videos_dir) -> Iterator[Sample | Dropped]:
    data = expect_type(read_json(path), dict, path, "an object {vid: {...}}")
    for vid, entry in data.items():
        if not isinstance(entry, dict):
            yield not_an_object(f"video {vid!r}", entry)
            continue
        duration = optional_number(entry.get("duration"))
        for pair in sentence_pairs(vid, entry.get("sentences"), segment_list(entry.get("timestamps"))):
            yield pair if isinstance(pair, Dropped) else _sample(vid, *pair, duration, videos_dir)


def _from_text(text_path, csv_path, videos_dir) -> Iterator[Sample | Dropped]:
    durations = {row.get("id", ""): optional_number(row.get("length")) for row in read_csv(csv_path)}
    seen: dict[str, int] = {}
    with open(text_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if "##" not in line:
                yield Dropped("no_sentence", f"line {line_no}", "no '##' between the times and the sentence")
                continue
            head, _, sentence = line.partition("##")
            fields = head.split()
            vid = fields[0] if fields else ""
            times = [number(t) for t in fields[1:3]] + [float("nan")] * (3 - len(fields))
            index = seen.get(vid, 0)
            seen[vid] = index + 1
            duration = durations.get(vid)
            yield _sample(vid, index, sentence, (times[0], times[1]), duration, videos_dir)
