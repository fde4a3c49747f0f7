"""Time per GRPO step on configs/demo.gin, split into rollout (generate + host rewards), log-probs and
update, and the share of the step spent in the jitted parts (generate, log-probs, update).

    python benchmarks/train.py [--steps 6] [--workdir DIR] [--mesh data=2,fsdp=2,tensor=2] [--gin.X=V ...]

The first step includes compilation and is reported separately; the steady-state numbers are medians
over the later steps (a later step can still compile: e.g. the rewards kernel meets a new padded shape).
Prints a markdown table (paste it into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

PARTS = ("step_time_s", "rollout_s", "generate_s", "reward_s", "logprob_s", "update_s")


def main(argv: list[str] | None = None) -> int:
    from tempr1_jax.commands.train import mesh_bindings
    from tempr1_jax.config import add_gin_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_gin_arguments(parser)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--mesh", default=None)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step compiles)")

    from tempr1_jax.configurables import parse_gin
    from tempr1_jax.rl import trainer as trainer_lib
    from tempr1_jax.training.metrics_log import read_metrics

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_train_"))
    parse_gin(
        args,
        files=["demo.gin"] if not args.gin_file else [],
        bindings=["TrainConfig.progress = False", *mesh_bindings(args.mesh)],
    )
    t0 = time.perf_counter()
    trainer = trainer_lib.GRPOTrainer(workdir, trainer_lib.TrainConfig(steps=args.steps, progress=False))
    setup_s = time.perf_counter() - t0
    trainer.run()
    records = read_metrics(workdir)
    first, rest = records[0], records[1:]
    mean = {k: float(np.median([r[k] for r in rest])) for k in PARTS}
    jitted = mean["generate_s"] + mean["logprob_s"] + mean["update_s"]

    import jax

    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].platform}, mesh {args.mesh or 'data=1,fsdp=1,tensor=1'}, "
        f"cpus: {os.cpu_count()}, steps: {args.steps}, workdir: {workdir}"
    )
    print(f"setup (data, tokenizer, model, optimizer init): {setup_s:.1f} s\n")
    print("| part | first step (s, with compilation) | later steps, median (s) | share of later step |")
    print("|---|---|---|---|")
    for k in PARTS:
        print(f"| {k} | {first[k]:.3f} | {mean[k]:.3f} | {100 * mean[k] / mean['step_time_s']:.1f}% |")
    print(
        f"\njitted parts (generate + log-probs + update): {100 * jitted / mean['step_time_s']:.1f}% of a "
        f"later step; completion tokens/s: {np.median([r['tokens_per_s'] for r in rest]):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
