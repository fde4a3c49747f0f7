"""Rewards (DESIGN §2): `compute_rewards(task, completions, targets, **options)`.

`parsing` turns completions into padded arrays, `kernel` scores them in batched jnp and
`reference` holds the plain-Python equations the kernel is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards import kernel, parsing, reference


def compute_rewards(
    task: str | Sequence[str],
    completions: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    *,
    sigma: float = 1.0,
    think: bool = True,
    format_weight: float | None = None,
    loc_weight: float | None = None,
    cls_weight: float | None = None,
    max_segments: int = tasks_lib.MAX_SEGMENTS,
    use_count_reward: bool = True,
    matching: str = "dp",
    tvg_reward: str = "tiou",
) -> dict[str, np.ndarray]:
    """Rewards per completion as float32 numpy arrays: `format`, `loc`, `total` (+ `cls`).

    task: a task name for the whole batch, or one name per completion (mixed batch; `cls` is
    then returned if any task has it, 0 for the others). targets: unified samples (DESIGN §6).
    sigma: Type 3 count-reward scale. think: whether the format template requires the
    `<think>` block. *_weight: override the task's weights in
    total = w_format * format + w_loc * loc + w_cls * cls (TempR1: 1, 1, 1 for GVQA; TPRU:
    0.9 * exact + 0.1 * format-ok * 0.2, see `tasks.TPRU_WEIGHTS`). use_count_reward / matching:
    TempR1 Table 3's Type 3 ablations (R_num left out; "sequential" instead of the "dp" matcher).
    tvg_reward: Time-R1's grounding reward form for the `tvg` task, one of `reference.TVG_REWARDS`
    ("tiou" by default; "iou", "iou_center", "center", "exact", "abs", "rmse": its reward ablation).
    Model output never raises; a malformed target raises ValueError naming its id.
    """
    try:
        ok = 0 < float(sigma) < float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if matching not in reference.MATCHINGS:
        raise ValueError(f"matching must be one of {reference.MATCHINGS}, got {matching!r}")
    if tvg_reward not in reference.TVG_REWARDS:
        raise ValueError(f"tvg_reward must be one of {reference.TVG_REWARDS}, got {tvg_reward!r}")
    if isinstance(completions, str):
        raise ValueError("completions must be a sequence of strings, not one string")
    completions, targets = list(completions), list(targets)
    task_list = parsing.resolve_tasks(task, len(completions))
    n = len(completions)
    if len(targets) != n:
        raise ValueError(f"{n} completions for {len(targets)} targets")
    format_ok, loc, cls = np.zeros(n), np.zeros(n), np.zeros(n)
    weights, has_cls = np.zeros((n, 3)), np.zeros(n, bool)
    # One kernel family at a time: its kernel runs (asynchronously) while the next rows are parsed.
    pending = []
    for rows in parsing.family_chunks(task_list):
        if len(rows) == n:
            sub = (task_list, completions, targets)
        else:
            sub = tuple([x[i] for i in rows.tolist()] for x in (task_list, completions, targets))
        inputs = parsing.parse_batch(*sub, think=think, max_segments=max_segments)
        args = (inputs.pred, inputs.pred_mask, inputs.gt, inputs.gt_mask, inputs.duration, inputs.kind)
        pending.append(
            (rows, inputs, kernel.dispatch(kernel.prepare(*args), sigma, use_count_reward, matching, tvg_reward))
        )
    for rows, inputs, running in pending:
        loc[rows] = kernel.collect(running)
        format_ok[rows], cls[rows], weights[rows], has_cls[rows] = (
            inputs.format_ok,
            inputs.cls,
            inputs.weights,
            inputs.has_cls,
        )
    for col, override in enumerate((format_weight, loc_weight, cls_weight)):
        if override is not None:
            weights[:, col] = override
    total = kernel.total_rewards(format_ok, loc, np.where(has_cls, cls, 0.0), weights)
    out = {"format": format_ok, "loc": loc, "total": total}
    if has_cls.any():
        out["cls"] = cls
    return {k: v.astype(np.float32) for k, v in out.items()}


__all__ = ["compute_rewards"]
