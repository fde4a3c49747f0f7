"""data_pipeline.paths: local paths and bucket URLs, against a real Cloud Storage API (the emulator)."""

import os
import pathlib

import numpy as np
import pytest
from gcs_emulator import gcs_emulator, set_env

from data_pipeline import paths

BUCKET = "tempr1-paths"


@pytest.fixture(scope="module")
def bucket():
    with gcs_emulator(BUCKET) as env:
        old = {k: os.environ.get(k) for k in env}
        set_env(env)
        yield f"gs://{BUCKET}"
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.parametrize("bad", ["gs:/bucket/run", "gs:bucket", "gs:", "gs:/", "s3:/b/x"])
def test_mangled_urls_are_refused(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="missing '/'"):
        paths.as_path(bad)
    assert not (tmp_path / "gs:").exists()


@pytest.mark.parametrize("good", ["run", "./gs/x", "/tmp/a:b", "C", "a:b/c"])
def test_local_paths_pass(good):
    assert not paths.is_remote(good)
    assert str(paths.as_path(good)) == str(pathlib.Path(good)) or good.startswith("./")


def test_remote_read_write_copy_and_stage(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    root = paths.as_path(f"{bucket}/t1")
    assert paths.is_remote(root)
    (root / "d" / "a.bin").write_bytes(b"abc" * 1000)
    (root / "d" / "sub" / "b.txt").write_text("hello")
    with paths.open_binary(f"{bucket}/t1/d/a.bin") as f:
        f.seek(3000 - 2)
        assert f.read() == b"bc"
    local = paths.local_copy(f"{bucket}/t1/d")
    assert (local / "a.bin").read_bytes() == b"abc" * 1000
    assert (local / "sub" / "b.txt").read_text() == "hello"
    assert paths.local_copy(f"{bucket}/t1/d/sub/b.txt").read_text() == "hello"
    with paths.staged_dir(f"{bucket}/t1/out") as out:
        (out / "x.npy").write_bytes(np.arange(3).tobytes())
    assert (root / "out" / "x.npy").read_bytes() == np.arange(3).tobytes()
    paths.remove_tree(root / "out")
    assert not (root / "out").exists()
    with pytest.raises(FileNotFoundError):
        paths.local_copy(f"{bucket}/t1/nothing")


def test_media_resolve_and_decode_from_the_bucket(bucket, tmp_path):
    from data_pipeline import samples, video
    from data_pipeline.synthetic import write_video

    frames = [np.full((56, 56, 3), 40 * i, np.uint8) for i in range(6)]
    write_video(tmp_path / "v.mp4", frames)
    paths.upload_dir(tmp_path, f"{bucket}/media")
    resolved = samples.resolve_path("v.mp4", f"{bucket}/media")
    assert str(resolved) == f"{bucket}/media/v.mp4"
    assert str(samples.resolve_path(f"{bucket}/other/w.mp4", "/local")) == f"{bucket}/other/w.mp4"
    remote, info = video.read_video(resolved, fps=2.0, min_frames=2)
    local, local_info = video.read_video(tmp_path / "v.mp4", fps=2.0, min_frames=2)
    np.testing.assert_array_equal(remote, local)
    assert info == local_info
    with pytest.raises(video.VideoDecodeError, match="not found"):
        video.read_video(f"{bucket}/media/missing.mp4")


def test_splits_and_jsonl_in_the_bucket(bucket, tmp_path, monkeypatch):
    from data_pipeline import arrayrecord_io
    from data_pipeline.samples import Sample, read_jsonl, write_jsonl

    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    rows = [
        Sample(id=f"s{i}", task="tg", source="t", query="q", video="v.mp4", duration=10.0, segments=((1.0, 2.0),))
        for i in range(5)
    ]
    arrayrecord_io.write_split(f"{bucket}/split", "test", rows, name="d", num_shards=2)
    write_jsonl(f"{bucket}/split/test.jsonl", rows)
    assert arrayrecord_io.read_split(f"{bucket}/split", "test") == rows
    assert read_jsonl(f"{bucket}/split/test.jsonl") == rows


def test_metrics_log_to_the_bucket(bucket):
    from tempr1_jax.training.metrics_log import MetricsLogger, read_metrics

    workdir = f"{bucket}/metrics_run"
    logger = MetricsLogger(workdir, tensorboard=False, progress=False)
    logger.log(1, {"loss": 1.0})
    logger.log(2, {"loss": 0.5})
    logger.close()
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2]
    logger = MetricsLogger(workdir, start_step=1, tensorboard=False, progress=False)  # a resume drops step 2
    logger.log(2, {"loss": 0.25})
    logger.close()
    assert [r["loss"] for r in read_metrics(workdir)] == [1.0, 0.25]


def test_a_mangled_path_object_is_refused_too():
    from etils import epath

    with pytest.raises(ValueError, match="missing '/'"):
        paths.as_path(epath.Path("gs:/bucket/run"))
