"""Time-R1's per-epoch filter inside the trainer: before each epoch from the second on, drop the samples
the current policy already solves (greedy IoU > `CurateConfig.solved_iou`), then train on the rest.

Epochs (`TrainConfig.drop_solved`): epoch 1 trains on the run's sources from step 0 with the loader as
configured. An epoch lasts `TrainConfig.epoch_steps` steps or, by default, `epoch_length` of its
sample count (n // (batch_size * processes), at least 1), so an epoch of a smaller set is shorter.
At the first step of each later epoch, before that step's batch is drawn, the trainer:

1. scores every sample of the current set with the current policy (`score_samples`: greedy outputs
   from `training.predictions.generate_predictions` over the evaluation loader, IoU from
   `difficulty.sample_ious`);
2. keeps the samples with IoU <= threshold (`difficulty.drop_solved`). A sample the loader cannot prepare
   (undecodable video, too long) gets no IoU and is left out as well, as `tempr1 curate` does: training
   would skip it anyway. If no sample is left the set is kept unchanged, with a warning, so training
   never runs on an empty loader;
3. writes the kept samples to `workdir/curriculum/epoch_NNNN/` and rebuilds the training loader over
   them with the shuffle seed `LoaderConfig.seed + NNNN - 1` (a fresh order each epoch).

Files of epoch NNNN: `source_K.jsonl` (the kept samples of the run's source K, verbatim, same media
directory and weight; sources with no kept sample are left out) and `summary.json` (epoch, start step,
sources, counts, mean IoU, threshold, the ids dropped as solved, unscored or held out). The drop is
deterministic (greedy decoding of a deterministically resumed policy), so a run resumed from a
checkpoint before a boundary recomputes and rewrites the same files.

Resume: `Curriculum.meta()` goes into each checkpoint's meta (epoch, start step); `restore(meta)` reads
that epoch's `summary.json` so the trainer rebuilds the same loader before `set_state`.

Several processes: each scores its own shard of the set (`generate_predictions` runs them in step and
gives every process all the greedy outputs), so every process computes the same IoUs and the same kept
set; process 0 writes the files, the others wait at a barrier before reading them. A kept source with
fewer samples than processes cannot give every process's shard a sample, so it is held out of the epoch
(`held_out_ids`; never with one process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from data_pipeline import loader as loader_lib
from data_pipeline import paths
from tempr1_jax.difficulty import drop_solved, sample_ious
from tempr1_jax.training import multihost
from tempr1_jax.training.predictions import generate_predictions

log = logging.getLogger(__name__)

CURRICULUM_DIR = "curriculum"  # under the run's workdir
SUMMARY = "summary.json"


@dataclasses.dataclass(frozen=True)
class Epoch:
    """One curriculum epoch: its number (1-based), first step, sources and sample count per source."""

    number: int
    start_step: int
    sources: tuple[loader_lib.SourceConfig, ...]
    sizes: tuple[int, ...]

    @property
    def num_samples(self) -> int:
        return sum(self.sizes)


def read_samples(sources: Sequence[loader_lib.SourceConfig]) -> list[list[dict[str, Any]]]:
    """Every sample of each source (JSONL file or ArrayRecord split), parsed, in file order."""
    out = []
    for source in sources:
        records = loader_lib.source_records(source)  # the loader's own reader: same samples, same order
        out.append([json.loads(records[i]) for i in range(len(records))])
    return out


def epoch_length(num_samples: int, batch_size: int, processes: int = 1, fixed: int | None = None) -> int:
    """Steps of an epoch over `num_samples` samples: `fixed` if given, else one pass of global batches
    (`batch_size` per process), at least 1."""
    if fixed is not None:
        return fixed
    return max(num_samples // (batch_size * processes), 1)


def check_unique_ids(samples: Sequence[Mapping[str, Any]]) -> None:
    """ValueError unless every sample has a distinct id (they map greedy outputs back to samples)."""
    ids = [str(s.get("id")) for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(
            f"TrainConfig.drop_solved needs unique sample ids across the training sources; repeated: {dup}"
        )


def score_samples(
    policy: Any,
    tokenizer: Any,
    samples: Sequence[Mapping[str, Any]],
    batches: Any,
    *,
    max_new_tokens: int,
    mesh: Any = None,
    layout: str = "fsdp_tensor",
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Greedy IoU of each of `samples` (float64 [N], NaN where the loader skipped it, e.g. an undecodable video),
    `batches` being (this process's shard of) the evaluation loader over them; the outputs of every
    process come back from `generate_predictions`, and ids map them back to positions."""
    position = {str(s.get("id")): i for i, s in enumerate(samples)}
    predictions, targets, _ = generate_predictions(
        policy, tokenizer, batches, max_new_tokens=max_new_tokens, mesh=mesh, layout=layout, should_stop=should_stop
    )
    ious = np.full(len(samples), np.nan)
    if predictions:
        scored = sample_ious([p["task"] for p in predictions], [p["output"] for p in predictions], targets)
        ious[[position[str(p["id"])] for p in predictions]] = scored
    return ious


class Curriculum:
    """The current epoch of a run with `TrainConfig.drop_solved`, its files and its checkpoint meta."""

    def __init__(
        self,
        workdir: str | pathlib.Path,
        loader_cfg: loader_lib.LoaderConfig,
        threshold: float,
        epoch_steps: int | None = None,
    ) -> None:
        self.dir = paths.as_path(workdir) / CURRICULUM_DIR
        self.base = loader_cfg
        self.threshold = threshold
        self.epoch_steps = epoch_steps
        parts = read_samples(loader_cfg.sources)
        check_unique_ids([s for part in parts for s in part])
        self.epoch = Epoch(1, 0, tuple(loader_cfg.sources), tuple(len(part) for part in parts))

    def loader_config(self) -> loader_lib.LoaderConfig:
        """The training loader's config for the current epoch."""
        if self.epoch.number == 1:
            return self.base
        return dataclasses.replace(self.base, sources=self.epoch.sources, seed=self.base.seed + self.epoch.number - 1)

    def length(self) -> int:
        """Steps of the current epoch."""
        return epoch_length(self.epoch.num_samples, self.base.batch_size, jax.process_count(), self.epoch_steps)

    def due(self, step: int) -> bool:
        """Whether step `step` (0-based) starts a new epoch, so the set must be filtered first."""
        return step >= self.epoch.start_step + self.length()

    def samples(self) -> list[dict[str, Any]]:
        """The current set's samples, sources concatenated in order (the evaluation loader's order)."""
        return [s for part in read_samples(self.epoch.sources) for s in part]

    def score(
        self,
        policy: Any,
        tokenizer: Any,
        model_config: Any,
        prompt_builders: Mapping[str, Any],
        *,
        max_new_tokens: int,
        mesh: Any = None,
        layout: str = "fsdp_tensor",
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """`score_samples` of the current set (sources concatenated in order), batched like training."""
        batches = loader_lib.make_eval_loader(
            dataclasses.replace(self.base, sources=self.epoch.sources), tokenizer, model_config, prompt_builders
        )
        return score_samples(
            policy,
            tokenizer,
            self.samples(),
            batches,
            max_new_tokens=max_new_tokens,
            mesh=mesh,
            layout=layout,
            should_stop=should_stop,
        )

    def advance(self, step: int, ious: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Start the next epoch at `step` with the current samples whose IoU (`ious`, in `score` order, NaN:
        unscored) is at most the threshold; write its files (process 0, then a barrier); return the metrics
        `curriculum_{epoch,kept,dropped,unscored,held_out,mean_iou}` (dropped: solved; held out: unsolved
        but in a source left with fewer samples than processes; mean over scored samples)."""
        parts = read_samples(self.epoch.sources)
        ious = np.asarray(ious, np.float64)
        if ious.shape != (sum(map(len, parts)),):
            raise ValueError(
                f"need one IoU per sample of the current set ({sum(map(len, parts))}), got shape {ious.shape}"
            )
        kept, lo = [], 0
        for part in parts:
            part_ious = ious[lo : lo + len(part)]
            scored = np.isfinite(part_ious)
            kept.append(drop_solved([s for s, ok in zip(part, scored) if ok], part_ious[scored], self.threshold))
            lo += len(part)
        # The training loader needs a sample of every source for each process's shard.
        kept = [samples if len(samples) >= jax.process_count() else [] for samples in kept]
        unchanged = not any(kept)
        if unchanged:
            log.warning(
                "curriculum: no sample of %d has IoU <= %g (in a source with at least %d of them); "
                "keeping the set unchanged",
                len(ious),
                self.threshold,
                jax.process_count(),
            )
            kept = parts
        number = self.epoch.number + 1
        out = self.dir / f"epoch_{number:04d}"
        sources, files = [], {}
        for k, (source, samples) in enumerate(zip(self.epoch.sources, kept)):
            if samples:
                # the file holds the kept records of the selected subset: none is left out again
                sources.append(
                    dataclasses.replace(
                        source, path=str(out / f"source_{k}.jsonl"), split=None, max_samples=None, fraction=None
                    )
                )
                files[out / f"source_{k}.jsonl"] = "".join(json.dumps(s) + "\n" for s in samples)
        kept_ids = {str(s.get("id")) for samples in kept for s in samples}
        gone = [
            (str(s.get("id")), iou)
            for s, iou in zip((s for part in parts for s in part), ious)
            if str(s.get("id")) not in kept_ids
        ]
        gone_ids = {
            "dropped_ids": [i for i, iou in gone if iou > self.threshold],
            "unscored_ids": [i for i, iou in gone if not np.isfinite(iou)],
            "held_out_ids": [i for i, iou in gone if iou <= self.threshold],
        }
        scored = np.isfinite(ious)
        metrics = {
            "curriculum_epoch": number,
            "curriculum_kept": len(kept_ids),
            **{f"curriculum_{name.removesuffix('_ids')}": len(ids) for name, ids in gone_ids.items()},
            "curriculum_mean_iou": float(ious[scored].mean()) if scored.any() else float("nan"),
        }
        sizes = [len(samples) for samples in kept if samples]
        files[out / SUMMARY] = json.dumps(
            {
                **metrics,
                "start_step": step,
                "threshold": self.threshold,
                "unchanged": unchanged,
                "sources": [dataclasses.asdict(s) for s in sources],
                "sizes": sizes,
                **gone_ids,
            },
            indent=2,
        )
        if multihost.is_main():
            for path, text in files.items():
                self._write(path, text)
        multihost.barrier(f"curriculum epoch {number}")  # the loaders read the files next
        self.epoch = Epoch(number, step, tuple(sources), tuple(sizes))
        log.info(
            "curriculum epoch %d from step %d: kept %d, dropped %d (IoU > %g), %d unscored and %d held out, "
            "mean IoU %.4f",
            number,
            step,
            metrics["curriculum_kept"],
            metrics["curriculum_dropped"],
            self.threshold,
            metrics["curriculum_unscored"],
            metrics["curriculum_held_out"],
            metrics["curriculum_mean_iou"],
        )
        return metrics

    def meta(self) -> dict[str, int]:
        """What a checkpoint records to resume on the same set."""
        return {"curriculum_epoch": self.epoch.number, "curriculum_start_step": self.epoch.start_step}

    def restore(self, meta: Mapping[str, Any]) -> bool:
        """Return to the epoch recorded in a checkpoint's `meta` (from its `summary.json`); True if the
        training loader must be rebuilt (an epoch after the first)."""
        number = int(meta.get("curriculum_epoch", 1))
        if number == 1:
            return False
        path = self.dir / f"epoch_{number:04d}" / SUMMARY
        if not path.is_file():
            raise ValueError(f"the checkpoint was trained on curriculum epoch {number} but {path} is missing")
        summary = json.loads(path.read_text())
        if summary["start_step"] != int(meta["curriculum_start_step"]):
            raise ValueError(
                f"{path} starts at step {summary['start_step']}, the checkpoint's epoch at step "
                f"{meta['curriculum_start_step']}: the workdir's curriculum files are from another run"
            )
        self.epoch = Epoch(
            number,
            summary["start_step"],
            tuple(loader_lib.SourceConfig(**s) for s in summary["sources"]),
            tuple(summary["sizes"]),
        )
        return True

    @staticmethod
    def _write(path: pathlib.Path, text: str) -> None:
        """Write whole or not at all (a run killed mid-write leaves the previous file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


__all__ = ["CURRICULUM_DIR", "Curriculum", "Epoch", "check_unique_ids", "epoch_length", "read_samples", "score_samples"]
