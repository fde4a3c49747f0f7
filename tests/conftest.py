"""Test session setup: 8 fake CPU devices for the sharding tests, set before JAX starts."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ANNOTATIONS = SHARED / "data" / "annotations"
HF_CONFIGS = SHARED / "data" / "configs"


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


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent XLA compilation cache for one test module (restored afterwards); its path can be
    given to subprocesses. Modules of one `xdist_group` share a worker, so later tests reuse programs."""
    import jax

    path = str(tmp_path_factory.mktemp("xla_cache"))
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield path
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
