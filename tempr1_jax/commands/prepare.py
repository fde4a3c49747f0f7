"""`tempr1 prepare`: native benchmark annotations -> validated unified samples on disk.

Reads the annotations with the dataset's adapter (`data_pipeline.sources.SOURCES`), validates
every record (`data_pipeline.samples.validate_sample`: finite times, start <= end, inside the
duration up to a small tolerance, answer letters; with `--videos` also media files present and each
video's duration within max(2 s, 5 %) of the annotated one) and either stops at the first bad
record, naming file and record (exit code 1), or with `--skip_bad` skips and counts them. Records
the adapter could not turn into samples (e.g. a Charades-STA timestamp without its sentence) are
bad records too; records left out by design (another `--subset`) are counted and reported.
Without `--videos` (or with `--no_video_check`) no media file is checked, and prepare says so.
Nothing is written unless validation finishes. Writes to `--out`:

- `{dataset}-{split}.array_record-00000-of-0000N`: one sample JSON per record (Grain reads it
  with `data_pipeline.arrayrecord_io.open_split(out, split)`);
- `{split}.jsonl`: the same samples, one per line (for `tempr1 score --targets`);
- `prepare_report.json`: per split, counts kept / skipped / left out (by reason), per task, and
  whether media files were checked (`media_checked`).

`--task NAME` relabels every sample (e.g. TimeRFT, by default `tvg`, as `tg` for TempR1's TG mix); the
new task must read the same answer form. `--disjoint_from FILE` (repeatable) refuses to write a split
that shares a sample id or a video with a prepared held-out split (`data_pipeline.splits`), e.g. the
NExT-GQA training split (prepared from its val files) against its test split.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

HELP = "Convert benchmark annotations to validated unified samples (ArrayRecord + JSONL)."
REPORT_NAME = "prepare_report.json"
SUBSET_DATASETS = ("activitynet13", "hacs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    from data_pipeline.sources import SOURCES

    parser.add_argument("--dataset", required=True, choices=sorted(SOURCES), help="annotation format")
    parser.add_argument(
        "--annotations",
        required=True,
        action="append",
        type=_path,
        help="annotation file; repeat for formats with several files (e.g. NExT-GQA csv + json)",
    )
    parser.add_argument("--videos", type=_path, default=None, help="directory of the video (or image) files")
    parser.add_argument("--out", required=True, type=_path, help="output directory")
    parser.add_argument("--split", default="test", help="split name for the output files (default: test)")
    parser.add_argument("--skip_bad", action="store_true", help="skip and count bad records instead of stopping")
    parser.add_argument(
        "--no_video_check",
        action="store_true",
        help="do not check the media files under --videos (existence, video durations)",
    )
    parser.add_argument("--subset", default=None, help="activitynet13/hacs: keep one subset, e.g. validation")
    parser.add_argument("--num_shards", type=int, default=1, help="number of ArrayRecord shards")
    parser.add_argument(
        "--negative_share",
        type=float,
        default=None,
        help="tpru_sequences: share of next/previous-frame questions whose answer is "
        "'none of the choices' (default 0.25)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="tpru_sequences: seed of the shuffles, distractors and negatives (default 0)",
    )
    parser.add_argument(
        "--task",
        default=None,
        help="relabel every sample with this task (same answer form), e.g. --dataset timerft --task tg",
    )
    parser.add_argument(
        "--disjoint_from",
        action="append",
        type=_path,
        default=[],
        help="a prepared held-out split (JSONL) that may share no sample id and no video with this one; repeatable",
    )


def _path(text: str):
    """A local path or a bucket URL (`data_pipeline.paths`); argparse reports a mangled URL."""
    from data_pipeline.paths import as_path

    return as_path(text)


def _progress(iterable, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=" records", mininterval=1.0, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Validate and write one split; 0 on success, 1 on a bad record, 2 on unusable input."""
    from data_pipeline import arrayrecord_io
    from data_pipeline.paths import local_copy
    from data_pipeline.samples import InvalidSampleError, read_jsonl, write_jsonl
    from data_pipeline.sources import ValidationReport, load_validated
    from data_pipeline.splits import LeakError, check_disjoint

    if "-" in args.split:
        print(f"error: --split may not contain '-', got {args.split!r}", file=sys.stderr)
        return 2
    if args.videos is not None and not args.videos.is_dir():
        print(f"error: --videos {args.videos} is not a directory", file=sys.stderr)
        return 2
    if args.subset is not None and args.dataset not in SUBSET_DATASETS:
        print(f"error: --subset applies to {', '.join(SUBSET_DATASETS)} only", file=sys.stderr)
        return 2
    kwargs = {"subset": args.subset} if args.subset is not None else {}
    for name in ("negative_share", "seed"):
        if getattr(args, name) is not None:
            if args.dataset != "tpru_sequences":
                print(f"error: --{name} applies to tpru_sequences only", file=sys.stderr)
                return 2
            kwargs[name] = getattr(args, name)
    report = ValidationReport()
    try:
        relabel = None if args.task is None else relabeller(args.task)
        held_out = [(path, read_jsonl(path)) for path in args.disjoint_from]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # the adapters read local files: bucket annotations are read from a local copy
        annotations = [local_copy(p) for p in args.annotations]
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records = load_validated(
        args.dataset,
        annotations,
        args.videos,
        skip_bad=args.skip_bad,
        check_files=not args.no_video_check,
        report=report,
        relabel=relabel,
        **kwargs,
    )
    try:
        with _progress(records, f"prepare {args.dataset}") as bar:
            samples = list(bar)
        for path, other in held_out:
            check_disjoint(samples, other, str(path))
    except (InvalidSampleError, LeakError) as err:
        hint = (
            "nothing was written"
            if isinstance(err, LeakError)
            else "stopped at the first bad record; --skip_bad skips and counts them"
        )
        print(f"error: {err}\n({hint})", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {args.dataset}: {err}", file=sys.stderr)
        return 2
    if not samples:
        _print_skipped(report, sys.stderr)
        print(f"error: no usable records in {', '.join(map(str, args.annotations))}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    shards = arrayrecord_io.write_split(args.out, args.split, samples, name=args.dataset, num_shards=args.num_shards)
    jsonl = args.out / f"{args.split}.jsonl"
    write_jsonl(jsonl, samples)
    media_checked = args.videos is not None and not args.no_video_check
    summary = {
        "dataset": args.dataset,
        "annotations": [str(p) for p in args.annotations],
        "videos": str(args.videos) if args.videos is not None else None,
        "media_checked": media_checked,
        **report.to_dict(),
        "by_task": dict(collections.Counter(s.task for s in samples)),
        "relabelled_as": args.task,
        "disjoint_from": [str(p) for p in args.disjoint_from],
        "files": [p.name for p in shards] + [jsonl.name],
    }
    _update_report(args.out / REPORT_NAME, args.split, summary)
    print(f"{args.dataset} {args.split}: kept {report.kept} of {report.total} records -> {args.out}")
    _print_skipped(report, sys.stdout)
    if report.left_out:
        reasons = ", ".join(f"{kind}: {count}" for kind, count in report.left_out.most_common())
        print(f"left out {sum(report.left_out.values())} by design ({reasons})")
    if not media_checked:
        why = "--no_video_check" if args.videos is not None else "no --videos given"
        print(
            f"note: media files were not checked ({why}): neither that they exist nor that the video "
            f"durations match the annotations; pass --videos to check them here (the training loader "
            f"skips and counts unusable ones)"
        )
    return 0


def _print_skipped(report, stream) -> None:
    """The number of skipped records per reason, with one example message each."""
    if report.skipped:
        print(f"skipped {sum(report.skipped.values())} bad records:", file=stream)
        for kind, count in report.skipped.most_common():
            print(f"  {kind}: {count}  e.g. {report.examples[kind]}", file=stream)


def _update_report(path, split: str, summary: dict) -> None:
    """Add or replace this split's entry, keeping other splits prepared into the same directory."""
    report = json.loads(path.read_text()) if path.is_file() else {"splits": {}}
    report["splits"][split] = summary
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def relabeller(task: str):
    """`sample -> sample` with `task` as its task; ValueError when the sample's own task reads another
    answer form (a TimeRFT `tvg` sample may become `tg`, not `dtg`)."""
    import dataclasses

    from tempr1_jax.tasks import get_task

    new = get_task(task)

    def relabel(sample):
        old = get_task(sample.task)
        if old.answer != new.answer:
            raise ValueError(
                f"cannot relabel sample {sample.id!r} from {old.name} ({old.answer} answers) "
                f"as {new.name} ({new.answer} answers)"
            )
        return dataclasses.replace(sample, task=task)

    return relabel
