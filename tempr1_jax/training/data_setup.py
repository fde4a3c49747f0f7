"""What a run trains on, configured with gin: its sources (`DataConfig`, `LoaderConfig`) and the prompt
builders of the registered tasks.

`DataConfig.synthetic` writes the deterministic synthetic dataset into `workdir/data` (the demo).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Mapping, Sequence

import gin

from data_pipeline import loader as loader_lib
from data_pipeline import paths
from data_pipeline.synthetic import write_synthetic_dataset
from tempr1_jax import tasks as tasks_lib

# The loader's config, configurable from gin as `LoaderConfig.batch_size = 8` etc.


LoaderConfig = gin.external_configurable(loader_lib.LoaderConfig, "LoaderConfig")



@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training sources: JSONL paths or dicts of `data_pipeline.loader.SourceConfig` fields.

    synthetic: write the synthetic dataset (`data_pipeline.synthetic`) into `workdir/data` and train on
    its `train` split (the demo); `synthetic_tasks` / `synthetic_samples_per_task` shape it.
    """

    sources: Sequence[Any] = ()
    synthetic: bool = False
    synthetic_seed: int = 0
    synthetic_tasks: Sequence[str] = ("tg", "dtg", "vhd", "gvqa", "tal")
    synthetic_samples_per_task: int = 8



def prompt_builders(think: bool = True) -> dict[str, Any]:
    """Task name -> picklable `sample -> prompt text` for every registered task."""
    return {name: functools.partial(_build_prompt, name, think) for name in tasks_lib.TASKS}



def _build_prompt(task: str, think: bool, sample: Mapping[str, Any]) -> str:
    return tasks_lib.get_task(task).build_prompt(sample, think)



def resolve_sources(cfg: DataConfig, workdir: str | pathlib.Path) -> tuple[loader_lib.SourceConfig, ...]:
    """The loader sources of `cfg`; writes the synthetic dataset first when `cfg.synthetic`."""
    if cfg.synthetic:
        out = paths.as_path(workdir) / "data"
        train = out / "train.jsonl"
        if not train.is_file():
            with paths.staged_dir(out) as local:
                write_synthetic_dataset(local, seed=cfg.synthetic_seed,
                                        samples_per_task=cfg.synthetic_samples_per_task,
                                        tasks=tuple(cfg.synthetic_tasks), include_images=False, split_names=("train",))
        return (loader_lib.SourceConfig(path=str(train), media_dir=str(out)),)
    if not cfg.sources:
        raise ValueError("DataConfig.sources is empty and DataConfig.synthetic is False: no training data")
    out_sources = []
    for s in cfg.sources:
        out_sources.append(loader_lib.SourceConfig(path=s) if isinstance(s, str) else loader_lib.SourceConfig(**s))
    return tuple(out_sources)



def training_text(sources: Sequence[loader_lib.SourceConfig], think: bool) -> list[str]:
    """Prompts and reference answers of the JSONL sources: the tiny tokenizer's corpus."""
    texts = []
    for source in sources:
        for line in paths.as_path(source.path).read_text().splitlines():
            if line.strip():
                sample = json.loads(line)
                task = tasks_lib.get_task(sample["task"])
                texts += [task.build_prompt(sample, think), task.reference_answer(sample, think=True)]
    return texts
