"""What a run is built from, configured with gin: the mesh, the model + tokenizer, the data sources.

Shared by `tempr1 train` and the other commands that load a model and a loader (sft, curate, demo).
With no checkpoint, `build_model` trains a tiny tokenizer on the run's own training text (saved in
`workdir/tokenizer`, reused on resume) and initialises a tiny Qwen2.5-VL from `ModelSetup.seed`;
`DataConfig.synthetic` writes the deterministic synthetic dataset into `workdir/data`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from data_pipeline import loader as loader_lib
from data_pipeline.synthetic import write_synthetic_dataset
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl import sharding as sharding_lib
from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from models.qwen2_5_vl.inputs import ModelInputs, collate_model_inputs
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from tempr1_jax import tasks as tasks_lib

# The loader's config, configurable from gin as `LoaderConfig.batch_size = 8` etc.
LoaderConfig = gin.external_configurable(loader_lib.LoaderConfig, "LoaderConfig")


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
    tokenizer: an HF tokenizer directory (default: `checkpoint`, or the trained tiny one).
    dtype / param_dtype: compute and storage dtypes ("float32", "bfloat16").
    freeze_vision: keep the vision tower's weights fixed (no gradients, no optimizer state).
    remat: recompute each decoder layer and vision block in the backward pass (activation memory of
      one layer instead of all; the 7B config needs it).
    """

    checkpoint: str | None = None
    tokenizer: str | None = None
    tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer_vocab_size: int = 512
    seed: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    freeze_vision: bool = False
    remat: bool = False


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training sources: JSONL paths or dicts of `data_pipeline.loader.SourceConfig` fields.

    synthetic: write the synthetic dataset (`data_pipeline.synthetic`) into `workdir/data` and train on
    its `train` split (the demo); `synthetic_tasks` / `synthetic_samples_per_task` shape it.
    """

    sources: Sequence[Any] = ()
    synthetic: bool = False
    synthetic_seed: int = 0
    synthetic_tasks: Sequence[str] = ("tg", "dtg", "vhd", "gvqa", "tal")
    synthetic_samples_per_task: int = 8


def prompt_builders(think: bool = True) -> dict[str, Any]:
    """Task name -> picklable `sample -> prompt text` for every registered task."""
    return {name: functools.partial(_build_prompt, name, think) for name in tasks_lib.TASKS}


def _build_prompt(task: str, think: bool, sample: Mapping[str, Any]) -> str:
    return tasks_lib.get_task(task).build_prompt(sample, think)


def resolve_sources(cfg: DataConfig, workdir: str | pathlib.Path) -> tuple[loader_lib.SourceConfig, ...]:
    """The loader sources of `cfg`; writes the synthetic dataset first when `cfg.synthetic`."""
    if cfg.synthetic:
        out = pathlib.Path(workdir) / "data"
        train = out / "train.jsonl"
        if not train.is_file():
            write_synthetic_dataset(out, seed=cfg.synthetic_seed, samples_per_task=cfg.synthetic_samples_per_task,
                                    tasks=tuple(cfg.synthetic_tasks), include_images=False, split_names=("train",))
        return (loader_lib.SourceConfig(path=str(train), media_dir=str(out)),)
    if not cfg.sources:
        raise ValueError("DataConfig.sources is empty and DataConfig.synthetic is False: no training data")
    out_sources = []
    for s in cfg.sources:
        out_sources.append(loader_lib.SourceConfig(path=s) if isinstance(s, str) else loader_lib.SourceConfig(**s))
    return tuple(out_sources)


def _training_text(sources: Sequence[loader_lib.SourceConfig], think: bool) -> list[str]:
    """Prompts and reference answers of the JSONL sources: the tiny tokenizer's corpus."""
    texts = []
    for source in sources:
        for line in pathlib.Path(source.path).read_text().splitlines():
            if line.strip():
                sample = json.loads(line)
                task = tasks_lib.get_task(sample["task"])
                texts += [task.build_prompt(sample, think), task.reference_answer(sample, think=True)]
    return texts


def _dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise ValueError(f"unknown dtype {name!r}") from None


def build_model(setup: ModelSetup, workdir: str | pathlib.Path,
                sources: Sequence[loader_lib.SourceConfig], think: bool = True,
                ) -> tuple[Qwen2_5_VLForConditionalGeneration, Any]:
    """(model on the default device, tokenizer) for `setup` (see `ModelSetup`)."""
    import transformers

    if setup.checkpoint is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(setup.tokenizer or setup.checkpoint)
        return base_model(setup), tokenizer
    tok_dir = pathlib.Path(setup.tokenizer or pathlib.Path(workdir) / "tokenizer")
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        tokenizer = train_tiny_tokenizer(_training_text(sources, think), tok_dir, setup.tokenizer_vocab_size)
    config = tiny_config(**{**special_token_ids(tokenizer), **dict(setup.tiny)})
    return base_model(setup, config), tokenizer


def base_model(setup: ModelSetup, config: Qwen2_5_VLConfig | None = None) -> Qwen2_5_VLForConditionalGeneration:
    """The model a run starts from: `setup.checkpoint` if set, else `config` initialised from `setup.seed`."""
    dtype, param_dtype = _dtype(setup.dtype), _dtype(setup.param_dtype)
    if setup.checkpoint is not None:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(setup.checkpoint, dtype=dtype,
                                                                   param_dtype=param_dtype)
    elif config is None:
        raise ValueError("base_model: ModelSetup.checkpoint is None, so a model config is required")
    else:
        model = init_model(config, setup.seed, dtype, param_dtype)
    set_remat(model, setup.remat)
    return model


def set_remat(model: Qwen2_5_VLForConditionalGeneration, remat: bool) -> None:
    """Recompute decoder layers and vision blocks in the backward pass (a static graph attribute)."""
    model.model.language_model.remat = remat
    model.model.visual.remat = remat


def init_model(config: Any, seed: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               std: float = 0.02) -> Qwen2_5_VLForConditionalGeneration:
    """A freshly initialised model, drawn on the host with numpy from `seed` (no XLA compilation).

    Kernels and embeddings ~ N(0, std) (the HF initialiser), biases 0, norm weights 1. Eager NNX
    initialisation compiles one XLA program per parameter shape, which dominates a tiny CPU run.
    """
    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(
        config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
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
            value = rng.normal(0.0, std, leaf.shape)
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


def batch_sharding(shape: Sequence[int], mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Shard dimension `axis` over the mesh's batch axes (data, fsdp) where it divides; else replicate."""
    spec = [None] * len(shape)
    if len(shape):
        spec[axis] = sharding_lib.BATCH
    return NamedSharding(mesh, sharding_lib.fit_spec(tuple(spec), tuple(shape), mesh)[0])


def place_rows(x: Any, mesh: Mesh, axis: int = 0) -> jax.Array:
    """This process's rows (a host array) as its part of a global array of every process's rows, in
    process order, sharded along the batch dimension `axis` (of the global shape: with several
    processes the local batch need not divide over the mesh's batch axes, but the global one must)."""
    x = np.asarray(x)
    shape = (*x.shape[:axis], x.shape[axis] * jax.process_count(), *x.shape[axis + 1:])
    devices = math.prod(mesh.shape[a] for a in sharding_lib.BATCH)
    if jax.process_count() > 1 and shape[axis] % devices:
        # Replicating it instead would have each process claim different rows for the same array.
        raise ValueError(f"{x.shape[axis]} rows per process x {jax.process_count()} processes do not divide over "
                         f"the mesh's batch axes (data x fsdp = {devices}); change the batch size or the mesh")
    return jax.make_array_from_process_local_data(batch_sharding(shape, mesh, axis), x, shape)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded along axis 0, as numpy (inverse of `place_rows`).

    Shards repeated over the non-batch mesh axes are taken once; with one process this is the whole array.
    """
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    pieces: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, np.asarray(shard.data))
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)


def place_inputs(inputs: ModelInputs, mesh: Mesh) -> ModelInputs:
    """`ModelInputs` with every field sharded along its batch dimension (axis 1 for position ids)."""
    return ModelInputs(**{f: place_rows(getattr(inputs, f), mesh, 1 if f == "position_ids" else 0)
                          for f in ModelInputs.__dataclass_fields__})


def slice_inputs(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """Rows [start, stop) of host `ModelInputs` (views)."""
    return take_rows(inputs, slice(start, stop))


def take_rows(inputs: ModelInputs, rows: np.ndarray | slice) -> ModelInputs:
    """Rows `rows` (indices, repeats allowed, or a slice) of host `ModelInputs`."""
    return ModelInputs(**{f: (np.asarray(getattr(inputs, f))[:, rows] if f == "position_ids"
                              else np.asarray(getattr(inputs, f))[rows])
                          for f in ModelInputs.__dataclass_fields__})


def pad_inputs(inputs: ModelInputs, shape: tuple[int, ...], pad_token_id: int,
               padding_side: str = "left") -> ModelInputs:
    """Host `inputs` padded to (rows, tokens, patches[, *layout_sizes]) = `shape` (`ModelInputs.padded_shape`):
    tokens on `padding_side` (the side the batch is already padded on), patches at the end, block
    layouts with empty blocks, extra rows copies of the first; `inputs` itself if it has that shape
    already."""
    rows, tokens, patches, *layout = shape
    if inputs.padded_shape[:len(shape)] == tuple(shape):
        return inputs
    inputs = collate_model_inputs([inputs], tokens, patches, padding_side=padding_side, pad_token_id=pad_token_id,
                                  pad_layout_to=layout or None)
    return take_rows(inputs, np.where(np.arange(rows) < inputs.batch_size, np.arange(rows), 0))
