"""Sharded loading.

On a CPU "pod" of 4 JAX processes (2 fake devices each, jax.distributed over gloo), a sharded
transformers-5 layout checkpoint (~350 MB of float32 weights in 4 files) is loaded fsdp-sharded over all 8
devices: each process's peak host memory stays within 1.3x its share of the weights plus the largest
tensor, the trainer's reference copy stays in the same sharding without a host copy, every shard equals
the checkpoint, and the gathered logits equal the single-process model's. In one process, `base_model`
loads a checkpoint straight into a mesh.
"""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.inputs import build_model_inputs
from models.qwen2_5_vl.sharding import loader_sharding, make_mesh
from tempr1_jax.training.model_setup import ModelSetup, base_model, init_model

SCRIPT = pathlib.Path(__file__).with_name("multiprocess_load.py")
NPROC = 4
# Wide enough that a process's share (~90 MB) dwarfs fixed costs; the largest tensor is an MLP kernel (23 MB).
CONFIG = tiny_config(
    vocab_size=4096,
    hidden_size=1024,
    intermediate_size=5632,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    mrope_section=(16, 24, 24),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_four_processes_load_their_shards_only(tmp_path):
    model = init_model(CONFIG, seed=0)
    model.save_pretrained(tmp_path / "ckpt", max_shard_bytes=100 * 2**20, layout="transformers5")
    assert len(list((tmp_path / "ckpt").glob("*.safetensors"))) == 4
    ids = np.random.default_rng(0).integers(0, 290, (2, 16))
    np.save(tmp_path / "ids.npy", ids)
    single = np.asarray(
        jax.jit(lambda m, x: m.forward(x))(model, jax.tree.map(jax.numpy.asarray, build_model_inputs(CONFIG, ids)))
    )
    del model

    port, out = str(free_port()), tmp_path / "out"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                str(NPROC),
                str(pid),
                port,
                str(tmp_path / "ckpt"),
                str(tmp_path / "ids.npy"),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(NPROC)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads(pathlib.Path(f"{out}_{pid}.json").read_text()) for pid in range(NPROC)]
    for pid, r in enumerate(results):
        assert r["devices"] == [2 * NPROC, 2]
        assert r["wrong"] == [] and r["same_sharding"]
        limit = 1.3 * r["share"] + r["largest"]
        assert r["load_peak"] <= limit, f"process {pid}: load peak {r['load_peak'] / 1e6:.0f} MB > {limit / 1e6:.0f} MB"
        # A host copy of the whole model would add 4 shares; the device-side copy adds one (+ its compilation).
        assert r["ref_peak"] <= limit, f"process {pid}: reference peak {r['ref_peak'] / 1e6:.0f} MB"
    logits = np.load(f"{out}_logits.npy")
    np.testing.assert_allclose(logits, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())


def test_base_model_reads_a_checkpoint_into_the_mesh(tmp_path):
    """`base_model` (what the trainer, SFT and export start from) loads a checkpoint straight into the mesh's
    shardings; without a mesh, onto the default device."""
    # Must fail, not skip: conftest.py provides 8 fake CPU devices.
    assert jax.device_count() == 8, f"needs 8 devices, got {jax.device_count()}"
    init_model(tiny_config(), seed=1).save_pretrained(tmp_path, max_shard_bytes=50_000)
    setup = ModelSetup(checkpoint=str(tmp_path))
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    sharded, single = base_model(setup, mesh=mesh), base_model(setup)
    placement = loader_sharding(mesh)
    flat = dict(nnx.to_flat_state(nnx.state(single, nnx.Param)))
    for path, variable in nnx.to_flat_state(nnx.state(sharded, nnx.Param)):
        value = variable.get_value()
        assert value.sharding == placement(path, value.shape), path
        assert flat[path].get_value().sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat[path].get_value()), err_msg=str(path))
