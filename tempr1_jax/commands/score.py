"""`tempr1 score`: benchmark metrics of a predictions file against unified targets.

Targets: JSONL, one unified sample (DESIGN §6) per line. Predictions: JSONL, one
`{"id": ..., "output": "..."}` per line, or with `--format` a peer's prediction file (Time-R1,
VideoChat-R1, MUSEG; see `tempr1_jax.prediction_formats`), read with that peer's parsing rules. A
target without a prediction is scored as an unparseable output (0) and the number of such targets
is printed. Prints our metrics with the paper's figure beside them where one exists, and the
conventions the numbers used, and optionally writes them to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from data_pipeline.paths import as_path
from tempr1_jax.evaluation import PICKS
from tempr1_jax.prediction_formats import FORMATS

HELP = "Score a predictions file against unified targets."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--task", required=True, help="task name: tg dtg vhd gvqa tal tvg order mcq")
    parser.add_argument(
        "--predictions",
        required=True,
        type=as_path,
        help='JSONL of {"id", "output"}, or a peer\'s prediction file with --format',
    )
    parser.add_argument(
        "--format",
        default="tempr1",
        choices=sorted(FORMATS),
        help="how the predictions file is laid out and its outputs are read (default: ours)",
    )
    parser.add_argument("--targets", required=True, type=as_path, help="JSONL of unified samples")
    parser.add_argument("--out", type=as_path, default=None, help="write the metrics here as JSON")
    parser.add_argument(
        "--dataset", default=None, help="benchmark name for the paper column (default: targets' source)"
    )
    add_metric_arguments(parser)


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """The metric conventions (`evaluation.score` options) as flags; `tempr1 eval` takes them too."""
    parser.add_argument("--strict", action="store_true", help="thresholds use IoU > thr (Time-R1) instead of >=")
    parser.add_argument(
        "--pick",
        choices=PICKS,
        default=None,
        help="tg/tvg: first predicted segment (MUSEG) or last 'x to y' (Time-R1, VideoChat-R1); "
        "default: the task's (tg first, tvg last)",
    )
    parser.add_argument(
        "--clip",
        action="store_true",
        help="clip times to [0, duration] (as the rewards do) instead of the raw annotation times",
    )
    parser.add_argument(
        "--official",
        action="store_true",
        help="vhd: add QVHighlights moment-retrieval MR_R1@0.5/0.7 (first window); gvqa: "
        "NExT-GQA figures over the items with a predicted span only (eval_ground)",
    )


def metric_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `evaluation.score` options of the flags of `add_metric_arguments`."""
    return {"strict": args.strict, "official": args.official, "clip": args.clip, "pick": args.pick}


def _read_jsonl(path: pathlib.Path, what: str) -> list[dict[str, Any]]:
    rows = []
    with as_path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{what} {path}:{lineno}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError(f"{what} {path}:{lineno}: expected an object with an 'id'")
            rows.append(row)
    return rows


def format_table(metrics: dict[str, float], dataset: str | None, task: str) -> str:
    """Our metrics beside the paper's figure (method named) where the paper has one."""
    from tempr1_jax.paper_results import paper_figure

    lines = [f"{'metric':<12} {'ours':>8}  paper", f"{'-' * 12} {'-' * 8}  {'-' * 30}"]
    for name, value in metrics.items():
        fig = paper_figure(dataset, name, task)
        paper = f"{fig[1]:.1f} ({fig[0]})" if fig else "-"
        lines.append(f"{name:<12} {value:>8.2f}  {paper}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Score, print the table, optionally write JSON; 0 on success, 2 on bad input."""
    from tempr1_jax.evaluation import conventions, score
    from tempr1_jax.paper_results import canonical_dataset
    from tempr1_jax.prediction_formats import align, read_predictions

    options = metric_options(args)
    try:
        targets = _read_jsonl(args.targets, "targets")
        if not targets:
            raise ValueError(f"targets {args.targets}: no samples")
        outputs, unmatched = align(read_predictions(args.predictions, args.format, args.task), targets)
        missing = sum(o is None for o in outputs)
        metrics = score(args.task, [o if isinstance(o, str) else "" for o in outputs], targets, **options)
    except (OSError, ValueError) as e:
        print(f"tempr1 score: {e}", file=sys.stderr)
        return 2
    dataset = canonical_dataset(args.dataset or targets[0].get("source"), args.task)
    used = conventions(args.task, **options)
    print(
        f"task {args.task}, dataset {dataset or '?'}: {len(targets)} targets, "
        f"{missing} without a prediction (scored 0), {unmatched} predictions matching no target"
    )
    print(f"conventions: {used}")
    print(format_table(metrics, dataset, args.task))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "task": args.task,
            "dataset": dataset,
            "n": len(targets),
            "missing": missing,
            "unmatched": unmatched,
            "format": args.format,
            "conventions": used,
            "metrics": metrics,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0
