"""What a run's model is built from, configured with gin: the device mesh and the model + tokenizer.

Shared by every command that loads a model (train, sft, eval, curate, plan, demo). With no checkpoint,
`build_model` trains a tiny tokenizer on the run's own training text (saved in `workdir/tokenizer`,
reused on resume) and initialises a tiny Qwen2.5-VL from `ModelSetup.seed`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from data_pipeline import loader as loader_lib
from data_pipeline import paths
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from models.qwen2_5_vl.splash import resolve_attention_impl
from tempr1_jax.training.data_setup import training_text


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes (data x fsdp x tensor must not exceed the device count) and weight layout."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    layout: str = "fsdp_tensor"

    def make(self) -> Mesh:
        """The `jax.sharding.Mesh` of these sizes over the first devices."""
        return sharding_lib.make_mesh(self.data, self.fsdp, self.tensor)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """The policy's starting point.

    checkpoint: an HF checkpoint directory; None builds a tiny model from `seed` with `tiny` overrides
      (see `models.qwen2_5_vl.config.tiny_config`) sized to a tiny tokenizer trained on the data.
    init_std: the tiny model's initial weights: N(0, init_std**2), or None for a standard deviation of
      1 / sqrt(fan_in) per weight (see `init_model`; HF's 0.02 is about 1 / sqrt(width) of a 7B model and starves a model
      64 wide of signal).
    tokenizer: an HF tokenizer directory (default: `checkpoint`, or the trained tiny one).
    dtype / param_dtype: compute and storage dtypes ("float32", "bfloat16").
    freeze_vision: keep the vision tower's weights fixed (no gradients, no optimizer state).
    remat: recompute each decoder layer and vision block in the backward pass (activation memory of
      one layer instead of all; the 7B config needs it).
    text_attn_block: queries per block of the text decoder's attention over long inputs (score memory
      [B, H, text_attn_block, L]); None keeps the model's default (`TextModel.attn_block`, 1024).
    attention_impl: the attention of prefill, training and the vision tower: "xla" (einsums and a
      boolean mask), "splash" (the Pallas splash kernel, `models.qwen2_5_vl.splash`; interpret mode
      off TPU, for tests) or "auto" (splash on a TPU backend, xla elsewhere). Decoding is always xla.
    prefill_chunks: the rollout's prefill runs the prompts in this many chunks one after the other (the
      activations of a chunk at a time; the same cache and samples; see `generation.prefill`).
    text_after_vision: the M-RoPE rule for text after an image/video ("max_plus_one", the rule the
      published checkpoints were trained with, or "transformers5"; see `models.qwen2_5_vl.rope_index`);
      None keeps the model config's: the checkpoint's config.json (the original rule when it names
      none, as published configs do) or the tiny config's default (the original rule).
    """

    checkpoint: str | None = None
    tokenizer: str | None = None
    tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer_vocab_size: int = 512
    seed: int = 0
    init_std: float | None = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    freeze_vision: bool = False
    remat: bool = False
    text_attn_block: int | None = None
    attention_impl: str = "auto"
    prefill_chunks: int = 1
    text_after_vision: str | None = None

    def configure(self, config: Qwen2_5_VLConfig) -> Qwen2_5_VLConfig:
        """`config` with this setup's `text_after_vision`, if set."""
        if self.text_after_vision is None:
            return config
        return dataclasses.replace(config, text_after_vision=self.text_after_vision)


def _dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise ValueError(f"unknown dtype {name!r}") from None


def build_model(
    setup: ModelSetup,
    workdir: str | pathlib.Path,
    sources: Sequence[loader_lib.SourceConfig],
    think: bool = True,
    mesh: Mesh | None = None,
    layout: str = "fsdp_tensor",
) -> tuple[Qwen2_5_VLForConditionalGeneration, Any]:
    """(model, tokenizer) for `setup` (see `ModelSetup`); the model is on the default device, except that a
    checkpoint given a `mesh` is read straight into its `layout` shardings (see `base_model`)."""
    import transformers

    if setup.checkpoint is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(paths.local_copy(setup.tokenizer or setup.checkpoint))
        )
        return base_model(setup, mesh=mesh, layout=layout), tokenizer
    tok_dir = paths.as_path(setup.tokenizer or paths.as_path(workdir) / "tokenizer")
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(paths.local_copy(tok_dir)))
    else:
        with paths.staged_dir(tok_dir) as local:
            tokenizer = train_tiny_tokenizer(training_text(sources, think), local, setup.tokenizer_vocab_size)
    config = tiny_config(**{**special_token_ids(tokenizer), **dict(setup.tiny)})
    return base_model(setup, config), tokenizer


def base_model(
    setup: ModelSetup, config: Qwen2_5_VLConfig | None = None, mesh: Mesh | None = None, layout: str = "fsdp_tensor"
) -> Qwen2_5_VLForConditionalGeneration:
    """The model a run starts from: `setup.checkpoint` if set, else `config` initialised from `setup.seed`;
    its config with `setup.text_after_vision` applied (`ModelSetup.configure`).

    With a `mesh`, each process reads from the checkpoint only the blocks its devices hold in `layout`
    (`sharding.loader_sharding`): no host or device ever holds the whole model.
    """
    dtype, param_dtype = _dtype(setup.dtype), _dtype(setup.param_dtype)
    if setup.checkpoint is not None:
        sharding = None if mesh is None else sharding_lib.loader_sharding(mesh, layout)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            paths.local_copy(setup.checkpoint), dtype=dtype, param_dtype=param_dtype, sharding=sharding
        )
        model.config = setup.configure(model.config)
    elif config is None:
        raise ValueError("base_model: ModelSetup.checkpoint is None, so a model config is required")
    else:
        model = init_model(setup.configure(config), setup.seed, dtype, param_dtype, std=setup.init_std)
    set_remat(model, setup.remat)
    set_text_attn_block(model, setup.text_attn_block)
    set_attention_impl(model, setup.attention_impl)
    model.prefill_chunks = setup.prefill_chunks
    return model


def set_text_attn_block(model: Qwen2_5_VLForConditionalGeneration, block: int | None) -> None:
    """Queries per text attention block (a static graph attribute); None leaves the model's."""
    if block is not None:
        if block < 1:
            raise ValueError(f"ModelSetup.text_attn_block must be >= 1, got {block}")
        model.model.language_model.attn_block = block


def set_attention_impl(model: Qwen2_5_VLForConditionalGeneration, impl: str, backend: str | None = None) -> None:
    """Both towers' attention implementation (a static graph attribute): `impl` resolved for `backend`
    (default: jax's; see `splash.resolve_attention_impl`)."""
    resolved = resolve_attention_impl(impl, backend)
    model.model.language_model.attention_impl = resolved
    model.model.visual.attention_impl = resolved


def set_remat(model: Qwen2_5_VLForConditionalGeneration, remat: bool) -> None:
    """Recompute decoder layers and vision blocks in the backward pass (a static graph attribute)."""
    model.model.language_model.remat = remat
    model.model.visual.remat = remat


def init_model(
    config: Any, seed: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, std: float | None = 0.02
) -> Qwen2_5_VLForConditionalGeneration:
    """A freshly initialised model, drawn on the host with numpy from `seed` (no XLA compilation).

    Kernels and embeddings ~ N(0, std**2) (the HF initialiser), or with `std=None` a standard deviation
    of 1 / sqrt(fan_in):
    fan_in is a kernel's input size (all axes but the last) and an embedding's width. Biases 0, norm
    weights 1. Eager NNX initialisation compiles one XLA program per parameter shape, which dominates
    a tiny CPU run.
    """
    abstract = nnx.eval_shape(
        lambda: Qwen2_5_VLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("init_model: the model has non-parameter variables; initialise it with nnx instead")
    rng = np.random.default_rng(seed)

    def draw(path: tuple, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path if not str(k).endswith("value")]
        last = names[-1] if names else ""
        if last == "bias":
            value = np.zeros(leaf.shape)
        elif last in ("weight", "scale") and any("norm" in n or n == "ln_q" for n in names[-2:]):
            value = np.ones(leaf.shape)
        else:
            fan_in = leaf.shape[-1] if last == "embedding" else math.prod(leaf.shape[:-1])
            value = rng.normal(0.0, std if std is not None else 1.0 / math.sqrt(max(fan_in, 1)), leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, params), rest)


def trainable_filter(freeze_vision: bool):
    """nnx filter of the trained parameters (all `nnx.Param`s, minus the vision tower if frozen)."""

    def keep(path: tuple, value: Any) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        return not (freeze_vision and "visual" in (str(p) for p in path))

    return keep


# --- batches on the mesh ------------------------------------------------------------------------
