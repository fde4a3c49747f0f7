"""PartitionSpecs for Qwen2.5-VL weights, KV cache and activations over the mesh (`data`, `fsdp`, `tensor`).

Two layouts:

- ``"replicated"``: no sharding; every array is fully replicated on the mesh.
- ``"fsdp_tensor"``: Megatron-style tensor parallelism on ``tensor`` (column-parallel q/k/v, gate/up,
  vision qkv, merger fc1 and lm_head split their output features; row-parallel o_proj, down_proj,
  vision proj and merger fc2 split their input features) with the other weight dimension sharded
  over ``fsdp``; batch-like activation and cache dimensions over ``("data", "fsdp")``.
- ``"fsdp_tensor_sequence"``: the weights of ``fsdp_tensor``; between the tensor-parallel matmuls the
  residual streams of both towers (and their rotary tables and the text mask) are also split along the
  sequence over ``tensor`` (sequence parallelism: ``SEQUENCE_SPECS``), so the per-layer activations the
  rematerialised scans keep are a quarter on a 4-way tensor axis. The same math, other collectives
  (all-gather before the column-parallel matmuls, reduce-scatter after the row-parallel ones).

Weight specs come from rules on the parameter path (``model.language_model.layers.3.self_attn.q_proj.kernel``);
Linear kernels are ``[in, out]``. A rule's spec names the trailing dimensions, so stacked (scanned)
layers with a leading layer dimension get the same spec. Every spec is divisibility-safe: an axis
that does not divide the dimension it would shard is dropped (that dimension is replicated on it)
and the fallback is logged at INFO level and reported by :func:`param_specs`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

logger = logging.getLogger(__name__)

Layout = Literal["replicated", "fsdp_tensor", "fsdp_tensor_sequence"]
LAYOUTS: tuple[str, ...] = ("replicated", "fsdp_tensor", "fsdp_tensor_sequence")
MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

# The merger's two Linears: HF `mlp.0` / `mlp.2` (NNX attribute names vary: mlp_0, mlp_in, ...).
_COLUMN = r"(q_proj|k_proj|v_proj|gate_proj|up_proj|qkv|merger\.mlp[._]?(0|in))"
_ROW = r"(o_proj|down_proj|attn\.proj|merger\.mlp[._]?(2|out))"
_NORM = r"(norm|norm1|norm2|ln_q|input_layernorm|post_attention_layernorm)"

# (name, regex on the dotted path, spec of the trailing dims in the fsdp_tensor layout)
WEIGHT_RULES: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("column_kernel", _COLUMN + r"\.kernel$", ("fsdp", "tensor")),
    ("column_bias", _COLUMN + r"\.bias$", ("tensor",)),
    ("row_kernel", _ROW + r"\.kernel$", ("tensor", "fsdp")),
    ("row_bias", _ROW + r"\.bias$", (None,)),
    ("embed_tokens", r"embed_tokens\.(embedding|weight)$", ("tensor", "fsdp")),
    ("lm_head", r"lm_head\.kernel$", ("fsdp", "tensor")),
    ("lm_head_bias", r"lm_head\.bias$", ("tensor",)),
    # Patch embedding: output channels are the last dim of both a linear and a conv kernel.
    ("patch_embed", r"patch_embed\..*(kernel|weight)$", ("fsdp",)),
    ("patch_embed_bias", r"patch_embed\..*bias$", (None,)),
    ("norm", _NORM + r"\.(scale|weight)$", (None,)),
)

# Activation specs in the fsdp_tensor layout, by name; shapes in the comments.
ACTIVATION_SPECS: dict[str, tuple[Any, ...]] = {
    "tokens": (BATCH, None),  # [B, L] ids, masks, sampled tokens
    "positions": (None, BATCH, None),  # [3, B, L] M-RoPE position ids
    "hidden": (BATCH, None, None),  # [B, L, D] residual stream
    "rope": (BATCH, None, None),  # [B, L, Dh] rotary cos / sin
    "mask": (BATCH, None, None),  # [B, L, S] attention mask
    "heads": (BATCH, None, "tensor", None),  # [B, L, H, Dh] q / k / v / attention output
    "mlp": (BATCH, None, "tensor"),  # [B, L, F] SwiGLU intermediate
    "logits": (BATCH, None, "tensor"),  # [B, L, V]
    "last_logits": (BATCH, "tensor"),  # [B, V]
    "kv_cache": (BATCH, None, "tensor", None),  # [B, S, Hkv, Dh] per layer
    "pixels": (BATCH, None, None),  # [B, P, C*T*p*p] per-sample patches (ModelInputs.pixel_values)
    "vision_hidden": (BATCH, None, None),  # [B, P, Dv]
    "vision_heads": (BATCH, None, "tensor", None),  # [B, P, Hv, Dh]
    "vision_mlp": (BATCH, None, "tensor"),  # [B, P, Fv]
}

# The `fsdp_tensor_sequence` layout: ACTIVATION_SPECS with these sequence-split entries.
SEQUENCE_SPECS: dict[str, tuple[Any, ...]] = {
    "hidden": (BATCH, "tensor", None),
    "rope": (BATCH, "tensor", None),
    "mask": (BATCH, "tensor", None),
    "vision_hidden": (BATCH, "tensor", None),
}


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over the first ``data * fsdp * tensor`` devices."""
    sizes = (data, fsdp, tensor)
    if any(int(s) < 1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be >= 1, got data={data} fsdp={fsdp} tensor={tensor}")
    devices = list(jax.devices() if devices is None else devices)
    n = math.prod(sizes)
    if n > len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {n} devices, have {len(devices)}")
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:n])


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown sharding layout {layout!r}; expected one of {LAYOUTS}")


def _axis_size(mesh: Mesh, axes: Any) -> int:
    names = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[a] for a in names)


def fit_spec(trailing: Sequence[Any], shape: Sequence[int], mesh: Mesh, what: str = "") -> tuple[P, list[str]]:
    """Right-align ``trailing`` to ``shape`` and drop axes that do not divide their dimension.

    Returns the PartitionSpec and one message per dropped axis.
    """
    if len(trailing) > len(shape):
        trailing = trailing[len(trailing) - len(shape) :]
    spec = [None] * (len(shape) - len(trailing)) + list(trailing)
    notes = []
    for d, axes in enumerate(spec):
        if axes is None:
            continue
        # Keep the longest prefix of a multi-axis entry that divides the dimension.
        names = list(axes) if isinstance(axes, tuple) else [axes]
        while names and shape[d] % _axis_size(mesh, tuple(names)) != 0:
            names.pop()
        kept = tuple(names) if len(names) > 1 else (names[0] if names else None)
        if kept != axes:
            notes.append(
                f"{what} dim {d} (size {shape[d]}) not divisible by mesh axes {axes}: sharded on {kept} instead"
            )
        spec[d] = kept
    return P(*spec), notes


def _shape(leaf: Any) -> tuple[int, ...]:
    """Shape of an array or a ``jax.ShapeDtypeStruct`` (abstract states from ``nnx.eval_shape``)."""
    return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def _path_str(path: tuple[Any, ...]) -> str:
    parts = []
    for k in path:
        key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
        parts.append(str(key))
    if parts and parts[-1] == "value":
        parts.pop()
    return ".".join(parts)


def weight_rule(path: str) -> tuple[str, tuple[Any, ...]] | None:
    """The (rule name, trailing spec) matching a dotted parameter path, or None."""
    for name, pattern, spec in WEIGHT_RULES:
        if re.search(pattern, path):
            return name, spec
    return None


def param_specs(state: Any, mesh: Mesh, layout: Layout = "fsdp_tensor") -> tuple[Any, list[str]]:
    """PartitionSpecs for every array leaf of ``state`` (an ``nnx.State`` or any pytree), and fallback notes.

    Leaves no rule matches (e.g. non-Param buffers) are replicated and noted.
    """
    _check_layout(layout)
    notes: list[str] = []
    specs = jax.tree_util.tree_map_with_path(
        lambda path, leaf: _weight_spec(_path_str(path), _shape(leaf), mesh, layout, notes), state
    )
    for note in notes:
        logger.info("sharding: %s", note)
    return specs, notes


def loader_sharding(mesh: Mesh, layout: Layout = "fsdp_tensor"):
    """``sharding(path, shape) -> NamedSharding`` for ``from_pretrained(..., sharding=...)``: each
    tensor is placed sharded as it is read, so no host or device ever holds the whole model."""
    _check_layout(layout)

    def sharding(path: tuple[Any, ...], shape: Sequence[int]) -> NamedSharding:
        notes: list[str] = []
        spec = _weight_spec(".".join(map(str, path)), tuple(shape), mesh, layout, notes)
        for note in notes:
            logger.info("sharding: %s", note)
        return NamedSharding(mesh, spec)

    return sharding


def _weight_spec(name: str, shape: tuple[int, ...], mesh: Mesh, layout: str, notes: list[str]) -> P:
    if layout == "replicated" or not shape:
        return P()
    rule = weight_rule(name)
    if rule is None:
        notes.append(f"{name}: no sharding rule, replicated")
        return P()
    spec, dropped = fit_spec(rule[1], shape, mesh, name)
    notes.extend(dropped)
    return spec


def activation_spec(name: str, shape: Sequence[int], mesh: Mesh, layout: Layout = "fsdp_tensor") -> P:
    """The divisibility-safe PartitionSpec of a named activation (see ``ACTIVATION_SPECS``)."""
    _check_layout(layout)
    if name not in ACTIVATION_SPECS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATION_SPECS)}")
    if layout == "replicated":
        return P()
    trailing = (SEQUENCE_SPECS if layout == "fsdp_tensor_sequence" else {}).get(name, ACTIVATION_SPECS[name])
    if len(trailing) != len(shape):
        raise ValueError(f"activation {name!r} has rank {len(trailing)}, got shape {tuple(shape)}")
    spec, notes = fit_spec(trailing, shape, mesh, name)
    for note in notes:
        logger.info("sharding: %s", note)
    return spec


def constrain(x: jax.Array, name: str, mesh: Mesh, layout: Layout = "fsdp_tensor") -> jax.Array:
    """``with_sharding_constraint`` of ``x`` to the named activation spec (usable inside jit)."""
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, activation_spec(name, x.shape, mesh, layout)))


def maybe_constrain(x: jax.Array, name: str, mesh: Mesh | None, layout: Layout = "fsdp_tensor") -> jax.Array:
    """:func:`constrain` on a mesh; ``x`` unchanged when ``mesh`` is None (a model not placed on a mesh)."""
    return x if mesh is None else constrain(x, name, mesh, layout)


def set_activation_sharding(model: nnx.Module, mesh: Mesh | None, layout: Layout = "fsdp_tensor") -> None:
    """Make ``model`` constrain its activations to ``ACTIVATION_SPECS`` on ``mesh`` (None: no constraints).

    Sets the static ``activation_mesh`` / ``activation_layout`` attributes of every submodule that has
    them, so each device processes only its batch rows whatever XLA's propagation would pick.
    """
    _check_layout(layout)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "activation_mesh"):
            module.activation_mesh, module.activation_layout = mesh, layout


def cache_specs(cache: Any, mesh: Mesh, layout: Layout = "fsdp_tensor") -> Any:
    """Specs for a KV cache pytree (a list of per-layer ``{"k", "v"}`` or a ``text.SharedPromptCache``):
    rank-4 leaves are ``[B, S, Hkv, Dh]`` (a leading layer dim is allowed, rank 5); lower-rank leaves
    (lengths ``[B]``, key masks ``[B, S]``) are sharded on their first (batch) dimension."""
    _check_layout(layout)

    def one(leaf):
        shape = _shape(leaf)
        if layout == "replicated" or not shape:
            return P()
        if len(shape) >= 4:
            return fit_spec(ACTIVATION_SPECS["kv_cache"], shape, mesh, "kv_cache")[0]
        return fit_spec((BATCH,) + (None,) * (len(shape) - 1), shape, mesh, "cache")[0]

    return jax.tree.map(one, cache)


def constrain_cache(cache: Any, mesh: Mesh, layout: Layout = "fsdp_tensor") -> Any:
    """``with_sharding_constraint`` of a KV cache pytree to :func:`cache_specs` (usable inside jit)."""
    return jax.lax.with_sharding_constraint(cache, named(cache_specs(cache, mesh, layout), mesh))


def shard_batch(inputs: Any, mesh: Mesh, layout: Layout = "fsdp_tensor") -> Any:
    """Place a batch pytree (e.g. ``ModelInputs``) on ``mesh``: the batch dim over ``("data", "fsdp")``
    (axis 1 for ``position_ids [3, B, L]``, axis 0 otherwise), other dims replicated."""
    _check_layout(layout)

    def one(path, leaf):
        shape = _shape(leaf)
        if layout == "replicated" or not shape:
            return jax.device_put(leaf, NamedSharding(mesh, P()))
        batch_dim = 1 if _path_str(path).endswith("position_ids") else 0
        trailing = (None,) * batch_dim + (BATCH,) + (None,) * (len(shape) - batch_dim - 1)
        return jax.device_put(leaf, NamedSharding(mesh, fit_spec(trailing, shape, mesh, _path_str(path))[0]))

    return jax.tree_util.tree_map_with_path(one, inputs)


def named(specs: Any, mesh: Mesh) -> Any:
    """Map a pytree of PartitionSpecs to NamedShardings on ``mesh``."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def shard_model(model: nnx.Module, mesh: Mesh, layout: Layout = "fsdp_tensor") -> Any:
    """Place ``model``'s state on ``mesh`` according to ``layout`` (in place) and constrain its activations
    there (:func:`set_activation_sharding`); returns the NamedSharding tree."""
    state = nnx.state(model)
    shardings = named(param_specs(state, mesh, layout)[0], mesh)
    nnx.update(model, jax.device_put(state, shardings))
    set_activation_sharding(model, mesh, layout)
    return shardings
