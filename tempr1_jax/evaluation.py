"""Benchmark metrics (DESIGN §3): `score(task, outputs, targets, **options)`, in percent.

Defaults follow the public evaluation scripts (Time-R1 `eval_all`, VideoChat-R1, MUSEG, moment_detr,
NExT-GQA `eval_ground`): IoU is computed on the raw annotation times and the raw predicted numbers
(no clipping to [0, duration]). Outputs are read with the task's lenient parser in fallback mode
(untagged text is read whole); a predicted segment with a non-finite number or end < start has IoU 0.
Unparseable outputs score 0 and stay in the denominator.

Where the scripts differ by convention, the convention is an option (`conventions` names the ones
a number used, for reports):
- strict: IoU > thr (Time-R1's published numbers) instead of IoU >= thr (VideoChat-R1, MUSEG,
  moment_detr, NExT-GQA).
- pick (tg/tvg): "first" predicted segment (MUSEG; tg's default) or "last" "x to y" of the answer
  (Time-R1, VideoChat-R1; tvg's default).
- clip: clip ground truth and predictions to [0, duration] as the rewards do (DESIGN §2).
- official: vhd adds moment_detr's MR_R1@0.5/0.7 (first window, best ground-truth window); gvqa
  computes the NExT-GQA figures (gqa_*) over the items with a predicted span only, as `eval_ground`
  does (default: over every item, an item without a span scoring 0).

Keys per task: tg/tvg `mIoU R1@0.3 R1@0.5 R1@0.7`; dtg/vhd `mIoU R@0.3 R@0.5 R@0.7` (vhd adds
`MR_R1@0.5 MR_R1@0.7` with `official=True`); gvqa `Acc mIoU R@0.3 R@0.5 R@0.7 gqa_mIoP
gqa_IoP@0.3 gqa_IoP@0.5 gqa_mIoU gqa_IoU@0.3 gqa_IoU@0.5 Acc@GQA`; tal `F1@0.1 F1@0.3 F1@0.5
F1@0.7 mF1`; order/mcq `Acc`. The video multiple-choice benchmarks of TempR1 Fig. 3 (TempCompass,
MVBench, Video-MME, Perception Test) are scored per dimension by `video_mcq_scores`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards.reference import Segment, clip_segment, iou, merge_union

EVAL_MAX_SEGMENTS = 1024
RECALL_THRESHOLDS = (0.3, 0.5, 0.7)
TAL_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
GQA_THRESHOLDS = (0.3, 0.5)
MR_THRESHOLDS = (0.5, 0.7)
PICKS = ("first", "last")


def _hit(value: float, thr: float, strict: bool) -> bool:
    return value > thr if strict else value >= thr


def _mean(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def _recall_metrics(ious: Sequence[float], prefix: str, strict: bool) -> dict[str, float]:
    out = {"mIoU": _mean(ious)}
    for thr in RECALL_THRESHOLDS:
        out[f"{prefix}@{thr}"] = _mean([float(_hit(x, thr, strict)) for x in ious])
    return out


def segment(seg: Segment, duration: float, clip: bool = False) -> Segment | None:
    """A segment as the metrics use it: raw, or clipped to [0, duration] with `clip`; None if it is
    invalid (a non-finite number or end < start)."""
    if clip:
        return clip_segment(seg, duration)
    s, e = seg
    return (s, e) if math.isfinite(s) and math.isfinite(e) and s <= e else None


def union_iou(preds: Sequence[Segment | None], gts: Sequence[Segment | None]) -> float:
    """IoU of the union of the (prepared) predictions and the union of the ground truths; invalid
    (None) predictions are left out of the union."""
    up, ug = merge_union(preds), merge_union(gts)
    inter = sum(max(0.0, min(pe, ge) - max(ps, gs)) for ps, pe in up for gs, ge in ug)
    union = sum(e - s for s, e in up) + sum(e - s for s, e in ug) - inter
    return inter / union if union > 0 else 0.0


def tal_f1(
    preds: Sequence[Segment],
    gts: Sequence[Segment],
    duration: float,
    thr: float,
    strict: bool = False,
    clip: bool = False,
) -> float:
    """Per-sample F1 (MUSEG form): 0 if the best IoU misses thr, else 2PR/(P+R) with recall = share
    of GT whose best IoU hits thr and precision = share of predictions whose best IoU hits thr."""
    if not preds:
        return 0.0
    p = [segment(x, duration, clip) for x in preds]
    g = [segment(x, duration, clip) for x in gts]
    matrix = [[iou(a, b) for a in p] for b in g]  # GT x pred
    if not _hit(max(max(row) for row in matrix), thr, strict):
        return 0.0
    recall = sum(_hit(max(row), thr, strict) for row in matrix) / len(g)
    precision = sum(_hit(max(col), thr, strict) for col in zip(*matrix)) / len(p)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def nextgqa_iou_iop(span: Segment | None, gts: Sequence[Segment]) -> tuple[float, float]:
    """NExT-GQA `eval_ground`: max IoU and max IoP (overlap / predicted length) of one predicted span
    over the evidence spans; a point span inside an evidence span has IoP 1 (and IoU 0)."""
    best_iou = best_iop = 0.0
    if span is None:
        return best_iou, best_iop
    s, e = span
    for g in gts:
        if s == e:
            best_iop = max(best_iop, float(g[0] <= s <= g[1]))
            continue
        best_iou = max(best_iou, iou(span, g))
        best_iop = max(best_iop, max(0.0, min(e, g[1]) - max(s, g[0])) / (e - s))
    return best_iou, best_iop


def _parser(t: tasks_lib.Task, pick: str | None) -> tasks_lib.Task:
    if pick is not None and pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    if pick is None or t.name not in ("tg", "tvg") or pick == t.pick:
        return t
    return dataclasses.replace(t, pick=pick)


def conventions(
    task: str, *, strict: bool = False, official: bool = False, clip: bool = False, pick: str | None = None, **_: Any
) -> str:
    """The conventions `score(task, ..., **options)` follows, in words (for report tables)."""
    t = _parser(tasks_lib.get_task(task), pick)
    if not t.has_segments:
        return "exact match"
    parts = [f"IoU {'>' if strict else '>='} thr"]
    if t.name in ("tg", "tvg"):
        parts.append("last 'x to y' of the answer" if t.pick == "last" else "first predicted segment")
    parts.append("times clipped to [0, duration]" if clip else "raw annotation times")
    if t.name == "vhd" and official:
        parts.append("MR_R1: first window vs best ground-truth window (moment_detr)")
    if t.name == "gvqa":
        parts.append(
            "gqa_*: first span; "
            + ("items without a span left out (NExT-GQA official)" if official else "items without a span score 0")
        )
    return "; ".join(parts)


def score(
    task: str,
    outputs: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    *,
    strict: bool = False,
    official: bool = False,
    clip: bool = False,
    pick: str | None = None,
    max_segments: int = EVAL_MAX_SEGMENTS,
) -> dict[str, float]:
    """Metric name -> percent for `outputs` (model texts) against unified `targets`; the options are
    the conventions of the module docstring."""
    t = _parser(tasks_lib.get_task(task), pick)
    outputs, targets = list(outputs), list(targets)
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
    parsed = [t.parse(o if isinstance(o, str) else "", fallback=True, max_segments=max_segments) for o in outputs]
    if not t.has_segments:
        return {"Acc": _mean([float(p.choice == t.expected_choice(s)) for p, s in zip(parsed, targets)])}
    raw = [(p.segments, *tasks_lib.target_segments(s)) for p, s in zip(parsed, targets)]
    if t.name == "tal":
        out = {f"F1@{thr}": _mean([tal_f1(p, g, d, thr, strict, clip) for p, g, d in raw]) for thr in TAL_THRESHOLDS}
        out["mF1"] = sum(out.values()) / len(TAL_THRESHOLDS)
        return out
    # (predicted segments, ground-truth segments) as the metrics use them
    items = [([segment(x, d, clip) for x in p], [segment(x, d, clip) for x in g]) for p, g, d in raw]
    if t.name in ("tg", "tvg"):
        return _recall_metrics([iou(p[0], g[0]) if p else 0.0 for p, g in items], "R1", strict)
    if t.name == "dtg":
        ious = [iou(p[j], g[j]) if j < len(p) else 0.0 for p, g in items for j in range(len(g))]
        return _recall_metrics(ious, "R", strict)

    unions = [union_iou(p, g) for p, g in items]
    if t.name == "vhd":
        out = _recall_metrics(unions, "R", strict)
        if official:
            top = [max(iou(p[0], x) for x in g) if p else 0.0 for p, g in items]
            out.update({f"MR_R1@{thr}": _mean([float(_hit(x, thr, strict)) for x in top]) for thr in MR_THRESHOLDS})
        return out

    # gvqa
    correct = [float(p.choice == t.expected_choice(s)) for p, s in zip(parsed, targets)]
    grounded = [(nextgqa_iou_iop(p[0] if p else None, g), c) for (p, g), c in zip(items, correct) if p or not official]
    out = {"Acc": _mean(correct), **_recall_metrics(unions, "R", strict)}
    out["gqa_mIoP"] = _mean([iop for (_, iop), _ in grounded])
    for thr in GQA_THRESHOLDS:
        out[f"gqa_IoP@{thr}"] = _mean([float(_hit(iop, thr, strict)) for (_, iop), _ in grounded])
    out["gqa_mIoU"] = _mean([iou_ for (iou_, _), _ in grounded])
    for thr in GQA_THRESHOLDS:
        out[f"gqa_IoU@{thr}"] = _mean([float(_hit(iou_, thr, strict)) for (iou_, _), _ in grounded])
    out["Acc@GQA"] = _mean([c * float(_hit(iop, 0.5, strict)) for (_, iop), c in grounded])
    return out


# ---- general video multiple-choice benchmarks (TempR1 Fig. 3) ----------------------------------

# benchmark (the samples' `source`) -> the `extra` fields its official script breaks accuracy down by:
# TempCompass per temporal dimension, MVBench per task, Video-MME per video length, domain and task
# type, Perception Test per area and reasoning type.
MCQ_BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "tempcompass": ("dimension",),
    "mvbench": ("task_type",),
    "videomme": ("duration", "domain", "task_type"),
    "perception_test": ("area", "reasoning"),
}


def mcq_choice(output: str, n_options: int) -> str | None:
    """The option letter an output gives: the first standalone capital letter that names an option, in
    the last `<answer>` block or, without one, in the whole text (so "I think B" reads B)."""
    output = output if isinstance(output, str) else ""
    block = tasks_lib.last_block(output, "answer")
    text = output if block is None else block
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_options]
    for i, ch in enumerate(text):
        if ch in letters and not text[i - 1 : i].isalpha() and not text[i + 1 : i + 2].isalpha():
            return ch
    return None


def video_mcq_scores(benchmark: str, outputs: Sequence[str], targets: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Accuracy in percent as the benchmark's official script reports it: `Acc` over all questions (the
    scripts' overall / "avg": correct over questions) and `{field}/{value}` per value of each of its
    breakdown fields (`MCQ_BREAKDOWNS`, read from the targets' `extra`), values in first-seen order."""
    if benchmark not in MCQ_BREAKDOWNS:
        raise ValueError(f"unknown video multiple-choice benchmark {benchmark!r}; known: {', '.join(MCQ_BREAKDOWNS)}")
    outputs, targets = list(outputs), list(targets)
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
    mcq = tasks_lib.get_task("mcq")
    correct = [
        float(mcq_choice(o, len(t.get("options") or ())) == mcq.expected_choice(t)) for o, t in zip(outputs, targets)
    ]
    out = {"Acc": _mean(correct)}
    for field in MCQ_BREAKDOWNS[benchmark]:
        groups: dict[str, list[float]] = {}
        for c, t in zip(correct, targets):
            groups.setdefault(str((t.get("extra") or {}).get(field, "")), []).append(c)
        out.update({f"{field}/{value}": _mean(values) for value, values in groups.items()})
    return out
