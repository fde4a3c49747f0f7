"""TFDS builders that write unified samples as ArrayRecord, with no TensorFlow installed.

`tensorflow_datasets` (4.9+) prepares `array_record` files without TensorFlow: its example
serializer is pure protobuf. One builder class per adapter in `data_pipeline.sources.SOURCES`,
named `tempr1_<dataset>`, with a single text feature `sample` (the sample's JSON) and the file
order kept (`disable_shuffling`). A build lands in `{data_dir}/tempr1_<dataset>/{version}/` with
TFDS's `dataset_info.json`, `features.json` and `tempr1_<dataset>-{split}.array_record-*`
files; `tfds.builder_from_directory(...).as_data_source(split)` and
`arrayrecord_io.open_split(build_dir, split)` read it back.

Every record is validated as in `tempr1 prepare` (`sources.load_validated`).
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Sequence
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from data_pipeline import sources

PathLike = str | os.PathLike
BUILDER_VERSION = "1.0.0"


class _UnifiedSamplesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: one split of validated unified samples from one annotation source."""

    VERSION = tfds.core.Version(BUILDER_VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {BUILDER_VERSION: "Unified samples (DESIGN §6) as JSON text."}
    dataset: str = ""

    def __init__(
        self,
        *,
        annotations: PathLike | Sequence[PathLike],
        videos_dir: PathLike | None = None,
        split: str = "test",
        skip_bad: bool = False,
        check_files: bool = True,
        source_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._annotations = annotations
        self._videos_dir = videos_dir
        self._split = split
        self._skip_bad = skip_bad
        self._check_files = check_files
        self._source_kwargs = dict(source_kwargs or {})
        self.report = sources.ValidationReport()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Unified samples from the {self.dataset} annotations.",
            features=tfds.features.FeaturesDict({"sample": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Annotations are local files.
        return {self._split: self._generate_examples()}

    def _generate_examples(self):
        for sample in sources.load_validated(
            self.dataset,
            self._annotations,
            self._videos_dir,
            skip_bad=self._skip_bad,
            check_files=self._check_files,
            report=self.report,
            **self._source_kwargs,
        ):
            yield sample.id, {"sample": sample.to_json()}


@functools.cache
def builder_class(dataset: str) -> type[_UnifiedSamplesBuilder]:
    """The builder class for one dataset of `sources.SOURCES` (created once)."""
    if dataset not in sources.SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(sources.SOURCES))}")
    return type(
        f"Tempr1_{dataset}",
        (_UnifiedSamplesBuilder,),
        {"name": f"tempr1_{dataset}", "dataset": dataset},
        skip_registration=True,
    )


def build(
    dataset: str,
    annotations: PathLike | Sequence[PathLike],
    *,
    data_dir: PathLike,
    videos_dir: PathLike | None = None,
    split: str = "test",
    skip_bad: bool = False,
    check_files: bool = True,
    **source_kwargs: Any,
) -> tuple[pathlib.Path, sources.ValidationReport]:
    """Prepare one split with TFDS; returns the build directory and the validation counts."""
    builder = builder_class(dataset)(
        annotations=annotations,
        videos_dir=videos_dir,
        split=split,
        skip_bad=skip_bad,
        check_files=check_files,
        source_kwargs=source_kwargs,
        data_dir=str(data_dir),
        file_format="array_record",
    )
    # Always regenerate from the annotations; never look for a prebuilt copy online.
    config = tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS, try_download_gcs=False
    )
    builder.download_and_prepare(download_config=config)
    return pathlib.Path(builder.data_dir), builder.report
