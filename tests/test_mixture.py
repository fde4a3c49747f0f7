"""The training mixture as configuration: per-source caps / fractions with a seeded subset, mixing
weights, the per-source and per-task counts of an epoch, and the paper's mixture in configs/tempr1_7b.gin."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from data_pipeline.arrayrecord_io import write_split
from data_pipeline.loader import (
    LoaderConfig,
    SourceConfig,
    format_mixture,
    make_loader,
    mixture_counts,
    source_records,
    subset_indices,
)
from data_pipeline.samples import Sample
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl.config import tiny_config


def order_sample(i):
    return {
        "id": f"o{i}",
        "task": "order",
        "source": "seq",
        "query": f"steps {i}",
        "images": ["a.png", "b.png"],
        "answer": "BA",
    }


def mcq_sample(i):
    return {
        "id": f"m{i}",
        "task": "mcq",
        "source": "seq",
        "query": f"next {i}?",
        "images": ["a.png", "b.png"],
        "options": ["Image A", "Image B"],
        "answer": "B",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    for name, value in (("a.png", 40), ("b.png", 200)):
        Image.fromarray(np.full((28, 28, 3), value, np.uint8)).save(root / name)
    orders = [order_sample(i) for i in range(10)]
    mcqs = [mcq_sample(i) for i in range(4)]
    (root / "order.jsonl").write_text("".join(json.dumps(s) + "\n" for s in orders))
    (root / "mixed.jsonl").write_text("".join(json.dumps(s) + "\n" for s in mcqs + orders[:2]))
    tok = train_tiny_tokenizer([s["query"] for s in orders + mcqs] * 4, root / "tok", vocab_size=300)
    return {
        "root": root,
        "order": str(root / "order.jsonl"),
        "mixed": str(root / "mixed.jsonl"),
        "tok": tok,
        "model": tiny_config(**special_token_ids(tok)),
        "orders": orders,
    }


def ids(source):
    records = source_records(source)
    return [json.loads(records[i])["id"] for i in range(len(records))]


def test_subset_is_seeded_sorted_and_sized_by_the_smaller_bound():
    source = SourceConfig("x", max_samples=4, seed=3)
    first = subset_indices(10, source)
    assert len(first) == 4 and list(first) == sorted(first) and len(set(first)) == 4
    np.testing.assert_array_equal(first, subset_indices(10, source))
    assert any(
        not np.array_equal(first, subset_indices(10, SourceConfig("x", max_samples=4, seed=s))) for s in range(4, 8)
    )
    assert len(subset_indices(10, SourceConfig("x", fraction=0.25))) == 2  # round(2.5) = 2
    assert len(subset_indices(10, SourceConfig("x", fraction=0.01))) == 1  # at least one record
    assert len(subset_indices(10, SourceConfig("x", fraction=0.5, max_samples=3))) == 3
    np.testing.assert_array_equal(subset_indices(10, SourceConfig("x", max_samples=50)), np.arange(10))
    np.testing.assert_array_equal(subset_indices(10, SourceConfig("x")), np.arange(10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_samples": 0}, "max_samples"),
        ({"max_samples": True}, "max_samples"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
    ],
)
def test_bad_selection_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SourceConfig("x", **kwargs)


def test_source_records_are_the_subset_for_jsonl_and_arrayrecord(data, tmp_path):
    all_ids = [s["id"] for s in data["orders"]]
    capped = SourceConfig(data["order"], max_samples=4, seed=1)
    keep = subset_indices(10, capped)
    assert ids(capped) == [all_ids[i] for i in keep]
    write_split(tmp_path, "train", [Sample.from_dict(s) for s in data["orders"]])
    assert ids(SourceConfig(str(tmp_path), split="train", max_samples=4, seed=1)) == ids(capped)
    assert ids(SourceConfig(data["order"])) == all_ids


def test_mixture_counts_per_source_and_task(data):
    sources = [SourceConfig(data["order"], max_samples=6), SourceConfig(data["mixed"])]
    counts = mixture_counts(sources)
    assert counts["selected"] == 12 and counts["epoch_samples"] == 12
    first, second = counts["sources"]
    assert (first["available"], first["selected"], first["tasks"]) == (10, 6, {"order": 6})
    assert (second["available"], second["selected"], second["tasks"]) == (6, 6, {"mcq": 4, "order": 2})
    assert first["share"] == pytest.approx(0.5) and first["per_epoch"] == pytest.approx(6)
    assert counts["tasks"] == {"mcq": 4.0, "order": 8.0}
    # weights set the shares; an epoch of 100 samples
    weighted = mixture_counts([SourceConfig(data["order"], weight=3.0), SourceConfig(data["mixed"], weight=1.0)], 100)
    assert [r["per_epoch"] for r in weighted["sources"]] == pytest.approx([75, 25])
    assert weighted["tasks"] == pytest.approx({"mcq": 100 / 4 * 4 / 6, "order": 75 + 25 * 2 / 6}, abs=0.05)
    text = format_mixture(counts)
    assert "6 of 10 records" in text and "per task per epoch: mcq 4, order 8" in text


def test_loader_uses_only_the_subset_and_logs_the_mixture(data, caplog):
    source = SourceConfig(data["order"], max_samples=4, seed=2, media_dir=str(data["root"]))
    cfg = LoaderConfig(
        sources=(source,),
        batch_size=2,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
        read_threads=1,
        token_buckets=(128, 256),
        patch_buckets=(64, 128),
    )
    prompts = {"order": lambda s: "Order them."}
    with caplog.at_level(logging.INFO, logger="data_pipeline.loader"):
        seen = [s["id"] for b in make_loader(cfg, data["tok"], data["model"], prompts) for s in b["samples"]]
    assert sorted(seen) == sorted(ids(source)) and len(seen) == 4
    assert "4 of 10 records (order 4)" in caplog.text


def test_curriculum_epochs_keep_the_subset(data, tmp_path):
    """The kept records of a capped source are not subsampled a second time in the next epoch."""
    from tempr1_jax.rl.curriculum import Curriculum

    source = SourceConfig(data["order"], max_samples=5, seed=4, media_dir=str(data["root"]))
    curriculum = Curriculum(tmp_path, LoaderConfig(sources=(source,), batch_size=1), threshold=0.7)
    assert curriculum.epoch.sizes == (5,)
    curriculum.advance(3, np.zeros(5))
    (kept,) = curriculum.epoch.sources
    assert kept.max_samples is None and kept.fraction is None
    assert ids(kept) == ids(source)


# Published sizes of the prepared training splits (TAL: approximate (video, class) counts).
SPLIT_SIZES = {
    "charades_sta": (12408, "tg"),
    "didemo": (33005, "tg"),
    "timerft_tg": (2500, "tg"),
    "activitynet_captions_dtg": (10009, "dtg"),
    "qvhighlights": (7218, "vhd"),
    "nextgqa": (3358, "gvqa"),
    "activitynet13": (10000, "tal"),
    "hacs": (37600, "tal"),
}
TABLE5 = {
    "ablations/tasks_tg.gin": ("tg",),
    "ablations/tasks_tg_gvqa.gin": ("tg", "gvqa"),
    "ablations/tasks_tg_dtg_gvqa.gin": ("tg", "dtg", "gvqa"),
    "ablations/tasks_tg_dtg_vhd_gvqa.gin": ("tg", "dtg", "vhd", "gvqa"),
    "tempr1_7b.gin": ("tg", "dtg", "vhd", "gvqa", "tal"),
}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """One JSONL file per prepared source of the 7B config, with the split's published number of records."""
    root = tmp_path_factory.mktemp("prepared")
    for name, (size, task) in SPLIT_SIZES.items():
        (root / f"{name}.jsonl").write_text("".join(f'{{"id": "{name}{i}", "task": "{task}"}}\n' for i in range(size)))
    return root


def configured(name):
    import gin

    from tempr1_jax.configurables import parse_gin
    from tempr1_jax.rl import trainer
    from tempr1_jax.training.data_setup import DataConfig

    parse_gin(files=[name])
    try:
        return [dict(s) for s in DataConfig().sources], trainer.TrainConfig().steps
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name, tasks", TABLE5.items())
def test_paper_mixture_and_table5_subsets(name, tasks, stand_ins):
    full, _ = configured("tempr1_7b.gin")
    sources, steps = configured(name)
    assert all(s in full for s in sources)  # the Table 5 rows reuse the 7B entries and their caps
    assert {"path": "data/prepared/nextgqa", "split": "val"} in full  # GVQA trains on the val questions
    local = [
        SourceConfig(**{**s, "path": str(stand_ins / (s["path"].split("/")[-1] + ".jsonl")), "split": None})
        for s in sources
    ]
    counts = mixture_counts(local)
    assert set(counts["tasks"]) == set(tasks)
    assert steps == counts["epoch_samples"] // 64  # one epoch at 64 prompts per step
    if name == "tempr1_7b.gin":
        assert counts["epoch_samples"] == 60493
        assert counts["tasks"] == {"tg": 24908, "dtg": 10009, "vhd": 7218, "gvqa": 3358, "tal": 15000}
