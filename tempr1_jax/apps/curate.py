"""`tempr1 curate`: score a split's difficulty with a model's greedy outputs and keep Time-R1's subset.

mode "select": a Gaussian-weighted subset over difficulty; mode "filter": drop what the model solves
(the rules are in `tempr1_jax.difficulty`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tempr1_jax.difficulty import CurateConfig, drop_solved, sample_ious, select_subset

MODES = ("select", "filter")


def curate(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    cfg: CurateConfig,
    mode: str = "select",
) -> tuple[list[Mapping[str, Any]], np.ndarray, dict[str, Any]]:
    """(kept samples, difficulty per sample, summary) from greedy `predictions` of `targets`.

    mode "select": a Gaussian-weighted subset of `cfg.size` samples (all of them if fewer);
    mode "filter": the samples with IoU <= `cfg.solved_iou`.
    """
    if mode not in MODES:
        raise ValueError(f"curate mode must be one of {MODES}, got {mode!r}")
    ious = sample_ious([p["task"] for p in predictions], [p["output"] for p in predictions], targets)
    if mode == "select":
        chosen = select_subset(
            ious, min(cfg.size, int(np.count_nonzero(np.isfinite(ious)))), cfg.mean, cfg.std, cfg.seed
        )
        kept = [targets[i] for i in chosen]
        kept_ious = ious[chosen]
    else:
        kept = drop_solved(targets, ious, cfg.solved_iou)
        kept_ious = ious[~(ious > cfg.solved_iou)]
    hist = np.histogram(ious, bins=10, range=(0.0, 1.0))[0].tolist()
    summary = {
        "mode": mode,
        "samples": len(targets),
        "kept": len(kept),
        "mean_iou": float(np.mean(ious)) if len(ious) else 0.0,
        "kept_mean_iou": float(np.mean(kept_ious)) if len(kept_ious) else 0.0,
        "iou_histogram_0_to_1": hist,
        "config": dataclasses.asdict(cfg),
    }
    return kept, ious, summary
