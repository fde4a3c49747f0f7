"""Memory and compute planner: compile the GRPO step and the rollout for abstract inputs, no weights.

`plan(...)` builds the model with `nnx.eval_shape` (shapes and dtypes only), places the abstract
state on a (data, fsdp, tensor) mesh of virtual CPU devices, lowers and compiles

- the rollout: prefill + sampled decode of G completions per prompt (`generation.generate`), and
- the GRPO update: policy log-probs, reference log-probs, loss, gradient and AdamW update,

and reads XLA's per-device memory analysis of each program. FLOPs per step are counted
analytically from the config (matmul FLOPs 2 * params per token, attention 4 * layers * width * context
per token forward, backward twice the forward) and cross-checked with XLA's cost analysis. The MFU is
a roofline estimate: compute-bound programs run at the chip's peak, decode steps are bounded by
reading the weights and KV cache from HBM, so MFU = model FLOPs / (devices * peak * estimated time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip figures: dense bf16 peak, HBM capacity and bandwidth, usable memory budget."""

    name: str
    peak_tflops: float
    hbm_gib: float
    hbm_gbps: float
    budget_gib: float


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 275.0, 32.0, 1228.0, 30.0),
    "v5e": Chip("v5e", 197.0, 16.0, 819.0, 15.0),
    "v5p": Chip("v5p", 459.0, 95.0, 2765.0, 90.0),
    "v6e": Chip("v6e", 918.0, 32.0, 1640.0, 30.0),
}


def get_chip(name: str) -> Chip:
    """The chip `name` (ValueError listing the known ones)."""
    try:
        return CHIPS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown chip {name!r}; known: {', '.join(CHIPS)}") from None


@dataclasses.dataclass(frozen=True)
class StepShapes:
    """The static shapes of one GRPO step.

    prompts: prompts per step (global); group: completions per prompt (G); prompt_len: padded prompt
    tokens (text + visual tokens); completion_len: max new tokens; patches: padded vision patches per
    prompt; micro_batch: sequences per gradient-accumulation micro-batch (global); num_iterations:
    updates per rollout batch (old-policy log-probs are recomputed when > 1); kl: whether the frozen
    reference runs (beta > 0).
    """

    prompts: int
    group: int
    prompt_len: int
    completion_len: int
    patches: int
    micro_batch: int
    num_iterations: int = 1
    kl: bool = True

    @property
    def sequences(self) -> int:
        return self.prompts * self.group

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.completion_len

    @property
    def micro_batches(self) -> int:
        return math.ceil(self.sequences / self.micro_batch)


def _matmul_params(config: Any) -> tuple[int, int]:
    """(text, vision) parameters that take part in matmuls (embeddings and norms excluded)."""
    from models.qwen2_5_vl.config import param_shapes

    text = vision = 0
    for name, shape in param_shapes(config).items():
        if len(shape) < 2 or "embed_tokens" in name:
            continue
        n = math.prod(shape)
        if name.startswith("visual."):
            vision += n
        else:
            text += n
    return text, vision


def analytic_flops(config: Any, shapes: StepShapes) -> dict[str, float]:
    """Model FLOPs of one GRPO step, split into rollout (prefill, decode) and training passes."""
    text, vision = _matmul_params(config)
    t = config.text
    attn_width = t.num_attention_heads * t.head_dim
    vis_fwd = 2.0 * vision * shapes.patches  # per prompt; window attention is a small extra, ignored

    def fwd(tokens: int, context: float) -> float:
        """Forward FLOPs of `tokens` tokens attending to `context` tokens on average."""
        return tokens * (2.0 * text + 4.0 * t.num_hidden_layers * attn_width * context)

    prefill = shapes.prompts * (fwd(shapes.prompt_len, shapes.prompt_len) + vis_fwd)
    decode = shapes.sequences * fwd(shapes.completion_len, shapes.prompt_len + shapes.completion_len / 2)
    seq_fwd = fwd(shapes.seq_len, shapes.seq_len) + vis_fwd
    forward_passes = int(shapes.kl) + int(shapes.num_iterations > 1)  # reference, old policy
    train = shapes.sequences * seq_fwd * (3.0 * shapes.num_iterations + forward_passes)
    return {"prefill": prefill, "decode": decode, "train": train, "total": prefill + decode + train}


def roofline_seconds(config: Any, shapes: StepShapes, flops: dict[str, float], devices: int, tensor: int,
                     chip: Chip, weight_bytes: int = 2) -> dict[str, float]:
    """Estimated seconds per phase: compute-bound at peak, except decode (weights + KV cache from HBM)."""
    peak = chip.peak_tflops * 1e12 * devices
    t = config.text
    params = config.num_params()
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * weight_bytes
    # Each decode step streams the (gathered) weights once per tensor shard and the live KV cache.
    bytes_per_step = params * weight_bytes / tensor + kv_per_token * shapes.sequences * shapes.seq_len / devices
    decode_mem = shapes.completion_len * bytes_per_step / (chip.hbm_gbps * 1e9)
    out = {
        "prefill": flops["prefill"] / peak,
        "decode": max(flops["decode"] / peak, decode_mem),
        "train": flops["train"] / peak,
    }
    out["total"] = sum(out.values())
    return out


def format_gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def format_report(report: dict[str, Any]) -> str:
    """A human-readable summary of `plan`'s report."""
    lines = [
        f"model: {report['model']} ({report['params'] / 1e9:.2f}B params), mesh {report['mesh']} "
        f"on {report['devices']} devices, chip {report['chip']}",
        f"step: {report['shapes']['prompts']} prompts x G={report['shapes']['group']}, prompt "
        f"{report['shapes']['prompt_len']} + completion {report['shapes']['completion_len']} tokens, "
        f"{report['shapes']['patches']} patches/prompt, micro-batch {report['shapes']['micro_batch']}",
    ]
    for name, prog in report["programs"].items():
        mem = prog["memory"]
        lines.append(
            f"{name}: per-device peak {format_gib(mem['peak_bytes'])} (arguments {format_gib(mem['argument_bytes'])}, "
            f"outputs {format_gib(mem['output_bytes'])}, temporaries {format_gib(mem['temp_bytes'])}, "
            f"aliased {format_gib(mem['alias_bytes'])}); compiled in {prog['compile_seconds']:.1f} s; "
            f"XLA flops/device {prog['xla_flops']:.3g}")
    fl, sec = report["flops"], report["seconds"]
    lines += [
        f"FLOPs per step: {fl['total']:.3e} (prefill {fl['prefill']:.2e}, decode {fl['decode']:.2e}, "
        f"train {fl['train']:.2e})",
        f"roofline time per step: {sec['total']:.2f} s (prefill {sec['prefill']:.2f}, decode {sec['decode']:.2f}, "
        f"train {sec['train']:.2f}); MFU estimate {100 * report['mfu']:.1f}% of {report['peak_tflops']:.0f} "
        f"TFLOP/s per chip",
        f"per-device peak memory {format_gib(report['peak_bytes'])} vs budget {report['budget_gib']:.0f} GiB: "
        + ("FITS" if report["fits"] else "DOES NOT FIT"),
    ]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | pathlib.Path) -> None:
    """Write the report as JSON (creating parent directories)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
