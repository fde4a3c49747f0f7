"""Qwen2.5-VL model benchmarks against transformers (PyTorch eager, CPU), ratios measured in one run.

    python benchmarks/model.py [--threads N] [--repeats R]

1. Prefill: forward logits of a small random model on a video prompt, ours (jitted XLA) vs
   transformers; plus achieved FLOP/s (analytic count of the model's useful FLOPs: attention only
   within windows / temporal groups / causal) against a large float32 matmul measured in the same
   process.
2. Rollout: G = 8 sampled completions of 64 new tokens for one video prompt; tokens/s of our
   `generate` (one prefill shared by the 8 samples, `lax.while_loop` decode reading the prompt's
   cache once per step for the 8 samples) vs transformers
   `generate(num_return_sequences=8, do_sample=True)`. The decode loop alone (our `decode` after a
   `prefill`) is also timed per step and set against the memory roofline: the bytes a step must
   read (decoder and LM head weights, the prompt's KV cache once, each sample's own cache) divided
   by the read bandwidth of an XLA reduction over a large array in the same process.
3. Loading: peak host memory (peak RSS minus the RSS before loading, in a fresh subprocess) when
   `from_pretrained` reads a bf16 safetensors checkpoint, relative to the checkpoint's bytes.

Both frameworks run in float32 with the same number of threads: the process is pinned to N CPUs
before JAX and torch start (XLA's CPU thread pool follows the affinity mask) and torch uses N
intra-op threads. Timings are medians over ``--repeats`` runs after a warm-up (compilation) run;
the two frameworks' runs are interleaved (ours, theirs, ours, ...) so that a change in the
machine's load hits both. The load average is printed before and after: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


def _pin_threads(n: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cpus)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _median_time(fn, repeats: int) -> float:
    return _interleaved_medians([fn], repeats)[0]


def _interleaved_medians(fns, repeats: int) -> list[float]:
    """Median wall time of each of `fns` over `repeats` rounds (one call of each per round, in
    turn), after one warm-up (compilation) call of each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


# --- configs and inputs ---------------------------------------------------------------------------

SMALL = dict(  # prefill / rollout model: ~25M parameters
    vision_depth=8,
    vision_hidden_size=256,
    vision_intermediate_size=512,
    vision_num_heads=4,
    vision_fullatt_block_indexes=(3, 7),
    vision_window_size=112,
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    mrope_section=(8, 12, 12),
    vocab_size=8192,
    image_token_id=8190,
    video_token_id=8191,
    vision_start_token_id=8188,
    vision_end_token_id=8189,
    vision_token_id=8187,
    bos_token_id=8186,
    eos_token_id=8184,
    pad_token_id=8185,
)
VIDEO_GRID = (8, 14, 20)  # 16 frames at 196 x 280: 2240 patches, 560 video tokens
SECONDS_PER_GRID = 1.0
LOAD = dict(  # memory benchmark checkpoint: ~170M parameters, ~340 MB in bf16
    vision_depth=8,
    vision_hidden_size=512,
    vision_intermediate_size=1376,
    vision_num_heads=8,
    vision_fullatt_block_indexes=(3, 7),
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=4,
    mrope_section=(8, 12, 12),
    vocab_size=16000,
    image_token_id=15990,
    video_token_id=15991,
    vision_start_token_id=15992,
    vision_end_token_id=15993,
    vision_token_id=15994,
    bos_token_id=15995,
    eos_token_id=15996,
    pad_token_id=15997,
)


def video_prompt(config, text_len: int = 20, seed: int = 0):
    """HF-named numpy inputs for one prompt: text, a video block, text."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_tokens = int(np.prod(VIDEO_GRID)) // config.vision.merge_unit
    ids = (
        list(rng.integers(0, 8000, text_len))
        + [config.vision_start_token_id]
        + [config.video_token_id] * n_tokens
        + [config.vision_end_token_id]
        + list(rng.integers(0, 8000, text_len))
    )
    n_patches = int(np.prod(VIDEO_GRID))
    return dict(
        input_ids=np.asarray([ids], np.int64),
        attention_mask=np.ones((1, len(ids)), np.int64),
        pixel_values_videos=rng.standard_normal((n_patches, config.vision.patch_dim)).astype(np.float32),
        video_grid_thw=np.asarray([VIDEO_GRID], np.int64),
        second_per_grid_ts=np.asarray([SECONDS_PER_GRID], np.float32),
    )


def forward_flops(config, grid, seq_len: int) -> int:
    """Useful FLOPs of one forward (2 per multiply-add): vision tower on one video, decoder over
    ``seq_len`` tokens with causal attention counted once per (query, earlier key) pair, LM head
    on every position. Attention counts only within segments (windows / frames)."""
    v, t = config.vision, config.text
    frames, h, w = grid
    n = frames * h * w
    m, wm = v.spatial_merge_size, v.window_merged
    # Window sizes (in patches) of one frame: windows of wm x wm merge units, partial at the edges.
    mh, mw = h // m, w // m
    window_sizes = [
        min(wm, mh - r) * min(wm, mw - c) * v.merge_unit for r in range(0, mh, wm) for c in range(0, mw, wm)
    ]
    window_attn = frames * sum(4 * s * s * v.hidden_size for s in window_sizes)
    full_attn = frames * 4 * (h * w) ** 2 * v.hidden_size
    dv, iv = v.hidden_size, v.intermediate_size
    per_block = 2 * n * (dv * 3 * dv + dv * dv + 3 * dv * iv)
    n_full = len(v.fullatt_block_indexes)
    vision = (
        2 * n * v.patch_dim * dv
        + v.depth * per_block
        + n_full * full_attn
        + (v.depth - n_full) * window_attn
        + 2 * (n // v.merge_unit) * (v.merge_unit * dv) * (v.merge_unit * dv + v.out_hidden_size)
    )
    d, kv = t.hidden_size, t.num_key_value_heads * t.head_dim
    per_layer = 2 * seq_len * (2 * d * d + 2 * d * kv + 3 * d * t.intermediate_size) + 2 * seq_len * (seq_len + 1) * d
    return vision + t.num_hidden_layers * per_layer + 2 * seq_len * d * t.vocab_size


# --- benchmarks ------------------------------------------------------------------------------------


def decode_bytes_per_step(model, prompts: int, prompt_len: int, g: int, new_tokens: int) -> int:
    """Bytes one decode step of `generation.decode` reads at least: the decoder's weights and the LM
    head (or tied embedding) once, the sampled tokens' embedding rows, each prompt's KV cache once
    for its `g` samples and every sample's own cache (`new_tokens` slots)."""
    import jax
    from flax import nnx

    lm = model.model.language_model
    embed = lm.embed_tokens.embedding[...]
    head = embed if model.lm_head is None else model.lm_head.kernel[...]
    layers_and_norm = sum(x.nbytes for x in jax.tree.leaves(nnx.state(lm))) - embed.nbytes
    t = model.config.text
    slot = t.num_hidden_layers * 2 * t.num_key_value_heads * t.head_dim * embed.dtype.itemsize
    rows = prompts * g
    return (
        layers_and_norm
        + head.nbytes
        + rows * embed.shape[1] * embed.dtype.itemsize
        + slot * prompts * (prompt_len + g * new_tokens)
    )


def bench_bandwidth(repeats: int, mib: int = 512) -> dict:
    """Read bandwidth of an XLA reduction over a `mib` MiB float32 array (the decode roofline)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    sec = _median_time(lambda: total(x).block_until_ready(), repeats)
    return {"read_bytes_per_s": x.nbytes / sec}


def bench_matmul(repeats: int, n: int = 2048) -> dict:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.dot)
    sec = _median_time(lambda: mm(a, b).block_until_ready(), repeats)
    return {"matmul_flops_per_s": 2 * n**3 / sec}


def _models(tmp: pathlib.Path):
    """A random transformers model for SMALL, saved and loaded into ours (same weights)."""
    import torch
    import transformers

    from models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, tiny_config

    config = tiny_config(**SMALL)
    torch.manual_seed(0)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(**config.to_hf_dict()))
    hf = hf.eval().float()
    hf.save_pretrained(tmp / "small")
    ours = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp / "small")
    return config, hf, ours


def _torch_inputs(config, prompt: dict) -> dict:
    import torch

    from models.qwen2_5_vl.rope_index import token_types

    out = {k: torch.as_tensor(v) for k, v in prompt.items()}
    out["mm_token_type_ids"] = torch.as_tensor(token_types(config, prompt["input_ids"]))
    return out


def bench_prefill(config, hf, ours, repeats: int) -> dict:
    import jax
    import numpy as np
    import torch
    from flax import nnx

    from models.qwen2_5_vl import build_model_inputs

    prompt = video_prompt(config)
    inputs = jax.tree.map(jax.numpy.asarray, build_model_inputs(config, **prompt))
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward(x))
    # The published checkpoints' M-RoPE rule (our default) for both: transformers 5 gets our position ids.
    t_inputs = {**_torch_inputs(config, prompt), "position_ids": torch.tensor(np.asarray(inputs.position_ids))}
    with torch.no_grad():
        jax_sec, torch_sec = _interleaved_medians(
            [lambda: forward(state, inputs).block_until_ready(), lambda: hf(**t_inputs)], repeats
        )
        ref = hf(**t_inputs).logits.numpy()
    err = float(np.abs(np.asarray(forward(state, inputs)) - ref).max() / np.abs(ref).max())
    flops = forward_flops(config, VIDEO_GRID, prompt["input_ids"].shape[1])
    return {
        "prefill_tokens": prompt["input_ids"].shape[1],
        "prefill_jax_s": jax_sec,
        "prefill_torch_s": torch_sec,
        "prefill_flops": flops,
        "prefill_rel_err": err,
    }


def bench_rollout(config, hf, ours, repeats: int, g: int = 8, new_tokens: int = 64) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from models.qwen2_5_vl import build_model_inputs
    from models.qwen2_5_vl.generation import SamplingParams, decode, decode_weights, generate, prefill

    prompt = video_prompt(config, seed=1)
    inputs = build_model_inputs(config, **prompt)
    keys = iter(range(10**6))
    run = lambda: generate(
        ours,
        inputs,
        max_new_tokens=new_tokens,
        temperature=1.0,
        num_return_sequences=g,
        rng=next(keys),
        eos_token_id=(),
    ).block_until_ready()
    t_inputs = _torch_inputs(config, prompt)

    def hf_run():
        with torch.no_grad():
            out = hf.generate(
                **t_inputs,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=g,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=config.pad_token_id,
            )
        assert out.shape == (g, prompt["input_ids"].shape[1] + new_tokens), out.shape

    jax_sec, torch_sec = _interleaved_medians([run, hf_run], repeats)
    # The decode loop alone, on the cache of one prefill.
    graphdef, state = nnx.split(ours)
    device_inputs = jax.tree.map(jnp.asarray, inputs)
    prompt_len = device_inputs.input_ids.shape[1]
    last_logits, cache = prefill(graphdef, state, device_inputs, prompt_len)
    transposed = jax.default_backend() == "cpu"  # as `generate` does
    decode_state = decode_weights(state) if transposed else state
    decode_only = lambda: decode(
        graphdef,
        decode_state,
        cache,
        last_logits,
        device_inputs.attention_mask,
        device_inputs.position_ids,
        jax.random.key(next(keys)),
        jnp.full((4,), -1, jnp.int32),
        jnp.int32(0),
        params=SamplingParams(1.0),
        max_new_tokens=new_tokens,
        num_return_sequences=g,
        transposed_weights=transposed,
    )[0].block_until_ready()
    decode_sec = _median_time(decode_only, repeats)
    return {
        "rollout_tokens": g * new_tokens,
        "rollout_jax_s": jax_sec,
        "rollout_torch_s": torch_sec,
        "decode_step_s": decode_sec / (new_tokens - 1),
        "decode_bytes_per_step": decode_bytes_per_step(ours, 1, prompt_len, g, new_tokens),
    }


# The peak is VmHWM (the high-water RSS of this process's address space). ru_maxrss is not used:
# Linux carries the parent's high-water mark into a child across fork/exec, so it would report
# the benchmark parent's RSS.
_LOAD_CHILD = r"""
import json, os, sys
import jax, jax.numpy as jnp
from flax import nnx
from models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
import models.qwen2_5_vl.checkpoint, models.qwen2_5_vl.modeling  # imported before the baseline
jnp.zeros(1).block_until_ready()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
hwm = lambda: 1024 * int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
base = rss()
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1], dtype=jnp.bfloat16)
jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
print(json.dumps({"base": base, "peak": hwm(), "after": rss()}))
"""


def write_bf16_checkpoint(directory: pathlib.Path, shard_bytes: int = 128 * 1024**2) -> int:
    """Random bf16 hub-layout checkpoint for LOAD (sharded, with an index); returns its tensor bytes.

    LOAD keeps the 7B's proportions where they matter for peak memory: its largest tensor
    (embedding, 33 MB) is ~10% of the checkpoint (the 7B's 1.09 GB embedding is ~7% of 16.6 GB).
    """
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    from models.qwen2_5_vl import tiny_config
    from models.qwen2_5_vl.config import param_shapes

    config = tiny_config(**LOAD, torch_dtype="bfloat16")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict()))
    rng = np.random.default_rng(0)
    shards, current, size, total = [], {}, 0, 0
    for name, shape in param_shapes(config).items():
        tensor = (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        if current and size + tensor.nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += tensor.nbytes
        total += tensor.nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


def bench_load(tmp: pathlib.Path) -> dict:
    """Load in a fresh subprocess (the loader itself makes glibc return freed per-tensor buffers to the OS)."""
    directory = tmp / "bf16"
    write_bf16_checkpoint(directory)
    out = {"ckpt_bytes": sum(p.stat().st_size for p in directory.glob("*.safetensors"))}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_peak_bytes"] = mem["peak"] - mem["base"]
    out["load_after_bytes"] = mem["after"] - mem["base"]
    return out


def table(r: dict, threads: int, load: tuple[float, float]) -> str:
    gf = lambda x: f"{x / 1e9:.1f} GFLOP/s"
    prefill_ratio = r["prefill_torch_s"] / r["prefill_jax_s"]
    jax_tps = r["rollout_tokens"] / r["rollout_jax_s"]
    torch_tps = r["rollout_tokens"] / r["rollout_torch_s"]
    achieved = r["prefill_flops"] / r["prefill_jax_s"]
    flop_ratio = achieved / r["matmul_flops_per_s"]
    step_bandwidth = r["decode_bytes_per_step"] / r["decode_step_s"]
    mem_ratio = r["load_peak_bytes"] / r["ckpt_bytes"]
    rows = [
        (
            f"Prefill, video prompt ({r['prefill_tokens']} tokens, {r['prefill_flops'] / 1e9:.1f} GFLOP)",
            f"{r['prefill_jax_s'] * 1e3:.0f} ms",
            f"{r['prefill_torch_s'] * 1e3:.0f} ms",
            f"{prefill_ratio:.2f}x",
            ">= 2x",
            "yes" if prefill_ratio >= 2 else "NO",
        ),
        (
            "Prefill useful FLOP/s vs 2048^3 f32 matmul (XLA)",
            gf(achieved),
            gf(r["matmul_flops_per_s"]),
            f"{flop_ratio:.0%}",
            ">= 60%",
            "yes" if flop_ratio >= 0.6 else "NO",
        ),
        (
            "Rollout G=8 x 64 new tokens (tokens/s)",
            f"{jax_tps:.0f}",
            f"{torch_tps:.0f}",
            f"{jax_tps / torch_tps:.1f}x",
            ">= 5x",
            "yes" if jax_tps >= 5 * torch_tps else "NO",
        ),
        (
            f"Decode step: {r['decode_bytes_per_step'] / 2**20:.1f} MiB read in {r['decode_step_s'] * 1e3:.2f} ms "
            "vs XLA read bandwidth",
            f"{step_bandwidth / 1e9:.1f} GB/s",
            f"{r['read_bytes_per_s'] / 1e9:.1f} GB/s",
            f"{step_bandwidth / r['read_bytes_per_s']:.0%} of roofline",
            "report",
            "-",
        ),
        (
            f"Load bf16 checkpoint ({r['ckpt_bytes'] / 2**20:.0f} MiB): peak RSS increase",
            f"{r['load_peak_bytes'] / 2**20:.0f} MiB",
            "-",
            f"{mem_ratio:.2f}x ckpt",
            "<= 1.3x",
            "yes" if mem_ratio <= 1.3 else "NO",
        ),
    ]
    head = (
        f"threads: {threads} (XLA and torch), float32, prefill rel. error vs torch {r['prefill_rel_err']:.1e}, "
        f"1-min load average {load[0]:.2f} before, {load[1]:.2f} after\n\n"
        "| benchmark | ours (JAX) | transformers (torch) | ratio | goal | met |\n|---|---|---|---|---|---|\n"
    )
    return head + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    _pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    results: dict = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        results.update(bench_load(tmp))  # first, before this process grows
        results.update(bench_matmul(args.repeats))
        results.update(bench_bandwidth(args.repeats))
        config, hf, ours = _models(tmp)
        results.update(bench_prefill(config, hf, ours, args.repeats))
        results.update(bench_rollout(config, hf, ours, args.repeats))
    print(json.dumps(results))
    print(table(results, args.threads, (load_before, os.getloadavg()[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
