"""Time-R1's data recipe: difficulty = the model's IoU per sample, a Gaussian-weighted subset, and a
per-epoch filter that drops samples the current policy already solves.

- `gaussian_weights` / `select_subset`: sample `size` distinct samples with probability proportional to
  exp(-(d - mean)^2 / (2 std^2)) over the difficulty d (Time-R1: mean 0.3, std 0.2), so that samples the
  base model half-solves dominate the subset while easy and hopeless ones stay rare.
- `drop_solved`: before an epoch, keep only samples whose current IoU is at most a threshold (0.7).
- `sample_ious`: the IoU of each greedy completion, the difficulty score used by both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from tempr1_jax import tasks as tasks_lib
from tempr1_jax.rewards import reference

DEFAULT_MEAN = 0.3
DEFAULT_STD = 0.2
DEFAULT_SOLVED_IOU = 0.7


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CurateConfig:
    """`tempr1 curate` settings: subset size and the Gaussian over difficulty, the solved threshold."""

    size: int = 2500
    mean: float = DEFAULT_MEAN
    std: float = DEFAULT_STD
    solved_iou: float = DEFAULT_SOLVED_IOU
    seed: int = 0


def gaussian_weights(difficulty: Sequence[float] | np.ndarray, mean: float = DEFAULT_MEAN,
                     std: float = DEFAULT_STD) -> np.ndarray:
    """Unnormalised Gaussian weight of each difficulty value (non-finite difficulty -> weight 0)."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    d = np.asarray(difficulty, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"difficulty must be a 1-D array, got shape {d.shape}")
    w = np.exp(-0.5 * ((d - mean) / std) ** 2)
    return np.where(np.isfinite(d), w, 0.0)


def select_subset(difficulty: Sequence[float] | np.ndarray, size: int, mean: float = DEFAULT_MEAN,
                  std: float = DEFAULT_STD, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of `size` distinct samples drawn with Gaussian weights over difficulty.

    `size` larger than the number of samples with a positive weight raises ValueError. Deterministic
    for a given seed.
    """
    w = gaussian_weights(difficulty, mean, std)
    positive = int(np.count_nonzero(w > 0))
    if not 0 <= size <= positive:
        raise ValueError(f"subset size {size} must be in [0, {positive}] (samples with a finite difficulty)")
    if size == 0:
        return np.zeros((0,), np.int64)
    rng = np.random.default_rng(seed)
    # Weighted sampling without replacement via Gumbel top-k: keys log(w) + Gumbel noise.
    with np.errstate(divide="ignore"):
        keys = np.log(w) + rng.gumbel(size=w.shape)
    return np.sort(np.argsort(-keys, kind="stable")[:size])


def drop_solved(samples: Sequence[Mapping[str, Any]], ious: Sequence[float] | np.ndarray,
                threshold: float = DEFAULT_SOLVED_IOU) -> list[Mapping[str, Any]]:
    """The samples whose current IoU is at most `threshold` (Time-R1's per-epoch filter).

    A non-finite IoU counts as unsolved (the sample is kept).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.shape != (len(samples),):
        raise ValueError(f"need one IoU per sample: {len(samples)} samples, ious shape {ious.shape}")
    keep = ~(ious > threshold)
    return [s for s, k in zip(samples, keep) if k]


def sample_iou(task: str, completion: str, target: Mapping[str, Any]) -> float:
    """How well one completion solves its sample, in [0, 1]: the difficulty score.

    TG/TVG: IoU of the segment the metric reads (first, or last for TVG); DTG: mean index-aligned
    IoU (Type 1); VHD/GVQA: IoU of the unions (Type 2); TAL: the DP-matched F1 (R_match); letter
    tasks: exact match. Untagged text is read as a whole (the evaluation's lenient parse).
    """
    t = tasks_lib.get_task(task)
    parsed = t.parse(completion, fallback=True)
    if not t.has_segments:
        return float(parsed.choice == t.expected_choice(target))
    gts, duration = tasks_lib.target_segments(target)
    preds = list(parsed.segments)
    if t.answer == "segment":
        preds = preds[:1]
        return reference.iou(reference.clip_segment(preds[0], duration) if preds else None,
                             reference.clip_segment(gts[0], duration))
    if t.reward == "type3":
        return reference.match_reward(preds, gts, duration)
    if t.reward == "type1":
        return reference.type1_reward(preds, gts, duration)
    return reference.union_iou(preds, gts, duration)


def sample_ious(tasks: Sequence[str], completions: Sequence[str],
                targets: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """`sample_iou` for each (task, completion, target) triple, as float64 [N]."""
    if not len(tasks) == len(completions) == len(targets):
        raise ValueError(f"lengths differ: {len(tasks)} tasks, {len(completions)} completions, "
                         f"{len(targets)} targets")
    return np.array([sample_iou(t, c, s) for t, c, s in zip(tasks, completions, targets)], np.float64)


MODES = ("select", "filter")


def curate(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], cfg: CurateConfig,
           mode: str = "select") -> tuple[list[Mapping[str, Any]], np.ndarray, dict[str, Any]]:
    """(kept samples, difficulty per sample, summary) from greedy `predictions` of `targets`.

    mode "select": a Gaussian-weighted subset of `cfg.size` samples (all of them if fewer);
    mode "filter": the samples with IoU <= `cfg.solved_iou`.
    """
    if mode not in MODES:
        raise ValueError(f"curate mode must be one of {MODES}, got {mode!r}")
    ious = sample_ious([p["task"] for p in predictions], [p["output"] for p in predictions], targets)
    if mode == "select":
        chosen = select_subset(ious, min(cfg.size, int(np.count_nonzero(np.isfinite(ious)))), cfg.mean, cfg.std,
                               cfg.seed)
        kept = [targets[i] for i in chosen]
        kept_ious = ious[chosen]
    else:
        kept = drop_solved(targets, ious, cfg.solved_iou)
        kept_ious = ious[~(ious > cfg.solved_iou)]
    hist = np.histogram(ious, bins=10, range=(0.0, 1.0))[0].tolist()
    summary = {"mode": mode, "samples": len(targets), "kept": len(kept), "mean_iou": float(np.mean(ious)) if len(ious) else 0.0,
               "kept_mean_iou": float(np.mean(kept_ious)) if len(kept_ious) else 0.0,
               "iou_histogram_0_to_1": hist, "config": dataclasses.asdict(cfg)}
    return kept, ious, summary


def run_curate_command(*, checkpoint: str, tokenizer: str | None, dataset: str, split: str, media_dir: str | None,
                       out: str, mode: str, batch_size: int, max_new_tokens: int | None) -> dict[str, Any]:
    """`tempr1 curate` after gin is parsed: greedy outputs of the model, difficulty, subset, files.

    Writes `out` (JSONL of the kept samples, media paths as in the source), `out` + `.difficulty.jsonl`
    (id, task, iou, output for every sample) and `out` + `.report.json`. With several processes each
    generates for its shard of the split (the model on its own devices) and process 0 writes the files.
    """
    import json
    import pathlib

    import transformers

    from tempr1_jax import eval_harness, multihost
    from tempr1_jax.rl import setup
    from tempr1_jax.rl.rollout import RolloutConfig

    rollout_cfg = RolloutConfig()
    model = eval_harness.load_model(checkpoint)
    model.config = setup.ModelSetup().configure(model.config)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer or checkpoint)
    loader = eval_harness.split_loader(tok, model.config, dataset, split, media_dir, batch_size, rollout_cfg.think)
    predictions, targets, skipped = eval_harness.generate_predictions(
        model, tok, loader, max_new_tokens=max_new_tokens or rollout_cfg.max_new_tokens)
    kept, ious, summary = curate(predictions, targets, CurateConfig(), mode)
    summary["skipped"] = len(skipped)
    if not multihost.is_main():  # every process has all the outputs; one writes the files
        return summary
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(s)) + "\n" for s in kept))
    with open(f"{path}.difficulty.jsonl", "w") as f:
        for p, iou in zip(predictions, ious):
            f.write(json.dumps({"id": p["id"], "task": p["task"], "iou": float(iou), "output": p["output"]}) + "\n")
    pathlib.Path(f"{path}.report.json").write_text(json.dumps(summary, indent=2))
    return summary
