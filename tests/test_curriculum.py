"""Time-R1's per-epoch drop of solved samples inside the trainer (`TrainConfig.drop_solved`).

- The drop itself, on a real loader: given IoUs, the next epoch's loader yields exactly the scored samples
  with IoU <= threshold, files and checkpoint meta restore the same set and position, an all-solved set
  is kept unchanged.
- The trainer's scoring equals `curate` on greedy outputs computed separately (unsharded) with the same policy.
- Exact resume across epoch boundaries: runs stopped at a boundary and just after a drop, then resumed,
  log exactly the uninterrupted run's metrics and end on the same loader position.

The runs use configs/demo.gin shrunk as in tests/test_resume.py, on 7 synthetic samples of which one has
no video (batch 2: 3 steps per epoch; a random tiny policy solves nothing, so only that one is dropped),
with a persistent XLA compilation cache for the module.
"""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from test_resume import SMALL

from data_pipeline.loader import LoaderConfig, SourceConfig, make_eval_loader, make_loader
from data_pipeline.synthetic import write_synthetic_dataset
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl.config import tiny_config
from tempr1_jax import difficulty
from tempr1_jax.apps import curate
from tempr1_jax.config import parse_gin
from tempr1_jax.rl.curriculum import CURRICULUM_DIR, Curriculum, check_unique_ids, epoch_length
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig
from tempr1_jax.training import multihost
from tempr1_jax.training.data_setup import prompt_builders
from tempr1_jax.training.metrics_log import read_metrics
from tempr1_jax.training.predictions import generate_predictions

DEMO_LOADER = {
    "batch_size": 2,
    "max_frames": 4,
    "min_pixels": 784,
    "max_pixels": 3136,
    "total_pixels": 12544,
    "token_buckets": (256,),
    "patch_buckets": (64,),
    "num_workers": 0,
}  # as in configs/demo.gin


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """JSONL sources a (4 tg/vhd samples), b (2 gvqa) and broken (1 tg sample whose video is missing, so the
    loader skips it) of synthetic samples, a tiny tokenizer and model config."""
    root = tmp_path_factory.mktemp("data")
    train = write_synthetic_dataset(
        root, samples_per_task=2, tasks=("tg", "vhd", "gvqa"), include_images=False, split_names=("train",)
    )["train"]
    samples = [json.loads(line) for line in train.read_text().splitlines()]
    (root / "a.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples if s["task"] != "gvqa"))
    (root / "b.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples if s["task"] == "gvqa"))
    (root / "broken.jsonl").write_text(json.dumps({**samples[0], "id": "broken", "video": "missing.mp4"}) + "\n")
    sources = {name: SourceConfig(str(root / f"{name}.jsonl"), media_dir=str(root)) for name in ("a", "b", "broken")}
    tok = train_tiny_tokenizer([prompt_builders()[s["task"]](s) for s in samples], root / "tok", 512)
    return sources, tok, tiny_config(**special_token_ids(tok))


def ids_of(batches):
    return [s["id"] for b in batches for s in b["samples"]]


def test_drop_keeps_the_unsolved_samples_and_the_loader_yields_only_them(data, tmp_path, caplog):
    sources, tok, model_config = data
    sources = (sources["a"], sources["b"])
    cfg = LoaderConfig(sources=sources, **DEMO_LOADER)
    cur = Curriculum(tmp_path, cfg, threshold=0.7)
    samples = [json.loads(line) for src in sources for line in pathlib.Path(src.path).read_text().splitlines()]
    assert cur.epoch.sizes == (4, 2) and cur.length() == 3
    assert not cur.due(2) and cur.due(3) and cur.loader_config() is cfg

    # Source a keeps its samples 1 and 3 (0.7 is not > 0.7; 2 was not scored), source b is all solved.
    ious = np.array([0.9, 0.1, np.nan, 0.7, 0.8, 0.95])
    metrics = cur.advance(3, ious)
    assert metrics == {
        "curriculum_epoch": 2,
        "curriculum_kept": 2,
        "curriculum_dropped": 3,
        "curriculum_unscored": 1,
        "curriculum_held_out": 0,
        "curriculum_mean_iou": pytest.approx(np.nanmean(ious)),
    }
    kept = [samples[i]["id"] for i in (1, 3)]
    assert cur.epoch.sizes == (2,) and cur.epoch.start_step == 3 and cur.length() == 1
    assert not cur.due(3) and cur.due(4)
    epoch_cfg = cur.loader_config()
    assert epoch_cfg.seed == cfg.seed + 1 and epoch_cfg.sources[0].media_dir == sources[0].media_dir
    loader = make_loader(epoch_cfg, tok, model_config, prompt_builders())
    seen = ids_of(next(loader) for _ in range(4))  # 8 rows: four passes over the 2 kept samples
    assert sorted(seen) == sorted(kept * 4)
    summary = json.loads((tmp_path / CURRICULUM_DIR / "epoch_0002" / "summary.json").read_text())
    assert summary["dropped_ids"] == [samples[i]["id"] for i in (0, 4, 5)] and summary["start_step"] == 3
    assert summary["unscored_ids"] == [samples[2]["id"]] and summary["held_out_ids"] == []

    # A checkpoint's meta brings a fresh run back to the same set and loader position.
    state = loader.get_state()
    following = ids_of([next(loader)])
    again = Curriculum(tmp_path, cfg, threshold=0.7)
    assert again.restore(cur.meta()) and again.epoch == cur.epoch
    resumed = make_loader(again.loader_config(), tok, model_config, prompt_builders())
    resumed.set_state(state)
    assert ids_of([next(resumed)]) == following
    with pytest.raises(ValueError, match="another run"):
        again.restore({"curriculum_epoch": 2, "curriculum_start_step": 5})

    # Every sample solved: the set is kept as it is (never an empty loader).
    metrics = cur.advance(4, [0.9, 1.0])
    assert (metrics["curriculum_kept"], metrics["curriculum_dropped"]) == (2, 0)
    assert "keeping the set unchanged" in caplog.text
    loader = make_loader(cur.loader_config(), tok, model_config, prompt_builders())
    assert sorted(ids_of(next(loader) for _ in range(2))) == sorted(kept * 2)
    with pytest.raises(ValueError, match="one IoU per sample"):
        cur.advance(5, [0.1])


def test_with_several_processes_process_0_writes_and_small_sources_are_held_out(data, tmp_path, monkeypatch):
    sources, _, _ = data
    cfg = LoaderConfig(sources=(sources["a"], sources["b"]), **DEMO_LOADER)
    cur = Curriculum(tmp_path, cfg, threshold=0.7)
    barriers = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost, "barrier", barriers.append)
    # Source a keeps 3 samples, b only 1: fewer than the 2 processes' shards, so b is held out.
    metrics = cur.advance(3, [0.1, 0.9, 0.2, 0.3, 0.1, 0.9])
    assert (metrics["curriculum_kept"], metrics["curriculum_dropped"], metrics["curriculum_held_out"]) == (3, 2, 1)
    assert cur.epoch.sizes == (3,) and barriers == ["curriculum epoch 2"]
    first_of_b = json.loads(pathlib.Path(sources["b"].path).read_text().splitlines()[0])["id"]
    summary = json.loads((tmp_path / CURRICULUM_DIR / "epoch_0002" / "summary.json").read_text())
    assert summary["held_out_ids"] == [first_of_b]
    # Process 1 computes the same epoch but writes nothing.
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    cur.advance(4, [0.1, 0.2, 0.3])
    assert cur.epoch.number == 3 and not (tmp_path / CURRICULUM_DIR / "epoch_0003").exists()
    assert barriers == ["curriculum epoch 2", "curriculum epoch 3"]


def test_epoch_length_and_unique_ids():
    assert epoch_length(2500, 64) == 39 and epoch_length(2500, 8, processes=8) == 39
    assert epoch_length(3, 8) == 1 and epoch_length(2500, 64, fixed=50) == 50
    with pytest.raises(ValueError, match="unique sample ids"):
        check_unique_ids([{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(ValueError, match="epoch_steps"):
        TrainConfig(epoch_steps=0)


# --- trainer runs -----------------------------------------------------------------------------------


def trainer(workdir, steps, sources):
    """A demo trainer with `drop_solved` on `sources` (7 samples, one unloadable: 3 steps per epoch)."""
    parse_gin(
        files=["demo.gin"],
        bindings=[
            *SMALL,
            "DataConfig.synthetic = False",
            f"DataConfig.sources = {[dataclasses.asdict(s) for s in sources]}",
        ],
    )
    return GRPOTrainer(
        workdir, TrainConfig(steps=steps, tensorboard=False, progress=False, export_hf=False, drop_solved=True)
    )


@pytest.mark.xdist_group("curriculum")
def test_trainer_scores_like_curate_on_separate_greedy_outputs(tmp_path, data, compile_cache):
    t = trainer(tmp_path, 1, data[0].values())
    policy = nnx.merge(t.graphdef, t.state.params, t.frozen)
    ious = t.curriculum.score(
        policy,
        t.tokenizer,
        t.model_config,
        prompt_builders(),
        mesh=t.mesh,
        layout=t.layout,
        max_new_tokens=t.rollout_cfg.max_new_tokens,
    )
    t.checkpoints.close()
    # Separately: an unsharded copy of the policy, the evaluation loader, `curate` in filter mode.
    plain = nnx.merge(t.graphdef, *jax.device_get((t.state.params, t.frozen)))
    batches = make_eval_loader(t.loader_cfg, t.tokenizer, t.model_config, prompt_builders())
    predictions, targets, _ = generate_predictions(
        plain, t.tokenizer, batches, max_new_tokens=t.rollout_cfg.max_new_tokens
    )
    kept, expected, _ = curate.curate(predictions, targets, difficulty.CurateConfig(), mode="filter")
    assert [p["id"] for p in predictions] == [s["id"] for s in t.curriculum.samples() if s["id"] != "broken"]
    np.testing.assert_array_equal(ious[:-1], expected)
    assert np.isnan(ious[-1]) and len(ious) == 7
    metrics = t.curriculum.advance(3, ious)
    assert metrics["curriculum_kept"] == len(kept)
    assert [s["id"] for s in t.curriculum.samples()] == [s["id"] for s in kept]


@pytest.mark.slow
@pytest.mark.xdist_group("curriculum")
def test_resume_across_drops_logs_exactly_the_uninterrupted_run(tmp_path, data, compile_cache):
    sources = data[0].values()
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert trainer(straight, 7, sources).run() == 0
    # Stop at the first boundary (the drop is redone on resume), just after it (the set comes from the
    # files), then run on past the second boundary.
    for steps in (3, 4, 7):
        assert trainer(stopped, steps, sources).run() == 0
    a, b = read_metrics(straight), read_metrics(stopped)
    assert [r["step"] for r in b] == list(range(1, 8))
    for key in (
        "loss",
        "kl",
        "grad_norm",
        "reward_mean",
        "completion_length_mean",
        "curriculum_epoch",
        "curriculum_kept",
        "curriculum_dropped",
        "curriculum_unscored",
        "curriculum_mean_iou",
    ):
        assert [r.get(key) for r in a] == [r.get(key) for r in b], key
    # Drops before steps 3 and 6 (0-based): the unloadable sample goes at the first one.
    assert [(r["step"], r["curriculum_kept"], r["curriculum_unscored"]) for r in a if "curriculum_epoch" in r] == [
        (4, 6, 1),
        (7, 6, 0),
    ]
    for epoch in ("epoch_0002", "epoch_0003"):
        assert (straight / CURRICULUM_DIR / epoch / "summary.json").read_text().replace(str(straight), "") == (
            stopped / CURRICULUM_DIR / epoch / "summary.json"
        ).read_text().replace(str(stopped), "")
    # Both end on the same loader position of the same set.
    nxt = []
    for workdir in (straight, stopped):
        t = trainer(workdir, 7, sources)
        assert t.restore() == 7 and t.curriculum.epoch.number == 3
        assert [pathlib.Path(s.path).name for s in t.curriculum.epoch.sources] == ["source_0.jsonl", "source_1.jsonl"]
        nxt.append(ids_of([next(t.loader), next(t.loader)]))
        t.checkpoints.close()
    assert nxt[0] == nxt[1]
