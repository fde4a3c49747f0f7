"""Every gin config parses against the registered configurables; the paper config binds the paper's values."""

from __future__ import annotations

import pathlib

import gin
import pytest

from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from tempr1_jax import config as gin_config
from tempr1_jax import configurables  # noqa: F401  (registers every configurable)
from tempr1_jax.apps import plan
from tempr1_jax.rl import trainer
from tempr1_jax.training import model_setup as setup
from tempr1_jax.training.data_setup import DataConfig
from tempr1_jax.training.optimizer import OptimizerConfig


@pytest.fixture(autouse=True)
def _clear_gin():
    """Leave no gin bindings behind for other tests in this process."""
    yield
    gin.clear_config()


CONFIGS = sorted(
    str(p.relative_to(gin_config.config_search_dirs()[0])) for p in gin_config.config_search_dirs()[0].rglob("*.gin")
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses(name):
    gin_config.parse_gin(files=[name])
    trainer.TrainConfig(), trainer.RolloutConfig(), trainer.LossConfig(), OptimizerConfig()


def test_paper_settings():
    gin_config.parse_gin(files=["tempr1_7b.gin"])
    q = gin.query_parameter
    assert q("RolloutConfig.num_generations") == 8 and q("RolloutConfig.temperature") == 1.0
    assert q("LossConfig.name") == "grpo" and q("LossConfig.beta") == 0.04 and q("LossConfig.epsilon") == 0.2
    assert q("OptimizerConfig.learning_rate") == 1e-6
    assert q("LoaderConfig.fps") == 2.0 and q("LoaderConfig.max_frames") == 448
    assert q("LoaderConfig.total_pixels") == 3584 * 28 * 28
    tasks = {pathlib.Path(s["path"]).name for s in DataConfig().sources}  # macros resolved
    assert {"charades_sta", "activitynet_captions_dtg", "qvhighlights", "nextgqa", "activitynet13"} <= tasks


def test_ablations_change_only_what_they_name():
    gin_config.parse_gin(files=["ablations/dapo.gin"])
    assert gin.query_parameter("LossConfig.name") == "dapo" and gin.query_parameter("LossConfig.epsilon_high") == 0.28
    assert gin.query_parameter("RolloutConfig.dynamic_sampling") and gin.query_parameter(
        "LossConfig.filter_equal_groups"
    )
    gin_config.parse_gin(files=["ablations/tal_sequential_match.gin"])
    assert gin.query_parameter("RolloutConfig.reward_options") == {"matching": "sequential"}
    gin_config.parse_gin(files=["ablations/tal_no_count_reward.gin"])
    assert gin.query_parameter("RolloutConfig.reward_options") == {"use_count_reward": False}
    gin_config.parse_gin(files=["ablations/tasks_tg.gin"])
    assert len(DataConfig().sources) == 3  # Charades-STA, DiDeMo, TimeRFT (as tg)
    assert gin.query_parameter("LossConfig.name") == "grpo"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_uses_the_checkpoints_position_rule(name):
    """Every config numbers text after a video as the published weights were trained (max + 1), by default:
    the checkpoint's config (the shipped published one, as the planner reads it) or the tiny config."""
    gin_config.parse_gin(files=[name])
    model_setup = setup.ModelSetup()
    assert model_setup.text_after_vision is None
    if model_setup.checkpoint and not pathlib.Path(plan._checkpoint_config(model_setup.checkpoint)).is_file():
        # TempR1*: starts from a run's own export (runs/tempr1_7b/hf), whose config.json keeps its rule.
        assert model_setup.checkpoint.startswith("runs/")
        return
    config = (
        Qwen2_5_VLConfig.from_pretrained(plan._checkpoint_config(model_setup.checkpoint))
        if model_setup.checkpoint
        else tiny_config()
    )
    assert model_setup.configure(config).text_after_vision == "max_plus_one"


def test_model_setup_sets_the_position_rule(tmp_path):
    """`ModelSetup.text_after_vision` (gin) applies to the tiny config and to a checkpoint's config."""
    gin.bind_parameter("ModelSetup.text_after_vision", "transformers5")
    model_setup = setup.ModelSetup()
    small = dict(num_hidden_layers=1, vision_depth=1, vision_fullatt_block_indexes=(0,))
    assert setup.base_model(model_setup, tiny_config(**small)).config.text_after_vision == "transformers5"
    gin.clear_config()
    setup.init_model(tiny_config(**small), 0).save_pretrained(tmp_path)
    from_checkpoint = setup.ModelSetup(checkpoint=str(tmp_path), text_after_vision="transformers5")
    assert setup.base_model(from_checkpoint).config.text_after_vision == "transformers5"
    assert setup.base_model(setup.ModelSetup(checkpoint=str(tmp_path))).config.text_after_vision == "max_plus_one"
    with pytest.raises(ValueError, match="text_after_vision must be one of"):
        setup.ModelSetup(text_after_vision="last").configure(tiny_config())
