"""A workdir holds one run: a start with other defining settings stops before writing anything (listing the
differences) unless allowed, which the run history records; a damaged newest checkpoint is skipped for the
previous one with one line per skipped step; a tiny model trains its tokenizer on a prepared ArrayRecord
split; synthetic data of other settings is rewritten, not reused; every operative config parses in
`tempr1 train` and `tempr1 sft`."""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import threading

import av
import gin
import pytest
from test_training_loop import SMALL, sft_run

from data_pipeline import arrayrecord_io, video
from data_pipeline.loader import SourceConfig
from data_pipeline.samples import read_jsonl
from data_pipeline.synthetic import write_synthetic_dataset
from tempr1_jax import configurables
from tempr1_jax.apps.sft import SFTConfig, SFTTrainer
from tempr1_jax.commands import sft as sft_command
from tempr1_jax.commands import train as train_command
from tempr1_jax.training import data_setup, run_record
from tempr1_jax.training.metrics_log import read_metrics
from tempr1_jax.training.model_setup import ModelSetup, build_model


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def snapshot(workdir: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def sft_trainer(workdir: pathlib.Path, steps: int, *bindings: str, allow: bool = False) -> SFTTrainer:
    configurables.parse_gin(files=["demo.gin"], bindings=[*SMALL, *bindings])
    return SFTTrainer(workdir, SFTConfig(steps=steps, tensorboard=False, progress=False, export=False), allow)


def test_differences_name_each_changed_setting():
    old = run_record.fingerprint({"LossConfig": {"beta": 0.04, "name": "grpo"}, "TrainConfig": {"steps": 5, "seed": 0}})
    new = run_record.fingerprint(
        {
            "LossConfig": {"beta": 0.0, "name": "grpo"},
            "TrainConfig": {"steps": 9, "seed": 0},
            "RolloutConfig": {"num_generations": 4},
        }
    )
    assert run_record.differences(old, new) == [
        "LossConfig.beta: 0.04 -> 0.0",
        'RolloutConfig.num_generations: "(unset)" -> 4',
    ]


@pytest.mark.slow
@pytest.mark.xdist_group("training_loop")
def test_changed_settings_unreadable_checkpoint_and_allowed_change(tmp_path, compile_cache, caplog, capfd):
    work, straight = tmp_path / "run", tmp_path / "straight"
    assert sft_run(work, 2) == 0
    before = snapshot(work)

    # Another model size in the same workdir: stopped before anything is written (model/ stays exportable).
    with pytest.raises(run_record.ChangedConfigError) as err:
        sft_trainer(
            work,
            3,
            "ModelSetup.tiny = {'num_hidden_layers': 1, 'hidden_size': 48, 'intermediate_size': "
            "64, 'num_attention_heads': 2, 'num_key_value_heads': 1, 'mrope_section': [2, 3, 3], "
            "'vision_depth': 1, 'vision_fullatt_block_indexes': [0]}",
            "sft/OptimizerConfig.learning_rate = 0.02",
        )
    assert "ModelSetup.tiny.hidden_size: 32 -> 48" in str(err.value)
    assert "OptimizerConfig.learning_rate: 0.01 -> 0.02" in str(err.value)
    assert "--allow_changed_config" in str(err.value)
    assert snapshot(work) == before

    # One file of the newest step gone: the run resumes from step 1 and redoes step 2 exactly.
    next((work / "checkpoints" / "2" / "arrays" / "d").iterdir()).unlink()
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        assert sft_run(work, 3) == 0
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage() and "checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith("checkpoint of step 2 skipped: ")
    assert "Event loop is closed" not in capfd.readouterr().err
    assert (work / "unreadable_checkpoints" / "2").is_dir()
    assert [e.get("step") for e in run_record.read_history(work) if e["event"] == "start"] == [0, 1]
    assert sft_run(straight, 3) == 0
    a, b = read_metrics(straight), read_metrics(work)
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("loss", "grad_norm", "token_accuracy"):
        assert [r[key] for r in a] == [r[key] for r in b], key

    # A changed learning rate with --allow_changed_config: trains on, and the history says what changed.
    trainer = sft_trainer(work, 4, "sft/OptimizerConfig.learning_rate = 0.02", allow=True)
    assert trainer.run() == 0
    start = [e for e in run_record.read_history(work) if e["event"] == "start"][-1]
    assert start["step"] == 3 and start["changed"] == ["OptimizerConfig.learning_rate: 0.01 -> 0.02"]
    assert "learning_rate = 0.02" in (work / "operative_config.gin").read_text()

    # The operative config of an SFT run is a valid --gin_file for `tempr1 train` (and `tempr1 sft`).
    for command in (train_command, sft_command):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        configurables.parse_gin(parser.parse_args(["--gin_file", str(work / "operative_config.gin"), "--workdir", "x"]))
        assert ModelSetup().tiny["hidden_size"] == 32 and SFTConfig().chunk == 256
        assert data_setup.LoaderConfig(sources=(SourceConfig("x"),)).batch_size == 2


def test_tiny_model_trains_its_tokenizer_on_an_arrayrecord_split(tmp_path):
    jsonl = write_synthetic_dataset(
        tmp_path / "data", samples_per_task=1, tasks=("tg", "gvqa"), include_images=False, split_names=("train",)
    )["train"]
    arrayrecord_io.write_split(tmp_path / "prepared", "train", read_jsonl(jsonl))
    split = SourceConfig(path=str(tmp_path / "prepared"), split="train", media_dir=str(tmp_path / "data"))
    assert data_setup.training_text([split], True) == data_setup.training_text([SourceConfig(path=str(jsonl))], True)
    model, tokenizer = build_model(
        ModelSetup(tiny={"num_hidden_layers": 1, "vision_depth": 1, "vision_fullatt_block_indexes": [0]}),
        tmp_path / "work",
        (split,),
    )
    assert (tmp_path / "work" / "tokenizer" / "tokenizer.json").is_file()
    assert model.config.text.vocab_size == len(tokenizer)


def test_synthetic_data_of_other_settings_is_rewritten(tmp_path):
    def count(samples_per_task: int, spec=None) -> int:
        cfg = data_setup.DataConfig(
            synthetic=True,
            synthetic_tasks=("tg",),
            synthetic_samples_per_task=samples_per_task,
            synthetic_spec=spec or {},
        )
        data_setup.write_synthetic(cfg, tmp_path)
        (source,) = data_setup.resolve_sources(cfg, tmp_path)
        return len(pathlib.Path(source.path).read_text().splitlines())

    assert count(1) == 1
    assert count(2) == 2
    assert json.loads((tmp_path / "data" / data_setup.SYNTHETIC_SETTINGS).read_text())["samples_per_task"] == 2
    # Other clips (SyntheticSpec fields) are other data too.
    assert count(2, {"frame_size": (28, 28), "fps": 2}) == 2
    assert json.loads((tmp_path / "data" / data_setup.SYNTHETIC_SETTINGS).read_text())["spec"]["fps"] == 2
    with av.open(str(tmp_path / "data" / "videos" / "syn-train-tg-0000.mp4")) as clip:
        assert clip.streams.video[0].width == 28


def test_a_stop_request_ends_a_wait_for_the_loader(tmp_path, monkeypatch):
    """Every video read blocks (a dead file system) and the stop request arrives meanwhile: the run ends
    with 0 and saves nothing (no step was done)."""
    released = threading.Event()
    trainer = None

    def blocked_read(*args, **kwargs):
        trainer.stop.requested = True
        released.wait(600)
        raise video.VideoDecodeError("blocked.mp4", "released")

    configurables.parse_gin(files=["demo.gin"], bindings=SMALL)
    trainer = SFTTrainer(tmp_path / "run", SFTConfig(steps=3, tensorboard=False, progress=False, export=False))
    monkeypatch.setattr(video, "read_video", blocked_read)
    try:
        assert trainer.run() == 0
    finally:
        released.set()
    assert not list((tmp_path / "run" / "checkpoints").iterdir())
    assert run_record.read_history(tmp_path / "run")[-1]["event"] == "stopped"
