"""What an evaluation is judged against: answers that do not look at the video, and paired statistics.

Baseline answers are written in each task's own answer template (`Task.reference_answer`), so that
`evaluation.score` reads them exactly as it reads a model's output:

* `whole_video`: every interval the prompt asks for is [0, duration] (DTG: one per query line, the
  others one); GVQA answers "A".
* `random`: as many intervals as `whole_video`, each with start and end drawn uniformly in
  [0, duration], and a uniformly drawn option letter; the metrics are averaged over `draws` draws.
* `best_constant`: one answer text for every sample of a task, fitted on other samples (the demo
  fits it on its TRAIN split, as a model that ignores the video could learn it): up to
  `max_segments` intervals on a `grid`-second grid chosen greedily (each round adds the interval that
  raises the task's headline metric most) and the most frequent letter.

Paired statistics: every metric of `evaluation.score` is a weighted mean over samples of the sample's
own score (DTG weighs a sample by its number of events, which is what averaging over events means;
every other task weighs samples equally). `per_sample_scores` gives those per-sample scores and
weights, and `paired_change` the change of a metric between two answer sets of the same samples with
the standard error of that change (the samples' contributions are paired).
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tempr1_jax import evaluation
from tempr1_jax import tasks as tasks_lib

BASELINES = ("whole_video", "random", "best_constant")
# The metrics each task is judged on (the first is the one the best constant answer maximises).
HEADLINE_METRICS = {
    "tg": ("mIoU",),
    "tvg": ("mIoU",),
    "dtg": ("mIoU",),
    "vhd": ("mIoU",),
    "gvqa": ("Acc", "mIoU"),
    "tal": ("mF1",),
}
_SEARCH_METRIC = {"gvqa": "mIoU"}  # the constant's letter is chosen by frequency, its intervals by mIoU

Scores = dict[str, np.ndarray]  # metric -> per-sample scores [N]


# --- paired statistics ------------------------------------------------------------------------


def sample_weight(task: str, target: Mapping[str, Any]) -> float:
    """How much one sample counts in the task's metrics: DTG averages over events, the rest over samples."""
    return float(len(target.get("segments") or ())) if task == "dtg" else 1.0


def per_sample_scores(
    task: str, outputs: Sequence[str], targets: Sequence[Mapping[str, Any]]
) -> tuple[Scores, np.ndarray]:
    """({metric: float64 [N] of each sample's own `evaluation.score`}, weights [N]).

    `evaluation.score(task, outputs, targets)[m]` equals `sum(w * v[m]) / sum(w)`.
    """
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
    rows = [evaluation.score(task, [o], [t]) for o, t in zip(outputs, targets)]
    names = list(rows[0]) if rows else []
    values = {m: np.asarray([r[m] for r in rows], np.float64) for m in names}
    return values, np.asarray([sample_weight(task, t) for t in targets], np.float64)


def contributions(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-sample terms whose plain mean is the weighted mean `sum(w * v) / sum(w)`."""
    values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError("the weights sum to zero: no sample counts")
    return values * weights * (len(weights) / total)


def paired_change(before: Sequence[float], after: Sequence[float], weights: Sequence[float] | None = None) -> dict:
    """{"delta", "stderr"}: change of a (weighted) mean from `before` to `after` on the same samples.

    The samples' contributions are paired: delta = mean(c_after - c_before), stderr = std(differences,
    ddof=1) / sqrt(N) (NaN for one sample).
    """
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if before.shape != after.shape or before.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {before.shape}, {after.shape}")
    n = len(before)
    if n == 0:
        return {"delta": 0.0, "stderr": math.nan}
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    diff = contributions(after, w) - contributions(before, w)
    stderr = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"delta": float(np.mean(diff)), "stderr": stderr}


def weighted_means(values: Mapping[str, np.ndarray], weights: np.ndarray) -> dict[str, float]:
    """{metric: sum(w * v) / sum(w)}: the split's metrics from per-sample scores."""
    return {m: float(np.mean(contributions(v, weights))) for m, v in values.items()}


# --- baseline answers -------------------------------------------------------------------------


def _answer(
    task: str, target: Mapping[str, Any], segments: Sequence[Sequence[float]], letter: str = "A", think: bool = False
) -> str:
    """The task's answer text with these segments (and letter, for choice tasks)."""
    sample = {**target, "segments": [list(s) for s in segments], "answer": letter}
    return tasks_lib.get_task(task).reference_answer(sample, think=think)


def _asked_intervals(task: str, target: Mapping[str, Any]) -> int:
    """How many intervals the prompt asks for: one per query line for DTG, else one."""
    query = target.get("query", "")
    lines = query if isinstance(query, (list, tuple)) else str(query).splitlines()
    return max(1, len([q for q in lines if str(q).strip()])) if task == "dtg" else 1


def whole_video_answers(task: str, targets: Sequence[Mapping[str, Any]], think: bool = False) -> list[str]:
    """[0, duration] for every interval asked for (letter "A" for GVQA)."""
    return [_answer(task, t, [[0.0, float(t["duration"])]] * _asked_intervals(task, t), think=think) for t in targets]


def random_answers(
    task: str, targets: Sequence[Mapping[str, Any]], rng: np.random.Generator, think: bool = False
) -> list[str]:
    """Uniformly random intervals within each video (as many as `whole_video_answers`) and letter."""
    out = []
    for t in targets:
        duration = float(t["duration"])
        segs = [sorted(rng.uniform(0.0, duration, 2).round(2).tolist()) for _ in range(_asked_intervals(task, t))]
        letters = string.ascii_uppercase[: max(len(t.get("options") or ()), 1)]
        out.append(_answer(task, t, segs, letters[int(rng.integers(len(letters)))], think=think))
    return out


def best_constant_answer(
    task: str, targets: Sequence[Mapping[str, Any]], grid: float = 1.0, max_segments: int = 4, think: bool = False
) -> str:
    """The one answer text that scores best on `targets` among constant answers (see module docstring)."""
    if not targets:
        raise ValueError(f"best_constant_answer({task!r}) needs at least one target")
    task_def = tasks_lib.get_task(task)
    letter = "A"
    if task_def.has_cls:
        letter = Counter(task_def.expected_choice(t) for t in targets).most_common(1)[0][0]
    if not task_def.has_segments:
        return _answer(task, targets[0], [], letter, think)
    metric = _SEARCH_METRIC.get(task, HEADLINE_METRICS[task][0])
    top = math.ceil(max(float(t["duration"]) for t in targets) / grid)
    points = [round(k * grid, 6) for k in range(top + 1)]
    candidates = [[a, b] for i, a in enumerate(points) for b in points[i + 1 :]]
    chosen: list[list[float]] = []
    best = -1.0
    for _ in range(max_segments):
        scores = [
            evaluation.score(task, [_answer(task, targets[0], [*chosen, c], letter, think)] * len(targets), targets)[
                metric
            ]
            for c in candidates
        ]
        k = int(np.argmax(scores))  # ties go to the earliest candidate
        if scores[k] <= best:
            break
        best, chosen = scores[k], [*chosen, candidates[k]]
    return _answer(task, targets[0], chosen, letter, think)


def fit_constants(
    targets: Sequence[Mapping[str, Any]], grid: float = 1.0, think: bool = False, max_per_task: int = 256
) -> dict[str, str]:
    """{task: best constant answer} fitted on `targets` (e.g. the training split), per task present.

    Each task's answer is fitted on its first `max_per_task` targets: the search scores every candidate
    interval on every target, and a few hundred samples pin the best constant down.
    """
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for t in targets:
        rows = by_task.setdefault(t["task"], [])
        if len(rows) < max_per_task:
            rows.append(t)
    return {task: best_constant_answer(task, rows, grid=grid, think=think) for task, rows in by_task.items()}


def expected_scores(task: str, answer_sets: Sequence[Sequence[str]], targets: Sequence[Mapping[str, Any]]) -> Scores:
    """Per-sample scores averaged over several answer sets (e.g. random draws): {metric: [N]}."""
    total: dict[str, np.ndarray] = {}
    for answers in answer_sets:
        values, _ = per_sample_scores(task, answers, targets)
        for m, v in values.items():
            total[m] = total.get(m, 0.0) + v / len(answer_sets)
    return total


def baseline_scores(
    targets: Sequence[Mapping[str, Any]],
    constants: Mapping[str, str],
    *,
    seed: int = 0,
    draws: int = 8,
    think: bool = False,
) -> dict[str, dict[str, Scores]]:
    """{baseline: {task: {metric: per-sample scores}}} of each baseline on `targets`, in their order
    within each task (`constants`: each task's constant answer, from `fit_constants`)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Scores]] = {name: {} for name in BASELINES}
    for task in dict.fromkeys(t["task"] for t in targets):
        rows = [t for t in targets if t["task"] == task]
        if task not in constants:
            raise ValueError(f"no constant answer for task {task!r} (fitted for {sorted(constants)})")
        sets = {
            "whole_video": [whole_video_answers(task, rows, think)],
            "random": [random_answers(task, rows, rng, think) for _ in range(draws)],
            "best_constant": [[constants[task]] * len(rows)],
        }
        for name, answer_sets in sets.items():
            out[name][task] = expected_scores(task, answer_sets, rows)
    return out
