"""What a run trains on, configured with gin: its sources (`DataConfig`, `LoaderConfig`) and the prompt
builders of the registered tasks.

`DataConfig.synthetic` writes the deterministic synthetic dataset into `workdir/data` (the demo;
`write_synthetic`, after the run's settings were checked against the workdir's).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import gin

from data_pipeline import loader as loader_lib
from data_pipeline import paths
from data_pipeline.synthetic import write_synthetic_dataset
from tempr1_jax import tasks as tasks_lib

SYNTHETIC_DIR = "data"  # under the workdir
SYNTHETIC_SETTINGS = "synthetic.json"  # the settings the synthetic data there was written with

# The loader's config, configurable from gin as `LoaderConfig.batch_size = 8` etc.
LoaderConfig = gin.external_configurable(loader_lib.LoaderConfig, "LoaderConfig")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training sources: JSONL paths or dicts of `data_pipeline.loader.SourceConfig` fields.

    synthetic: write the synthetic dataset (`data_pipeline.synthetic`) into `workdir/data` and train on
    its `train` split (the demo); `synthetic_tasks` / `synthetic_samples_per_task` shape it, and
    `synthetic_spec` (fields of `data_pipeline.synthetic.SyntheticSpec`, e.g. `{'frame_size': (28, 28),
    'fps': 2, 'clip_ticks': (20, 60)}`) the clips.
    """

    sources: Sequence[Any] = ()
    synthetic: bool = False
    synthetic_seed: int = 0
    synthetic_tasks: Sequence[str] = ("tg", "dtg", "vhd", "gvqa", "tal")
    synthetic_samples_per_task: int = 8
    synthetic_spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def prompt_builders(think: bool = True) -> dict[str, Any]:
    """Task name -> picklable `sample -> prompt text` for every registered task."""
    return {name: functools.partial(_build_prompt, name, think) for name in tasks_lib.TASKS}


def _build_prompt(task: str, think: bool, sample: Mapping[str, Any]) -> str:
    return tasks_lib.get_task(task).build_prompt(sample, think)


def resolve_sources(cfg: DataConfig, workdir: str | pathlib.Path) -> tuple[loader_lib.SourceConfig, ...]:
    """The loader sources of `cfg` (with `cfg.synthetic`, where `write_synthetic` puts the data); writes nothing."""
    if cfg.synthetic:
        out = paths.as_path(workdir) / SYNTHETIC_DIR
        return (loader_lib.SourceConfig(path=str(out / "train.jsonl"), media_dir=str(out)),)
    if not cfg.sources:
        raise ValueError("DataConfig.sources is empty and DataConfig.synthetic is False: no training data")
    return tuple(source_config(s) for s in cfg.sources)


def source_config(entry: str | Mapping[str, Any]) -> loader_lib.SourceConfig:
    """A source given in gin as a JSONL path or a dict of `SourceConfig` fields."""
    return loader_lib.SourceConfig(path=entry) if isinstance(entry, str) else loader_lib.SourceConfig(**entry)


def write_synthetic(cfg: DataConfig, workdir: str | pathlib.Path) -> None:
    """With `cfg.synthetic`, write the synthetic dataset into `workdir/data`, unless it is there already with
    the same settings (recorded in `data/synthetic.json`): data of other settings is rewritten, never reused."""
    if not cfg.synthetic:
        return
    out = paths.as_path(workdir) / SYNTHETIC_DIR
    settings = {
        "seed": cfg.synthetic_seed,
        "samples_per_task": cfg.synthetic_samples_per_task,
        "tasks": list(cfg.synthetic_tasks),
        "spec": json.loads(json.dumps(dict(cfg.synthetic_spec))),
    }
    record = out / SYNTHETIC_SETTINGS
    if (out / "train.jsonl").is_file() and record.is_file() and json.loads(record.read_text()) == settings:
        return
    with paths.staged_dir(out) as local:
        write_synthetic_dataset(
            local,
            seed=cfg.synthetic_seed,
            samples_per_task=cfg.synthetic_samples_per_task,
            tasks=tuple(cfg.synthetic_tasks),
            include_images=False,
            split_names=("train",),
            **cfg.synthetic_spec,
        )
        (local / SYNTHETIC_SETTINGS).write_text(json.dumps(settings))


def training_text(sources: Sequence[loader_lib.SourceConfig], think: bool) -> list[str]:
    """Prompts and reference answers of the sources (JSONL files or prepared splits): the tiny tokenizer's corpus."""
    texts = []
    for source in sources:
        records = loader_lib.source_records(source)
        for i in range(len(records)):
            sample = json.loads(records[i])
            task = tasks_lib.get_task(sample["task"])
            texts += [task.build_prompt(sample, think), task.reference_answer(sample, think=True)]
    return texts
