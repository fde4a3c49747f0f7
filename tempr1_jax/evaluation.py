"""Benchmark metrics (DESIGN §3): `score(task, outputs, targets, **options)`, in percent.

Outputs are read with the task's lenient parser in fallback mode (untagged text is read whole)
and segments follow the reward rules of DESIGN §2 (clipped to [0, duration]; non-finite or
reversed = IoU 0). Unparseable outputs score 0 and stay in the denominator. Thresholds use
IoU >= thr, or > thr with `strict=True` (Time-R1's script).

Keys per task: tg/tvg `mIoU R1@0.3 R1@0.5 R1@0.7`; dtg/vhd `mIoU R@0.3 R@0.5 R@0.7` (vhd adds
`MR_R1@0.5 MR_R1@0.7` with `official=True`); gvqa `Acc mIoU R@0.3 R@0.5 R@0.7 gqa_mIoP
gqa_IoP@0.3 gqa_IoP@0.5 gqa_mIoU gqa_IoU@0.3 gqa_IoU@0.5 Acc@GQA`; tal `F1@0.1 F1@0.3 F1@0.5
F1@0.7 mF1`; order/mcq `Acc`. The video multiple-choice benchmarks of TempR1 Fig. 3 (TempCompass,
MVBench, Video-MME, Perception Test) are scored per dimension by `video_mcq_scores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards.reference import clip_segment, iou, union_iou

EVAL_MAX_SEGMENTS = 1024
RECALL_THRESHOLDS = (0.3, 0.5, 0.7)
TAL_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)


def _hit(value: float, thr: float, strict: bool) -> bool:
    return value > thr if strict else value >= thr


def _mean(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def _recall_metrics(ious: Sequence[float], prefix: str, strict: bool, miou: str = "mIoU") -> dict[str, float]:
    out = {miou: _mean(ious)}
    for thr in RECALL_THRESHOLDS:
        out[f"{prefix}@{thr}"] = _mean([float(_hit(x, thr, strict)) for x in ious])
    return out


def _overlap(p, g) -> float:
    return max(0.0, min(p[1], g[1]) - max(p[0], g[0])) if p is not None else 0.0


def tal_f1(preds: Sequence[tuple[float, float]], gts: Sequence[tuple[float, float]], duration: float, thr: float, strict: bool = False) -> float:
    """Per-sample F1 (MUSEG form): 0 if the best IoU misses thr, else 2PR/(P+R) with recall = share
    of GT whose best IoU hits thr and precision = share of predictions whose best IoU hits thr."""
    if not preds:
        return 0.0
    p = [clip_segment(x, duration) for x in preds]
    g = [clip_segment(x, duration) for x in gts]
    matrix = [[iou(a, b) for a in p] for b in g]  # GT x pred
    if not _hit(max(max(row) for row in matrix), thr, strict):
        return 0.0
    recall = sum(_hit(max(row), thr, strict) for row in matrix) / len(g)
    precision = sum(_hit(max(col), thr, strict) for col in zip(*matrix)) / len(p)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _gqa_official(span, gts, duration) -> tuple[float, float]:
    """NExT-GQA: one predicted span; max IoU and max IoP (overlap / span length) over GT spans."""
    p = clip_segment(span, duration) if span is not None else None
    if p is None:
        return 0.0, 0.0
    g = [clip_segment(x, duration) for x in gts]
    best_iou = max(iou(p, x) for x in g)
    length = p[1] - p[0]
    best_iop = max(_overlap(p, x) / length for x in g) if length > 0 else 0.0
    return best_iou, best_iop


def score(
    task: str,
    outputs: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    *,
    strict: bool = False,
    official: bool = False,
    max_segments: int = EVAL_MAX_SEGMENTS,
) -> dict[str, float]:
    """Metric name -> percent for `outputs` (model texts) against unified `targets`."""
    t = tasks_lib.get_task(task)
    outputs, targets = list(outputs), list(targets)
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
    parsed = [t.parse(o if isinstance(o, str) else "", fallback=True, max_segments=max_segments) for o in outputs]
    if not t.has_segments:
        return {"Acc": _mean([float(p.choice == t.expected_choice(s)) for p, s in zip(parsed, targets)])}
    gt = [tasks_lib.target_segments(s) for s in targets]

    if t.name in ("tg", "tvg"):
        ious = [
            iou(clip_segment(p.segments[0], d), clip_segment(g[0], d)) if p.segments else 0.0
            for p, (g, d) in zip(parsed, gt)
        ]
        return _recall_metrics(ious, "R1", strict)
    if t.name == "dtg":
        ious = [
            iou(clip_segment(p.segments[j], d), clip_segment(g[j], d)) if j < len(p.segments) else 0.0
            for p, (g, d) in zip(parsed, gt)
            for j in range(len(g))
        ]
        return _recall_metrics(ious, "R", strict)
    if t.name == "tal":
        out = {f"F1@{thr}": _mean([tal_f1(p.segments, g, d, thr, strict) for p, (g, d) in zip(parsed, gt)]) for thr in TAL_THRESHOLDS}
        out["mF1"] = sum(out.values()) / len(TAL_THRESHOLDS)
        return out

    union_ious = [union_iou(p.segments, g, d) for p, (g, d) in zip(parsed, gt)]
    if t.name == "vhd":
        out = _recall_metrics(union_ious, "R", strict)
        if official:
            top = [_gqa_official(p.segments[0] if p.segments else None, g, d)[0] for p, (g, d) in zip(parsed, gt)]
            out.update({f"MR_R1@{thr}": _mean([float(_hit(x, thr, strict)) for x in top]) for thr in (0.5, 0.7)})
        return out

    # gvqa
    correct = [float(p.choice == t.expected_choice(s)) for p, s in zip(parsed, targets)]
    official_pairs = [_gqa_official(p.segments[0] if p.segments else None, g, d) for p, (g, d) in zip(parsed, gt)]
    max_iou = [x[0] for x in official_pairs]
    max_iop = [x[1] for x in official_pairs]
    out = {"Acc": _mean(correct), **_recall_metrics(union_ious, "R", strict)}
    out["gqa_mIoP"] = _mean(max_iop)
    for thr in (0.3, 0.5):
        out[f"gqa_IoP@{thr}"] = _mean([float(_hit(x, thr, strict)) for x in max_iop])
    out["gqa_mIoU"] = _mean(max_iou)
    for thr in (0.3, 0.5):
        out[f"gqa_IoU@{thr}"] = _mean([float(_hit(x, thr, strict)) for x in max_iou])
    out["Acc@GQA"] = _mean([c * float(_hit(x, 0.5, strict)) for c, x in zip(correct, max_iop)])
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
        if ch in letters and not text[i - 1:i].isalpha() and not text[i + 1:i + 2].isalpha():
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
    correct = [float(mcq_choice(o, len(t.get("options") or ())) == mcq.expected_choice(t))
               for o, t in zip(outputs, targets)]
    out = {"Acc": _mean(correct)}
    for field in MCQ_BREAKDOWNS[benchmark]:
        groups: dict[str, list[float]] = {}
        for c, t in zip(correct, targets):
            groups.setdefault(str((t.get("extra") or {}).get(field, "")), []).append(c)
        out.update({f"{field}/{value}": _mean(values) for value, values in groups.items()})
    return out
