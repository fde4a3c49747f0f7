"""`tempr1 demo`: the whole method on a laptop-class CPU, end to end.

1. write the synthetic dataset (real mp4 clips of coloured shapes with known events; train and a
   held-out test split, all five temporal tasks; `DemoConfig` sets the clips' frame size, frame rate
   and durations);
2. fit the best constant answer per task on the training split (`tempr1_jax.baselines`);
3. SFT cold start of a tiny Qwen2.5-VL (tokenizer trained on the training text with Qwen's special
   tokens) on the reference answers;
4. evaluate it on the held-out split (greedy; benchmark metrics and reward terms): "before";
5. GRPO on the five-task mix, starting from the SFT export;
6. evaluate again: "after";
7. write `demo_report.json` (before, after, the baselines on the same held-out samples, and every
   change with its paired standard error), `learning_curve.png`, and an HF export of the final
   policy (`hf/`).

Each phase has its own directory under the workdir (`sft/`, `grpo/` with checkpoints, metrics.jsonl and
the operative config; `eval_before/`, `eval_after/` with the evaluation reports). Settings come from
`configs/demo_e2e.gin` (`DemoConfig` plus the trainer's configurables). Progress (phase, step x / n and
time left) goes to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gin
import numpy as np

from data_pipeline import paths
from data_pipeline.samples import Sample, read_jsonl, write_jsonl
from data_pipeline.synthetic import DEFAULT_SPEC, VIDEO_TASKS, write_synthetic_dataset
from tempr1_jax import baselines
from tempr1_jax import tasks as tasks_lib
from tempr1_jax.apps.eval_report import write_reports
from tempr1_jax.apps.evaluate import EvalResult, evaluate, per_sample_reward_terms, split_loader
from tempr1_jax.apps.sft import SFTConfig, SFTTrainer
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig
from tempr1_jax.training import run_record
from tempr1_jax.training.metrics_log import read_metrics

REPORT = "demo_report.json"
SETTINGS = "demo_settings.json"
CURVE = "learning_curve.png"
EXPORT = "hf"
PHASES = ("data", "baselines", "sft", "eval_before", "grpo", "eval_after", "export")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run (the model, loader and optimizers are the trainer's configurables).

    frame_size, fps, tick, clip_ticks, event_ticks, shape_scale, distractors, clock: the synthetic clips
    (`data_pipeline.synthetic.SyntheticSpec`: (height, width) pixels, frames per second, seconds per tick
    of the event grid, (min, max) clip length in ticks, action -> (min, max) event length in ticks, shape
    size relative to the default, whether clips hold events the query does not ask for, whether frames
    show a progress bar).
    sft_task_weights: task -> how many times its share of the SFT mixture (1 for a task not named; tasks
    the demo does not run are ignored; GRPO draws every task in proportion to its training clips).
    baseline_draws: random answers drawn per held-out sample; constant_grid: seconds between the
    interval ends the best constant answer is chosen from.
    """

    tasks: Sequence[str] = VIDEO_TASKS
    train_samples_per_task: int = 32
    test_samples_per_task: int = 8
    data_seed: int = 0
    frame_size: tuple[int, int] = DEFAULT_SPEC.frame_size
    fps: int = DEFAULT_SPEC.fps
    tick: float = DEFAULT_SPEC.tick
    clip_ticks: tuple[int, int] = DEFAULT_SPEC.clip_ticks
    event_ticks: Mapping[str, tuple[int, int]] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_SPEC.event_ticks)
    )
    shape_scale: float = DEFAULT_SPEC.shape_scale
    distractors: bool = DEFAULT_SPEC.distractors
    clock: bool = DEFAULT_SPEC.clock
    sft_steps: int = 150
    sft_task_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    grpo_steps: int = 40
    eval_batch_size: int = 8
    eval_max_new_tokens: int = 48
    timeline_per_task: int = 2
    baseline_draws: int = 8
    constant_grid: float = 1.0

    def __post_init__(self) -> None:
        bad = {t: w for t, w in self.sft_task_weights.items() if t not in VIDEO_TASKS or not w > 0}
        if bad:
            raise ValueError(f"DemoConfig.sft_task_weights: weights > 0 for tasks of {list(VIDEO_TASKS)}, got {bad}")


class DemoStopped(RuntimeError):
    """A stop request (SIGTERM) ended a training phase early; the demo does not go on to the next."""


def _check_stopped(trainer: SFTTrainer | GRPOTrainer, phase: str) -> None:
    if trainer.stopped:
        raise DemoStopped(
            f"stopped on request (SIGTERM) during {phase}; its checkpoint, if any, is in {trainer.workdir}"
        )


class _Phases:
    """Announces each phase on stderr ("[3/7] sft: ...") and records its wall and CPU time (`<phase>_s`,
    `<phase>_cpu_s`: this process's CPU seconds, all threads; on a busy machine the wall time grows, the
    CPU time much less)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.timings: dict[str, float] = {}
        self._start = (time.perf_counter(), time.process_time())
        self._current: tuple[str, float, float] | None = None

    def start(self, name: str, detail: str) -> None:
        self.stop()
        elapsed = time.perf_counter() - self._start[0]
        print(
            f"[{self.names.index(name) + 1}/{len(self.names)}] {name}: {detail} ({elapsed:.0f} s elapsed)",
            file=sys.stderr,
            flush=True,
        )
        self._current = (name, time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._current is not None:
            name, wall, cpu = self._current
            self.timings[f"{name}_s"] = time.perf_counter() - wall
            self.timings[f"{name}_cpu_s"] = time.process_time() - cpu
            self._current = None

    def total(self) -> float:
        """Stop the current phase; record and announce the elapsed total."""
        self.stop()
        self.timings["total_s"] = time.perf_counter() - self._start[0]
        self.timings["total_cpu_s"] = time.process_time() - self._start[1]
        print(f"done in {self.timings['total_s']:.0f} s", file=sys.stderr, flush=True)
        return self.timings["total_s"]


def _progress(batches: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    """`batches` with a progress bar on stderr (batch x / n and time left)."""
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=desc, unit="batch", dynamic_ncols=True)


def write_demo_data(
    data_dir: pathlib.Path,
    cfg: DemoConfig,
    samples_per_task: Mapping[str, int],
    workers: int = 1,
    progress: bool = False,
) -> dict[str, pathlib.Path]:
    """The demo's synthetic video dataset (clips as `cfg` sets them) with `samples_per_task[split]` samples
    per task of each split; returns split -> JSONL path (`write_synthetic_dataset`)."""
    return write_synthetic_dataset(
        data_dir,
        seed=cfg.data_seed,
        tasks=tuple(cfg.tasks),
        include_images=False,
        samples_per_task=dict(samples_per_task),
        split_names=tuple(samples_per_task),
        frame_size=tuple(cfg.frame_size),
        fps=cfg.fps,
        tick=cfg.tick,
        clip_ticks=tuple(cfg.clip_ticks),
        event_ticks=dict(cfg.event_ticks),
        shape_scale=cfg.shape_scale,
        distractors=cfg.distractors,
        clock=cfg.clock,
        progress=progress,
        workers=workers,
    )


def training_sources(
    train: pathlib.Path, media_dir: pathlib.Path, weights: Mapping[str, float]
) -> list[dict[str, Any]]:
    """`DataConfig.sources` over the training split: the split as it is without weights, else one JSONL
    per task beside it, each weighted by its number of samples times the task's weight."""
    if not weights:
        return [{"path": str(train), "media_dir": str(media_dir)}]
    by_task: dict[str, list[Sample]] = {}
    for sample in read_jsonl(train):
        by_task.setdefault(sample.task, []).append(sample)
    sources = []
    for task, samples in by_task.items():
        path = train.with_name(f"{train.stem}_{task}.jsonl")
        write_jsonl(path, samples)
        weight = len(samples) * float(weights.get(task, 1.0))
        sources.append({"path": str(path), "media_dir": str(media_dir), "weight": weight})
    return sources


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _eval(
    model: Any,
    tokenizer: Any,
    test_jsonl: pathlib.Path,
    media_dir: pathlib.Path,
    cfg: DemoConfig,
    think: bool,
    outdir: pathlib.Path,
    title: str,
    desc: str,
) -> EvalResult:
    batches = split_loader(tokenizer, model.config, test_jsonl, "test", str(media_dir), cfg.eval_batch_size, think)
    n_batches = math.ceil(len(_read_jsonl(test_jsonl)) / cfg.eval_batch_size)
    result = evaluate(
        model, tokenizer, _progress(batches, n_batches, desc), max_new_tokens=cfg.eval_max_new_tokens, think=think
    )
    write_reports(result, outdir, title=title, timeline_per_task=cfg.timeline_per_task)
    return result


# --- per-sample scores and their summaries ---------------------------------------------------------


@dataclasses.dataclass
class Scored:
    """One answer set on the held-out split: per task, per-sample metric scores, weights and reward terms."""

    metrics: dict[str, baselines.Scores]  # task -> metric -> [n_task]
    weights: dict[str, np.ndarray]  # task -> [n_task] (`baselines.sample_weight`)
    rewards: dict[str, baselines.Scores]  # task -> reward term ("total", "format", "loc", + "cls") -> [n_task]


def score_result(result: EvalResult, think: bool, reward_options: Mapping[str, Any] | None = None) -> Scored:
    """Per-sample benchmark metrics (`baselines.per_sample_scores`) and reward terms of an evaluation, by task."""
    terms = per_sample_reward_terms(result.predictions, result.targets, think, **dict(reward_options or {}))
    tasks = [p["task"] for p in result.predictions]
    scored = Scored({}, {}, {})
    for task in dict.fromkeys(tasks):
        rows = [i for i, t in enumerate(tasks) if t == task]
        outputs = [result.predictions[i]["output"] for i in rows]
        scored.metrics[task], scored.weights[task] = baselines.per_sample_scores(
            task, outputs, [result.targets[i] for i in rows]
        )
        has_cls = tasks_lib.get_task(task).has_cls
        scored.rewards[task] = {k: v[rows].astype(np.float64) for k, v in terms.items() if k != "cls" or has_cls}
    return scored


def summarize(scored: Scored) -> dict[str, Any]:
    """Per task: the split's metrics, mean total `reward` and mean `reward_terms`; plus `mean_reward`."""
    out: dict[str, Any] = {}
    for task, values in scored.metrics.items():
        terms = scored.rewards[task]
        out[task] = {
            **baselines.weighted_means(values, scored.weights[task]),
            "reward": float(np.mean(terms["total"])),
            "reward_terms": {k: float(np.mean(v)) for k, v in terms.items() if k != "total"},
        }
    totals = [scored.rewards[t]["total"] for t in scored.rewards]
    out["mean_reward"] = float(np.mean(np.concatenate(totals))) if totals else 0.0
    return out


def changes(before: Scored, after: Scored) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {metric or "reward" / "reward_<term>": {"delta", "stderr"}}}: after minus before, paired."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, values in after.metrics.items():
        w = after.weights[task]
        out[task] = {m: baselines.paired_change(before.metrics[task][m], v, w) for m, v in values.items()}
        for term, v in after.rewards[task].items():
            name = "reward" if term == "total" else f"reward_{term}"
            out[task][name] = baselines.paired_change(before.rewards[task][term], v)
    return out


def pooled_change(before: Scored, after: Scored, term: str) -> dict[str, float]:
    """Paired change of one reward term over all held-out samples (every task), with `num_samples`."""
    b = np.concatenate([before.rewards[t][term] for t in after.rewards])
    a = np.concatenate([after.rewards[t][term] for t in after.rewards])
    return {**baselines.paired_change(b, a), "num_samples": len(a)}


def margins(after: Scored, per_baseline: Mapping[str, Mapping[str, baselines.Scores]]) -> dict[str, Any]:
    """{task: {baseline: {headline metric: {"delta", "stderr"}}}}: the final model minus each baseline."""
    return {
        task: {
            name: {
                m: baselines.paired_change(scores[task][m], values[m], after.weights[task])
                for m in baselines.HEADLINE_METRICS.get(task, ())
            }
            for name, scores in per_baseline.items()
        }
        for task, values in after.metrics.items()
    }


def build_report(
    before: EvalResult,
    after: EvalResult,
    constants: Mapping[str, str],
    rollout_cfg: RolloutConfig,
    cfg: DemoConfig,
) -> dict[str, Any]:
    """The report's content (see `format_report`): both evaluations must cover the same samples in the
    same order (greedy evaluation of one split does); the baselines are scored on those samples."""
    if [t.get("id") for t in before.targets] != [t.get("id") for t in after.targets]:
        raise ValueError("the two evaluations cover different samples: their changes cannot be paired")
    think, options = rollout_cfg.think, dict(rollout_cfg.reward_options)
    b, a = score_result(before, think, options), score_result(after, think, options)
    per_baseline = baselines.baseline_scores(
        before.targets, constants, seed=cfg.data_seed, draws=cfg.baseline_draws, think=think
    )
    return {
        "before": summarize(b),
        "after": summarize(a),
        "baselines": {
            name: {task: baselines.weighted_means(values, a.weights[task]) for task, values in scores.items()}
            for name, scores in per_baseline.items()
        },
        "best_constant_answers": dict(constants),
        "changes": changes(b, a),
        "loc_reward_change": pooled_change(b, a, "loc"),
        "held_out_reward_change": pooled_change(b, a, "total"),
        "vs_baselines": margins(a, per_baseline),
        "held_out_samples": len(before.targets),
        "held_out_skipped": len(before.skipped),
        "settings": {**dataclasses.asdict(cfg), "think": think},
    }


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
    if ax.lines:
        ax.legend(fontsize=8, ncol=3)
    else:
        ax.text(0.5, 0.5, "no GRPO steps logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gin_settings() -> dict[str, str]:
    """Every parsed gin binding (name -> value as gin prints it): what a rerun in the same workdir repeats."""
    settings: dict[str, str] = {}
    name = None
    for line in gin.config_str().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and name is not None:  # a long value continued on the next line
            settings[name] += " " + line.strip()
            continue
        name, _, value = line.partition(" = ")
        name = name.strip()
        settings[name] = value.strip()
    return settings


def check_settings(work: pathlib.Path) -> None:
    """Record the run's gin settings in `work/demo_settings.json`, or check them against the recorded ones.

    A rerun with the same settings continues each phase from its checkpoints (after a stop); with other
    settings it raises `ChangedConfigError`: SFT or GRPO continued under new settings would mix two runs in
    one report (e.g. more SFT steps, then the old GRPO phase, already finished, on top)."""
    current = gin_settings()
    path = work / SETTINGS
    if not path.is_file():
        path.write_text(json.dumps(current, indent=1, sort_keys=True))
        return
    changed = run_record.differences(json.loads(path.read_text()), current)
    if changed:
        lines = "\n  ".join(changed)
        raise run_record.ChangedConfigError(
            f"{work} holds a demo run with other settings ({path}); this start differs in:\n  {lines}", changed
        )


def run_demo(workdir: str | pathlib.Path, cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Run every phase in `workdir` (gin must be parsed) and return the report written to demo_report.json.

    Raises `DemoStopped` when a stop request (SIGTERM) ends SFT or GRPO early, and `ChangedConfigError`
    when `workdir` holds a demo run with other settings (`check_settings`)."""
    cfg = cfg or DemoConfig()
    if paths.is_remote(workdir):  # is_remote also refuses a mangled URL such as gs:/bucket
        raise ValueError(f"tempr1 demo runs in a local workdir, got {workdir}")
    work = pathlib.Path(workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    check_settings(work)
    load_start = os.getloadavg()
    phases = _Phases(PHASES)
    rollout_cfg = RolloutConfig()
    think = rollout_cfg.think

    n_samples = len(cfg.tasks) * (cfg.train_samples_per_task + cfg.test_samples_per_task)
    height, width = cfg.frame_size
    phases.start("data", f"{n_samples} synthetic clips, {height}x{width} px at {cfg.fps} FPS")
    data_dir = work / "data"
    splits = write_demo_data(
        data_dir,
        cfg,
        {"train": cfg.train_samples_per_task, "test": cfg.test_samples_per_task},
        # Starting a process costs about as much as writing a few hundred clips.
        workers=(os.cpu_count() or 1) if n_samples >= 500 else 1,
        progress=True,
    )
    gin.bind_parameter("DataConfig.synthetic", False)
    gin.bind_parameter("DataConfig.sources", training_sources(splits["train"], data_dir, cfg.sft_task_weights))
    gin.bind_parameter("ModelSetup.checkpoint", None)

    phases.start("baselines", "the best constant answer per task, fitted on the training split")
    constants = baselines.fit_constants(_read_jsonl(splits["train"]), grid=cfg.constant_grid, think=think)

    sft_cfg = dataclasses.replace(SFTConfig(), steps=cfg.sft_steps, export=False)
    phases.start("sft", f"supervised cold start, {sft_cfg.steps} steps")
    sft = SFTTrainer(work / "sft", sft_cfg)
    sft.run()
    _check_stopped(sft, "sft")
    sft_export = sft.export()

    n_test = len(cfg.tasks) * cfg.test_samples_per_task
    phases.start("eval_before", f"greedy answers on {n_test} held-out samples")
    before = _eval(
        sft.model(),
        sft.tokenizer,
        splits["test"],
        data_dir,
        cfg,
        think,
        work / "eval_before",
        "Held-out synthetic split, after SFT (before GRPO)",
        "eval (SFT)",
    )

    gin.bind_parameter("ModelSetup.checkpoint", str(sft_export))
    gin.bind_parameter("DataConfig.sources", training_sources(splits["train"], data_dir, {}))
    grpo_cfg = dataclasses.replace(TrainConfig(), steps=cfg.grpo_steps, export_hf=False)  # exported below
    phases.start("grpo", f"{grpo_cfg.steps} steps of {rollout_cfg.num_generations} sampled answers per prompt")
    grpo = GRPOTrainer(work / "grpo", grpo_cfg)
    grpo.run()
    _check_stopped(grpo, "grpo")

    phases.start("eval_after", f"greedy answers on {n_test} held-out samples")
    after = _eval(
        grpo.model(),
        grpo.tokenizer,
        splits["test"],
        data_dir,
        cfg,
        think,
        work / "eval_after",
        "Held-out synthetic split, after GRPO",
        "eval (GRPO)",
    )

    phases.start("export", "HF export of the final policy, learning curve, baselines, report")
    grpo.export(work / EXPORT)
    plot_learning_curve(read_metrics(work / "grpo"), cfg.tasks, work / CURVE)
    report = build_report(before, after, constants, rollout_cfg, cfg)
    phases.total()
    report["timings"] = phases.timings
    report["machine"] = {
        "cpu_count": os.cpu_count(),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
    }
    (work / REPORT).write_text(json.dumps(report, indent=2))
    return report


def _pm(change: Mapping[str, float], fmt: str = "+.1f") -> str:
    return f"{change['delta']:{fmt}} +- {change['stderr']:{fmt[1:]}}"


def format_report(report: Mapping[str, Any]) -> str:
    """The console summary: per task and headline metric the baselines, SFT, GRPO and the paired change;
    the reward terms before and after; phase times."""
    names = baselines.BASELINES
    lines = [
        f"held-out synthetic split: {report['held_out_samples']} samples ({report['held_out_skipped']} skipped); "
        "metrics in %, change = GRPO - SFT +- paired stderr",
        f"{'task':<5} {'metric':<6} {'whole':>6} {'random':>6} {'const':>6} | {'SFT':>6} {'GRPO':>6}  change",
    ]
    tasks = [t for t in report["settings"]["tasks"] if t in report["after"]]
    for task in tasks:
        for metric in baselines.HEADLINE_METRICS.get(task, ()):
            base = [report["baselines"][n].get(task, {}).get(metric, math.nan) for n in names]
            lines.append(
                f"{task:<5} {metric:<6} "
                + " ".join(f"{x:6.1f}" for x in base)
                + f" | {report['before'][task][metric]:6.1f} {report['after'][task][metric]:6.1f}  "
                + _pm(report["changes"][task][metric])
            )
    lines.append("reward terms (mean over held-out samples), SFT -> GRPO:")
    for task in tasks:
        b, a = report["before"][task], report["after"][task]
        terms = ", ".join(f"{k} {b['reward_terms'][k]:.3f} -> {a['reward_terms'][k]:.3f}" for k in a["reward_terms"])
        lines.append(f"  {task:<5} {terms}; total {b['reward']:.3f} -> {a['reward']:.3f}")
    loc, total = report["loc_reward_change"], report["held_out_reward_change"]
    lines.append(
        f"localisation reward change {_pm(loc, '+.3f')}, total reward change {_pm(total, '+.3f')} "
        f"(paired over {loc['num_samples']} samples)"
    )
    t = report.get("timings", {})
    if "total_s" in t:
        lines.append(
            "wall time: "
            + ", ".join(f"{p} {t[p + '_s']:.0f} s" for p in PHASES if p + "_s" in t)
            + f"; total {t['total_s']:.0f} s (CPU time {t['total_cpu_s']:.0f} s)"
        )
    return "\n".join(lines)
