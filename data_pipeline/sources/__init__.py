"""Adapters from native benchmark annotation formats to unified samples.

`SOURCES[name](annotations, videos_dir=None, **kw)` yields `data_pipeline.samples.Sample`s and, in
place of a native record it could not turn into a sample, a `Dropped` (kind, where, message) so
that nothing is lost uncounted; `load` yields only the samples (and collects the drops on request).
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

from data_pipeline.samples import InvalidSampleError, Sample, duration_mismatch, resolve_path, validate_sample
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
from data_pipeline.sources._common import Dropped, as_paths, probe_duration

Source = Callable[..., Iterator[Sample | Dropped]]

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


def records(dataset: str, annotations, videos_dir=None, **kwargs) -> Iterator[Sample | Dropped]:
    """`SOURCES[dataset](...)`, samples and drops, with a clear error for an unknown dataset name."""
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[dataset](annotations, videos_dir, **kwargs)


def load(
    dataset: str, annotations, videos_dir=None, *, dropped: list[Dropped] | None = None, **kwargs
) -> Iterator[Sample]:
    """The samples of `records(...)`; the drops are appended to `dropped` when it is given."""
    return _samples(records(dataset, annotations, videos_dir, **kwargs), dropped)


def _samples(stream: Iterator[Sample | Dropped], dropped: list[Dropped] | None) -> Iterator[Sample]:
    for record in stream:
        if not isinstance(record, Dropped):
            yield record
        elif dropped is not None:
            dropped.append(record)


@dataclasses.dataclass
class ValidationReport:
    """Counts from `load_validated`: records read (`total`), kept, skipped per failed check (bad
    records, including those the adapter dropped), and left out by design (not in `total`)."""

    total: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)
    left_out: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def to_dict(self) -> dict:
        """JSON-ready form: counts plus one example message per skip reason."""
        return {
            "total": self.total,
            "kept": self.kept,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "example_by_reason": dict(self.examples),
            "left_out_by_reason": dict(self.left_out),
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
    """`records` followed by `validate_sample` on every sample, and a check that ids are unique.

    A bad record raises `InvalidSampleError` naming the annotation file(s) and the record (for a
    sample its 0-based number in the adapter's order and its id; for a record the adapter dropped,
    where it is in the file); with `skip_bad` it is skipped and counted in `report`. Records left
    out by design (`Dropped.expected`) are only counted. With `videos_dir` and `check_files`, every
    media file must exist and every video's duration (read with PyAV) must match the annotated one
    (`samples.duration_mismatch`); `check_files=False` skips both (paths are still resolved
    against `videos_dir`). `relabel` (e.g. a new task name, `tempr1 prepare --task`) maps each
    sample before validation.
    """
    report = report if report is not None else ValidationReport()
    files = ", ".join(str(p) for p in as_paths(annotations))
    seen: set[str] = set()
    file_durations: dict[str, float | None] = {}
    index = 0
    for sample in records(dataset, annotations, videos_dir, **kwargs):
        try:
            if isinstance(sample, Dropped):
                if sample.expected:
                    report.left_out[sample.kind] += 1
                    continue
                report.total += 1
                raise InvalidSampleError(f"{files} {sample.where}: {sample.message}", kind=sample.kind)
            report.total += 1
            if relabel is not None:
                sample = relabel(sample)
            where = f"{files} record {index}"
            index += 1
            validate_sample(sample, where=where, videos_dir=videos_dir if check_files else None)
            if check_files and videos_dir is not None and sample.video is not None:
                _check_duration(sample, where, videos_dir, file_durations)
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


def _check_duration(sample: Sample, where: str, videos_dir, file_durations: dict[str, float | None]) -> None:
    """InvalidSampleError unless the video file's duration matches the annotated one."""
    path = str(resolve_path(sample.video, videos_dir))
    if path not in file_durations:
        file_durations[path] = probe_duration(path)
    seconds = file_durations[path]
    if seconds is None:
        raise InvalidSampleError(
            f"{where} (id {sample.id!r}): cannot read the video's duration from {path} "
            f"(unreadable or no duration in the file)",
            kind="unreadable_video",
        )
    problem = duration_mismatch(sample.duration, seconds, sample.video_start, sample.video_end)
    if problem is not None:
        raise InvalidSampleError(f"{where} (id {sample.id!r}): {problem} ({path})", kind="duration_mismatch")
