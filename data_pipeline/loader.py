"""The Grain input pipeline: unified samples -> decoded, tokenised, bucketed batches.

Training (`make_loader`):

    per source: MapDataset(selected records)[shard::n_shards] -> shuffle(seed + i) -> repeat(num_epochs)
                -> map(decode video/images, patchify, prompt ids, build_model_inputs)
    MapDataset.mix(sources, weights) -> to_iter_dataset(read threads)
    -> batches (skipped samples dropped, batches stay full; padded to shape buckets)
    -> mp_prefetch(num_workers) -> stats (skip counts; part of the iterator state)

A source may use a seeded random subset of its records (`SourceConfig.max_samples` / `fraction`);
`mixture_counts` reports what an epoch draws per source and per task (logged when a training loader
is built).

Evaluation (`make_eval_loader`): the sources concatenated in order, one pass, no shuffle or mixing,
every sample kept; the last batch (of each worker) is completed with padding rows (`valid` False).

A sample whose video or image is missing, a directory, corrupt or truncated (`VideoDecodeError`),
whose video's decoded duration differs from the annotated one by more than max(2 s, 5 %)
(`samples.duration_mismatch`), or whose tokens or patches exceed the largest bucket, is skipped:
the batcher takes the next sample instead, the skip is reported in the batch (`skipped`) and
counted per source and reason (`iterator.skip_counts()`; totals in `stats()`). The log names each
skipped sample once (the first `_MAX_SAMPLE_LINES`) and sums up the counts at most once a minute.

A training source that yields nothing usable stops the loader with `UnusableSourceError` (naming
the source, its media directory and the reasons) once 2 x its size consecutive samples of it were
skipped, or when a finite run ends after a whole pass of it was skipped, instead of retrying
forever. With `should_stop` (e.g. the trainer's SIGTERM flag), `next()` polls it while it waits
and raises `LoaderStopped` within a fraction of a second; `get_state()` is then the state before
the interrupted batch, so a checkpoint written after the stop resumes exactly.

Each batch is a dict:
  inputs:          `ModelInputs` [B, L] / [B, P, D] with L and P the smallest fitting buckets;
                   tokens padded on `padding_side` (left for generation), patches at the end.
  completion_mask: [B, L] int32, only with `answer_builders` (SFT): 1 on answer + eos tokens.
  samples:         the raw unified samples (dicts) of the valid rows, in row order.
  valid:           [B] bool; False only on the padding rows of the last evaluation batch.
  skipped:         [{"id", "task", "source", "kind", "reason"}] of samples skipped since the last batch;
                   `source` is the `SourceConfig.label`, `kind` one of SKIP_KINDS.

The returned iterator is a `grain.DatasetIterator`: `get_state()` / `set_state()` (JSON-able
dicts) restore it so that it continues with exactly the same batches, and it works with orbax via
`grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`. Batch content depends on
`num_workers` (each worker batches its own slice), so restore with the same worker count.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import grain
import numpy as np
import transformers
from absl import flags

from data_pipeline import arrayrecord_io, paths, video
from data_pipeline.prompts import PromptBuilder, build_prompt_ids, build_sft_ids
from data_pipeline.samples import duration_mismatch, resolve_path
from data_pipeline.vision_inputs import PreprocessorValues, merged_token_count, patchify_images, patchify_video
from models.qwen2_5_vl.config import Qwen2_5_VLConfig
from models.qwen2_5_vl.inputs import ModelInputs, batch_layout_sizes, build_model_inputs, collate_model_inputs

log = logging.getLogger(__name__)

AnswerBuilder = Callable[[Mapping[str, Any]], str]
StopCheck = Callable[[], bool]
_RECENT_SKIPS = 100  # skip records kept in memory for `stats()`
_MAX_SAMPLE_LINES = 100  # skipped samples named in the log; later ones are only counted
_SUMMARY_SECONDS = 60.0  # at most one "skipped so far" summary line per minute
_STOP_POLL_SECONDS = 0.2  # how often a waiting `next()` checks `should_stop`
# Reasons a sample is skipped: VideoDecodeError kinds, then the loader's own checks.
SKIP_KINDS = ("missing_file", "not_a_file", "decode_error", "duration_mismatch", "too_long")


class LoaderStopped(Exception):
    """`next()` gave up waiting because `should_stop()` became true; the state is that before the batch."""


class UnusableSourceError(ValueError):
    """A training source whose samples are all skipped (e.g. a wrong media directory)."""


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One task source: a JSONL file of unified samples, or an ArrayRecord split (`split` set).

    weight: mixing weight; leave every source's weight None to mix in proportion to the sizes of the
      (selected) sources, so that an epoch draws each selected record once.
    media_dir: directory that relative `video` / `images` paths are resolved against.
    max_samples / fraction: use only a random subset of the source's records, of at most
      `max_samples` records and at most round(fraction * size) (at least 1); the smaller bound wins.
    seed: seed of that subset. The subset is drawn from the whole source before sharding, so every
      process, the curriculum and `mixture_counts` see the same records; it keeps the file order.
    """

    path: str
    weight: float | None = None
    split: str | None = None
    media_dir: str | None = None
    max_samples: int | None = None
    fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_samples is not None and (isinstance(self.max_samples, bool) or self.max_samples < 1):
            raise ValueError(f"source {self.path}: max_samples must be an integer >= 1, got {self.max_samples!r}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"source {self.path}: fraction must be in (0, 1], got {self.fraction!r}")

    @property
    def label(self) -> str:
        """The source's name in skip records and counts: the path, with `:split` for a split."""
        return self.path if self.split is None else f"{self.path}:{self.split}"


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """Everything that shapes the batches. `batch_size` is per process (each reads its own shard).

    token_buckets / patch_buckets: allowed padded lengths (tokens per row, patches per row); a batch
    takes the smallest that fits its longest row, so each step shape compiles once. Patch buckets
    must be multiples of the model's merge unit (4). num_epochs None repeats forever; with a finite
    count the mixture ends when the first source (relative to its weight) runs out, so every sample
    is used when the weights are left proportional to the source sizes (None).
    padding_side: "left" for generation (GRPO prompts), "right" is usual for SFT.
    label_images: precede the images of a multi-image prompt with "Image A: ", "Image B: ", ...
    num_workers 0 decodes in this process (with `read_threads` threads); N > 0 uses N processes.
    shard_index / shard_count default to `jax.process_index()` / `jax.process_count()`.
    """

    sources: tuple[SourceConfig, ...]
    batch_size: int = 8
    token_buckets: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    patch_buckets: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
    seed: int = 0
    num_epochs: int | None = None
    num_workers: int = 0
    worker_buffer_size: int = 2
    read_threads: int = 2
    padding_side: Literal["left", "right"] = "left"
    system_prompt: str | None = None
    label_images: bool = False
    fps: float = video.FPS
    min_frames: int = video.MIN_FRAMES
    max_frames: int = video.MAX_FRAMES
    min_pixels: int = video.MIN_PIXELS
    max_pixels: float = video.VIDEO_MAX_PIXELS
    total_pixels: float = video.VIDEO_TOTAL_PIXELS
    image_min_pixels: int = video.IMAGE_MIN_PIXELS
    image_max_pixels: float = video.IMAGE_MAX_PIXELS
    preprocessor: PreprocessorValues = dataclasses.field(default_factory=PreprocessorValues)
    shard_index: int | None = None
    shard_count: int | None = None

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("LoaderConfig.sources must not be empty")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("token_buckets", "patch_buckets"):
            buckets = getattr(self, name)
            if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
                raise ValueError(f"{name} must be increasing positive integers, got {buckets}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (infinite), got {self.num_epochs}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        weights = [s.weight for s in self.sources]
        if any(w is None for w in weights) and any(w is not None for w in weights):
            raise ValueError("give a weight to every source or to none (None = proportional to size)")
        if any(w is not None and not w > 0 for w in weights):
            raise ValueError(f"source weights must be > 0, got {weights}")
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError("shard_index and shard_count must be given together")
        if self.shard_count is not None and not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"need 0 <= shard_index < shard_count, got {self.shard_index}, {self.shard_count}")


def make_loader(
    config: LoaderConfig,
    tokenizer: transformers.PreTrainedTokenizerBase,
    model_config: Qwen2_5_VLConfig,
    prompt_builders: Mapping[str, PromptBuilder],
    answer_builders: Mapping[str, AnswerBuilder] | None = None,
    should_stop: StopCheck | None = None,
) -> LoaderIterator:
    """The training iterator: mixed, shuffled (per epoch), sharded, bucketed, full batches.

    `prompt_builders[task](sample) -> str` gives each task's prompt text (the task registry's);
    with `answer_builders` (SFT) each row is prompt + answer + eos with a `completion_mask`.
    `should_stop()` (cheap and signal-safe, e.g. reading a flag a SIGTERM handler sets) lets a
    waiting `next()` give up with `LoaderStopped`.
    """
    shard_index, shard_count = _shard(config)
    prepare = _Prepare(config, tokenizer, model_config, prompt_builders, answer_builders)
    log.info("%s", format_mixture(mixture_counts(config.sources)))
    parts, sizes = [], []
    sources: dict[str, _SourceSize] = {}
    for i, source in enumerate(config.sources):
        records = source_records(source)[shard_index::shard_count]
        if len(records) == 0:
            raise ValueError(f"source {source.path} has no records for shard {shard_index} of {shard_count}")
        sizes.append(len(records))
        known = sources.get(source.label, _SourceSize(0, source.media_dir))
        sources[source.label] = _SourceSize(known.size + len(records), source.media_dir)
        ds = records.shuffle(seed=(config.seed + i) % 2**32).repeat(config.num_epochs)
        parts.append(ds.map(_SourcePrepare(prepare, source)))
    weights = [s.weight for s in config.sources]
    mixed = grain.MapDataset.mix(parts, sizes if weights[0] is None else weights)
    return _pipeline(mixed, config, prepare, pad_last=False, sources=sources, should_stop=should_stop)


def make_eval_loader(
    config: LoaderConfig,
    tokenizer: transformers.PreTrainedTokenizerBase,
    model_config: Qwen2_5_VLConfig,
    prompt_builders: Mapping[str, PromptBuilder],
    should_stop: StopCheck | None = None,
) -> LoaderIterator:
    """The evaluation iterator: sources in order, one pass, every sample, deterministic batches.

    Weights, seed and num_epochs are ignored. The last batch is filled with padding rows
    (`valid` False) so every batch has `batch_size` rows; skipped samples appear in `skipped`
    (a pass in which every sample is skipped yields such batches; the caller decides). See
    `make_loader` for `should_stop`.
    """
    shard_index, shard_count = _shard(config)
    prepare = _Prepare(config, tokenizer, model_config, prompt_builders, None)
    parts = [source_records(s).map(_SourcePrepare(prepare, s)) for s in config.sources]
    ordered = grain.MapDataset.concatenate(parts)[shard_index::shard_count]
    return _pipeline(ordered, config, prepare, pad_last=True, sources=None, should_stop=should_stop)


# ----------------------------------------------------------------------------------------------
# reading and per-sample preparation


def _shard(config: LoaderConfig) -> tuple[int, int]:
    if config.shard_count is not None:
        return config.shard_index, config.shard_count
    import jax  # only when the shard comes from the JAX runtime

    return jax.process_index(), jax.process_count()


def source_records(source: SourceConfig) -> grain.MapDataset:
    """The source's selected records (see `SourceConfig.max_samples`) as a MapDataset of JSON
    text/bytes (parsed lazily in the map)."""
    records = _all_records(source)
    keep = subset_indices(len(records), source)
    return grain.MapDataset.source(records if len(keep) == len(records) else _Subset(records, keep))


def _all_records(source: SourceConfig) -> Sequence[str | bytes]:
    if source.split is not None:
        return arrayrecord_io.open_split(source.path, source.split)
    path = paths.as_path(source.path)
    if not path.is_file():
        raise ValueError(f"source file not found: {path}")
    lines = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {line_no}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {line_no}: expected a JSON object (a sample), got {type(record).__name__}")
        lines.append(line)
    return lines


def subset_indices(size: int, source: SourceConfig) -> np.ndarray:
    """Ascending positions of the records a source of `size` records uses: all of them, or a random
    subset (seeded with `source.seed`) of the size `max_samples` / `fraction` allow."""
    keep = size
    if source.fraction is not None:
        keep = min(keep, max(1, round(source.fraction * size)))
    if source.max_samples is not None:
        keep = min(keep, source.max_samples)
    if keep >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(source.seed).choice(size, keep, replace=False))


class _Subset:
    """The records of `parent` at `indices` (a random-access source; picklable for worker processes)."""

    def __init__(self, parent: Sequence[str | bytes], indices: np.ndarray):
        self._parent = parent
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> str | bytes:
        return self._parent[int(self._indices[index])]

    def __repr__(self) -> str:
        return f"_Subset({self._parent!r}, {len(self._indices)} records)"


def mixture_counts(sources: Sequence[SourceConfig], epoch_samples: int | None = None) -> dict[str, Any]:
    """What an epoch of the training mixture draws, per source and per task.

    Per source: `available` records, `selected` ones (after `max_samples` / `fraction`), its mixing
    `share` (its weight over the sum, or its selected size over the total when no weights are given)
    and `per_epoch` = share x `epoch_samples` (default: the selected total, i.e. one pass over every
    selected record with size-proportional mixing); `tasks` counts the selected records per task.
    The top-level `tasks` is the expected number of samples per task in the epoch.
    """
    rows = []
    for source in sources:
        records = _all_records(source)
        keep = subset_indices(len(records), source)
        tasks = collections.Counter(str(json.loads(records[int(i)]).get("task")) for i in keep)
        rows.append(
            {
                "path": source.path,
                "split": source.split,
                "available": len(records),
                "selected": len(keep),
                "weight": source.weight,
                "tasks": dict(sorted(tasks.items())),
            }
        )
    selected = sum(r["selected"] for r in rows)
    total = selected if epoch_samples is None else int(epoch_samples)
    weights = [r["selected"] if r["weight"] is None else r["weight"] for r in rows]
    by_task: collections.Counter = collections.Counter()
    for row, weight in zip(rows, weights):
        row["share"] = weight / sum(weights) if sum(weights) > 0 else 0.0
        row["per_epoch"] = row["share"] * total
        for task, count in row["tasks"].items():
            by_task[task] += row["per_epoch"] * count / row["selected"]
    return {
        "epoch_samples": total,
        "selected": selected,
        "sources": rows,
        "tasks": {task: round(n, 1) for task, n in sorted(by_task.items())},
    }


def format_mixture(counts: Mapping[str, Any]) -> str:
    """`mixture_counts` as a small text table (one line per source, then per task)."""
    lines = [f"training mixture: {counts['selected']} selected records, {counts['epoch_samples']} samples per epoch"]
    for row in counts["sources"]:
        name = row["path"] + (f" [{row['split']}]" if row["split"] else "")
        tasks = ", ".join(f"{t} {n}" for t, n in row["tasks"].items())
        lines.append(
            f"  {name}: {row['selected']} of {row['available']} records ({tasks}), share "
            f"{100 * row['share']:.1f}% -> {row['per_epoch']:.0f} per epoch"
        )
    lines.append("  per task per epoch: " + ", ".join(f"{t} {n:.0f}" for t, n in counts["tasks"].items()))
    return "\n".join(lines)


class _Prepare:
    """Record -> one unbatched element (or a skip marker). Picklable for worker processes."""

    def __init__(self, config, tokenizer, model_config, prompt_builders, answer_builders):
        if config.preprocessor.merge_size != model_config.vision.spatial_merge_size:
            raise ValueError(
                f"preprocessor merge_size {config.preprocessor.merge_size} != model spatial_merge_size "
                f"{model_config.vision.spatial_merge_size}"
            )
        if any(p % model_config.vision.merge_unit for p in config.patch_buckets):
            raise ValueError(
                f"patch_buckets {config.patch_buckets} must be multiples of {model_config.vision.merge_unit}"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token")
        self.config = config
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.prompt_builders = dict(prompt_builders)
        self.answer_builders = None if answer_builders is None else dict(answer_builders)

    def __call__(self, record: str | bytes, source: SourceConfig) -> dict[str, Any]:
        sample = json.loads(record)
        task = sample.get("task")
        if task not in self.prompt_builders:
            raise ValueError(
                f"sample {sample.get('id')!r}: no prompt builder for task {task!r} "
                f"(have {sorted(self.prompt_builders)})"
            )
        if self.answer_builders is not None and task not in self.answer_builders:
            raise ValueError(f"sample {sample.get('id')!r}: no answer builder for task {task!r}")
        try:
            vision = self._vision(sample, source.media_dir)
        except _Unusable as err:
            return _skip(sample, source, err.kind, err.reason)
        counts = {
            "image_token_counts": merged_token_count(
                vision.get("image_grid_thw", np.zeros((0, 3))), self.config.preprocessor
            ).tolist(),
            "video_token_counts": merged_token_count(
                vision.get("video_grid_thw", np.zeros((0, 3))), self.config.preprocessor
            ).tolist(),
            "system_prompt": self.config.system_prompt,
            "label_images": self.config.label_images,
        }
        builder = self.prompt_builders[task]
        element: dict[str, Any] = {"sample": sample}
        if self.answer_builders is None:
            ids = build_prompt_ids(self.tokenizer, sample, builder, **counts)
        else:
            ids, mask = build_sft_ids(self.tokenizer, sample, builder, self.answer_builders[task](sample), **counts)
            element["completion_mask"] = mask
        n_patches = sum(len(vision[k]) for k in ("pixel_values", "pixel_values_videos") if k in vision)
        if len(ids) > self.config.token_buckets[-1] or n_patches > self.config.patch_buckets[-1]:
            return _skip(
                sample,
                source,
                "too_long",
                f"too long: {len(ids)} tokens, {n_patches} patches exceed the largest buckets "
                f"{self.config.token_buckets[-1]}, {self.config.patch_buckets[-1]}",
            )
        element["inputs"] = build_model_inputs(self.model_config, ids[None], **vision)
        element["source"] = source.label
        return element

    def _vision(self, sample: Mapping[str, Any], media_dir: str | None) -> dict[str, Any]:
        """Model vision arguments of the sample (empty for a text-only sample); `_Unusable` if it has none."""
        c = self.config
        try:
            if sample.get("video"):
                path = resolve_path(sample["video"], media_dir)
                frames, info = video.read_video(
                    path,
                    fps=c.fps,
                    min_frames=c.min_frames,
                    max_frames=c.max_frames,
                    min_pixels=c.min_pixels,
                    max_pixels=c.max_pixels,
                    total_pixels=c.total_pixels,
                    video_start=sample.get("video_start"),
                    video_end=sample.get("video_end"),
                )
                problem = duration_mismatch(
                    sample.get("duration"), info["duration"], sample.get("video_start"), sample.get("video_end")
                )
                if problem is not None:
                    raise _Unusable("duration_mismatch", f"{path}: {problem}")
                pixels, grid, seconds = patchify_video(frames, info["sample_fps"], c.preprocessor)
                return {
                    "pixel_values_videos": pixels,
                    "video_grid_thw": grid,
                    "second_per_grid_ts": np.asarray([seconds], np.float32),
                }
            if sample.get("images"):
                images = [
                    video.read_image(resolve_path(p, media_dir), c.image_min_pixels, c.image_max_pixels)
                    for p in sample["images"]
                ]
                pixels, grid = patchify_images(images, c.preprocessor)
                return {"pixel_values": pixels, "image_grid_thw": grid}
        except video.VideoDecodeError as err:
            raise _Unusable(err.kind, str(err)) from None
        return {}

    def padding_row(self) -> dict[str, Any]:
        """An all-padding element (no tokens attended, no patches) for filling the last eval batch."""
        pad = self.tokenizer.pad_token_id
        inputs = build_model_inputs(
            self.model_config, np.asarray([[pad]], np.int32), attention_mask=np.zeros((1, 1), np.int32)
        )
        return {"inputs": inputs, "completion_mask": np.zeros(1, np.int32)}


@dataclasses.dataclass(frozen=True)
class _SourcePrepare:
    """`_Prepare` bound to one source (its media directory)."""

    prepare: _Prepare
    source: SourceConfig

    def __call__(self, record: str | bytes) -> dict[str, Any]:
        return self.prepare(record, self.source)


class _Unusable(Exception):
    """A sample to skip: `kind` (one of SKIP_KINDS) and the message."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _skip(sample: Mapping[str, Any], source: SourceConfig, kind: str, reason: str) -> dict[str, Any]:
    """The skip marker that takes the sample's place in the stream (logged once by `LoaderIterator`)."""
    return {
        "skip": {
            "id": str(sample.get("id")),
            "task": str(sample.get("task")),
            "source": source.label,
            "kind": kind,
            "reason": reason,
        }
    }


# ----------------------------------------------------------------------------------------------
# batching, prefetching, statistics


@dataclasses.dataclass(frozen=True)
class _SourceSize:
    """A training source's records in this shard (one pass) and its media directory, for the skip limit."""

    size: int
    media_dir: str | None


def _pipeline(
    ds: grain.MapDataset,
    config: LoaderConfig,
    prepare: _Prepare,
    pad_last: bool,
    sources: dict[str, _SourceSize] | None,
    should_stop: StopCheck | None,
) -> LoaderIterator:
    read = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=max(config.batch_size, 1))
    # Worker processes cannot see the caller's flag; there the main process's wait is interrupted.
    batch_stop = should_stop if config.num_workers == 0 else None
    it_ds = _Batches(
        ds.to_iter_dataset(read), _Collate(config, prepare), config.batch_size, pad_last, sources, batch_stop
    )
    if config.num_workers > 0:
        # Grain's worker processes read absl flags; outside an absl app (our argparse CLI, pytest)
        # they are unparsed, so take their defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.num_workers, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return iter(_Stats(it_ds, should_stop))


def _bucket(n: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if b >= n)


class _Collate:
    """Rows -> one batch dict padded to the smallest fitting token and patch buckets."""

    def __init__(self, config: LoaderConfig, prepare: _Prepare):
        self.config = config
        self.prepare = prepare

    def __call__(self, items: list[dict], n_rows: int, skipped: list[dict]) -> dict[str, Any]:
        rows = items + [self.prepare.padding_row()] * (n_rows - len(items))
        inputs: list[ModelInputs] = [r["inputs"] for r in rows]
        length = _bucket(max(x.seq_len for x in inputs), self.config.token_buckets)
        patches = _bucket(max(x.num_patches for x in inputs), self.config.patch_buckets)
        batch = {
            "inputs": collate_model_inputs(
                inputs,
                length,
                patches,
                padding_side=self.config.padding_side,
                pad_token_id=self.prepare.tokenizer.pad_token_id,
                pad_layout_to=batch_layout_sizes(self.prepare.model_config, inputs, patches),
            ),
            "samples": [r["sample"] for r in items],
            "valid": np.arange(n_rows) < len(items),
            "skipped": skipped,
        }
        if self.prepare.answer_builders is not None:
            batch["completion_mask"] = np.stack([self._pad(r["completion_mask"], length) for r in rows])
        return batch

    def _pad(self, mask: np.ndarray, length: int) -> np.ndarray:
        extra = length - len(mask)
        return np.pad(mask, (extra, 0) if self.config.padding_side == "left" else (0, extra))


class _Batches(grain.IterDataset):
    """Groups prepared elements into batches of `batch_size` good rows, dropping skip markers.

    A batch is only emitted once complete, so between batches no element is held back and the
    state is the parent's. The final partial batch is dropped (training) or padded (`pad_last`).
    With `sources` (training), a source whose consecutive skips reach 2 x its size, or a whole
    pass of it when the data ends, raises `UnusableSourceError`.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        collate: _Collate,
        batch_size: int,
        pad_last: bool,
        sources: dict[str, _SourceSize] | None,
        should_stop: StopCheck | None,
    ):
        super().__init__(parent)
        self._collate = collate
        self._batch_size = batch_size
        self._pad_last = pad_last
        self._sources = sources
        self._should_stop = should_stop

    def __iter__(self) -> grain.DatasetIterator:
        return _BatchesIterator(
            self._parent.__iter__(), self._collate, self._batch_size, self._pad_last, self._sources, self._should_stop
        )


class _BatchesIterator(grain.DatasetIterator):
    def __init__(
        self,
        parent: grain.DatasetIterator,
        collate: _Collate,
        batch_size: int,
        pad_last: bool,
        sources: dict[str, _SourceSize] | None,
        should_stop: StopCheck | None,
    ):
        super().__init__(parent)
        self._collate = collate
        self._batch_size = batch_size
        self._pad_last = pad_last
        self._sources = sources
        self._should_stop = should_stop
        # Per source: the skips (by kind) since its last usable sample, and the first of them.
        self._streaks: dict[str, collections.Counter] = {}
        self._first_skip: dict[str, dict] = {}

    def __next__(self) -> dict[str, Any]:
        items: list[dict] = []
        skipped: list[dict] = []
        while len(items) < self._batch_size:
            if self._should_stop is not None and self._should_stop():
                raise LoaderStopped("stop requested while assembling a batch")
            try:
                element = next(self._parent)
            except StopIteration:
                self._check_streaks(at_end=True)
                if self._pad_last and (items or skipped):
                    return self._collate(items, self._batch_size, skipped)
                raise
            if "skip" in element:
                skipped.append(element["skip"])
                if self._sources is not None:
                    self._count_skip(element["skip"])
            else:
                self._streaks.pop(element["source"], None)
                items.append(element)
        return self._collate(items, self._batch_size, skipped)

    def _count_skip(self, skip: dict) -> None:
        streak = self._streaks.setdefault(skip["source"], collections.Counter())
        if not streak:
            self._first_skip[skip["source"]] = skip
        streak[skip["kind"]] += 1
        self._check_streaks(at_end=False)

    def _check_streaks(self, at_end: bool) -> None:
        """UnusableSourceError for a source whose skip streak covers 2 passes (1 when the data ends)."""
        if self._sources is None:
            return
        for label, streak in self._streaks.items():
            source = self._sources[label]
            n = sum(streak.values())
            if n >= (1 if at_end else 2) * source.size:
                kinds = ", ".join(f"{kind}: {count}" for kind, count in streak.most_common())
                example = self._first_skip[label]
                raise UnusableSourceError(
                    f"source {label}: no usable sample: its last {n} samples (at least a whole pass over its "
                    f"{source.size}) were all skipped ({kinds}); e.g. sample {example['id']!r}: {example['reason']}. "
                    f"Check the source's media_dir ({source.media_dir}) and its files."
                )

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)
        self._streaks.clear()


class _Stats(grain.IterDataset):
    """Counts batches, samples and skips in the main process (the counts are part of the state)."""

    def __init__(self, parent: grain.IterDataset, should_stop: StopCheck | None):
        super().__init__(parent)
        self._should_stop = should_stop

    def __iter__(self) -> LoaderIterator:
        return LoaderIterator(self._parent.__iter__(), self._should_stop)


class LoaderIterator(grain.DatasetIterator):
    """The loader's iterator: batches, `stats()`, `skip_counts()` and a restorable JSON-able state.

    `skip_counts()` -> {source label: {kind: n}} counts the skips reported in the batches so far
    (this process's shard, restored with the state): what a trainer writes to its metrics.
    """

    def __init__(self, parent: grain.DatasetIterator, should_stop: StopCheck | None = None):
        super().__init__(parent)
        self._should_stop = should_stop
        self._counts = {"batches": 0, "samples": 0, "skipped": 0}
        self._skips: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._recent: list[dict] = []
        self._logged: set[tuple[str, str]] = set()
        self._last_summary = -math.inf
        self._stopped_state: dict[str, Any] | None = None  # the state before the batch a stop interrupted

    def __next__(self) -> dict[str, Any]:
        batch = next(self._parent) if self._should_stop is None else self._next_unless_stopped()
        self._counts["batches"] += 1
        self._counts["samples"] += len(batch["samples"])
        if batch["skipped"]:
            self._note_skips(batch["skipped"])
        return batch

    def _next_unless_stopped(self) -> dict[str, Any]:
        """The next batch, waited for in a helper thread so that `should_stop` is polled meanwhile."""
        if self._stopped_state is None and self._should_stop():
            self._stopped_state = copy.deepcopy(self._parent.get_state())
        if self._stopped_state is not None:
            raise LoaderStopped("stop requested")
        before = copy.deepcopy(self._parent.get_state())
        result: dict[str, Any] = {}

        def fetch() -> None:
            try:
                result["batch"] = next(self._parent)
            except BaseException as err:
                result["error"] = err

        worker = threading.Thread(target=fetch, name="loader-next", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(_STOP_POLL_SECONDS)
            if worker.is_alive() and self._should_stop():
                self._stopped_state = before
                raise LoaderStopped("stop requested while waiting for a batch")
        if isinstance(result.get("error"), LoaderStopped):
            self._stopped_state = before
        if "error" in result:
            raise result["error"]
        return result["batch"]

    def _note_skips(self, skipped: list[dict]) -> None:
        """Count skips per source and kind; name each sample in the log once, sum up at most once a minute."""
        self._counts["skipped"] += len(skipped)
        self._recent = (self._recent + skipped)[-_RECENT_SKIPS:]
        for skip in skipped:
            self._skips[skip["source"]][skip["kind"]] += 1
            key = (skip["source"], skip["id"])
            if len(self._logged) < _MAX_SAMPLE_LINES and key not in self._logged:
                self._logged.add(key)
                log.warning(
                    "skipping sample %r (task %s) from %s: %s", skip["id"], skip["task"], skip["source"], skip["reason"]
                )
                if len(self._logged) == _MAX_SAMPLE_LINES:
                    log.warning("loader: %d skipped samples named; further ones are only counted", _MAX_SAMPLE_LINES)
        now = time.monotonic()
        if now - self._last_summary >= _SUMMARY_SECONDS:
            self._last_summary = now
            log.warning(
                "loader: %d sample(s) skipped so far: %s", self._counts["skipped"], json.dumps(self.skip_counts())
            )

    def skip_counts(self) -> dict[str, dict[str, int]]:
        """{source label: {kind: skipped samples}} since the start of the run (kinds: SKIP_KINDS)."""
        return {source: dict(kinds) for source, kinds in self._skips.items()}

    def stats(self) -> dict[str, Any]:
        """Counts since the start of the run (restored with the state) and the latest skip records."""
        return {**self._counts, "recent_skipped": list(self._recent)}

    def get_state(self) -> dict[str, Any]:
        pipeline = self._stopped_state if self._stopped_state is not None else self._parent.get_state()
        return {"pipeline": pipeline, "counts": dict(self._counts), "skips": self.skip_counts()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["pipeline"])
        self._counts = {k: int(v) for k, v in state["counts"].items()}
        self._skips = collections.defaultdict(
            collections.Counter,
            {
                source: collections.Counter({k: int(v) for k, v in kinds.items()})
                for source, kinds in state.get("skips", {}).items()
            },
        )
        self._recent = []
        self._stopped_state = None
