"""TempR1* (TempR1 Table 1, per-dataset fine-tuning after the multi-task run): one config per dataset."""

import gin
import pytest

from tempr1_jax import paper_results
from tempr1_jax.config import config_search_dirs
from tempr1_jax.configurables import parse_gin
from tempr1_jax.rl import trainer
from tempr1_jax.training.data_setup import DataConfig

# config -> (prepared source, dataset key of the paper tables, training samples)
STAR = {
    "tempr1_star_charades_sta.gin": ("charades_sta", "charades_sta", 12408),
    "tempr1_star_activitynet_captions.gin": ("activitynet_captions_tg", "activitynet_captions", 37421),
    "tempr1_star_qvhighlights.gin": ("qvhighlights", "qvhighlights", 7218),
}


def test_one_config_per_table1_dataset_with_tempr1_star():
    starred = {dataset for (dataset, _), figures in paper_results.PAPER_RESULTS.items() if "TempR1*" in figures}
    assert starred == {dataset for _, dataset, _ in STAR.values()}
    shipped = {p.name for p in config_search_dirs()[0].glob("tempr1_star_*.gin")}
    assert shipped == set(STAR)


@pytest.mark.parametrize("name", STAR)
def test_star_config_fine_tunes_the_tempr1_policy_on_one_dataset(name):
    prepared, dataset, size = STAR[name]
    parse_gin(files=[name])
    try:
        assert gin.query_parameter("ModelSetup.checkpoint") == "runs/tempr1_7b/hf"
        assert DataConfig().sources == [{"path": f"data/prepared/{prepared}", "split": "train"}]
        assert trainer.TrainConfig().steps == size // 64  # one epoch at 64 prompts per step
        assert trainer.LossConfig().name == "grpo" and trainer.LossConfig().beta == 0.04  # the TempR1 recipe
        assert paper_results.paper_figure(dataset, "mIoU")[0] == "TempR1"
        assert "TempR1*" in paper_results.PAPER_RESULTS[(dataset, "mIoU")]
    finally:
        gin.clear_config()
