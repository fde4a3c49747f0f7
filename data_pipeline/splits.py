"""Keeping evaluation samples out of training: overlap of two sets of unified samples.

A training split prepared from a benchmark that also provides the evaluation split must share
neither a sample id nor a video with it (a video seen in training with other questions still
leaks). `tempr1 prepare --disjoint_from HELD_OUT.jsonl` applies `check_disjoint` before writing.

Videos are compared by file name without directory and extension, so that splits prepared with
different `--videos` directories still compare; image samples are compared by id only.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

from data_pipeline.samples import Sample


def video_key(sample: Sample | Mapping[str, Any]) -> str | None:
    """The sample's video as a file stem ("videos/1234.mp4" -> "1234"), None for image samples."""
    video = sample.video if isinstance(sample, Sample) else sample.get("video")
    return pathlib.PurePath(str(video)).stem if video else None


def overlap(
    train: Iterable[Sample | Mapping[str, Any]], held_out: Iterable[Sample | Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Sample ids and video stems found in both sets (sorted)."""

    def keys(samples):
        ids, videos = set(), set()
        for s in samples:
            ids.add(str(s.id if isinstance(s, Sample) else s.get("id")))
            key = video_key(s)
            if key is not None:
                videos.add(key)
        return ids, videos

    train_ids, train_videos = keys(train)
    held_ids, held_videos = keys(held_out)
    return {"ids": sorted(train_ids & held_ids), "videos": sorted(train_videos & held_videos)}


class LeakError(ValueError):
    """A training split shares samples or videos with a held-out split."""


def check_disjoint(
    train: Iterable[Sample | Mapping[str, Any]], held_out: Iterable[Sample | Mapping[str, Any]], held_out_name: str
) -> None:
    """Raise `LeakError` naming the first shared ids and videos, if any."""
    shared = overlap(train, held_out)
    if shared["ids"] or shared["videos"]:
        raise LeakError(
            f"{len(shared['ids'])} sample id(s) and {len(shared['videos'])} video(s) are also in "
            f"{held_out_name}, e.g. ids {shared['ids'][:5]}, videos {shared['videos'][:5]}"
        )
