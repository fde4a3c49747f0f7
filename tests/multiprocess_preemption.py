"""One process of `test_preemption.py`: GRPO on configs/demo.gin shrunk as in `test_resume.SMALL`, as process PID
of NPROC (jax.distributed over gloo, one CPU device each, the model sharded over all of them), in WORKDIR.

    python multiprocess_preemption.py NPROC PID PORT WORKDIR STEPS
"""

import logging
import os
import pathlib
import sys

nproc, pid, port, workdir, steps = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
logging.basicConfig(level=logging.INFO, format=f"[{pid}] %(levelname)s %(name)s: %(message)s")
logging.getLogger("absl").setLevel(logging.WARNING)

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_resume import SMALL  # noqa: E402

from tempr1_jax.configurables import parse_gin  # noqa: E402
from tempr1_jax.rl.trainer import GRPOTrainer, TrainConfig  # noqa: E402

parse_gin(files=["demo.gin"], bindings=[*SMALL, f"MeshConfig.fsdp = {nproc}"])
sys.exit(GRPOTrainer(workdir, TrainConfig(steps=steps, tensorboard=False, progress=False)).run())
