"""Time per SFT step of `tempr1 demo`'s model and data: the LM head on each row's answer window
(`apps.sft.answer_window`, what SFT runs) against the LM head on every position (the window widened to
the whole row), the same batches in one process, interleaved.

    python benchmarks/sft.py [--steps 200] [--batches 16] [--workdir DIR] [--gin.X=V ...]

The loader's batches are read once and cycled, so the times are the jitted update alone (compilation
excluded); the losses of the two paths agree to float rounding. Prints a markdown table for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from tempr1_jax.config import add_gin_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_gin_arguments(parser)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per path")
    parser.add_argument("--batches", type=int, default=16, help="distinct loader batches, cycled")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import gin
    import jax

    from tempr1_jax.apps import demo
    from tempr1_jax.apps.sft import SFTConfig, SFTTrainer, answer_window
    from tempr1_jax.configurables import parse_gin

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_sft_"))
    args.gin_file = ["demo_e2e.gin", *args.gin_file]  # the demo's settings, then the command line's
    parse_gin(args)
    cfg = demo.DemoConfig()
    splits = demo.write_demo_data(work / "data", cfg, {"train": 100})
    gin.bind_parameter("DataConfig.synthetic", False)
    gin.bind_parameter("DataConfig.sources", demo.training_sources(splits["train"], work / "data", {}))
    sft_cfg = dataclasses.replace(SFTConfig(), steps=args.steps, export=False, progress=False, tensorboard=False)
    trainer = SFTTrainer(work / "sft", sft_cfg)

    windowed = [trainer._common_shape(trainer.next_batch()) for _ in range(args.batches)]
    full = []
    for batch in windowed:
        mask = batch["completion_mask"]
        starts, window = answer_window(mask, width=mask.shape[1] - 1)
        full.append({**batch, "starts": starts, "window": window})
    paths = {"answer window": windowed, "every position": full}
    state0 = trainer.state

    def fresh():  # the update donates its state: each path starts from its own copy of the initial one
        return jax.tree.map(lambda x: x.copy(), state0)

    times: dict[str, list[float]] = {name: [] for name in paths}
    first_loss: dict[str, float] = {}
    states = {}
    for name, batches in paths.items():  # the first update of each path from the same state, then
        states[name], m = trainer.train_step(fresh(), trainer.frozen, trainer._microbatches(batches[0]))
        first_loss[name] = float(m["loss"])
        for batch in batches[1:]:  # every other shape of the path, compiled before the timing
            states[name], m = trainer.train_step(states[name], trainer.frozen, trainer._microbatches(batch))
        jax.block_until_ready(m)
    for i in range(args.steps):
        for name, batches in paths.items():
            micro = trainer._microbatches(batches[i % len(batches)])
            t0 = time.perf_counter()
            states[name], m = trainer.train_step(states[name], trainer.frozen, micro)
            jax.block_until_ready(m)
            times[name].append(time.perf_counter() - t0)

    median = {name: float(np.median(t)) for name, t in times.items()}
    widths = sorted({b["window"].shape[1] for b in windowed})
    print(
        f"load average {os.getloadavg()[0]:.2f}; {args.steps} steps per path; batch "
        f"{windowed[0]['inputs'].input_ids.shape} tokens; answer windows {widths}"
    )
    print("| path | median step (ms) | first loss |")
    print("|---|---:|---:|")
    for name in paths:
        print(f"| {name} | {median[name] * 1e3:.1f} | {first_loss[name]:.6f} |")
    print(f"every position / answer window: {median['every position'] / median['answer window']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
