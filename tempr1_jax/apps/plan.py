"""Memory and compute planner: compile the GRPO step and the rollout for abstract inputs, no weights.

`plan(...)` builds the model with `nnx.eval_shape` (shapes and dtypes only), places the abstract
state on a (data, fsdp, tensor) mesh of virtual CPU devices, lowers and compiles

- the rollout: prefill + sampled decode of G completions per prompt (`generation.generate`), and
- the GRPO update: policy log-probs, reference log-probs, loss, gradient and AdamW update,

and reads XLA's per-device memory analysis of each program. FLOPs per step are counted
analytically from the config (matmul FLOPs 2 * params per token, attention 4 * layers * width * context
per token forward, backward twice the forward) and cross-checked with XLA's cost analysis. The MFU is
a roofline estimate: each compiled program takes max(its XLA flops / peak, its XLA bytes / HBM
bandwidth) per device, decode steps are bounded by reading the weights and KV cache from HBM, and
MFU = model FLOPs / (devices * peak * estimated step time).

Attention: `ModelSetup.attention_impl` is resolved for the chip ("auto": the Pallas splash kernel on
TPU). The programs are compiled on CPU, where the kernel runs in Pallas interpret mode: a loop over
the kernel's tiles whose buffers are its inputs, outputs and per-tile scratch, so the memory analysis
holds no score array, as on TPU (its time is not modelled: the roofline charges XLA's count of the
interpreted loop). The report gives the score array one layer of the XLA path holds per device
(`attention_score_bytes`): what splash saves, or what xla spends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.config import Qwen2_5_VLConfig, param_shapes
from models.qwen2_5_vl.generation import SamplingParams, decode, prefill
from models.qwen2_5_vl.inputs import ModelInputs
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from models.qwen2_5_vl.published import config_for
from tempr1_jax.rl.logprobs import completion_logprobs
from tempr1_jax.rl.losses import LossConfig
from tempr1_jax.rl.rollout import RolloutConfig
from tempr1_jax.rl.trainer import TrainConfig, make_policy_loss, reference_copy
from tempr1_jax.training.batches import batch_sharding
from tempr1_jax.training.model_setup import (
    MeshConfig,
    ModelSetup,
    set_attention_impl,
    set_remat,
    set_text_attn_block,
    trainable_filter,
)
from tempr1_jax.training.optimizer import OptimizerConfig, make_optimizer
from tempr1_jax.training.train_step import Accumulator, TrainState, TrainStep

log = logging.getLogger(__name__)

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
    prompt; micro_batch: prompts (x group sequences) per gradient-accumulation micro-batch (global);
    num_iterations: updates per rollout batch (old-policy log-probs are recomputed when > 1); kl: whether the frozen
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
        return math.ceil(self.prompts / self.micro_batch)


def _matmul_params(config: Any) -> tuple[int, int]:
    """(text, vision) parameters that take part in matmuls (embeddings and norms excluded)."""

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


def step_seconds(
    config: Any,
    shapes: StepShapes,
    programs: dict[str, dict[str, Any]],
    flops: dict[str, float],
    devices: int,
    tensor: int,
    chip: Chip,
    weight_bytes: int = 2,
    remat: bool = False,
    decoder_chunks: int = 1,
) -> dict[str, float]:
    """Roofline seconds per phase of one step on `chip`.

    A compiled program takes max(XLA flops / peak, XLA bytes accessed / HBM bandwidth) per device, so
    the estimate charges the implementation's real work (recomputed vision features, dense masks)
    rather than the model's ideal FLOPs. XLA counts a while-loop body once, so a program whose layers
    run as a scan (`remat`) is charged at least its share of the analytic FLOPs (the update's with the
    forward recomputed: 4 forward passes, not 3, and 5 with `decoder_chunks` > 1), which makes the estimate an upper bound. Training
    runs `update_accumulate` once per micro-batch and iteration, `update_apply` once per iteration,
    `logprobs` once per micro-batch for the reference and the old policy. The decode loop is
    estimated analytically (XLA counts a while-loop body once): each new token streams
    the gathered weights of a tensor shard, each prompt's KV cache once and every sample's own cache.
    """
    peak, bw = chip.peak_tflops * 1e12, chip.hbm_gbps * 1e9

    passes = 3.0 * shapes.num_iterations + int(shapes.kl) + int(shapes.num_iterations > 1)
    forward = flops["train"] / passes / shapes.micro_batches / devices  # one micro-batch, per device

    def run(name: str, model_flops: float = 0.0) -> float:
        p = programs[name]
        return max(max(p["xla_flops"], model_flops) / peak, p["xla_bytes"] / bw)

    t = config.text
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * weight_bytes
    # A prompt's KV cache is read once for its G samples; each sample's own cache has completion_len slots.
    live_kv = shapes.prompts * shapes.prompt_len + shapes.sequences * shapes.completion_len
    bytes_per_token = config.num_params() * weight_bytes / tensor + kv_per_token * live_kv / devices
    logprob_passes = int(shapes.kl) + int(shapes.num_iterations > 1)
    out = {
        "prefill": run("rollout_prefill", flops["prefill"] / devices)
        if "rollout_prefill" in programs
        else flops["prefill"] / (peak * devices),
        "decode": max(flops["decode"] / (peak * devices), shapes.completion_len * bytes_per_token / bw),
        "train": (
            shapes.micro_batches
            * shapes.num_iterations
            * run("update_accumulate", (3.0 + remat + (decoder_chunks > 1)) * forward)
            + shapes.num_iterations * run("update_apply")
            + (shapes.micro_batches * logprob_passes * run("logprobs", forward) if logprob_passes else 0.0)
        ),
    }
    out["total"] = sum(out.values())
    return out


def attention_score_bytes(
    config: Any, shapes: StepShapes, mesh_shape: tuple[int, int, int], text_block: int, vision_block: int
) -> dict[str, int]:
    """Per device, the float32 score array of one layer of the XLA attention path in the update's
    micro-batch: text [sequences, heads, min(text_block, L), L] and the vision full-attention layer
    [prompts, heads, min(vision_block, S), S] (S: a prompt's patches in one temporal group)."""
    from models.qwen2_5_vl.inputs import block_layout_shapes

    batch_shards, tensor = mesh_shape[0] * mesh_shape[1], mesh_shape[2]

    def per_device(rows: int, heads: int, queries: int, keys: int) -> int:
        heads = heads // tensor if heads % tensor == 0 else heads
        return math.ceil(rows / batch_shards) * heads * queries * keys * 4

    length = shapes.seq_len
    width = block_layout_shapes(config, shapes.patches)["frame_blocks"][1]
    return {
        "text": per_device(
            shapes.micro_batch * shapes.group, config.text.num_attention_heads, min(text_block, length), length
        ),
        "vision": per_device(shapes.micro_batch, config.vision.num_heads, min(vision_block, width), width),
    }


def format_gib(n: float) -> str:
    """Bytes as GiB (or MiB below 1 GiB)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def format_report(report: dict[str, Any]) -> str:
    """A human-readable summary of `plan`'s report."""
    lines = [
        f"model: {report['model']} ({report['params'] / 1e9:.2f}B params), mesh {report['mesh']} "
        f"on {report['devices']} devices, chip {report['chip']}",
        f"step: {report['shapes']['prompts']} prompts x G={report['shapes']['group']}, prompt "
        f"{report['shapes']['prompt_len']} + completion {report['shapes']['completion_len']} tokens, "
        f"{report['shapes']['patches']} patches/prompt, micro-batch {report['shapes']['micro_batch']}",
    ]
    ch = report.get("choices")
    if ch:
        ref = ch["reference_dtype"] or "none (beta = 0)"
        lines.append(
            f"choices: layout {ch['layout']}, remat {'on' if ch['remat'] else 'off'}, {ch['micro_batches']} "
            f"micro-batches of {ch['micro_batch_sequences']} sequences (decoder in {ch['decoder_chunks']} chunks), reference stored as {ref}, AdamW moments "
            f"{ch['moment_dtype']}, weights cast before the loss {'on' if ch['cast_weights'] else 'off'}, attention blocks text {ch['text_attn_block']} / vision {ch['vision_attn_block']}, "
            f"rollout prefill in {ch['prefill_chunks']} chunks"
        )
    att = report.get("attention")
    if att:
        scores = (
            f"{format_gib(att['score_bytes']['text'])} (text) / {format_gib(att['score_bytes']['vision'])} (vision)"
        )
        if att["impl"] == "splash":
            lines.append(
                f"attention: splash (Pallas kernel, for {report['chip']}; compiled here in interpret mode): no score "
                f"arrays; the xla path would hold {scores} per layer per device"
            )
        else:
            lines.append(f"attention: xla, score arrays of {scores} per layer per device (in the temporaries)")
    if report.get("resident"):
        parts = ", ".join(f"{k} {format_gib(v)}" for k, v in report["resident"].items() if v)
        lines.append(f"resident per device: {parts} (total {format_gib(report['resident_bytes'])})")
    lines.append(
        f"{'program':<18} {'peak/device':>12} {'temporaries':>12} {'arguments':>11} {'new outputs':>11}  compile  XLA flops, bytes"
    )
    for name, prog in report["programs"].items():
        mem = prog["memory"]
        lines.append(
            f"{name:<18} {format_gib(mem['peak_bytes']):>12} {format_gib(mem['temp_bytes']):>12} "
            f"{format_gib(mem['argument_bytes']):>11} {format_gib(mem['output_bytes'] - mem['alias_bytes']):>11} "
            f"{prog['compile_seconds']:>6.1f}s  {prog['xla_flops']:.3g}, {prog['xla_bytes']:.3g}"
        )
    fl, sec = report["flops"], report["seconds"]
    lines += [
        f"FLOPs per step: {fl['total']:.3e} (prefill {fl['prefill']:.2e}, decode {fl['decode']:.2e}, "
        f"train {fl['train']:.2e})",
        f"estimated time per step (roofline of the compiled programs): {sec['total']:.2f} s (prefill {sec['prefill']:.2f}, decode {sec['decode']:.2f}, "
        f"train {sec['train']:.2f}); MFU estimate (model FLOPs / time) {100 * report['mfu']:.1f}% of {report['peak_tflops']:.0f} "
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


# --- abstract model, inputs and state ---------------------------------------------------------------


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of the (abstract or concrete) arrays of `tree`: its shard of each leaf."""

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.shape
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            shape = sharding.shard_shape(shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _sds(shape: tuple[int, ...], dtype: Any, mesh: Any, axis: int = 0) -> Any:

    return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(shape, mesh, axis))


def abstract_inputs(config: Any, batch: int, seq_len: int, patches: int, mesh: Any) -> Any:
    """`ModelInputs` of ShapeDtypeStructs, every field sharded along its batch dimension."""

    from models.qwen2_5_vl.inputs import block_layout_shapes

    b, length, p = batch, seq_len, patches
    i32 = jnp.int32
    return ModelInputs(
        input_ids=_sds((b, length), i32, mesh),
        attention_mask=_sds((b, length), i32, mesh),
        position_ids=_sds((3, b, length), i32, mesh, axis=1),
        rope_deltas=_sds((b, 1), i32, mesh),
        pixel_values=_sds((b, p, config.vision.patch_dim), jnp.float32, mesh),
        vision_pos_ids=_sds((b, p, 2), i32, mesh),
        window_index=_sds((b, p), i32, mesh),
        window_inverse=_sds((b, p), i32, mesh),
        patch_valid=_sds((b, p), jnp.bool_, mesh),
        vision_token_index=_sds((b, length), i32, mesh),
        **{k: _sds((b, *shape), i32, mesh) for k, shape in block_layout_shapes(config, p).items()},
    )


def _with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


# --- compiling ---------------------------------------------------------------------------------------


def _compile(
    name: str, jitted: Any, args: tuple, kwargs: dict | None = None, resident: int = 0, resident_in_args: int = 0
) -> tuple[dict[str, Any], Any]:
    """Lower and compile; per-device memory with the buffers that stay resident outside the program.

    peak = resident + (arguments - resident arguments) + temporaries + (outputs - aliased outputs).
    """
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **(kwargs or {}))
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = {
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "resident_bytes": int(resident),
    }
    memory["peak_bytes"] = int(
        resident
        + max(mem.argument_size_in_bytes - resident_in_args, 0)
        + mem.temp_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    log.info("%s: compiled in %.1f s, peak %s", name, seconds, format_gib(memory["peak_bytes"]))
    cost = cost or {}
    return {
        "memory": memory,
        "compile_seconds": seconds,
        "xla_flops": float(cost.get("flops", 0.0)),
        "xla_bytes": float(cost.get("bytes accessed", 0.0)),
    }, compiled


def _grpo_programs(
    graphdef: Any, rollout_cfg: Any, loss_cfg: Any, optimizer: Any, weight_dtype: Any = None, decoder_chunks: int = 1
) -> tuple[Any, Any]:
    """(TrainStep with the trainer's policy loss, log-prob function as the trainer jits it)."""

    g = rollout_cfg.num_generations
    temperature = rollout_cfg.temperature if rollout_cfg.temperature > 0 else 1.0

    def logprobs(params, frozen, prompt, completions, mask):
        return completion_logprobs(nnx.merge(graphdef, params, frozen), prompt, completions, mask, g, temperature)

    return TrainStep(
        make_policy_loss(graphdef, loss_cfg, g, temperature, weight_dtype, decoder_chunks), optimizer
    ), logprobs


def _opt_state(optimizer: Any, params: Any, mesh: Any, layout: str) -> Any:
    """Abstract optimizer state, its moments sharded like their parameters (the same path rules apply:
    `...mu.model.language_model.layers.0.mlp.up_proj.kernel`), scalars replicated."""

    abstract = jax.eval_shape(optimizer.init, params)
    specs = sharding_lib.param_specs(abstract, mesh, layout)[0]
    return _with_shardings(abstract, sharding_lib.named(specs, mesh))


def plan(
    config: Any,
    shapes: StepShapes,
    mesh_shape: tuple[int, int, int],
    chip: Chip,
    *,
    layout: str = "fsdp_tensor",
    dtype: str = "bfloat16",
    param_dtype: str = "float32",
    freeze_vision: bool = False,
    remat: bool = False,
    rollout_cfg: Any = None,
    loss_cfg: Any = None,
    opt_cfg: Any = None,
    limit_gib: float | None = None,
    rollout: bool = True,
    model_name: str = "",
    reference_dtype: str | None = None,
    text_attn_block: int | None = None,
    cast_weights: bool = False,
    decoder_chunks: int = 1,
    prefill_chunks: int = 1,
    attention_impl: str = "auto",
) -> dict[str, Any]:
    """Compile the rollout and the GRPO update for `shapes` on a `mesh_shape` mesh; return the report.

    `attention_impl` is resolved as on a TPU ("auto" -> splash; see the module docstring)."""

    rollout_cfg = dataclasses.replace(
        rollout_cfg or RolloutConfig(), num_generations=shapes.group, max_new_tokens=shapes.completion_len
    )
    loss_cfg = loss_cfg or LossConfig()
    opt_cfg = opt_cfg or OptimizerConfig()
    if shapes.prompts % shapes.micro_batch:
        raise ValueError(
            f"{shapes.prompts} prompts per step do not split into micro-batches of {shapes.micro_batch} prompts"
        )
    mesh = sharding_lib.make_mesh(*mesh_shape)
    devices = math.prod(mesh_shape)
    replicated = NamedSharding(mesh, PartitionSpec())
    model = nnx.eval_shape(lambda: _new_model(config, jnp.dtype(dtype), jnp.dtype(param_dtype)))
    set_remat(model, remat)
    set_text_attn_block(model, text_attn_block)
    set_attention_impl(model, attention_impl, backend="tpu")  # as the chip would resolve "auto"
    model.prefill_chunks = prefill_chunks
    sharding_lib.set_activation_sharding(model, mesh, layout)  # as `shard_model` does in the trainer
    graphdef_full, state_full = nnx.split(model)
    graphdef, params, frozen = nnx.split(model, trainable_filter(freeze_vision), ...)
    place = lambda tree: _with_shardings(
        tree, sharding_lib.named(sharding_lib.param_specs(tree, mesh, layout)[0], mesh)
    )
    state_full, params, frozen = place(state_full), place(params), place(frozen)
    ref_params = None
    if loss_cfg.beta > 0:  # as `trainer.reference_copy` stores it
        ref_params = reference_copy(params, reference_dtype)

    optimizer = make_optimizer(opt_cfg, 1000)
    step, logprobs = _grpo_programs(
        graphdef, rollout_cfg, loss_cfg, optimizer, jnp.dtype(dtype) if cast_weights else None, decoder_chunks
    )
    counter = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    state = TrainState(
        step=counter, skipped=counter, params=params, opt_state=_opt_state(optimizer, params, mesh, layout)
    )
    resident = per_device_bytes((state, frozen)) + (per_device_bytes(ref_params) if ref_params is not None else 0)

    g, t = shapes.group, shapes.completion_len
    n_mb = shapes.micro_batch * g
    prompt_mb = abstract_inputs(config, shapes.micro_batch, shapes.prompt_len, shapes.patches, mesh)
    f32 = jnp.float32
    batch = {
        "prompt": prompt_mb,
        "completions": _sds((n_mb, t), jnp.int32, mesh),
        "mask": _sds((n_mb, t), f32, mesh),
        "advantages": _sds((n_mb,), f32, mesh),
        "weights": _sds((n_mb,), f32, mesh),
        "ref_logp": _sds((n_mb, t), f32, mesh) if ref_params is not None else None,
        "old_logp": _sds((n_mb, t), f32, mesh) if shapes.num_iterations > 1 else None,
    }
    (_, (_, aux)), grads = jax.eval_shape(step.value_and_grad, params, frozen, batch)
    scalar = jax.ShapeDtypeStruct((), f32, sharding=replicated)
    acc = Accumulator(
        grads=jax.tree.map(lambda gr, p: jax.ShapeDtypeStruct(gr.shape, f32, sharding=p.sharding), grads, params),
        total=scalar,
        count=scalar,
        aux=jax.tree.map(lambda _: scalar, aux),
    )
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    programs: dict[str, Any] = {}
    policy_args = per_device_bytes((params, frozen))
    programs["update_accumulate"], _ = _compile(
        "update_accumulate",
        jax.jit(step._accumulate_impl, donate_argnums=(3,)),
        (params, frozen, batch, acc),
        resident=resident,
        resident_in_args=policy_args,
    )
    programs["update_apply"], _ = _compile(
        "update_apply",
        jax.jit(step._apply_impl, donate_argnums=(0, 1), out_shardings=(state_shardings, None)),
        (state, acc),
        resident=resident,
        resident_in_args=per_device_bytes(state),
    )

    if ref_params is not None or shapes.num_iterations > 1:  # per micro-batch, as the trainer runs it
        scored = ref_params if ref_params is not None else params  # the reference's, else the old policy's
        programs["logprobs"], _ = _compile(
            "logprobs",
            jax.jit(logprobs),
            (scored, frozen, prompt_mb, batch["completions"], batch["mask"]),
            resident=resident,
            resident_in_args=per_device_bytes((scored, frozen)),
        )
    prompt_all = abstract_inputs(config, shapes.prompts, shapes.prompt_len, shapes.patches, mesh)
    if rollout:
        cache_len = shapes.prompt_len  # the prompt's cache; decoding adds t slots per sample
        full_args = per_device_bytes(state_full)
        programs["rollout_prefill"], _ = _compile(
            "rollout_prefill",
            prefill,
            (graphdef_full, state_full, prompt_all, cache_len, mesh, layout),
            resident=resident,
            resident_in_args=full_args,
        )
        last_logits, cache = jax.eval_shape(
            lambda s, i: prefill(graphdef_full, s, i, cache_len, mesh, layout), state_full, prompt_all
        )
        cache = _with_shardings(cache, sharding_lib.named(sharding_lib.cache_specs(cache, mesh, layout), mesh))
        last_logits = _sds(last_logits.shape, last_logits.dtype, mesh)
        key = jax.eval_shape(lambda: jax.random.key(0))
        sampling = SamplingParams(rollout_cfg.temperature, rollout_cfg.top_p, rollout_cfg.top_k)
        programs["rollout_decode"], _ = _compile(
            "rollout_decode",
            decode,
            (
                graphdef_full,
                state_full,
                cache,
                last_logits,
                prompt_all.attention_mask,
                prompt_all.position_ids,
                key,
                jax.ShapeDtypeStruct((4,), jnp.int32),
                jax.ShapeDtypeStruct((), jnp.int32),
            ),
            dict(params=sampling, max_new_tokens=t, num_return_sequences=g, mesh=mesh, layout=layout),
            resident=resident,
            resident_in_args=full_args,
        )

    flops = analytic_flops(config, shapes)
    seconds = step_seconds(
        config, shapes, programs, flops, devices, mesh_shape[2], chip, remat=remat, decoder_chunks=decoder_chunks
    )
    peak = max(p["memory"]["peak_bytes"] for p in programs.values())
    budget = chip.budget_gib if limit_gib is None else limit_gib
    return {
        "model": model_name,
        "params": config.num_params(),
        "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape)),
        "devices": devices,
        "chip": chip.name,
        "peak_tflops": chip.peak_tflops,
        "layout": layout,
        "dtype": dtype,
        "param_dtype": param_dtype,
        "text_after_vision": config.text_after_vision,
        "shapes": dataclasses.asdict(shapes),
        "attention": {
            "impl": model.model.language_model.attention_impl,
            "score_bytes": attention_score_bytes(
                config, shapes, mesh_shape, model.model.language_model.attn_block, model.model.visual.attn_block
            ),
        },
        "choices": {
            "layout": layout,
            "remat": remat,
            "micro_batches": shapes.micro_batches,
            "micro_batch_sequences": shapes.micro_batch * shapes.group,
            "reference_dtype": (reference_dtype or param_dtype) if ref_params is not None else None,
            "moment_dtype": opt_cfg.moment_dtype,
            "cast_weights": cast_weights,
            "decoder_chunks": decoder_chunks,
            "prefill_chunks": prefill_chunks,
            "text_attn_block": model.model.language_model.attn_block,
            "vision_attn_block": model.model.visual.attn_block,
        },
        "resident": {
            "params": per_device_bytes(params),
            "frozen": per_device_bytes(frozen),
            "optimizer": per_device_bytes(state.opt_state),
            "reference": per_device_bytes(ref_params) if ref_params is not None else 0,
        },
        "programs": programs,
        "resident_bytes": resident,
        "flops": flops,
        "seconds": seconds,
        "mfu": flops["total"] / (devices * chip.peak_tflops * 1e12 * seconds["total"]),
        "peak_bytes": peak,
        "budget_gib": budget,
        "fits": peak <= budget * GIB,
    }


def _new_model(config: Any, dtype: Any, param_dtype: Any) -> Any:

    return Qwen2_5_VLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))


def plan_from_args(args: Any, mesh_shape: tuple[int, int, int], devices: int) -> dict[str, Any]:
    """`tempr1 plan` after gin is parsed: read the trainer's configurables and the model config, then `plan`."""

    if math.prod(mesh_shape) > devices:
        raise ValueError(f"mesh {mesh_shape} needs {math.prod(mesh_shape)} devices, --devices is {devices}")
    model_setup = ModelSetup()
    model_config = args.model_config or _checkpoint_config(model_setup.checkpoint)
    if not model_config or not pathlib.Path(model_config).is_file():
        raise ValueError(f"no model config: pass --model_config CONFIG_JSON (looked for {model_config!r})")
    config = model_setup.configure(Qwen2_5_VLConfig.from_pretrained(model_config))
    train_cfg, rollout_cfg, loss_cfg = TrainConfig(), RolloutConfig(), LossConfig()
    hosts = max(devices // args.chips_per_host, 1)
    prompts = args.prompts or gin.query_parameter("LoaderConfig.batch_size") * hosts
    token_buckets = _bound("LoaderConfig.token_buckets", (1024, 2048, 4096, 8192))
    patch_buckets = _bound("LoaderConfig.patch_buckets", (4096, 8192, 16384))
    shapes = StepShapes(
        prompts=prompts,
        group=rollout_cfg.num_generations,
        prompt_len=args.prompt_len or max(token_buckets),
        completion_len=rollout_cfg.max_new_tokens,
        patches=args.patches or max(patch_buckets),
        micro_batch=prompts // train_cfg.micro_batches,
        num_iterations=train_cfg.num_iterations,
        kl=loss_cfg.beta > 0,
    )
    return plan(
        config,
        shapes,
        mesh_shape,
        get_chip(args.chip),
        layout=MeshConfig().layout,
        dtype=model_setup.dtype,
        param_dtype=model_setup.param_dtype,
        freeze_vision=model_setup.freeze_vision,
        remat=model_setup.remat,
        rollout_cfg=rollout_cfg,
        loss_cfg=loss_cfg,
        opt_cfg=OptimizerConfig(),
        limit_gib=args.limit_gib,
        rollout=not args.skip_rollout,
        model_name=str(model_config),
        reference_dtype=train_cfg.reference_dtype,
        text_attn_block=model_setup.text_attn_block,
        cast_weights=train_cfg.cast_weights,
        decoder_chunks=train_cfg.decoder_chunks,
        prefill_chunks=model_setup.prefill_chunks,
        attention_impl=model_setup.attention_impl,
    )


def _checkpoint_config(checkpoint: str | None) -> str | None:
    """`checkpoint/config.json` if it exists, else the shipped published config of that model, if any."""

    if not checkpoint:
        return None
    local = pathlib.Path(checkpoint) / "config.json"
    if local.is_file():
        return str(local)
    published = config_for(checkpoint)
    return str(published) if published else str(local)


def _bound(name: str, default: Any) -> Any:
    """A gin-bound value, or `default` when the config does not bind it."""

    try:
        return gin.query_parameter(name)
    except ValueError:
        return default
