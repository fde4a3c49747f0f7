"""The reports of an evaluation: `eval_results.json`, `predictions.jsonl`, a markdown table with
TempR1's published numbers beside ours (Tables 1-2) and a time-line figure of predicted against
ground-truth segments for a few samples per task (TempR1 Fig. 4).
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from data_pipeline.paths import as_path, staged_dir
from tempr1_jax import evaluation, paper_results
from tempr1_jax import tasks as tasks_lib
from tempr1_jax.apps.evaluate import EvalResult
from tempr1_jax.rewards import reference

RESULTS_JSON = "eval_results.json"


PREDICTIONS_JSONL = "predictions.jsonl"


TABLE_MD = "eval_table.md"


TIMELINE_PNG = "eval_timeline.png"


def write_reports(
    result: EvalResult,
    outdir: str | pathlib.Path,
    title: str = "Evaluation",
    timeline_per_task: int = 3,
    score_options: Mapping[str, Any] | None = None,
) -> dict[str, pathlib.Path]:
    """Write `eval_results.json`, `predictions.jsonl`, `eval_table.md` and `eval_timeline.png`
    (`score_options`: those the metrics were computed with, named in the table)."""
    names = (RESULTS_JSON, PREDICTIONS_JSONL, TABLE_MD, TIMELINE_PNG)
    with staged_dir(outdir) as local:  # a bucket `outdir` gets the files uploaded at the end
        paths = {name: local / name for name in names}
        paths[RESULTS_JSON].write_text(
            json.dumps(
                {
                    "metrics": {f"{dataset}/{task}": values for (dataset, task), values in result.metrics.items()},
                    "rewards": result.rewards,
                    "num_samples": len(result.predictions),
                    "skipped": result.skipped,
                },
                indent=2,
            )
        )
        write_predictions(paths[PREDICTIONS_JSONL], result.predictions)
        paths[TABLE_MD].write_text(markdown_table(result.metrics, title, score_options))
        plot_timelines(result.predictions, result.targets, paths[TIMELINE_PNG], per_task=timeline_per_task)
    return {name: as_path(outdir) / name for name in names}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown_table(
    metrics: Mapping[tuple[str, str], Mapping[str, float]],
    title: str = "Evaluation",
    score_options: Mapping[str, Any] | None = None,
) -> str:
    """One section per (dataset, task): the conventions of our numbers (`score_options`) and of the
    paper's, then metric | ours | the paper's figure for that dataset and metric (TempR1 Tables 1-2
    where it reports one, else the first published method; "-" if none); then the general video
    benchmarks beside TempR1 Fig. 3 (`paper_results.general_video_table`), if any."""
    lines = [f"## {title}", ""]
    for (dataset, task), values in metrics.items():
        methods = dict.fromkeys(ref[0] for name in values if (ref := paper_results.paper_figure(dataset, name, task)))
        lines += [f"### {dataset} ({task})", "", f"- ours: {evaluation.conventions(task, **dict(score_options or {}))}"]
        lines += [f"- {method}: {paper_results.paper_convention(dataset, method, task)}" for method in methods]
        lines += ["", "| metric | ours | paper | method |", "|---|---:|---:|---|"]
        for name, value in values.items():
            ref = paper_results.paper_figure(dataset, name, task)
            method, paper = ref if ref else ("", None)
            lines.append(f"| {name} | {_fmt(value)} | {_fmt(paper)} | {method} |")
        lines.append("")
    return "\n".join(lines) + paper_results.general_video_table(metrics)


def predicted_segments(task: str, output: str, duration: float) -> list[tuple[float, float]]:
    """The valid segments of a completion as the metrics read them, clipped to [0, duration]."""
    parsed = tasks_lib.get_task(task).parse(output, fallback=True)
    clipped = (reference.clip_segment(seg, duration) for seg in parsed.segments)
    return [seg for seg in clipped if seg is not None]


def plot_timelines(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    path: str | pathlib.Path,
    per_task: int = 3,
) -> pathlib.Path:
    """Draw, for the first `per_task` samples of each localisation task, the ground-truth segments
    (green, upper lane) and the predicted ones (orange, lower lane) on the video's time line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen: dict[str, list[tuple[Mapping, Mapping]]] = defaultdict(list)
    for pred, target in zip(predictions, targets):
        task = pred["task"]
        if tasks_lib.get_task(task).has_segments and len(chosen[task]) < per_task:
            chosen[task].append((pred, target))
    rows = [pair for pairs in chosen.values() for pair in pairs]
    fig, axes = plt.subplots(max(len(rows), 1), 1, figsize=(9, 0.9 * max(len(rows), 1) + 0.6), squeeze=False)
    for ax, (pred, target) in zip(axes[:, 0], rows):
        gts, duration = tasks_lib.target_segments(target)
        preds = predicted_segments(pred["task"], pred["output"], duration)
        ax.broken_barh([(s, e - s) for s, e in gts], (0.55, 0.35), color="tab:green", label="ground truth")
        ax.broken_barh([(s, e - s) for s, e in preds], (0.1, 0.35), color="tab:orange", label="predicted")
        ax.set_xlim(0, duration)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        query = target.get("query", "")
        query = "; ".join(query) if isinstance(query, (list, tuple)) else " ".join(str(query).split())
        ax.set_title(f"[{pred['task']}] {pred.get('id', '')}: {query[:80]}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    if not rows:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no localisation samples", ha="center")
    else:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", fontsize=7, ncol=2)
        axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_predictions(path: str | pathlib.Path, predictions: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line: id, task, source, output."""
    with open(path, "w") as f:
        for p in predictions:
            f.write(json.dumps(dict(p)) + "\n")
