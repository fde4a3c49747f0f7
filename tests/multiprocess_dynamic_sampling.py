"""One process of `test_dynamic_sampling.py`'s multi-process run: GRPO with configs/ablations/dapo.gin's
bindings on the shrunk demo (the tiny model sharded over 4 CPU devices in all, jax.distributed over gloo),
rewards as in that test; writes each step's `resample_*` metrics as seen by this process to OUT_PID.json.

    python multiprocess_dynamic_sampling.py NPROC PID PORT WORKDIR OUT
"""

import json
import os
import pathlib
import sys

nproc, pid, port, workdir, out = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    pathlib.Path(sys.argv[4]),
    sys.argv[5],
)
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // nproc}"
import jax  # noqa: E402  (after XLA_FLAGS)

if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_dynamic_sampling import DAPO_BINDINGS, crc_rewards  # noqa: E402
from test_resume import SMALL  # noqa: E402

from tempr1_jax.config import parse_gin  # noqa: E402
from tempr1_jax.rl import rollout as rollout_lib  # noqa: E402
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig  # noqa: E402
from tempr1_jax.training import multihost  # noqa: E402

parse_gin(files=["demo.gin"], bindings=[*SMALL, *DAPO_BINDINGS, "MeshConfig.fsdp = 4"])
rollout_lib.compute_rewards = crc_rewards(rollout_lib.compute_rewards)
trainer = GRPOTrainer(workdir, TrainConfig(steps=3, tensorboard=False, progress=False, export_hf=False))
seen = []
step = trainer.step


def recorded(i):
    metrics = step(i)
    seen.append({k: v for k, v in metrics.items() if k.startswith("resample_")})
    return metrics


trainer.step = recorded
trainer.run()
pathlib.Path(f"{out}_{pid}.json").write_text(json.dumps(seen))
multihost.barrier("written")
