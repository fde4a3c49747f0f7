"""Exact resume: a run stopped after a checkpoint and resumed logs exactly the uninterrupted run's
metrics; SIGTERM to `tempr1 train` finishes the step, leaves a restorable checkpoint and exits 0.

Both use configs/demo.gin shrunk further (one layer per tower, G = 2, 6 new tokens). A persistent
XLA compilation cache in a temporary directory lets the later runs reuse the first run's programs.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tempr1_jax.config import parse_gin
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig
from tempr1_jax.training.metrics_log import read_metrics

SMALL = [
    "DataConfig.synthetic_samples_per_task = 2",
    "DataConfig.synthetic_tasks = ['tg', 'vhd', 'gvqa']",
    "ModelSetup.tiny = {'num_hidden_layers': 1, 'hidden_size': 32, 'intermediate_size': 64, "
    "'num_attention_heads': 2, 'num_key_value_heads': 1, 'mrope_section': [2, 3, 3], "
    "'vision_depth': 1, 'vision_fullatt_block_indexes': [0]}",
    "RolloutConfig.num_generations = 2",
    "RolloutConfig.max_new_tokens = 6",
    "CheckpointConfig.save_every = 1",
    "TrainConfig.tensorboard = False",
    "TrainConfig.progress = False",
]


# Same worker under `pytest -n 2 --dist loadgroup`, so the second test reuses the first one's programs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]


def run(workdir, steps):
    parse_gin(files=["demo.gin"], bindings=SMALL)
    return GRPOTrainer(workdir, TrainConfig(steps=steps, tensorboard=False, progress=False)).run()


def test_resumed_run_logs_exactly_the_uninterrupted_losses(tmp_path, compile_cache):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(straight, 3) == 0
    assert run(stopped, 1) == 0
    assert [r["step"] for r in read_metrics(stopped)] == [1]
    assert run(stopped, 3) == 0
    a, b = read_metrics(straight), read_metrics(stopped)
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("loss", "kl", "grad_norm", "reward_mean", "completion_length_mean"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert (stopped / "operative_config.gin").read_text().count("LossConfig.beta") == 1


def test_sigterm_saves_a_restorable_checkpoint_and_exits_zero(tmp_path, compile_cache):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tempr1_jax.cli",
        "train",
        "--gin_file",
        "configs/demo.gin",
        "--steps",
        "50",
        "--workdir",
        str(workdir),
    ]
    for binding in SMALL:
        cmd += ["--gin_binding", binding]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": compile_cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not read_metrics(workdir) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert not (workdir / "hf").exists()  # the HF export is written only by a run that reaches its last step
    logged = [r["step"] for r in read_metrics(workdir)]
    assert logged == list(range(1, len(logged) + 1)) and len(logged) < 50
    parse_gin(files=["demo.gin"], bindings=SMALL)
    trainer = GRPOTrainer(workdir, TrainConfig(steps=50, tensorboard=False, progress=False))
    assert trainer.restore() == logged[-1]
    trainer.checkpoints.close()
    meta = workdir / "checkpoints" / str(logged[-1]) / "meta" / "metadata"
    assert json.loads(meta.read_text())["step"] == logged[-1]
