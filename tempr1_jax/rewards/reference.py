"""Plain-Python rewards, line by line from TempR1 §3.2-3.4 (eq. 3-11) and DESIGN §2.

For reading and for tests: the batched kernel (`kernel.py`) must agree with these functions.
A segment is a `(start, end)` pair of floats as parsed (possibly NaN, inf, negative, reversed).
Robustness rules (DESIGN §2): a predicted segment with a non-finite number or end < start is
"invalid": it still counts as a prediction but has IoU 0 with everything; valid ones are clipped
to [0, duration]. Ground truths are validated upstream (`tasks.target_segments`) and clipped too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tempr1_jax import tasks as tasks_lib

Segment = tuple[float, float]


def clip_segment(seg: Segment, duration: float) -> Segment | None:
    """The segment clipped to [0, duration], or None if it is invalid (non-finite or reversed)."""
    s, e = seg
    if not (math.isfinite(s) and math.isfinite(e)) or e < s:
        return None
    return (min(max(s, 0.0), duration), min(max(e, 0.0), duration))


def iou(p: Segment | None, g: Segment | None) -> float:
    """Temporal IoU = Intersection / Union of two clipped segments (0 if either is None or empty)."""
    if p is None or g is None:
        return 0.0
    inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
    union = (p[1] - p[0]) + (g[1] - g[0]) - inter
    return inter / union if union > 0 else 0.0


def type1_reward(preds: Sequence[Segment], gts: Sequence[Segment], duration: float) -> float:
    """Eq. 4, one-to-one (TG, DTG): summed IoU of index-aligned pairs / max(n_pred, n_gt)."""
    n = max(len(preds), len(gts))
    if len(preds) == 0 or n == 0:
        return 0.0
    total = 0.0
    for p, g in zip(preds, gts):
        total += iou(clip_segment(p, duration), clip_segment(g, duration))
    return total / n


def merge_union(segs: Sequence[Segment | None]) -> list[Segment]:
    """The union of (clipped, possibly overlapping) segments as sorted disjoint intervals."""
    merged: list[list[float]] = []
    for s, e in sorted(x for x in segs if x is not None):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def union_iou(preds: Sequence[Segment], gts: Sequence[Segment], duration: float) -> float:
    """Eq. 5, many-to-one (VHD, GVQA): IoU of the union of predictions and the union of GTs."""
    up = merge_union([clip_segment(p, duration) for p in preds])
    ug = merge_union([clip_segment(g, duration) for g in gts])
    inter = 0.0
    for ps, pe in up:
        for gs, ge in ug:
            inter += max(0.0, min(pe, ge) - max(ps, gs))
    len_p = sum(e - s for s, e in up)
    len_g = sum(e - s for s, e in ug)
    union = len_p + len_g - inter
    return inter / union if union > 0 else 0.0


def count_reward(n_pred: int, n_gt: int, sigma: float = 1.0) -> float:
    """Eq. 6: R_num = exp(-|N_pred - N_gt| / (min(N_gt, 3) * sigma))."""
    return math.exp(-abs(n_pred - n_gt) / (min(n_gt, 3) * sigma))


def _chronological(segs: Sequence[Segment | None]) -> list[Segment | None]:
    # Sorted by (start, end); invalid segments last (their IoU is 0, so their place is irrelevant).
    valid = sorted(s for s in segs if s is not None)
    return valid + [None] * (len(segs) - len(valid))


def dp_matching(iou_matrix: Sequence[Sequence[float]]) -> tuple[float, list[tuple[int, int]]]:
    """Algorithm 1: the order-preserving one-to-one matching of largest summed IoU.

    Returns (sIoU, matched (i, j) pairs). D[i][j] = max(D[i-1][j], D[i][j-1], D[i-1][j-1] + I[i][j]).
    """
    m = len(iou_matrix)
    n = len(iou_matrix[0]) if m else 0
    D = [[0.0] * (n + 1) for _ in range(m + 1)]
    P = [[""] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            a = D[i - 1][j]
            b = D[i][j - 1]
            c = D[i - 1][j - 1] + iou_matrix[i - 1][j - 1]
            D[i][j] = max(a, b, c)
            P[i][j] = "up" if D[i][j] == a else ("left" if D[i][j] == b else "diag")
    pairs = []
    i, j = m, n
    while i > 0 and j > 0:
        if P[i][j] == "diag":
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif P[i][j] == "up":
            i -= 1
        else:
            j -= 1
    return D[m][n], pairs[::-1]


MATCHINGS = ("dp", "sequential")


def match_reward(preds: Sequence[Segment], gts: Sequence[Segment], duration: float, matching: str = "dp") -> float:
    """Eq. 7-8: F1 with P = sIoU / N_pred and R = sIoU / N_gt over chronologically sorted lists.

    matching "dp": sIoU of Algorithm 1; "sequential" (TempR1 Table 3's naive baseline): the k-th
    prediction is matched with the k-th ground truth, k < min(N_pred, N_gt).
    """
    if not preds or not gts:
        return 0.0
    p_sorted = _chronological([clip_segment(p, duration) for p in preds])
    g_sorted = _chronological([clip_segment(g, duration) for g in gts])
    if matching == "sequential":
        s_iou = sum(iou(p, g) for p, g in zip(p_sorted, g_sorted))
    else:
        matrix = [[iou(p, g) for g in g_sorted] for p in p_sorted]
        s_iou, _ = dp_matching(matrix)
    precision = s_iou / len(preds)
    recall = s_iou / len(gts)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def type3_reward(
    preds: Sequence[Segment],
    gts: Sequence[Segment],
    duration: float,
    sigma: float = 1.0,
    use_count_reward: bool = True,
    matching: str = "dp",
) -> float:
    """Eq. 9, many-to-many (TAL): R_num + R_match; 0 when nothing could be parsed.

    use_count_reward=False drops R_num and `matching` picks R_match's matcher (TempR1 Table 3's ablations).
    """
    if not preds:
        return 0.0
    r_num = count_reward(len(preds), len(gts), sigma) if use_count_reward else 0.0
    return r_num + match_reward(preds, gts, duration, matching)


def tiou_reward(preds: Sequence[Segment], gts: Sequence[Segment], duration: float) -> float:
    """Time-R1: IoU * (1 - |ts - ts'| / D) * (1 - |te - te'| / D) for the (single) prediction."""
    if not preds:
        return 0.0
    p = clip_segment(preds[0], duration)
    g = clip_segment(gts[0], duration)
    if p is None:
        return 0.0
    return iou(p, g) * (1 - abs(p[0] - g[0]) / duration) * (1 - abs(p[1] - g[1]) / duration)


# Time-R1's reward forms for temporal grounding (its ablation of reward designs; `time_r1_reward`).
TVG_REWARDS = ("tiou", "iou", "iou_center", "center", "exact", "abs", "rmse")
# A zero-length ground truth would make r_center infinite: its length is floored at one frame interval
# of the 2 FPS sampling (predictions are not finer than that).
CENTER_MIN_LENGTH = 0.5


def time_r1_reward(preds: Sequence[Segment], gts: Sequence[Segment], duration: float, form: str = "tiou") -> float:
    """Time-R1's grounding reward `form` for the (single) prediction p against the ground truth g, both
    clipped to [0, D] (D = duration):

    - "tiou": IoU * (1 - |ps - gs| / D) * (1 - |pe - ge| / D) (the Time-R1 method; `tiou_reward`)
    - "iou": IoU; "exact": 1 if ps = gs and pe = ge, else 0
    - "center": r_center = 1 - |(ps + pe) / 2 - (gs + ge) / 2| / (ge - gs), the length floored at
      `CENTER_MIN_LENGTH`; "iou_center": IoU + r_center (the ablation slide's "tIoU", eq. 9)
    - "abs": -(|ps - gs| + |pe - ge|); "rmse": -sqrt(((ps - gs)^2 + (pe - ge)^2) / 2)

    A missing or invalid prediction scores what the worst prediction inside the video would: 0 for the
    IoU forms and "exact", the largest distances from g's points to the ends of the video otherwise.
    """
    if form == "tiou":
        return tiou_reward(preds, gts, duration)
    g = clip_segment(gts[0], duration)
    p = clip_segment(preds[0], duration) if preds else None
    overlap = iou(p, g)
    if form == "iou":
        return overlap
    if form == "exact":
        return 1.0 if p is not None and p == g else 0.0
    worst = (max(g[0], duration - g[0]), max(g[1], duration - g[1]))
    d_start, d_end = (abs(p[0] - g[0]), abs(p[1] - g[1])) if p is not None else worst
    if form == "abs":
        return -(d_start + d_end)
    if form == "rmse":
        return -math.sqrt((d_start**2 + d_end**2) / 2)
    center = (g[0] + g[1]) / 2
    d_center = abs((p[0] + p[1]) / 2 - center) if p is not None else max(center, duration - center)
    r_center = 1 - d_center / max(g[1] - g[0], CENTER_MIN_LENGTH)
    if form == "center":
        return r_center
    if form == "iou_center":
        return overlap + r_center
    raise ValueError(f"tvg_reward must be one of {TVG_REWARDS}, got {form!r}")


def loc_reward(
    kind: str,
    preds: Sequence[Segment],
    gts: Sequence[Segment],
    duration: float,
    sigma: float = 1.0,
    use_count_reward: bool = True,
    matching: str = "dp",
    tvg_form: str = "tiou",
) -> float:
    """The localisation reward `kind` ("type1", "type2", "type3", "tiou"; "exact" has none); `sigma`,
    `use_count_reward` and `matching` shape Type 3, `tvg_form` the "tiou" kind (`time_r1_reward`)."""
    if kind == "type1":
        return type1_reward(preds, gts, duration)
    if kind == "type2":
        return union_iou(preds, gts, duration)
    if kind == "type3":
        return type3_reward(preds, gts, duration, sigma, use_count_reward, matching)
    if kind == "tiou":
        return time_r1_reward(preds, gts, duration, tvg_form)
    return 0.0


def reward_reference(
    task: str,
    completion: str,
    target: Mapping[str, Any],
    sigma: float = 1.0,
    think: bool = True,
    weights: Sequence[float] | None = None,
    max_segments: int = tasks_lib.MAX_SEGMENTS,
    use_count_reward: bool = True,
    matching: str = "dp",
    tvg_reward: str = "tiou",
) -> dict[str, float]:
    """Eq. 3, 10, 11 for one completion: {"format", "loc", "total"} and "cls" where the task has it.

    weights = (w_format, w_loc, w_cls), defaulting to the task's; TPRU tasks default to
    0.9 * exact + 0.1 * format-ok * 0.2 (see `tasks.TPRU_WEIGHTS`). `tvg_reward` picks Time-R1's
    grounding reward form for the `tvg` task (`TVG_REWARDS`).
    """
    t = tasks_lib.get_task(task)
    w_format, w_loc, w_cls = t.weights if weights is None else weights
    parsed = t.parse(completion, fallback=False, max_segments=max_segments)
    r_format = 1.0 if t.format_ok(completion if isinstance(completion, str) else "", think) else 0.0
    r_loc = 0.0
    if t.has_segments:
        gts, duration = tasks_lib.target_segments(target)
        r_loc = loc_reward(
            t.reward, list(parsed.segments), gts, duration, sigma, use_count_reward, matching, tvg_reward
        )
    out = {"format": r_format, "loc": r_loc}
    total = w_format * r_format + w_loc * r_loc
    if t.has_cls:
        out["cls"] = 1.0 if parsed.choice == t.expected_choice(target) else 0.0
        total += w_cls * out["cls"]
    out["total"] = total
    return out
