"""`tempr1 demo` shortened: every phase runs and writes the report, the learning curve, metrics,
checkpoints and a loadable HF export. (The full demo and its GRPO gain are measured in
README.md "The demo"; it takes minutes.)"""

from __future__ import annotations

import json

import gin
import pytest


@pytest.fixture(autouse=True)
def _clear_gin():
    """Leave no gin bindings behind for other tests in this process."""
    yield
    gin.clear_config()


SHORT = [
    "--gin.DemoConfig.tasks=['tg', 'gvqa']",
    "--gin.DemoConfig.train_samples_per_task=2",
    "--gin.DemoConfig.test_samples_per_task=2",
    "--gin.DemoConfig.sft_steps=2",
    "--gin.DemoConfig.grpo_steps=2",
    "--gin.DemoConfig.eval_batch_size=4",
    "--gin.DemoConfig.eval_max_new_tokens=6",
    "--gin.LoaderConfig.batch_size=2",
    "--gin.RolloutConfig.num_generations=2",
    "--gin.RolloutConfig.max_new_tokens=6",
    "--gin.ModelSetup.tokenizer_vocab_size=300",
    # The tiny tokenizer of so little text spends ~330 tokens on a gvqa prompt (four event sentences).
    "--gin.LoaderConfig.token_buckets=(384,)",
    "--gin.CheckpointConfig.async_save=False",
]


@pytest.mark.slow
def test_short_demo(tmp_path, capsys):
    from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
    from tempr1_jax import cli

    work = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(work), *SHORT]) == 0
    report = json.loads((work / "demo_report.json").read_text())
    # Progress on stderr (phases, bars with step x / n), the summary on stdout.
    out, err = capsys.readouterr()
    assert "[1/7] data" in err and "[5/7] grpo" in err and "2/2" in err and "done in" in err
    assert "tg    mIoU" in out and "localisation reward change" in out
    # Baselines and paired changes on the same held-out samples.
    for name in ("whole_video", "random", "best_constant"):
        assert set(report["baselines"][name]) == {"tg", "gvqa"} and "Acc" in report["baselines"][name]["gvqa"]
    for task, metric in (("tg", "mIoU"), ("gvqa", "Acc"), ("gvqa", "mIoU")):
        change = report["changes"][task][metric]
        assert change["delta"] == pytest.approx(report["after"][task][metric] - report["before"][task][metric])
        assert change["stderr"] >= 0 or report["held_out_skipped"] > 0
    assert set(report["loc_reward_change"]) == {"delta", "stderr", "num_samples"}
    for phase in ("before", "after"):
        assert set(report[phase]) == {"tg", "gvqa", "mean_reward"}
        assert "mIoU" in report[phase]["tg"] and "Acc" in report[phase]["gvqa"]
        assert 0.0 <= report[phase]["mean_reward"] <= 3.0
    change = report["held_out_reward_change"]
    # The tiny tokenizer may make a long prompt overflow the token bucket: skipped and counted.
    assert change["num_samples"] + report["held_out_skipped"] == 4 and change["num_samples"] >= 2
    assert change["delta"] == pytest.approx(report["after"]["mean_reward"] - report["before"]["mean_reward"], abs=1e-5)
    assert (work / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    grpo_steps = [json.loads(line)["step"] for line in (work / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert grpo_steps == [1, 2]
    assert (work / "sft" / "metrics.jsonl").is_file() and (work / "grpo" / "checkpoints").is_dir()
    for phase in ("eval_before", "eval_after"):
        assert (work / phase / "eval_table.md").is_file() and (work / phase / "eval_timeline.png").is_file()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(work / "hf")
    assert model.config.text.vocab_size == 300
    # Each phase's operative config is a valid --gin_file for `tempr1 train` and `tempr1 sft`.
    import argparse

    from tempr1_jax import configurables
    from tempr1_jax.commands import sft, train
    from tempr1_jax.training.model_setup import ModelSetup

    for phase in ("sft", "grpo"):
        for command in (train, sft):
            parser = argparse.ArgumentParser()
            command.add_arguments(parser)
            configurables.parse_gin(
                parser.parse_args(
                    ["--gin_file", str(work / phase / "operative_config.gin"), "--workdir", str(tmp_path / "unused")]
                )
            )
            assert ModelSetup().tokenizer_vocab_size == 300
    # Run again in the same workdir with other settings: a clear refusal, not a flag the demo lacks.
    capsys.readouterr()
    assert cli.main(["demo", "--workdir", str(work), *SHORT, "--gin.DemoConfig.sft_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "holds a demo run with other settings" in err and "steps" in err and "allow_changed" not in err


def test_sigterm_stops_the_demo(tmp_path, monkeypatch, capsys):
    """A SIGTERM during SFT ends the demo with a clear message; it does not go on to GRPO."""
    import os
    import signal

    from tempr1_jax import cli
    from tempr1_jax.apps.sft import SFTTrainer

    restore = SFTTrainer.restore

    def restore_then_sigterm(self):
        start = restore(self)
        os.kill(os.getpid(), signal.SIGTERM)  # caught by the trainer's stop flag, as a scheduler's would be
        return start

    monkeypatch.setattr(SFTTrainer, "restore", restore_then_sigterm)
    work = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(work), *SHORT]) == 1
    err = capsys.readouterr().err
    assert "stopped on request (SIGTERM) during sft" in err and "[5/7] grpo" not in err
    assert not (work / "grpo").exists() and not (work / "demo_report.json").exists()
