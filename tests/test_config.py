"""gin plumbing: --gin.NAME=VALUE rewriting and quoting, file search, operative config, --mesh."""

import argparse

import gin
import pytest

from tempr1_jax.commands.train import mesh_bindings, parse_mesh
from tempr1_jax.config import (
    add_gin_arguments,
    parse_gin,
    quote_value,
    resolve_gin_file,
    rewrite_gin_args,
    write_operative_config,
)


@gin.configurable
def _probe(name="x", count=1, rate=0.5, flags=(), other=None):
    return name, count, rate, flags, other


def test_quote_value():
    assert quote_value("3") == "3"
    assert quote_value("1e-6") == "1e-6"
    assert quote_value("True") == "True"
    assert quote_value("None") == "None"
    assert quote_value("[1, 2]") == "[1, 2]"
    assert quote_value("'dapo'") == "'dapo'"
    assert quote_value("@foo()") == "@foo()"
    assert quote_value("%MACRO") == "%MACRO"
    assert quote_value("dapo") == "'dapo'"
    assert quote_value("/data/x.jsonl") == "'/data/x.jsonl'"


def test_rewrite_gin_args():
    argv = ["--gin.LossConfig.name=dapo", "--steps", "3", "--gin.TrainConfig.seed", "7"]
    assert rewrite_gin_args(argv) == [
        "--gin_binding",
        "LossConfig.name = 'dapo'",
        "--steps",
        "3",
        "--gin_binding",
        "TrainConfig.seed = 7",
    ]
    with pytest.raises(ValueError, match="NAME=VALUE"):
        rewrite_gin_args(["--gin.=3"])


def test_parser_accepts_gin_overrides_and_parses_them(tmp_path):
    parser = argparse.ArgumentParser()
    add_gin_arguments(parser)
    parser.add_argument("--workdir")
    cfg = tmp_path / "probe.gin"
    cfg.write_text("_probe.count = 2\n_probe.name = 'file'\n")
    args = parser.parse_args(
        [
            "--gin_file",
            str(cfg),
            "--gin._probe.name=cli",
            "--gin._probe.rate=1e-3",
            "--gin._probe.flags=[1, 2]",
            "--workdir",
            str(tmp_path),
        ]
    )
    parse_gin(args)
    assert _probe() == ("cli", 2, 1e-3, [1, 2], None)
    path = write_operative_config(tmp_path)
    text = path.read_text()
    assert path.name == "operative_config.gin" and "_probe.name = 'cli'" in text and "_probe.count = 2" in text


def test_gin_files_are_found_in_configs():
    assert resolve_gin_file("demo.gin").name == "demo.gin"
    assert resolve_gin_file("configs/base.gin").name == "base.gin"
    with pytest.raises(ValueError, match="not found"):
        resolve_gin_file("no_such_config.gin")


def test_mesh_shortcut():
    assert parse_mesh("data=2,fsdp=2,tensor=2") == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh_bindings("tensor=4") == ["MeshConfig.tensor = 4"]
    for bad in ("data=0", "pipe=2", "data", "data=x"):
        with pytest.raises(ValueError, match="--mesh"):
            parse_mesh(bad)


def test_demo_config_parses():
    from tempr1_jax import configurables  # noqa: F401  (registers every configurable)
    from tempr1_jax.rl import trainer
    from tempr1_jax.training.model_setup import MeshConfig

    parse_gin(files=["demo.gin"], bindings=["MeshConfig.data = 2"])
    assert trainer.TrainConfig().steps == 8
    assert trainer.RolloutConfig().num_generations == 4
    assert MeshConfig().data == 2
    assert trainer.LossConfig().name == "grpo"
