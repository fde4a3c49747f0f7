"""data_pipeline.paths: local paths and bucket URLs, against a real Cloud Storage API (the emulator)."""

import os
import pathlib

import numpy as np
import pytest

from data_pipeline import paths
from tests.gcs_emulator import gcs_emulator, set_env

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
