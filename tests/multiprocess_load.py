"""One process of `test_sharded_load.py`: load an HF checkpoint fsdp-sharded over all devices of NPROC
processes (2 CPU devices each; jax.distributed over gloo), measure this process's host memory, copy the
parameters as the trainer's frozen reference, and check the placement; writes OUT_PID.json and, on
process 0, OUT_logits.npy (the gathered logits of IDS_FILE).

    python multiprocess_load.py NPROC PID PORT CHECKPOINT IDS_FILE OUT

Memory: `/proc/self/clear_refs` "5" resets VmHWM to the current RSS, so `VmHWM - VmRSS at the reset` is the
peak of this process's resident memory during what follows. VmHWM counts anonymous memory and mapped file
pages alike; the loader keeps one tensor's file mapped at a time (its safetensors slice object), so the
peak is at most the anonymous peak plus one tensor's pages.
"""

import json
import os
import sys

nproc, pid, port, checkpoint, ids_file, out = sys.argv[1:7]
nproc, pid = int(nproc), int(pid)
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
if (jax.device_count(), jax.local_device_count()) != (2 * nproc, 2):
    raise SystemExit(f"expected {2 * nproc} devices, 2 local; got {jax.device_count()}, {jax.local_device_count()}")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from safetensors import safe_open  # noqa: E402

from models.qwen2_5_vl import checkpoint as checkpoint_lib  # noqa: E402
from models.qwen2_5_vl import sharding as sharding_lib  # noqa: E402
from models.qwen2_5_vl.inputs import build_model_inputs  # noqa: E402
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration  # noqa: E402


def kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def reset_peak() -> int:
    """Reset VmHWM to the current RSS; returns that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return kb("VmRSS:") * 1024


def peak_since(base: int) -> int:
    return kb("VmHWM:") * 1024 - base


mesh = sharding_lib.make_mesh(1, 2 * nproc, 1)
multihost_utils.sync_global_devices("start")
base = reset_peak()
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
    checkpoint, sharding=sharding_lib.loader_sharding(mesh, "fsdp_tensor")
)
load_peak, load_after = peak_since(base), kb("VmRSS:") * 1024 - base
params = nnx.state(model, nnx.Param)
leaves = jax.tree.leaves(params)
share = sum(shard.data.nbytes for leaf in leaves for shard in leaf.addressable_shards)
largest = max(leaf.nbytes for leaf in leaves)

# The trainer's frozen reference (`GRPOTrainer.ref_params`): a device-side copy in the same sharding.
base = reset_peak()
ref = jax.block_until_ready(jax.tree.map(lambda x: x.copy(), params))
ref_peak = peak_since(base)
same_sharding = all(a.sharding == b.sharding for a, b in zip(leaves, jax.tree.leaves(ref)))
del ref

# Every addressable shard equals the checkpoint's tensor at that index (one full tensor read at a time).
wrong = []
flat = dict(nnx.to_flat_state(params))
for name, (path, key) in checkpoint_lib.tensor_locations(checkpoint).items():
    with safe_open(str(path), framework="numpy") as f:
        hf = f.get_tensor(key)
    value = flat[checkpoint_lib.nnx_path(name)].get_value()
    hf_index, finish = checkpoint_lib.hf_block(name, (slice(None),) * value.ndim)
    full = finish(hf[hf_index])
    for shard in value.addressable_shards:
        if not np.array_equal(np.asarray(shard.data), full[shard.index]):
            wrong.append(name)

ids = np.load(ids_file)
inputs = jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(NamedSharding(mesh, P()), np.asarray(x)),
    build_model_inputs(model.config, ids),
)
logits = jax.jit(lambda m, x: m.forward(x))(model, inputs)
gathered = multihost_utils.process_allgather(logits, tiled=True)
if pid == 0:
    np.save(f"{out}_logits.npy", gathered)
with open(f"{out}_{pid}.json", "w") as f:
    json.dump(
        {
            "load_peak": load_peak,
            "load_after": load_after,
            "share": share,
            "largest": largest,
            "ref_peak": ref_peak,
            "same_sharding": same_sharding,
            "wrong": wrong,
            "devices": [jax.device_count(), jax.local_device_count()],
        },
        f,
    )
multihost_utils.sync_global_devices("written")
