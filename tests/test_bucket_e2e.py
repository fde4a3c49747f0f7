"""Bucket paths end to end against a real Cloud Storage JSON API (gcp-storage-emulator): `tempr1 prepare`
with annotations, videos and output in the bucket; a short GRPO run whose data and workdir are in the
bucket (orbax checkpoint through tensorstore's GCS driver, metrics, TensorBoard, operative config,
`model/`, HF export); a restart that resumes from the bucket; `tempr1 eval` and `tempr1 convert` with
bucket paths. No local folder named `gs:` may appear.
"""

import gc
import json
import os
import pathlib
import tempfile

import pytest
from gcs_emulator import gcs_emulator, set_env
from test_resume import SMALL

from data_pipeline import paths
from data_pipeline.synthetic import write_synthetic_dataset
from tempr1_jax import cli
from tempr1_jax.configurables import parse_gin
from tempr1_jax.training.checkpoints import CheckpointManager
from tempr1_jax.training.metrics_log import read_metrics

pytestmark = pytest.mark.slow
BUCKET = "tempr1-e2e"
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bucket():
    with gcs_emulator(BUCKET) as env:
        saved = dict(os.environ)
        set_env(env)
        try:
            yield f"gs://{BUCKET}"
        finally:
            gc.collect()  # tensorboardX's GCS writers upload again when collected: while the server runs
            os.environ.clear()
            os.environ.update(saved)


def _no_local_gs_folder(*dirs: pathlib.Path) -> None:
    for d in dirs:
        assert not (d / "gs:").exists(), f"a local 'gs:' folder appeared in {d}"


def _train(workdir: str, steps: int) -> int:
    from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig

    parse_gin(
        files=["demo.gin"],
        bindings=[
            *SMALL,
            "DataConfig.synthetic = False",
            f"DataConfig.sources = [{{'path': '{BUCKET_URL}/prep/train.jsonl'}}]",
        ],
    )
    return GRPOTrainer(workdir, TrainConfig(steps=steps, tensorboard=True, progress=False)).run()


BUCKET_URL = f"gs://{BUCKET}"


def test_prepare_train_resume_eval_convert_in_a_bucket(bucket, tmp_path, monkeypatch, compile_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    # Annotations in Charades-STA's JSON form and their videos, uploaded to the bucket.
    local = tmp_path / "synthetic"
    write_synthetic_dataset(local, samples_per_task=4, tasks=("tg",), include_images=False, split_names=("train",))
    rows = [json.loads(line) for line in (local / "train.jsonl").read_text().splitlines()]
    annotations = {
        r["id"]: {"duration": r["duration"], "sentences": [r["query"]], "timestamps": r["segments"][:1]} for r in rows
    }
    paths.upload_dir(local / "videos", f"{bucket}/media")
    paths.as_path(f"{bucket}/ann/charades.json").write_text(json.dumps(annotations))

    assert (
        cli.main(
            [
                "prepare",
                "--dataset",
                "charades_sta",
                "--annotations",
                f"{bucket}/ann/charades.json",
                "--videos",
                f"{bucket}/media",
                "--out",
                f"{bucket}/prep",
                "--split",
                "train",
            ]
        )
        == 0
    )
    prepared = paths.as_path(f"{bucket}/prep")
    assert (prepared / "train.jsonl").is_file() and (prepared / "prepare_report.json").is_file()
    assert len(list(prepared.glob("charades_sta-train.array_record-*"))) == 1
    first = json.loads((prepared / "train.jsonl").read_text().splitlines()[0])
    assert first["video"].startswith(f"{bucket}/media/")  # found in the bucket, so not "missing"

    workdir = f"{bucket}/run"
    assert _train(workdir, 1) == 0
    run = paths.as_path(workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [1]
    for name in (
        "operative_config.gin",
        "model/config.json",
        "model/setup.json",
        "tokenizer/tokenizer.json",
        "hf/config.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    manager = CheckpointManager(f"{workdir}/checkpoints")
    assert manager.all_steps() == [1]
    manager.close()

    assert _train(workdir, 2) == 0  # resumes from step 1 in the bucket
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2]
    manager = CheckpointManager(f"{workdir}/checkpoints")
    assert manager.all_steps() == [1, 2]
    manager.close()

    assert (
        cli.main(
            [
                "eval",
                "--gin_file",
                "demo.gin",
                "--checkpoint",
                f"{workdir}/hf",
                "--dataset",
                f"{bucket}/prep",
                "--split",
                "train",
                "--workdir",
                f"{bucket}/eval",
                "--batch_size",
                "2",
                "--limit",
                "2",
                "--max_new_tokens",
                "6",
            ]
        )
        == 0
    )
    results = json.loads(paths.as_path(f"{bucket}/eval/eval_results.json").read_text())
    assert results["num_samples"] == 2
    assert (paths.as_path(f"{bucket}/eval") / "predictions.jsonl").is_file()

    assert cli.main(["convert", "orbax-to-hf", workdir, f"{bucket}/converted", "--step", "1"]) == 0
    converted = paths.as_path(f"{bucket}/converted")
    assert (converted / "config.json").is_file() and list(converted.glob("*.safetensors"))

    _no_local_gs_folder(tmp_path, REPO, pathlib.Path(tempfile.gettempdir()))
    assert not list(tmp_path.rglob("gs:"))


def test_mangled_bucket_workdir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from tempr1_jax.training.metrics_log import MetricsLogger

    with pytest.raises(ValueError, match="missing '/'"):
        MetricsLogger("gs:/bucket/run", tensorboard=False, progress=False)
    assert not (tmp_path / "gs:").exists()
