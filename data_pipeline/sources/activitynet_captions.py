"""ActivityNet Captions: `{vid: {duration, timestamps: [[s, e], ...], sentences: [...]}}`.

Two views of the same file: `load_tg` gives one TG sample per sentence (id `"{vid}#{i}"`);
`load_dtg` gives one DTG sample per video (id `vid`) whose query holds the video's sentences in
annotated order, one per line, with the index-aligned segments. Dropped (counted, see
`_common.Dropped`): an entry that is not an object; in the TG view also a timestamp without its
sentence and a sentence without its timestamp (the DTG view keeps them for validation to report).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
    sentence_pairs,
    single_path,
)

SOURCE_TG = "activitynet_captions_tg"
SOURCE_DTG = "activitynet_captions_dtg"


def _videos(annotations, dataset):
    path = single_path(annotations, dataset)
    data = expect_type(read_json(path), dict, path, "an object {vid: {...}}")
    for vid, entry in data.items():
        if not isinstance(entry, dict):
            yield not_an_object(f"video {vid!r}", entry)
            continue
        raw = entry.get("sentences")
        # A few sentences contain line breaks; whitespace is collapsed so DTG's one-per-line holds.
        sentences = [" ".join(str(s).split()) for s in raw] if isinstance(raw, list) else []
        segments = segment_list(entry.get("timestamps"))
        yield vid, optional_number(entry.get("duration")), sentences, segments


def _video_path(vid: str, videos_dir) -> str:
    # Files are named either after the annotation key ("v_<youtube id>") or the bare YouTube id.
    stems = [vid, vid[2:]] if vid.startswith("v_") else [vid]
    return find_video(videos_dir, stems)


def load_tg(
    annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None
) -> Iterator[Sample | Dropped]:
    """One TG sample per sentence."""
    for video_entry in _videos(annotations, SOURCE_TG):
        if isinstance(video_entry, Dropped):
            yield video_entry
            continue
        vid, duration, sentences, segments = video_entry
        video = _video_path(vid, videos_dir)
        for pair in sentence_pairs(vid, sentences, segments):
            if isinstance(pair, Dropped):
                yield pair
                continue
            i, sentence, segment = pair
            yield Sample(
                id=f"{vid}#{i}",
                task="tg",
                source=SOURCE_TG,
                query=sentence,
                video=video,
                duration=duration,
                segments=(segment,),
            )


def load_dtg(
    annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None
) -> Iterator[Sample | Dropped]:
    """One DTG sample per video (validation checks that sentences and segments pair up)."""
    for video_entry in _videos(annotations, SOURCE_DTG):
        if isinstance(video_entry, Dropped):
            yield video_entry
            continue
        vid, duration, sentences, segments = video_entry
        yield Sample(
            id=vid,
            task="dtg",
            source=SOURCE_DTG,
            query="\n".join(sentences),
            video=_video_path(vid, videos_dir),
            duration=duration,
            segments=tuple(segments),
        )
