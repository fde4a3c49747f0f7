"""`tempr1 demo`: the whole method on a laptop-class CPU, end to end.

1. write the synthetic dataset (real mp4 clips of coloured shapes with known events; train and a
   held-out test split, all five temporal tasks);
2. SFT cold start of a tiny Qwen2.5-VL (tokenizer trained on the training text with Qwen's special
   tokens) on the reference answers;
3. evaluate it on the held-out split (greedy; benchmark metrics and mean reward): "before";
4. GRPO on the five-task mix, starting from the SFT export;
5. evaluate again: "after";
6. write `demo_report.json`, `learning_curve.png`, and an HF export of the final policy (`hf/`).

Each phase has its own directory under the workdir (`sft/`, `grpo/` with checkpoints, metrics.jsonl and
the operative config; `eval_before/`, `eval_after/` with the evaluation reports). Settings come from
`configs/demo_e2e.gin` (`DemoConfig` plus the trainer's configurables).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import gin
import numpy as np

from data_pipeline import paths
from data_pipeline.synthetic import VIDEO_TASKS, write_synthetic_dataset
from tempr1_jax.apps.eval_report import write_reports
from tempr1_jax.apps.evaluate import EvalResult, evaluate, per_sample_rewards, split_loader
from tempr1_jax.apps.sft import SFTConfig, SFTTrainer
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig
from tempr1_jax.training.metrics_log import read_metrics

REPORT = "demo_report.json"
CURVE = "learning_curve.png"
EXPORT = "hf"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run (the model, loader and optimizers are the trainer's configurables)."""

    tasks: Sequence[str] = VIDEO_TASKS
    train_samples_per_task: int = 32
    test_samples_per_task: int = 8
    data_seed: int = 0
    sft_steps: int = 150
    grpo_steps: int = 40
    eval_batch_size: int = 8
    eval_max_new_tokens: int = 48
    timeline_per_task: int = 2


def _eval(
    model: Any,
    tokenizer: Any,
    test_jsonl: pathlib.Path,
    media_dir: pathlib.Path,
    cfg: DemoConfig,
    think: bool,
    outdir: pathlib.Path,
    title: str,
) -> EvalResult:
    batches = split_loader(tokenizer, model.config, test_jsonl, "test", str(media_dir), cfg.eval_batch_size, think)
    result = evaluate(model, tokenizer, batches, max_new_tokens=cfg.eval_max_new_tokens, think=think)
    write_reports(result, outdir, title=title, timeline_per_task=cfg.timeline_per_task)
    return result


def _summary(result: EvalResult) -> dict[str, Any]:
    """Per-task metrics (with the task's mean reward) and the overall mean reward."""
    out: dict[str, Any] = {}
    for (_, task), metrics in result.metrics.items():
        out[task] = {**metrics, "reward": result.rewards.get(f"{task}/reward", 0.0)}
    out["mean_reward"] = result.rewards["mean_reward"]
    return out


def paired_difference(before: EvalResult, after: EvalResult, think: bool) -> dict[str, float]:
    """Mean per-sample reward change on the held-out split and its standard error (paired by sample).

    Greedy evaluation is deterministic for given weights, so the noise that matters is sampling noise
    over which held-out samples happen to improve: |delta| / stderr > 2 means the gain is not that.
    """
    r0 = per_sample_rewards(before.predictions, before.targets, think=think)
    r1 = per_sample_rewards(after.predictions, after.targets, think=think)
    diff = r1 - r0
    n = len(diff)
    stderr = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"delta": float(np.mean(diff)) if n else 0.0, "delta_stderr": stderr, "num_samples": n}


def plot_learning_curve(metrics: Sequence[dict[str, Any]], tasks: Sequence[str], path: pathlib.Path) -> pathlib.Path:
    """Mean training reward per task (and overall) per GRPO step, with a moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [m["step"] for m in metrics]
    window = max(1, len(metrics) // 10)
    for name, key, style in [*((t, f"{t}/reward_mean", "-") for t in tasks), ("all tasks", "reward_mean", "k--")]:
        values = np.array([m.get(key, np.nan) for m in metrics], np.float64)
        if np.all(np.isnan(values)):
            continue
        smooth = np.convolve(np.nan_to_num(values), np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, style, label=name, linewidth=2 if name == "all tasks" else 1.3)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"mean rollout reward (moving average of {window})")
    ax.set_title("tempr1 demo: reward per task during GRPO")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(workdir: str | pathlib.Path, cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Run every phase in `workdir` (gin must be parsed) and return the report written to demo_report.json."""
    cfg = cfg or DemoConfig()
    if paths.is_remote(workdir):  # is_remote also refuses a mangled URL such as gs:/bucket
        raise ValueError(f"tempr1 demo runs in a local workdir, got {workdir}")
    work = pathlib.Path(workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    data_dir = work / "data"
    splits = write_synthetic_dataset(
        data_dir,
        seed=cfg.data_seed,
        tasks=tuple(cfg.tasks),
        include_images=False,
        samples_per_task={"train": cfg.train_samples_per_task, "test": cfg.test_samples_per_task},
    )
    gin.bind_parameter("DataConfig.synthetic", False)
    gin.bind_parameter("DataConfig.sources", [{"path": str(splits["train"]), "media_dir": str(data_dir)}])
    gin.bind_parameter("ModelSetup.checkpoint", None)
    think = RolloutConfig().think
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    sft = SFTTrainer(work / "sft", dataclasses.replace(SFTConfig(), steps=cfg.sft_steps, export=False))
    sft.run()
    sft_export = sft.export()
    timings["sft_s"] = time.perf_counter() - t

    t = time.perf_counter()
    before = _eval(
        sft.model(),
        sft.tokenizer,
        splits["test"],
        data_dir,
        cfg,
        think,
        work / "eval_before",
        "Held-out synthetic split, after SFT (before GRPO)",
    )
    timings["eval_before_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gin.bind_parameter("ModelSetup.checkpoint", str(sft_export))
    grpo = GRPOTrainer(work / "grpo", dataclasses.replace(TrainConfig(), steps=cfg.grpo_steps))
    grpo.run()
    timings["grpo_s"] = time.perf_counter() - t

    t = time.perf_counter()
    after = _eval(
        grpo.model(),
        grpo.tokenizer,
        splits["test"],
        data_dir,
        cfg,
        think,
        work / "eval_after",
        "Held-out synthetic split, after GRPO",
    )
    timings["eval_after_s"] = time.perf_counter() - t

    grpo.export(work / EXPORT)
    plot_learning_curve(read_metrics(work / "grpo"), cfg.tasks, work / CURVE)
    timings["total_s"] = time.perf_counter() - t0

    report = {
        "before": _summary(before),
        "after": _summary(after),
        "held_out_reward_change": paired_difference(before, after, think),
        "held_out_skipped": len(before.skipped),
        "timings": timings,
        "settings": {**dataclasses.asdict(cfg), "think": think},
    }
    (work / REPORT).write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short text summary: mean reward before/after with its paired standard error, per-task rewards."""
    ch = report["held_out_reward_change"]
    lines = [
        f"held-out mean reward: {report['before']['mean_reward']:.3f} (SFT) -> "
        f"{report['after']['mean_reward']:.3f} (GRPO), change {ch['delta']:+.3f} +- {ch['delta_stderr']:.3f} "
        f"(paired stderr, {ch['num_samples']} samples)"
    ]
    for task in report["settings"]["tasks"]:
        b, a = report["before"].get(task, {}), report["after"].get(task, {})
        lines.append(f"  {task}: reward {b.get('reward', 0):.3f} -> {a.get('reward', 0):.3f}")
    lines.append(f"total time {report['timings']['total_s']:.0f} s")
    return "\n".join(lines)
