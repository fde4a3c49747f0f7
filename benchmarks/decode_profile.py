"""Where a decode step's time goes: the decode loop of `benchmarks/model.py`'s rollout, profiled.

    python benchmarks/decode_profile.py [--threads N] [--steps T] [--group G]

Runs `generation.prefill` once, then traces one `generation.decode` call (G samples of the video
prompt, T new tokens) with the JAX profiler, maps every executed XLA op of the trace to its HLO
instruction (its `op_name` says which JAX operation it comes from) and prints the time per decode
step by category: weight matmuls, the LM head (fused with the log-softmax's max), attention,
KV-cache writes, copies, sampling (random bits, log-softmax, argmax) and the rest, with the number
of ops launched per step (the per-op overhead).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.model import SMALL, _pin_threads, video_prompt

_SKIP = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "while", "Common", "end:", "Thread", "Wait")


def category(name: str, op_name: str) -> str:
    """The category of one executed op (trace name = HLO instruction name) from its `op_name`."""
    if re.search(r"gumbel|uniform|threefry|random", op_name):
        return "sampling: random bits"
    if name.startswith("ynn") and "log_softmax" in op_name:
        return "LM head (fused with the log-softmax max)"
    if re.search(r"log_softmax|argmax|/reduce$|categorical|take_along", op_name):
        return "sampling: log-softmax, argmax"
    if "dynamic_update_slice" in op_name:
        return "KV cache: " + ("layout copy after the write" if "transpose" in name else "writes")
    if re.search(r"bkgqs|bskd|bgkhs|bgkhd|select_n|softmax|/div|/exp", op_name):
        return "attention"
    if "dot_general" in op_name:
        return "matmul (weights)"
    if name.startswith("copy"):
        return "copies (other)"
    return "other elementwise (norms, rotary, embedding, ...)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument(
        "--no-transpose",
        dest="transpose",
        action="store_false",
        help="decode with [in, out] kernels (`generate` transposes them on CPU)",
    )
    args = parser.parse_args(argv)
    _pin_threads(args.threads)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, build_model_inputs, tiny_config
    from models.qwen2_5_vl.generation import SamplingParams, decode, decode_weights, prefill

    config = tiny_config(**SMALL)
    graphdef, state = nnx.split(Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    inputs = jax.tree.map(jnp.asarray, build_model_inputs(config, **video_prompt(config, seed=1)))
    last_logits, cache = prefill(graphdef, state, inputs, inputs.input_ids.shape[1])
    call = (
        graphdef,
        decode_weights(state) if args.transpose else state,
        cache,
        last_logits,
        inputs.attention_mask,
        inputs.position_ids,
        jax.random.key(0),
        jnp.full((4,), -1, jnp.int32),
        jnp.int32(0),
    )
    static = dict(
        params=SamplingParams(1.0),
        max_new_tokens=args.steps,
        num_return_sequences=args.group,
        transposed_weights=args.transpose,
    )
    hlo = decode.lower(*call, **static).compile().as_text()
    op_names = dict(re.findall(r"^\s+%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo, re.M))
    decode(*call, **static)[0].block_until_ready()
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir, create_perfetto_trace=True)
        t0 = time.perf_counter()
        decode(*call, **static)[0].block_until_ready()
        wall = time.perf_counter() - t0
        jax.profiler.stop_trace()
        trace = sorted(glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True))[-1]
        events = [e for e in json.load(gzip.open(trace))["traceEvents"] if e.get("ph") == "X"]
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if not e["name"].startswith(_SKIP):
            c = category(e["name"], op_names.get(e["name"], ""))
            totals[c][0] += 1
            totals[c][1] += e["dur"] / 1e3
    steps = args.steps - 1
    op_ms = sum(ms for _, ms in totals.values())
    print(
        f"decode of G={args.group} x {args.steps} tokens: {wall * 1e3 / steps:.2f} ms wall per step (traced), "
        f"{op_ms / steps:.2f} ms in ops, {sum(n for n, _ in totals.values()) / steps:.0f} ops per step; "
        f"1-min load average {os.getloadavg()[0]:.2f}"
    )
    for c, (n, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"  {c:50s} {ms / steps:7.2f} ms/step {ms / op_ms:6.1%} {n / steps:5.0f} ops/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
