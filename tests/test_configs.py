"""Every gin config parses against the registered configurables; the paper config binds the paper's values."""

from __future__ import annotations

import pathlib

import gin
import pytest

from tempr1_jax import config as gin_config
from tempr1_jax import configurables  # noqa: F401  (registers every configurable)
from tempr1_jax.rl import trainer


@pytest.fixture(autouse=True)
def _clear_gin():
    """Leave no gin bindings behind for other tests in this process."""
    yield
    gin.clear_config()

CONFIGS = sorted(str(p.relative_to(gin_config.config_search_dirs()[0]))
                 for p in gin_config.config_search_dirs()[0].rglob("*.gin"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses(name):
    gin_config.parse_gin(files=[name])
    trainer.TrainConfig(), trainer.RolloutConfig(), trainer.LossConfig(), trainer.OptimizerConfig()


def test_paper_settings():
    gin_config.parse_gin(files=["tempr1_7b.gin"])
    q = gin.query_parameter
    assert q("RolloutConfig.num_generations") == 8 and q("RolloutConfig.temperature") == 1.0
    assert q("LossConfig.name") == "grpo" and q("LossConfig.beta") == 0.04 and q("LossConfig.epsilon") == 0.2
    assert q("OptimizerConfig.learning_rate") == 1e-6
    assert q("LoaderConfig.fps") == 2.0 and q("LoaderConfig.max_frames") == 448
    assert q("LoaderConfig.total_pixels") == 3584 * 28 * 28
    tasks = {pathlib.Path(s["path"]).name for s in trainer.DataConfig().sources}  # macros resolved
    assert {"charades_sta", "activitynet_captions_dtg", "qvhighlights", "nextgqa", "activitynet13"} <= tasks


def test_ablations_change_only_what_they_name():
    gin_config.parse_gin(files=["ablations/dapo.gin"])
    assert gin.query_parameter("LossConfig.name") == "dapo" and gin.query_parameter("LossConfig.epsilon_high") == 0.28
    assert gin.query_parameter("RolloutConfig.dynamic_sampling") and gin.query_parameter("LossConfig.filter_equal_groups")
    gin_config.parse_gin(files=["ablations/tal_sequential_match.gin"])
    assert gin.query_parameter("RolloutConfig.reward_options") == {"matching": "sequential"}
    gin_config.parse_gin(files=["ablations/tal_no_count_reward.gin"])
    assert gin.query_parameter("RolloutConfig.reward_options") == {"use_count_reward": False}
    gin_config.parse_gin(files=["ablations/tasks_tg.gin"])
    assert len(trainer.DataConfig().sources) == 3  # Charades-STA, DiDeMo, TimeRFT (as tg)
    assert gin.query_parameter("LossConfig.name") == "grpo"
