"""Evaluation during GRPO (`TrainConfig.eval_every`) on a held-out slice that training never reads; reward
statistics over every process's rows; stop requests agreed at every stop point (generation batches, the
rollout), after which the run saves the last completed step and resumes exactly."""

from __future__ import annotations

import json
import types

import gin
import numpy as np
import pytest
from test_multihost import run_processes, shard_batches
from test_resume import SMALL

from data_pipeline import loader as loader_lib
from data_pipeline.synthetic import write_synthetic_dataset
from tempr1_jax.configurables import parse_gin
from tempr1_jax.rl import trainer as trainer_lib
from tempr1_jax.rl.rollout import Rollout, reward_metrics
from tempr1_jax.rl.trainer import GRPOTrainer, gather_rollout
from tempr1_jax.training import multihost, run_record
from tempr1_jax.training.metrics_log import read_metrics
from tempr1_jax.training.preemption import StopRequested


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def fake_rollout(tasks: list[str], total: list[float], cls: list[float] | None, length: int) -> Rollout:
    n = len(tasks)
    rewards = {
        "format": np.ones(n, np.float32),
        "loc": np.asarray(total, np.float32) - 1,
        "total": np.asarray(total, np.float32),
    }
    if cls is not None:
        rewards["cls"] = np.asarray(cls, np.float32)
    mask = np.zeros((n, 4), bool)
    mask[:, :length] = True
    return Rollout(
        np.full((n, 4), length, np.int32),
        mask,
        [f"text {length}"] * n,
        tasks,
        rewards,
        np.zeros(n, np.float32),
        np.zeros(n, bool),
    )


def test_reward_metrics_cover_every_process_rows():
    parts = [fake_rollout(["tg", "tg"], [1.0, 2.0], None, 2), fake_rollout(["gvqa", "tg"], [3.0, 1.5], [1.0, 0.0], 4)]
    gathered = run_processes(2, lambda i, gather: gather_rollout(parts[i], gather))
    assert gathered[0].tasks == gathered[1].tasks == ["tg", "tg", "gvqa", "tg"]
    assert gathered[0].texts == ["text 2"] * 2 + ["text 4"] * 2
    np.testing.assert_array_equal(gathered[1].rewards["cls"], [0, 0, 1, 0])  # 0 where a process had no class term
    metrics = reward_metrics(gathered[0])
    assert metrics["reward_mean"] == pytest.approx(np.mean([1.0, 2.0, 3.0, 1.5]))
    assert metrics["tg/reward_mean"] == pytest.approx(np.mean([1.0, 2.0, 1.5]))
    assert metrics["completion_length_mean"] == 3.0 and metrics["completion_length_max"] == 4.0


def test_a_stop_on_one_process_stops_every_process_at_the_same_generation_step():
    def process(index, gather):
        seen = []
        flag = types.SimpleNamespace(calls=0)

        def should_stop():  # process 1 is asked to stop while it waits for its second batch
            flag.calls += 1
            return index == 1 and flag.calls >= 2

        try:
            for batch, _ in multihost.lockstep(shard_batches(12, index, 2, 2), gather=gather, should_stop=should_stop):
                seen.append(batch["samples"])
        except StopRequested:
            return seen
        return None

    assert run_processes(2, process) == [[[0, 2]], [[1, 3]]]


def data_bindings(tmp_path) -> list[str]:
    splits = write_synthetic_dataset(tmp_path / "data", samples_per_task=2, tasks=("tg", "vhd"), include_images=False)
    media = str(tmp_path / "data")
    # One training sample whose video is missing: skipped, and counted in metrics.jsonl.
    train = splits["train"].read_text().splitlines()
    broken = {**json.loads(train[0]), "id": "broken", "video": "videos/missing.mp4"}
    splits["train"].write_text("\n".join([*train, json.dumps(broken)]) + "\n")
    return [
        "DataConfig.synthetic = False",
        f"DataConfig.sources = [{{'path': '{splits['train']}', 'media_dir': '{media}'}}]",
        f"TrainConfig.eval_sources = [{{'path': '{splits['test']}', 'media_dir': '{media}'}}]",
        "TrainConfig.eval_samples = 4",
        "TrainConfig.eval_every = 2",
        "TrainConfig.eval_max_new_tokens = 6",
    ]


def grpo(workdir, steps: int, bindings: list[str]) -> GRPOTrainer:
    parse_gin(files=["demo.gin"], bindings=[*SMALL, *bindings, f"TrainConfig.steps = {steps}"])
    return GRPOTrainer(workdir)


def test_held_out_samples_must_not_be_training_samples(tmp_path):
    bindings = data_bindings(tmp_path)
    bindings[2] = bindings[2].replace("test.jsonl", "train.jsonl")
    with pytest.raises(ValueError, match="held-out evaluation sample"):
        grpo(tmp_path / "run", 1, bindings)


@pytest.mark.slow
@pytest.mark.xdist_group("resume")
def test_eval_every_logs_benchmark_metrics_and_a_stop_after_a_rollout_resumes_exactly(
    tmp_path, compile_cache, monkeypatch
):
    bindings = data_bindings(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert grpo(straight, 3, bindings).run() == 0
    records = read_metrics(straight)
    evaluated = [sorted(k for k in r if k.startswith("eval/")) for r in records]
    assert evaluated[0] == [] and evaluated[1] == evaluated[2]  # every 2 steps and after the last
    for task in ("tg", "vhd"):
        for metric in ("mIoU", "R1@0.5" if task == "tg" else "R@0.5"):
            assert 0.0 <= records[1][f"eval/synthetic/{task}/{metric}"] <= 100.0
    assert records[1]["eval/samples"] == 4 and records[1]["eval/skipped"] == 0
    assert records[-1]["skipped_total"] == 1  # the broken sample, met in the first pass (5 samples, 6 drawn)
    if hasattr(loader_lib.LoaderIterator, "skip_counts"):  # counts by source and reason
        train = tmp_path / "data" / "train.jsonl"
        assert records[-1][f"skipped/{train}/missing_file"] == 1

    # A stop request that arrives during the rollout of step 2: step 1's checkpoint, then an exact resume.
    trainer = grpo(stopped, 3, bindings)
    real_rollout, calls = trainer_lib.rollout, []

    def rollout_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            trainer.stop.requested = True
        return real_rollout(*args, **kwargs)

    monkeypatch.setattr(trainer_lib, "rollout", rollout_then_sigterm)
    assert trainer.run() == 0
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(stopped)] == [1]
    assert run_record.read_history(stopped)[-1] == {
        **run_record.read_history(stopped)[-1],
        "event": "stopped",
        "step": 1,
    }
    assert grpo(stopped, 3, bindings).run() == 0
    resumed = read_metrics(stopped)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in ("loss", "kl", "reward_mean", "completion_length_mean", "eval/synthetic/tg/mIoU"):
        assert [r.get(key) for r in records] == [r.get(key) for r in resumed], key
