"""DAPO's dynamic sampling (`rl.dynamic_sampling`) on fakes: a loader of numbered prompts and a rollout whose
groups are equal for chosen prompt ids. Equal groups are replaced in order and counted, the round budget
bounds the loop, round keys fold the round into the step key, an exhausted loader stops the rounds, and two
processes (threads with a barrier all-gather) run the same number of rounds when only one has equal groups.
A tiny GRPO run with configs/ablations/dapo.gin's bindings logs the counts and resumes exactly.
"""

import json
import pathlib
import subprocess
import sys
import threading
import zlib

import jax
import numpy as np
import pytest
from test_multiprocess import free_port
from test_resume import SMALL

from models.qwen2_5_vl.inputs import ModelInputs
from tempr1_jax.config import parse_gin
from tempr1_jax.rl import rollout as rollout_lib
from tempr1_jax.rl.dynamic_sampling import refill_equal_groups
from tempr1_jax.rl.rollout import Rollout
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig
from tempr1_jax.training.metrics_log import read_metrics

G = 2
PAD = 0
REPO = pathlib.Path(__file__).resolve().parents[1]


def fake_inputs(ids, tokens=8, patches=4):
    """Rows whose tokens and pixels all equal the prompt id (left padding is id 0)."""
    b = len(ids)
    col = np.asarray(ids, np.int32)[:, None]
    return ModelInputs(
        input_ids=np.broadcast_to(col, (b, tokens)).copy(),
        attention_mask=np.ones((b, tokens), np.int32),
        position_ids=np.zeros((3, b, tokens), np.int32),
        rope_deltas=np.zeros((b, 1), np.int32),
        pixel_values=np.broadcast_to(col[:, :, None], (b, patches, 2)).astype(np.float32),
        vision_pos_ids=np.zeros((b, patches, 2), np.int32),
        window_index=np.broadcast_to(np.arange(patches, dtype=np.int32), (b, patches)).copy(),
        window_inverse=np.broadcast_to(np.arange(patches, dtype=np.int32), (b, patches)).copy(),
        window_blocks=np.broadcast_to(np.arange(patches, dtype=np.int32)[:, None], (b, patches, 1)).copy(),
        window_slot=np.broadcast_to(np.arange(patches, dtype=np.int32), (b, patches)).copy(),
        frame_blocks=np.broadcast_to(np.arange(patches, dtype=np.int32)[:, None], (b, patches, 1)).copy(),
        frame_slot=np.broadcast_to(np.arange(patches, dtype=np.int32), (b, patches)).copy(),
        patch_valid=np.ones((b, patches), bool),
        vision_token_index=np.full((b, tokens), -1, np.int32),
    )


def batch(ids, **shape):
    return {"inputs": fake_inputs(ids, **shape), "samples": [{"id": i, "task": "tg"} for i in ids]}


class FakeRoll:
    """A rollout whose group of prompt `id` has rewards (1, 1) if id is in `equal`, else (0, 1)."""

    def __init__(self, equal):
        self.equal = set(equal)
        self.keys = []

    def __call__(self, inputs, samples, key):
        ids = [s["id"] for s in samples]
        assert [int(row[-1]) for row in inputs.input_ids] == ids  # prompts and samples travel together
        self.keys.append(key)
        total = np.asarray([[1.0, 1.0] if i in self.equal else [0.0, 1.0] for i in ids], np.float32).reshape(-1)
        equal = np.repeat([i in self.equal for i in ids], G)
        texts = [f"{i}/{g}" for i in ids for g in range(G)]
        return Rollout(
            tokens=np.repeat(np.asarray(ids, np.int32), G)[:, None],
            mask=np.ones((len(texts), 1), bool),
            texts=texts,
            tasks=["tg"] * len(texts),
            rewards={"total": total},
            advantages=np.where(equal, 0.0, total - 0.5).astype(np.float32),
            equal_groups=equal,
        )


def refill(first, loader, roll, max_rounds=4, gather=lambda x: np.asarray(x)[None]):
    key = jax.random.key(7)
    r = roll(first["inputs"], first["samples"], key)
    return refill_equal_groups(
        first["inputs"],
        first["samples"],
        r,
        iter(loader),
        roll,
        key,
        max_rounds=max_rounds,
        pad_token_id=PAD,
        gather=gather,
    )


def test_equal_groups_are_replaced_in_order_and_counted():
    roll = FakeRoll(equal={1, 3, 10})
    loader = [batch([10, 11, 12, 13], tokens=12, patches=8), batch([20, 21, 22, 23])]
    out = refill(batch([0, 1, 2, 3]), loader, roll)
    assert [s["id"] for s in out.samples] == [0, 11, 2, 12]
    assert out.prompts.input_ids[:, -1].tolist() == [0, 11, 2, 12]
    assert out.prompts.input_ids.shape == (4, 12) and out.prompts.pixel_values.shape == (4, 8, 2)  # the larger shape
    assert out.prompts.input_ids[0, :4].tolist() == [PAD] * 4  # an old row is left-padded
    assert out.rollout.texts == ["0/0", "0/1", "11/0", "11/1", "2/0", "2/1", "12/0", "12/1"]
    assert out.rollout.tokens[:, 0].tolist() == [0, 0, 11, 11, 2, 2, 12, 12]
    assert not out.rollout.equal_groups.any()
    assert out.rollout.rewards["total"].tolist() == [0, 1] * 4
    assert out.metrics == {
        "resample_rounds": 1,
        "resample_prompts": 4,
        "resample_groups_replaced": 2,
        "resample_groups_equal_initial": 2,
        "resample_groups_equal": 0,
    }


def test_no_equal_group_draws_nothing():
    roll = FakeRoll(equal=set())
    loader = iter([batch([10, 11, 12, 13])])
    first = batch([0, 1, 2, 3])
    r = roll(first["inputs"], first["samples"], jax.random.key(0))
    out = refill_equal_groups(
        first["inputs"],
        first["samples"],
        r,
        loader,
        roll,
        jax.random.key(0),
        max_rounds=4,
        pad_token_id=PAD,
        gather=lambda x: np.asarray(x)[None],
    )
    assert out.rollout is r and out.metrics["resample_rounds"] == 0 and next(loader)["samples"][0]["id"] == 10


def test_the_budget_bounds_the_rounds_and_keys_fold_the_round():
    roll = FakeRoll(equal={1, 3} | set(range(10, 100)))
    loader = [batch([10 * k + j for j in range(4)]) for k in range(1, 9)]
    out = refill(batch([0, 1, 2, 3]), loader, roll, max_rounds=3)
    assert out.metrics == {
        "resample_rounds": 3,
        "resample_prompts": 12,
        "resample_groups_replaced": 0,
        "resample_groups_equal_initial": 2,
        "resample_groups_equal": 2,
    }
    assert [s["id"] for s in out.samples] == [0, 1, 2, 3]
    key = jax.random.key(7)
    expected = [key] + [jax.random.fold_in(key, k) for k in (1, 2, 3)]
    assert [jax.random.key_data(k).tolist() for k in roll.keys] == [jax.random.key_data(k).tolist() for k in expected]


def test_replacement_spans_rounds():
    roll = FakeRoll(equal={0, 1, 2, 10, 11, 12})
    out = refill(batch([0, 1, 2, 3]), [batch([10, 11, 12, 13]), batch([20, 21, 22, 23])], roll)
    assert [s["id"] for s in out.samples] == [13, 20, 21, 3]
    assert out.metrics["resample_rounds"] == 2 and out.metrics["resample_groups_replaced"] == 3


def test_an_exhausted_loader_stops_the_rounds():
    roll = FakeRoll(equal={1, 10, 11, 12, 13})
    out = refill(batch([0, 1, 2, 3]), [batch([10, 11, 12, 13])], roll, max_rounds=5)
    assert out.metrics["resample_rounds"] == 2 and out.metrics["resample_prompts"] == 4
    assert out.metrics["resample_groups_equal"] == 1 and [s["id"] for s in out.samples] == [0, 1, 2, 3]


def test_rejects_a_negative_budget():
    with pytest.raises(ValueError, match="max_rounds"):
        refill(batch([0, 1]), [], FakeRoll(equal=set()), max_rounds=-1)


class ThreadGather:
    """An all-gather between threads (one per simulated process)."""

    def __init__(self, n):
        self.barrier = threading.Barrier(n)
        self.values = [None] * n

    def of(self, index):
        def gather(x):
            self.values[index] = np.asarray(x)
            self.barrier.wait()
            out = np.stack(self.values)
            self.barrier.wait()
            return out

        return gather


def test_processes_agree_on_the_rounds():
    gather = ThreadGather(2)
    rolls = [FakeRoll(equal={1, 10, 11}), FakeRoll(equal=set())]
    loaders = [iter([batch([10, 11, 12, 13]), batch([14, 15, 16, 17])]), iter([batch([30, 31, 32, 33])])]
    firsts = [batch([0, 1, 2, 3]), batch([4, 5, 6, 7], tokens=16)]
    outs = [None, None]

    def run(i):
        key = jax.random.key(7)
        r = rolls[i](firsts[i]["inputs"], firsts[i]["samples"], key)
        outs[i] = refill_equal_groups(
            firsts[i]["inputs"],
            firsts[i]["samples"],
            r,
            loaders[i],
            rolls[i],
            key,
            max_rounds=4,
            pad_token_id=PAD,
            gather=gather.of(i),
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert (
        outs[0].metrics
        == outs[1].metrics
        == {
            "resample_rounds": 1,
            "resample_prompts": 4,
            "resample_groups_replaced": 1,
            "resample_groups_equal_initial": 1,
            "resample_groups_equal": 0,
        }
    )
    assert len(rolls[0].keys) == len(rolls[1].keys) == 2  # process 1 rolled its own batch again
    assert next(loaders[1])["samples"][0]["id"] == 30  # ... without drawing
    assert [s["id"] for s in outs[0].samples] == [0, 12, 2, 3] and [s["id"] for s in outs[1].samples] == [4, 5, 6, 7]
    # One shape on both: tokens of process 1's batch (16), common to the round's rollout.
    assert outs[0].prompts.input_ids.shape == outs[1].prompts.input_ids.shape == (4, 16)


# --- a tiny GRPO run with configs/ablations/dapo.gin's bindings -------------------------------------------

DAPO_BINDINGS = [
    line
    for line in (REPO / "configs" / "ablations" / "dapo.gin").read_text().splitlines()
    if line and not line.startswith(("#", "include"))
]


def crc_rewards(real):
    """`compute_rewards` plus 1 for completions whose CRC is a multiple of 4 (a random tiny policy earns no reward, so
    without it every group would be equal); deterministic, so resumed runs see the same rewards."""

    def compute(tasks, texts, targets, **options):
        out = real(tasks, texts, targets, **options)
        out["total"] = out["total"] + np.asarray([zlib.crc32(t.encode()) % 4 == 0 for t in texts], np.float32)
        return out

    return compute


def run(workdir, steps):
    parse_gin(files=["demo.gin"], bindings=[*SMALL, *DAPO_BINDINGS])
    return GRPOTrainer(workdir, TrainConfig(steps=steps, tensorboard=False, progress=False)).run()


@pytest.mark.slow
def test_dapo_run_logs_resamples_and_resumes_exactly(tmp_path, compile_cache, monkeypatch):
    monkeypatch.setattr(rollout_lib, "compute_rewards", crc_rewards(rollout_lib.compute_rewards))
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(straight, 3) == 0
    logged = read_metrics(straight)
    assert len(logged) == 3
    for m in logged:
        assert 0 <= m["resample_rounds"] <= 4
        assert m["resample_prompts"] == 2 * m["resample_rounds"]  # LoaderConfig.batch_size = 2 per round
        assert m["resample_groups_equal"] == m["resample_groups_equal_initial"] - m["resample_groups_replaced"]
        assert m["resample_groups_equal"] == round(m["equal_group_fraction"] * 2)
        assert m["resample_rounds"] == 4 or m["resample_groups_equal"] == 0
    assert sum(m["resample_groups_replaced"] for m in logged) > 0
    assert run(stopped, 1) == 0
    assert run(stopped, 3) == 0
    resumed = read_metrics(stopped)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in (
        "loss",
        "kl",
        "reward_mean",
        "resample_rounds",
        "resample_prompts",
        "resample_groups_replaced",
        "resample_groups_equal",
    ):
        assert [r[key] for r in logged] == [r[key] for r in resumed], key


@pytest.mark.slow
def test_two_processes_run_the_same_rounds(tmp_path):
    port = str(free_port())
    script = pathlib.Path(__file__).with_name("multiprocess_dynamic_sampling.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "2", str(pid), port, str(tmp_path / "run"), str(tmp_path / "out")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(2)
    ]
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    seen = [json.loads((tmp_path / f"out_{pid}.json").read_text()) for pid in range(2)]
    assert seen[0] == seen[1] and len(seen[0]) == 3  # global counts, the same rounds on both
    assert [m["resample_rounds"] for m in seen[0]] == [r["resample_rounds"] for r in read_metrics(tmp_path / "run")]
    assert sum(m["resample_rounds"] for m in seen[0]) > 0
