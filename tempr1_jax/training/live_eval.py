"""Greedy evaluation during training on held-out samples, scored with the benchmark metrics.

The held-out slice is explicit: the first `samples` samples (in file order) of each evaluation source
(JSONL files or prepared splits, given like `DataConfig.sources`), e.g. a benchmark's `val` split next
to its `train` split. Training never reads them: `HeldOut.check_disjoint` refuses, at the start of the
run, an evaluation sample whose id is also a training sample's. Greedy outputs come from
`training.predictions.generate_predictions` (every process runs its shard of each slice in lockstep and
gets all outputs back, so every process computes the same numbers); `score_predictions` groups them by
(dataset, task) and scores each group with `evaluation.score` (DESIGN §3). The metrics are named
`eval/<dataset>/<task>/<metric>` (the dataset is each sample's `source` field), plus `eval/samples` and
`eval/skipped` (samples the loader could not prepare).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipeline import loader as loader_lib
from tempr1_jax import evaluation
from tempr1_jax.training.predictions import generate_predictions


def score_predictions(
    predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], **options: Any
) -> dict[tuple[str, str], dict[str, float]]:
    """`evaluation.score` per (dataset, task) group, groups in first-seen order; the video multiple-choice
    benchmarks (`evaluation.MCQ_BREAKDOWNS`) by `evaluation.video_mcq_scores`, per dimension."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(predictions):
        groups[(str(p.get("source") or "unknown"), p["task"])].append(i)

    def scores(source, task, outputs, group_targets):
        if task == "mcq" and source in evaluation.MCQ_BREAKDOWNS:
            return evaluation.video_mcq_scores(source, outputs, group_targets)
        return evaluation.score(task, outputs, group_targets, **options)

    return {
        key: scores(*key, [predictions[i]["output"] for i in idx], [targets[i] for i in idx])
        for key, idx in groups.items()
    }


def sample_ids(sources: Sequence[loader_lib.SourceConfig]) -> list[str]:
    """The ids of the samples of `sources`, in order."""
    ids = []
    for source in sources:
        records = loader_lib.source_records(source)
        ids += [str(json.loads(records[i]).get("id")) for i in range(len(records))]
    return ids


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The first `samples` samples of each of `sources`, evaluated greedily."""

    sources: tuple[loader_lib.SourceConfig, ...]
    samples: int

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("evaluation during training needs held-out sources (TrainConfig.eval_sources)")
        if self.samples < 1:
            raise ValueError(f"TrainConfig.eval_samples must be >= 1, got {self.samples}")

    def check_disjoint(self, training: Sequence[loader_lib.SourceConfig]) -> None:
        """ValueError naming the held-out samples that are also training samples (by id)."""
        shared = set(sample_ids(self.sources)) & set(sample_ids(training))
        if shared:
            raise ValueError(
                f"{len(shared)} held-out evaluation sample(s) are also training samples, e.g. "
                f"{sorted(shared)[:5]}: give TrainConfig.eval_sources samples the training sources "
                f"do not have"
            )

    def evaluate(
        self,
        model: Any,
        tokenizer: Any,
        loader_cfg: loader_lib.LoaderConfig,
        prompt_builders: Mapping[str, Any],
        *,
        max_new_tokens: int,
        mesh: Any = None,
        layout: str = "fsdp_tensor",
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, float]:
        """Greedy outputs of `model` on the slice, batched like `loader_cfg`, as `eval/...` metrics.
        A collective with several processes; `multihost.StopRequested` on a stop request (`should_stop`)."""
        predictions, targets, skipped = [], [], []
        for source in self.sources:
            batches = loader_lib.make_eval_loader(
                dataclasses.replace(loader_cfg, sources=(source,)), tokenizer, model.config, prompt_builders
            )
            p, t, s = generate_predictions(
                model,
                tokenizer,
                batches,
                max_new_tokens=max_new_tokens,
                mesh=mesh,
                layout=layout,
                limit=self.samples,
                should_stop=should_stop,
            )
            predictions += p
            targets += t
            skipped += s
        out = {
            f"eval/{dataset}/{task}/{name}": value
            for (dataset, task), metrics in score_predictions(predictions, targets).items()
            for name, value in metrics.items()
        }
        return {**out, "eval/samples": len(predictions), "eval/skipped": len(skipped)}


__all__ = ["HeldOut", "sample_ids", "score_predictions"]
