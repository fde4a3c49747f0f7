"""One process of `test_multiprocess.py`: greedy `generate_predictions` of a tiny model sharded over 4 CPU
devices in all, on process PID of NPROC (jax.distributed over gloo when NPROC > 1); writes OUT_PID.json.

    python multiprocess_eval.py NPROC PID PORT DATA_DIR OUT
"""

import json
import os
import pathlib
import sys

nproc, pid, port, data, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], pathlib.Path(sys.argv[4]), sys.argv[5]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // nproc}"
import jax  # noqa: E402  (after XLA_FLAGS)

if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

import transformers  # noqa: E402

from data_pipeline.loader import LoaderConfig, SourceConfig, make_eval_loader  # noqa: E402
from data_pipeline.tokenizer import special_token_ids  # noqa: E402
from models.qwen2_5_vl import sharding as sharding_lib  # noqa: E402
from models.qwen2_5_vl.config import tiny_config  # noqa: E402
from tempr1_jax.training import multihost  # noqa: E402
from tempr1_jax.training.data_setup import prompt_builders  # noqa: E402
from tempr1_jax.training.model_setup import init_model  # noqa: E402
from tempr1_jax.training.predictions import generate_predictions  # noqa: E402

tok = transformers.AutoTokenizer.from_pretrained(str(data / "tok"))
model = init_model(tiny_config(**special_token_ids(tok)), 0)
mesh = sharding_lib.make_mesh(1, 4, 1)
sharding_lib.shard_model(model, mesh, "fsdp_tensor")
cfg = LoaderConfig(
    sources=(SourceConfig(str(data / "eval.jsonl"), media_dir=str(data)),),
    batch_size=2,
    max_frames=4,
    min_pixels=784,
    max_pixels=3136,
    total_pixels=12544,
    token_buckets=(64, 128, 256),
    patch_buckets=(16, 32, 64),
    num_workers=0,
)
shapes = []
lockstep = multihost.lockstep


def traced(batches, **kwargs):
    """`multihost.lockstep`, recording (this process's batch shape or None, the common shape) per step."""
    for batch, shape in lockstep(batches, **kwargs):
        shapes.append([None if batch is None else list(batch["inputs"].input_ids.shape), list(shape)])
        yield batch, shape


multihost.lockstep = traced
predictions, targets, skipped = generate_predictions(
    model, tok, make_eval_loader(cfg, tok, model.config, prompt_builders()), max_new_tokens=8, mesh=mesh
)
pathlib.Path(f"{out}_{pid}.json").write_text(
    json.dumps({"predictions": predictions, "skipped": skipped, "shapes": shapes})
)
multihost.barrier("written")
# Leave without jax.distributed's exit-time shutdown: the coordination service's gRPC server (process 0)
# can abort in its destructor ("Check failed: queue.Pop() == nullptr") when the other process disconnects
# at that moment. Everything is written and both processes have passed the barrier.
sys.stdout.flush()
os._exit(0)
