"""Preemption agreed by all hosts: SIGTERM to one of two training processes (jax.distributed on localhost, gloo)
stops both at the same step; both exit 0 with one checkpoint of that step, and the restarted pair continues
with exactly the losses of an uninterrupted two-process run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
from test_multiprocess import free_port

from tempr1_jax.training.metrics_log import read_metrics
from tempr1_jax.training.run_record import read_history

SCRIPT = pathlib.Path(__file__).with_name("multiprocess_preemption.py")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("preemption")]


def start(workdir: pathlib.Path, steps: int, cache: str) -> list[subprocess.Popen]:
    port = str(free_port())
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "2", str(pid), port, str(workdir), str(steps)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(2)
    ]


def finish(procs: list[subprocess.Popen]) -> list[str]:
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    return logs


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_restart_is_exact(tmp_path, compile_cache):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    procs = start(stopped, 50, compile_cache)
    deadline = time.time() + 900
    while not read_metrics(stopped) and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.5)
    assert all(p.poll() is None for p in procs), "a process ended before its first step"
    procs[1].send_signal(signal.SIGTERM)
    logs = finish(procs)
    ends = [re.findall(r"stopped on request after step (\d+)", log) for log in logs]
    assert ends[0] == ends[1] and len(ends[0]) == 1, logs[0][-3000:]
    k = int(ends[0][0])
    assert 1 <= k < 50 and [r["step"] for r in read_metrics(stopped)] == list(range(1, k + 1))
    checkpoint = stopped / "checkpoints" / str(k)
    assert (checkpoint / "commit_success.txt").is_file()
    assert {p.name for p in (checkpoint / "arrays").glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
    data = json.loads((checkpoint / "data" / "metadata").read_text())
    assert len(data["processes"]) == 2  # every process's loader state
    assert read_history(stopped)[-1]["event"] == "stopped" and read_history(stopped)[-1]["step"] == k

    total = k + 2
    finish(start(straight, total, compile_cache))
    finish(start(stopped, total, compile_cache))
    a, b = read_metrics(straight), read_metrics(stopped)
    assert [r["step"] for r in b] == list(range(1, total + 1))
    for key in ("loss", "kl", "grad_norm", "reward_mean", "completion_length_mean"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert [e["event"] for e in read_history(stopped)] == ["start", "stopped", "start", "finished"]
