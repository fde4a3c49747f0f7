"""Test session setup: 8 fake CPU devices for the sharding tests, set before JAX starts; one compilation cache."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib
import shutil
import tempfile

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ANNOTATIONS = SHARED / "data" / "annotations"
HF_CONFIGS = SHARED / "data" / "configs"
_CACHE_KEY = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def annotations_dir() -> pathlib.Path:
    """The real benchmark annotation files; tests that need them skip when absent."""
    if not ANNOTATIONS.is_dir():
        pytest.skip(f"real annotations not found at {ANNOTATIONS}")
    return ANNOTATIONS


@pytest.fixture(scope="session")
def hf_configs_dir() -> pathlib.Path:
    """The published Qwen2.5-VL config.json files (no weights)."""
    if not HF_CONFIGS.is_dir():
        pytest.skip(f"published configs not found at {HF_CONFIGS}")
    return HF_CONFIGS


def pytest_configure(config: pytest.Config) -> None:
    """One persistent XLA compilation cache for the whole session, shared by the xdist workers (started
    after this hook, they inherit the environment) and the subprocesses tests start: a program compiled
    by one test is loaded, not compiled again, by the next. A cache the caller set is used as it is."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    path = tempfile.mkdtemp(prefix="tempr1-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    config.stash[_CACHE_KEY] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_CACHE_KEY, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def compile_cache() -> str:
    """The session's persistent XLA compilation cache directory, to hand to subprocesses."""
    import jax

    return jax.config.jax_compilation_cache_dir or os.environ["JAX_COMPILATION_CACHE_DIR"]
