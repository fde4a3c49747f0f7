"""Adapters from native benchmark annotation formats to unified samples.

`SOURCES[name](annotations, videos_dir=None, **kw)` yields `data_pipeline.samples.Sample`s;
`annotations` is one path or a sequence of paths (formats that need several files, e.g. NExT-GQA
or the Charades-STA text release, tell them apart by suffix and content). With `videos_dir`,
video paths are resolved to existing files (`{videos_dir}/{id}{ext}` for ext in .mp4, .mkv,
.webm, .avi) as absolute paths; without it they are relative names (`{id}.mp4`, or the
annotated file name). Adapters do not validate: see
`load_validated`, `samples.validate_sample` and `tempr1 prepare`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Iterator

from data_pipeline.samples import InvalidSampleError, Sample, validate_sample
from data_pipeline.sources import (
    activitynet_captions,
    charades_sta,
    didemo,
    mvbench,
    nextgqa,
    perception_test,
    qvhighlights,
    tal_database,
    tempcompass,
    thumos14,
    time_r1,
    tpru,
    videomme,
)
from data_pipeline.sources._common import as_paths

Source = Callable[..., Iterator[Sample]]

SOURCES: dict[str, Source] = {
    "charades_sta": charades_sta.load,
    "activitynet_captions_tg": activitynet_captions.load_tg,
    "activitynet_captions_dtg": activitynet_captions.load_dtg,
    "qvhighlights": qvhighlights.load,
    "nextgqa": nextgqa.load,
    "activitynet13": functools.partial(tal_database.load, source="activitynet13"),
    "hacs": functools.partial(tal_database.load, source="hacs"),
    "thumos14": thumos14.load,
    "didemo": didemo.load,
    "timerft": functools.partial(time_r1.load, source="timerft"),
    "tvgbench": functools.partial(time_r1.load, source="tvgbench"),
    "tpru": tpru.load,
    "tpru_sequences": tpru.load_sequences,
    # general video multiple-choice benchmarks (TempR1 Fig. 3), task mcq
    "tempcompass": tempcompass.load,
    "mvbench": mvbench.load,
    "videomme": videomme.load,
    "perception_test": perception_test.load,
}


def load(dataset: str, annotations, videos_dir=None, **kwargs) -> Iterator[Sample]:
    """`SOURCES[dataset](...)` with a clear error for an unknown dataset name."""
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[dataset](annotations, videos_dir, **kwargs)


@dataclasses.dataclass
class ValidationReport:
    """Counts from `load_validated`: records read, kept, and skipped per failed check."""

    total: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: counts plus one example message per skip reason."""
        return {
            "total": self.total,
            "kept": self.kept,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "example_by_reason": dict(self.examples),
        }


def load_validated(
    dataset: str,
    annotations,
    videos_dir=None,
    *,
    skip_bad: bool = False,
    check_files: bool = True,
    report: ValidationReport | None = None,
    relabel: Callable[[Sample], Sample] | None = None,
    **kwargs,
) -> Iterator[Sample]:
    """`load` followed by `validate_sample` on every record, and a check that ids are unique.

    `relabel` (e.g. a new task name, `tempr1 prepare --task`) maps each sample before validation.

    A bad record raises `InvalidSampleError` naming the annotation file(s) and the record number
    (0-based, in the adapter's order) and id; with `skip_bad` it is skipped and counted in
    `report`. `check_files=False` skips the media-file existence check (paths are still
    resolved against `videos_dir`).
    """
    report = report if report is not None else ValidationReport()
    files = ", ".join(str(p) for p in as_paths(annotations))
    seen: set[str] = set()
    for index, sample in enumerate(load(dataset, annotations, videos_dir, **kwargs)):
        report.total += 1
        if relabel is not None:
            sample = relabel(sample)
        where = f"{files} record {index}"
        try:
            validate_sample(sample, where=where, videos_dir=videos_dir if check_files else None)
            if sample.id in seen:
                raise InvalidSampleError(f"{where} (id {sample.id!r}): duplicate id", kind="duplicate_id")
        except InvalidSampleError as err:
            if not skip_bad:
                raise
            report.skipped[err.kind] += 1
            report.examples.setdefault(err.kind, str(err))
            continue
        seen.add(sample.id)
        report.kept += 1
        yield sample
