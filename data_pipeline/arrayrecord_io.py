"""Prepared splits as ArrayRecord files of unified-sample JSON bytes, readable by Grain.

Files follow TFDS naming, `{name}-{split}.array_record-{shard:05d}-of-{num_shards:05d}`, so a
directory written here and a TFDS build directory (`tfds_builders`) look alike. Each record is
one `Sample.to_json()` encoded as UTF-8. `open_split` returns a Grain random-access data source
of those bytes for either kind of directory.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import grain
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

from data_pipeline import paths
from data_pipeline.samples import Sample

PathLike = str | os.PathLike
# group_size:1 makes every record its own chunk: random access reads only that record.
WRITER_OPTIONS = "group_size:1"
_SHARD = re.compile(r"^(?P<name>.+)-(?P<split>[^-]+)\.array_record-\d{5}-of-\d{5}$")


def shard_name(name: str, split: str, shard: int, num_shards: int) -> str:
    """TFDS-style ArrayRecord file name."""
    return f"{name}-{split}.array_record-{shard:05d}-of-{num_shards:05d}"


def write_split(
    out_dir: PathLike,
    split: str,
    samples: Sequence[Sample],
    *,
    name: str = "samples",
    num_shards: int = 1,
) -> list[epath.Path]:
    """Write `samples` in order as `num_shards` contiguous ArrayRecord shards; returns the paths."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if "-" in split:
        raise ValueError(f"split names may not contain '-', got {split!r}")
    written = []
    per_shard = -(-len(samples) // num_shards) if samples else 0
    with paths.staged_dir(out_dir) as out:  # ArrayRecord writes local files; a URL gets an upload
        for shard in range(num_shards):
            path = out / shard_name(name, split, shard, num_shards)
            writer = ArrayRecordWriter(str(path), WRITER_OPTIONS)
            try:
                for sample in samples[shard * per_shard : (shard + 1) * per_shard]:
                    writer.write(sample.to_json().encode("utf-8"))
            finally:
                writer.close()
            written.append(paths.as_path(out_dir) / path.name)
    return written


def split_files(directory: PathLike, split: str) -> list[pathlib.Path]:
    """The shards of `split` in `directory`, in order; a clear error if there are none."""
    directory = pathlib.Path(directory)
    files = sorted(
        p for p in directory.glob(f"*-{split}.array_record-*") if (m := _SHARD.match(p.name)) and m["split"] == split
    )
    if not files:
        raise FileNotFoundError(f"no ArrayRecord shards for split {split!r} in {directory}")
    names = {_SHARD.match(p.name)["name"] for p in files}
    if len(names) > 1:
        raise ValueError(f"split {split!r} in {directory} mixes datasets {sorted(names)}")
    return files


class _FeatureBytes(grain.sources.RandomAccessDataSource):
    """A TFDS data source seen as the raw bytes of one Text feature."""

    def __init__(self, source: Any, feature: str):
        self._source = source
        self._feature = feature

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> bytes:
        value = self._source[index][self._feature]
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def open_split(directory: PathLike, split: str) -> grain.sources.RandomAccessDataSource:
    """Random-access source of `Sample` JSON bytes for a split written here or by TFDS.

    ArrayRecord reads local files only: a bucket directory is read from its local copy
    (`data_pipeline.paths.local_copy`).

    A directory with a `dataset_info.json` is a TFDS build (records are serialised examples
    with a `sample` text feature) and is read through TFDS; otherwise the shards hold the JSON
    bytes directly and Grain's `ArrayRecordDataSource` reads them.
    """
    directory = paths.local_copy(directory)
    files = split_files(directory, split)
    if (directory / "dataset_info.json").is_file():
        import tensorflow_datasets as tfds  # Only TFDS build directories need it.

        builder = tfds.builder_from_directory(str(directory))
        return _FeatureBytes(builder.as_data_source(split=split), "sample")
    return grain.sources.ArrayRecordDataSource([str(p) for p in files])


def read_split(directory: PathLike, split: str) -> list[Sample]:
    """All samples of a split, in order (for evaluation and tests)."""
    source = open_split(directory, split)
    return [Sample.from_json(source[i]) for i in range(len(source))]
