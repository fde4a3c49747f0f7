"""Orbax checkpoints of the model parameters (the layout the trainer restores).

Layout of a directory: `config.json` (HF hub form, see `config.to_hf_dict`) and `params/`, an orbax
`StandardCheckpointer` checkpoint of the pure-dict `nnx.state(model, nnx.Param)` (paths as in
`nnx.state`, e.g. `model/language_model/layers/0/self_attn/q_proj/kernel`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from .checkpoint import hf_config_dict, save_pretrained
from .config import Qwen2_5_VLConfig

PARAMS_DIR = "params"


def save_orbax_params(model, directory: str | pathlib.Path) -> None:
    """Write `config.json` (with `torch_dtype` = the stored dtype) and the parameters under `params/`.

    The directory must not hold `params/` yet.
    """
    directory = pathlib.Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config_dict(model), indent=2))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    checkpointer.wait_until_finished()


def load_orbax_params(
    directory: str | pathlib.Path,
    dtype=jnp.float32,
    param_dtype=None,
    sharding: Callable[[tuple, tuple], jax.sharding.Sharding] | None = None,
):
    """Restore a model written by `save_orbax_params`, casting parameters to `param_dtype` (default dtype).

    `sharding(path, shape)` gives each parameter's placement (default: the default device).
    """
    from .modeling import Qwen2_5_VLForConditionalGeneration

    directory = pathlib.Path(directory).absolute()
    config = Qwen2_5_VLConfig.from_pretrained(directory)
    param_dtype = dtype if param_dtype is None else param_dtype
    abstract = nnx.eval_shape(
        lambda: Qwen2_5_VLForConditionalGeneration(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    target = nnx.to_pure_dict(state)
    if sharding is not None:
        target = jax.tree_util.tree_map_with_path(
            lambda path, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding(_path(path), x.shape)), target
        )
    restored = ocp.StandardCheckpointer().restore(directory / PARAMS_DIR, target)
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def _path(key_path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in key_path)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def hf_to_orbax(src: str | pathlib.Path, dst: str | pathlib.Path, dtype: str | None = None) -> None:
    """HF checkpoint directory -> orbax directory; parameters kept in the checkpoint's dtype by default."""
    from .modeling import Qwen2_5_VLForConditionalGeneration

    dtype = dtype or Qwen2_5_VLConfig.from_pretrained(src).torch_dtype or "float32"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(src, dtype=DTYPES[dtype])
    save_orbax_params(model, dst)


def orbax_to_hf(src: str | pathlib.Path, dst: str | pathlib.Path, dtype: str | None = None, **save_kwargs) -> None:
    """Orbax directory -> HF checkpoint directory, in the stored dtype by default.

    `save_kwargs` go to `checkpoint.save_pretrained`.
    """
    dtype = dtype or Qwen2_5_VLConfig.from_pretrained(src).torch_dtype or "float32"
    save_pretrained(load_orbax_params(src, DTYPES[dtype]), dst, **save_kwargs)
