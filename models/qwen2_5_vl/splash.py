"""Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) for prefill and training.

`splash_attention` runs the library's kernel on grouped-query attention with segment ids: a query
attends to the keys of its own segment (and, when `causal`, not after it). The kernel never holds a
[L, L] score array; it walks [block, block] tiles and skips the tiles its static mask (causal or
full) rules out. Segment ids encode what the XLA path's boolean masks do:

- text (`text.Attention`): segment = the attention mask (1 real token, 0 padding) under a causal
  mask: a real query sees the real keys up to itself, as `text.causal_mask` gives;
- vision (`vision.block_attention`): the [rows, width] blocks of a `BlockLayout` are packed
  `LANES // width` rows per kernel row (one when width >= LANES), each row its own segment, empty
  slots segment 0, under a full mask.

Segment 0 marks padding: its queries see the other segment-0 keys (at least themselves, so the
softmax stays finite), and their outputs are unspecified (the callers drop them). Sequences are
padded with segment 0 to a multiple of `LANES` (the kernel's tile granularity) and the blocks are
the largest of 512 / 256 / 128 that divide the padded length. The kernel does not scale scores: q
is multiplied by the scale first (the XLA path scales the float32 scores; equal up to rounding).

On a backend other than TPU the kernel runs in Pallas interpret mode (slow; for tests of
equality with the XLA path). On a mesh (`sharding.set_activation_sharding`) it runs under
`shard_map` over the batch axes and, when both the query and key heads divide it, `tensor`.

`resolve_attention_impl("auto")` is "splash" on a TPU backend and "xla" elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from .sharding import BATCH, fit_spec

ATTENTION_IMPLS: tuple[str, ...] = ("auto", "xla", "splash")
LANES = 128


def resolve_attention_impl(impl: str, backend: str | None = None) -> str:
    """ "xla" or "splash" for `impl` ("auto": splash on a TPU backend, else xla; default backend: jax's)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    return "splash" if (backend or jax.default_backend()) == "tpu" else "xla"


def padded_length(length: int) -> int:
    """The kernel's sequence length for `length` tokens (the next multiple of `LANES`)."""
    return -(-length // LANES) * LANES


def _block_size(length: int) -> int:
    return next(b for b in (512, 256, LANES) if length % b == 0)


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, length: int, causal: bool, interpret: bool) -> sa.SplashAttentionKernel:
    """The splash kernel of `heads` query heads over `length` (a multiple of LANES) tokens."""
    shape = (length, length)
    mask = sa.MultiHeadMask([sa.CausalMask(shape) if causal else sa.FullMask(shape) for _ in range(heads)])
    b = _block_size(length)
    blocks = sa.BlockSizes(
        block_q=b,
        block_kv=b,
        block_kv_compute=b,
        block_q_dkv=b,
        block_kv_dkv=b,
        block_kv_dkv_compute=b,
        block_q_dq=b,
        block_kv_dq=b,
    )
    with jax.ensure_compile_time_eval():  # the mask tables are constants, cached across traces
        return sa.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    scale: float,
    *,
    causal: bool,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Grouped-query attention within segments: q [N, L, H, D], k/v [N, L, KV, D] (H a multiple of KV),
    segment_ids [N, L] int (0 = padding, see the module docstring) -> [N, L, H, D] in q's dtype."""
    interpret = jax.default_backend() != "tpu"

    def local(q, k, v, segment_ids):
        _, length, h, _ = q.shape
        padded = padded_length(length)

        def heads_first(x):
            return jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

        seg = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, padded - length)))
        kernel = _kernel(h, padded, causal, interpret)

        def one(qi, ki, vi, si):
            return kernel(qi, ki, vi, segment_ids=sa.SegmentIds(si, si))

        out = jax.vmap(one)(heads_first(q * jnp.asarray(scale, q.dtype)), heads_first(k), heads_first(v), seg)
        return out.transpose(0, 2, 1, 3)[:, :length].astype(q.dtype)

    if mesh is None:
        return local(q, k, v, segment_ids)
    batch = fit_spec((BATCH,), q.shape[:1], mesh)[0][0]
    tensor = mesh.shape["tensor"]
    heads = "tensor" if q.shape[2] % tensor == 0 and k.shape[2] % tensor == 0 else None
    spec = P(batch, None, heads, None)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, spec, P(batch, None)), out_specs=spec, check_vma=False
    )(q, k, v, segment_ids)
