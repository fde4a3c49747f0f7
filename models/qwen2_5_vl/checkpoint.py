"""HF safetensors import/export for Qwen2.5-VL, one tensor at a time.

Two key layouts exist and both are read (detected from the file keys):

* hub (published checkpoints): `visual.*`, `model.layers.*`, `model.embed_tokens.*`, `model.norm.*`, `lm_head.*`
* transformers 5: `model.visual.*`, `model.language_model.*`, `lm_head.*`

`save_pretrained` writes the hub layout (which transformers 4.x and 5.x both load) and shards above
`max_shard_bytes` with a `model.safetensors.index.json`.

The name mapping between HF tensors and our NNX parameter paths lives here only (`nnx_path`,
`hf_block`, `to_hf`); the list of expected tensors comes from `config.param_shapes`.

Loading builds the model abstractly and reads each parameter straight into its sharding: a process
reads only the safetensors slices its devices hold (`load_pretrained`, `sharding.loader_sharding`).
"""

from __future__ import annotations

import ctypes
import gc
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from .config import Qwen2_5_VLConfig, param_shapes

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
_FINITE_CHUNK = 1 << 24  # elements checked for NaN / inf at a time


# --- names ---------------------------------------------------------------------------------------


def hub_to_t5(name: str) -> str:
    """Hub tensor name -> transformers-5 name."""
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model.") and not name.startswith(("model.visual.", "model.language_model.")):
        return "model.language_model." + name[len("model.") :]
    return name


def t5_to_hub(name: str) -> str:
    """Transformers-5 tensor name -> hub name."""
    if name.startswith("model.visual."):
        return name[len("model.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


_MERGER = {"mlp.0": "mlp_0", "mlp.2": "mlp_2"}


def nnx_path(hub_name: str) -> tuple:
    """Hub tensor name -> path in `nnx.state(model)` (digits become list indices)."""
    name = hub_to_t5(hub_name)
    for hf, ours in _MERGER.items():
        name = name.replace(f"merger.{hf}.", f"merger.{ours}.")
    parts: list = [int(p) if p.isdigit() else p for p in name.split(".")]
    if parts[-1] == "weight":
        if "embed_tokens" in parts:
            parts[-1] = "embedding"
        elif not _is_norm(parts):
            parts[-1] = "kernel"
    return tuple(parts)


def _is_norm(parts: list) -> bool:
    return any(isinstance(p, str) and (p.startswith("norm") or p.endswith("layernorm") or p == "ln_q") for p in parts)


PATCH_EMBED = "visual.patch_embed.proj.weight"

Index = tuple[slice, ...]


def hf_block(hub_name: str, index: Index) -> tuple[Index, Callable[[np.ndarray], np.ndarray]]:
    """Where block `index` of our parameter lies in the HF (torch layout) tensor `hub_name`.

    Returns (HF index, `finish`): `finish(hf_tensor[hf_index])` is our parameter's block `index`. Our
    Linear kernels are the HF weights transposed, so a block's rows are HF columns; the patch
    embedding is also flattened to [C*T*p*p, out], so its rows are cut after flattening whole HF rows.
    """
    if hub_name == PATCH_EMBED:
        rows, cols = index
        return (cols,), lambda t: t.reshape(t.shape[0], -1).T[rows]
    if len(index) == 2 and "embed_tokens" not in hub_name:
        return (index[1], index[0]), lambda t: t.T
    return index, lambda t: t


def to_hf(hub_name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Our parameter -> HF tensor of `shape` (inverse of `hf_block` over the whole tensor)."""
    if hub_name == PATCH_EMBED:
        return np.ascontiguousarray(value.T).reshape(shape)
    if value.ndim == 2 and "embed_tokens" not in hub_name:
        return np.ascontiguousarray(value.T)
    return value


# --- reading -------------------------------------------------------------------------------------


def checkpoint_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The safetensors files of a checkpoint directory (index json or a single file)."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / f for f in sorted(set(weight_map.values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no safetensors files in {directory}")
    return files


def tensor_locations(directory: str | pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """Hub name -> (file, name as stored) for every tensor of the checkpoint (either layout); reads headers only."""
    locations = {}
    for path in checkpoint_files(pathlib.Path(directory)):
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():
                locations[t5_to_hub(key)] = (path, key)
    return locations


def detect_layout(keys: list[str]) -> str:
    """'hub' or 'transformers5' from the file keys (ValueError if mixed or neither)."""
    t5 = any(k.startswith(("model.visual.", "model.language_model.")) for k in keys)
    hub = any(k.startswith(("visual.", "model.layers.", "model.embed_tokens.")) for k in keys)
    if t5 and hub:
        raise ValueError("checkpoint mixes hub (visual.*, model.layers.*) and transformers-5 key layouts")
    if not (t5 or hub):
        raise ValueError("checkpoint keys match neither the hub nor the transformers-5 layout")
    return "transformers5" if t5 else "hub"


def file_keys(directory: str | pathlib.Path) -> list[str]:
    """Tensor names as stored in the files (either layout)."""
    return [key for _, key in tensor_locations(directory).values()]


ShardingFn = Callable[[tuple, tuple], jax.sharding.Sharding]


def _return_large_frees_to_os() -> None:
    """Ask glibc to serve allocations above 1 MiB with mmap, so each freed per-tensor host buffer
    goes back to the OS at once instead of staying in the heap: without it, RSS after loading the
    bf16 checkpoint of `test_bfloat16_load_peak_memory` is 1.05x its bytes instead of 1.01x. A no-op
    on other C libraries."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def load_pretrained(cls, directory, *, dtype=jnp.float32, param_dtype=None, sharding: ShardingFn | None = None):
    """Build `cls` without allocating weights (`nnx.eval_shape`), then fill it parameter by parameter.

    `sharding(path, shape)` gives the placement of each parameter (default: the default device). A
    process reads from the safetensors files only the blocks its addressable devices hold (slices,
    taken on the HF axes, see `hf_block`), casts them to the parameter dtype and puts them on those
    devices: no host holds more than its devices' share of the model plus one tensor's blocks.
    """
    directory = pathlib.Path(directory)
    _return_large_frees_to_os()
    config = Qwen2_5_VLConfig.from_pretrained(directory)
    param_dtype = dtype if param_dtype is None else param_dtype
    locations = tensor_locations(directory)
    detect_layout([key for _, key in locations.values()])
    expected = param_shapes(config)
    names = set(locations)
    if config.tie_word_embeddings:
        names.discard("lm_head.weight")  # some tied checkpoints also store the head; the embedding is used
    missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match the config: missing tensors {missing}, "
            f"unexpected tensors {unexpected}"
        )
    model = nnx.eval_shape(lambda: cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    for name, (path, key) in locations.items():
        if name not in expected:
            continue
        variable = flat[nnx_path(name)]
        abstract = variable.get_value()
        placement = None if sharding is None else sharding(nnx_path(name), tuple(abstract.shape))
        variable.set_value(_load_param(path, key, name, expected[name], abstract, placement))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _load_param(
    path: pathlib.Path,
    key: str,
    name: str,
    hf_shape: tuple[int, ...],
    abstract: jax.ShapeDtypeStruct,
    sharding: jax.sharding.Sharding | None,
) -> jax.Array:
    """Parameter `name` (shape and dtype of `abstract`) on `sharding`'s addressable devices (None: the default
    device), each distinct block read once."""
    shape = tuple(abstract.shape)
    full = (slice(None),) * len(shape)
    indices = [full] if sharding is None else list(sharding.addressable_devices_indices_map(shape).values())
    blocks = _read_blocks(path, key, name, hf_shape, shape, np.dtype(abstract.dtype), indices)
    if sharding is None:
        array = jax.device_put(blocks[_block_key(full, shape)])
    else:
        array = jax.make_array_from_callback(shape, sharding, lambda index: blocks[_block_key(index, shape)])
    # At most one parameter's host blocks alive: device_put copies them asynchronously (under CPU contention
    # they would pile up behind the copy threads), and JAX releases the host arrays of finished transfers
    # only at its next transfer or at a garbage collection, which runs its gc hook (jax-ml/jax#14882).
    array.block_until_ready()
    blocks.clear()
    gc.collect(0)
    return array


def _block_key(index: Index, shape: tuple[int, ...]) -> tuple:
    """A hashable, normalised form of a device's index into an array of `shape`."""
    return tuple(s.indices(n) for s, n in zip(index, shape))


def _read_blocks(
    path: pathlib.Path,
    key: str,
    name: str,
    hf_shape: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: np.dtype,
    indices: list[Index],
) -> dict[tuple, np.ndarray]:
    """Block key -> our block (contiguous, `dtype`) for each distinct index, read as safetensors slices."""
    raw, finish = {}, {}
    with safe_open(str(path), framework="numpy") as f:
        tensor = f.get_slice(key)
        if tuple(tensor.get_shape()) != hf_shape:
            raise ValueError(f"tensor {name} has shape {tuple(tensor.get_shape())}, config expects {hf_shape}")
        for index in indices:
            block_key = _block_key(index, shape)
            if block_key not in raw:
                hf_index, finish[block_key] = hf_block(name, tuple(slice(*k) for k in block_key))
                raw[block_key] = tensor[hf_index]
                check_weight(name, raw[block_key])
        del tensor  # the file stays mapped while a slice object lives: without it, leaving `with` keeps the pages
    # One conversion at a time (a transpose and a cast in one copy), each raw slice dropped once converted.
    return {k: finish[k](raw.pop(k)).astype(dtype, order="C", copy=False) for k in list(raw)}


def check_weight(name: str, tensor: np.ndarray) -> None:
    """ValueError naming the tensor unless it is floating point with only finite values.

    Every Qwen2.5-VL weight is floating point: an integer or boolean tensor is not a weight of this
    model, and casting it would hide that; a NaN or infinite weight would poison every output.
    """
    if not np.issubdtype(tensor.dtype, np.floating) and tensor.dtype != np.dtype(ml_dtypes.bfloat16):
        raise ValueError(
            f"tensor {name} is stored as {tensor.dtype}, but the model's weights are floating point; "
            f"not casting it (is this a weight checkpoint of this model?)"
        )
    flat = tensor.reshape(-1)
    # In chunks, so that the temporary mask stays small next to the largest (embedding) tensor.
    bad = sum(
        len(part) - int(np.count_nonzero(np.isfinite(part)))
        for part in (flat[i : i + _FINITE_CHUNK] for i in range(0, flat.size, _FINITE_CHUNK))
    )
    if bad:
        raise ValueError(f"tensor {name} has {bad} non-finite values (NaN or inf) of {tensor.size}")


# --- writing -------------------------------------------------------------------------------------


def save_pretrained(
    model, directory: str | pathlib.Path, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, layout: str = "hub"
) -> None:
    """Write config.json and safetensors (hub or transformers-5 `layout`), sharded above max_shard_bytes.

    Tensors are fetched from the device one at a time and written shard by shard, so host memory
    holds at most one shard.
    """
    if layout not in ("hub", "transformers5"):
        raise ValueError(f"layout must be 'hub' or 'transformers5', got {layout!r}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: Qwen2_5_VLConfig = model.config
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    shapes = param_shapes(config)
    plan: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * flat[nnx_path(name)].get_value().dtype.itemsize
        if plan[-1] and size + nbytes > max_shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(name)
        size += nbytes
    key = (lambda n: n) if layout == "hub" else hub_to_t5
    n_files = len(plan)
    weight_map = {}
    total = 0
    for i, names in enumerate(plan):
        fname = SINGLE_FILE if n_files == 1 else f"model-{i + 1:05d}-of-{n_files:05d}.safetensors"
        tensors = {}
        for name in names:
            value = np.asarray(jax.device_get(flat[nnx_path(name)].get_value()))
            tensors[key(name)] = to_hf(name, value, shapes[name])
            weight_map[key(name)] = fname
            total += tensors[key(name)].nbytes
        save_file(tensors, str(directory / fname), metadata={"format": "pt"})
        del tensors
    if n_files > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(hf_config_dict(model), indent=2))


def hf_config_dict(model) -> dict:
    """`model.config.to_hf_dict()` with `torch_dtype` set to the dtype the parameters are stored in."""
    hf = model.config.to_hf_dict()
    dtype = np.dtype(model.model.language_model.embed_tokens.embedding.get_value().dtype)
    names = {np.dtype(ml_dtypes.bfloat16): "bfloat16", np.dtype(np.float16): "float16"}
    hf["torch_dtype"] = names.get(dtype, "float32")
    return hf
