"""The loop SFT and GRPO share (`training.loop.Trainer`) gives SFT every guarantee GRPO has: exact resume,
a SIGTERM that saves a restorable checkpoint and exits 0, and `metrics.jsonl` written by process 0 only."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import gin
import pytest

from tempr1_jax.apps.sft import SFTConfig, SFTTrainer
from tempr1_jax.configurables import parse_gin
from tempr1_jax.rl.trainer import GRPOTrainer
from tempr1_jax.training import loop, multihost
from tempr1_jax.training.metrics_log import read_metrics

SMALL = [
    "DataConfig.synthetic_samples_per_task = 2",
    "DataConfig.synthetic_tasks = ['tg', 'vhd']",
    "ModelSetup.tiny = {'num_hidden_layers': 1, 'hidden_size': 32, 'intermediate_size': 64, "
    "'num_attention_heads': 2, 'num_key_value_heads': 1, 'mrope_section': [2, 3, 3], "
    "'vision_depth': 1, 'vision_fullatt_block_indexes': [0]}",
    "LoaderConfig.batch_size = 2",
    "CheckpointConfig.save_every = 1",
    "sft/OptimizerConfig.learning_rate = 0.01",
    "SFTConfig.tensorboard = False",
    "SFTConfig.progress = False",
]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("training_loop")]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def sft_run(workdir: pathlib.Path, steps: int) -> int:
    parse_gin(files=["demo.gin"], bindings=SMALL)
    return SFTTrainer(workdir, SFTConfig(steps=steps, tensorboard=False, progress=False, export=False)).run()


def test_both_trainers_are_the_shared_loop():
    assert issubclass(SFTTrainer, loop.Trainer) and issubclass(GRPOTrainer, loop.Trainer)
    assert "run" not in vars(SFTTrainer) and "run" not in vars(GRPOTrainer)


def test_sft_resumes_exactly(tmp_path, compile_cache):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert sft_run(straight, 3) == 0
    assert sft_run(stopped, 1) == 0
    assert sft_run(stopped, 3) == 0
    a, b = read_metrics(straight), read_metrics(stopped)
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("loss", "grad_norm", "token_accuracy", "answer_tokens"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert (stopped / "model" / "config.json").is_file()  # what `tempr1 convert orbax-to-hf` rebuilds from


def test_metrics_are_written_by_process_zero_only(tmp_path, compile_cache, monkeypatch):
    monkeypatch.setattr(multihost, "is_main", lambda: False)
    assert sft_run(tmp_path / "other", 1) == 0
    assert not (tmp_path / "other" / "metrics.jsonl").exists()
    assert (tmp_path / "other" / "checkpoints" / "1").is_dir()


def test_sft_sigterm_saves_a_restorable_checkpoint_and_exits_zero(tmp_path, compile_cache):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tempr1_jax.cli",
        "sft",
        "--gin_file",
        "configs/demo.gin",
        "--steps",
        "200",
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
    assert not (workdir / "hf").exists()
    logged = [r["step"] for r in read_metrics(workdir)]
    assert logged == list(range(1, len(logged) + 1)) and len(logged) < 200
    parse_gin(files=["demo.gin"], bindings=SMALL)
    trainer = SFTTrainer(workdir, SFTConfig(steps=200, tensorboard=False, progress=False))
    assert trainer.restore() == logged[-1]
    trainer.checkpoints.close()
