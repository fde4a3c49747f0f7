"""Greedy evaluation on two real JAX processes (CPU, gloo collectives; 2 + 2 devices, the model sharded
over all 4) gives every process exactly the predictions of one process with 4 devices, although the
shards differ in length (one runs a dummy step) and in token bucket (one pads 128 -> 256 tokens)."""

import json
import pathlib
import socket
import subprocess
import sys

import pytest

from data_pipeline.synthetic import write_synthetic_dataset
from data_pipeline.tokenizer import train_tiny_tokenizer
from tempr1_jax.training.data_setup import prompt_builders

SCRIPT = pathlib.Path(__file__).with_name("multiprocess_eval.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc: int, data: pathlib.Path, out: pathlib.Path) -> list[dict]:
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(nproc), str(pid), port, str(data), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(nproc)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads(pathlib.Path(f"{out}_{pid}.json").read_text()) for pid in range(nproc)]


@pytest.mark.slow
def test_two_processes_predict_exactly_like_one(tmp_path):
    train = write_synthetic_dataset(
        tmp_path, samples_per_task=2, tasks=("tg", "vhd"), include_images=False, split_names=("train",)
    )["train"]
    samples = [json.loads(line) for line in train.read_text().splitlines()]
    samples[0]["query"] = " ".join(["the person opens the door slowly"] * 12)  # a longer token bucket
    samples.append({**samples[1], "id": "broken", "video": "missing.mp4"})  # skipped by the loader
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    train_tiny_tokenizer([prompt_builders()[s["task"]](s) for s in samples], tmp_path / "tok", 512)

    (one,) = run(1, tmp_path, tmp_path / "one")
    two = run(2, tmp_path, tmp_path / "two")
    assert len(one["predictions"]) == 4 and [s["id"] for s in one["skipped"]] == ["broken"]
    assert two[0] == {**two[0], "predictions": one["predictions"], "skipped": one["skipped"]}
    assert two[1]["predictions"] == one["predictions"] and two[1]["skipped"] == one["skipped"]
    # Process 0 has rows 0, 2, 4 (4 skipped: an all-padding batch), process 1 rows 1, 3 (one batch, padded to
    # process 0's bucket, then a dummy step).
    assert two[0]["shapes"] == [[[2, 256], [2, 256, 16]], [[2, 64], [2, 64, 16]]]
    assert two[1]["shapes"] == [[[2, 128], [2, 256, 16]], [None, [2, 64, 16]]]
