"""Temporal action localisation in the ActivityNet json form (ActivityNet-1.3, HACS segments).

`{"database": {vid: {"duration": s, "subset": "training"|"validation"|"testing",
"annotations": [{"segment": [s, e], "label": name}, ...]}}}`. One TAL sample per (video, class)
with that class's instances in chronological order, id `"{vid}#{label}"`, query the class name.
Files are `v_{vid}.<ext>` or `{vid}.<ext>`. Left out by design and counted (`Dropped` with
`expected`): videos without annotations (the hidden test subset) and videos of another `subset`;
an entry that is not an object is a counted bad record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from data_pipeline.samples import Sample
from data_pipeline.sources._common import (
    Dropped,
    PathLike,
    chronological,
    expect_type,
    find_video,
    not_an_object,
    optional_number,
    read_json,
    segment_list,
    single_path,
)


def load(
    annotations: PathLike | Sequence[PathLike],
    videos_dir: PathLike | None = None,
    *,
    source: str,
    subset: str | None = None,
) -> Iterator[Sample | Dropped]:
    """TAL samples, optionally only videos of one `subset` (e.g. "validation")."""
    path = single_path(annotations, source)
    data = expect_type(read_json(path), dict, path, 'an object with a "database" key')
    database = expect_type(data.get("database"), dict, path, 'a "database" object')
    for vid, entry in database.items():
        where = f"video {vid!r}"
        if not isinstance(entry, dict):
            yield not_an_object(where, entry)
            continue
        if subset is not None and entry.get("subset") != subset:
            yield Dropped("not_in_subset", where, f"subset {entry.get('subset')!r}, not {subset!r}", expected=True)
            continue
        annotations = entry.get("annotations")
        if not annotations:
            yield Dropped("no_annotations", where, f"no annotations (subset {entry.get('subset')!r})", expected=True)
            continue
        if not isinstance(annotations, list):
            yield Dropped("bad_annotations", where, f"annotations must be a list, got {type(annotations).__name__}")
            continue
        by_label: dict[str, list[tuple[float, float]]] = {}
        for ann in annotations:
            ann = ann if isinstance(ann, dict) else {}
            segment = segment_list([ann.get("segment")])[0]
            by_label.setdefault(str(ann.get("label", "")), []).append(segment)
        stems = [vid, f"v_{vid}"] if not vid.startswith("v_") else [vid, vid[2:]]
        video = find_video(videos_dir, stems)
        for label, segments in by_label.items():
            yield Sample(
                id=f"{vid}#{label}",
                task="tal",
                source=source,
                query=label,
                video=video,
                duration=optional_number(entry.get("duration")),
                segments=chronological(segments),
                extra={"subset": entry.get("subset", "")},
            )
