"""Checkpoint import/export: hub and transformers-5 layouts, sharding, save_pretrained, orbax, convert."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from model_oracle import (
    IMAGE_GRID,
    VIDEO_GRID,
    config_for_tests,
    hf_logits,
    hf_model,
    pixels,
    rel_err,
    vision_prompt,
)
from safetensors.torch import save_file

from models.qwen2_5_vl import checkpoint
from models.qwen2_5_vl.checkpoint import detect_layout, file_keys, hf_block, nnx_path, to_hf
from models.qwen2_5_vl.config import Qwen2_5_VLConfig, param_shapes, tiny_config
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration as Model
from models.qwen2_5_vl.orbax_io import load_orbax_params, save_orbax_params
from models.qwen2_5_vl.sharding import loader_sharding, make_mesh
from tempr1_jax import cli

CONFIG = config_for_tests(vision_depth=2, vision_fullatt_block_indexes=(1,), num_hidden_layers=1)


@pytest.fixture(scope="module")
def ref():
    return hf_model(CONFIG, seed=3)


@pytest.fixture(scope="module")
def hub_dir(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("hub")
    ref.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def kwargs():
    rng = np.random.default_rng(0)
    ids = np.array([vision_prompt(CONFIG, rng, [IMAGE_GRID, VIDEO_GRID], ["image", "video"])])
    return dict(
        input_ids=ids,
        pixel_values=pixels(CONFIG, rng, [IMAGE_GRID]),
        image_grid_thw=np.array([IMAGE_GRID]),
        pixel_values_videos=pixels(CONFIG, rng, [VIDEO_GRID]),
        video_grid_thw=np.array([VIDEO_GRID]),
        second_per_grid_ts=np.array([0.5]),
    )


def _params(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _assert_same_params(a, b):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=str(k))


def test_hub_layout_single_and_sharded(ref, hub_dir, kwargs, tmp_path):
    assert detect_layout(file_keys(hub_dir)) == "hub"
    single = Model.from_pretrained(hub_dir)
    assert rel_err(np.asarray(single(**kwargs)), hf_logits(ref, CONFIG, **kwargs)) < 1e-4
    ref.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    _assert_same_params(Model.from_pretrained(tmp_path), single)


def test_transformers5_layout(ref, hub_dir, tmp_path):
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert any(k.startswith("model.language_model.") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hub_dir / "config.json").read_text())
    assert detect_layout(file_keys(tmp_path)) == "transformers5"
    _assert_same_params(Model.from_pretrained(tmp_path), Model.from_pretrained(hub_dir))


def test_missing_and_unexpected_tensors_are_listed(ref, hub_dir, tmp_path):
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if k != "model.language_model.norm.weight"}
    state["model.language_model.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hub_dir / "config.json").read_text())
    with pytest.raises(
        ValueError, match=r"missing tensors \['model.norm.weight'\], unexpected tensors \['model.extra.weight'\]"
    ):
        Model.from_pretrained(tmp_path)


def test_name_mapping_covers_every_parameter():
    model = nnx.eval_shape(lambda: Model(CONFIG))
    ours = {path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert ours == {nnx_path(name) for name in param_shapes(CONFIG)}


def test_hf_block_takes_blocks_on_the_hf_axes():
    """A block of our parameter, cut from the HF tensor on the HF axes, equals that block of the whole
    converted tensor; the whole converted tensor is what `to_hf` inverts."""
    rng = np.random.default_rng(0)
    for name, hf_shape in param_shapes(CONFIG).items():
        hf = rng.normal(size=hf_shape).astype(np.float32)
        full_index, finish = hf_block(name, (slice(None),) * (2 if len(hf_shape) == 5 else len(hf_shape)))
        ours = finish(hf[full_index])
        np.testing.assert_array_equal(to_hf(name, ours, hf_shape), hf, err_msg=name)
        index = tuple(slice(n // 4, n // 2 + 1) for n in ours.shape)
        hf_index, finish = hf_block(name, index)
        np.testing.assert_array_equal(finish(hf[hf_index]), ours[index], err_msg=name)


@pytest.mark.parametrize("layout", ["hub", "transformers5"])
def test_sharded_load_reads_only_device_blocks(hub_dir, tmp_path, monkeypatch, layout):
    """Loading into a mesh reads each distinct device block once, as a safetensors slice of the block's
    size, and gives the unsharded load's parameters in the loader's shardings."""
    # Must fail, not skip: conftest.py provides 8 fake CPU devices.
    assert jax.device_count() == 8, f"needs 8 devices, got {jax.device_count()}"
    unsharded = Model.from_pretrained(hub_dir)
    unsharded.save_pretrained(tmp_path, layout=layout, max_shard_bytes=50_000)
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    reads: dict[str, list[int]] = {}  # hub name -> element count of each slice read
    real_open = checkpoint.safe_open

    class SpySlice:
        def __init__(self, key, tensor):
            self.key, self.tensor = key, tensor

        def get_shape(self):
            return self.tensor.get_shape()

        def __getitem__(self, index):
            out = self.tensor[index]
            reads.setdefault(checkpoint.t5_to_hub(self.key), []).append(out.size)
            return out

    class SpyOpen:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __enter__(self):
            self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.file.keys()

        def get_slice(self, key):
            return SpySlice(key, self.file.get_slice(key))

    monkeypatch.setattr(checkpoint, "safe_open", SpyOpen)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharding = loader_sharding(mesh)
    loaded = Model.from_pretrained(tmp_path, sharding=sharding)
    _assert_same_params(loaded, unsharded)
    for path, variable in nnx.to_flat_state(nnx.state(loaded, nnx.Param)):
        value = variable.get_value()
        name = next(n for n in param_shapes(CONFIG) if nnx_path(n) == path)
        assert value.sharding == sharding(path, value.shape), name
        blocks = {
            tuple(s.indices(n) for s, n in zip(index, value.shape))
            for index in value.sharding.devices_indices_map(value.shape).values()
        }
        assert reads[name] == [int(np.prod(value.sharding.shard_shape(value.shape)))] * len(blocks), name
    assert max(max(r) for r in reads.values()) < max(int(np.prod(s)) for s in param_shapes(CONFIG).values())


@pytest.mark.parametrize("layout,shard_bytes", [("hub", 10**9), ("transformers5", 50_000)])
def test_save_pretrained_loads_in_transformers(hub_dir, kwargs, tmp_path, layout, shard_bytes):
    ours = Model.from_pretrained(hub_dir)
    ours.save_pretrained(tmp_path, layout=layout, max_shard_bytes=shard_bytes)
    assert (tmp_path / "model.safetensors.index.json").is_file() == (shard_bytes < 10**9)
    loaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert rel_err(hf_logits(loaded.float().eval(), CONFIG, **kwargs), np.asarray(ours(**kwargs))) < 1e-5


def test_bfloat16_load(hub_dir):
    model = Model.from_pretrained(hub_dir, dtype=jnp.bfloat16)
    assert {v.dtype for v in _params(model).values()} == {np.dtype(jnp.bfloat16)}


def test_orbax_round_trip(hub_dir, tmp_path):
    model = Model.from_pretrained(hub_dir)
    save_orbax_params(model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.json").is_file() and (tmp_path / "ckpt" / "params").is_dir()
    _assert_same_params(load_orbax_params(tmp_path / "ckpt"), model)
    restored = load_orbax_params(tmp_path / "ckpt", jnp.bfloat16)
    assert restored.lm_head.kernel[...].dtype == jnp.bfloat16


def test_convert_round_trip(ref, hub_dir, kwargs, tmp_path):
    assert cli.main(["convert", "hf-to-orbax", str(hub_dir), str(tmp_path / "orbax")]) == 0
    assert cli.main(["convert", "orbax-to-hf", str(tmp_path / "orbax"), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    np.testing.assert_array_equal(hf_logits(back.float().eval(), CONFIG, **kwargs), hf_logits(ref, CONFIG, **kwargs))
    assert cli.main(["convert", "orbax-to-hf", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2


def _hub_copy_with(ref, hub_dir, path, name, tensor):
    """The reference checkpoint (transformers-5 names) with tensor `name` replaced."""
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert name in state
    state[name] = tensor
    path.mkdir()
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text((hub_dir / "config.json").read_text())
    return path


def test_non_finite_weights_are_rejected_naming_the_tensor(ref, hub_dir, tmp_path, capsys):
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    bad = ref.state_dict()[name].clone()
    bad[1, 2] = float("nan")
    bad[0, 0] = float("inf")
    src = _hub_copy_with(ref, hub_dir, tmp_path / "nan", name, bad)
    with pytest.raises(ValueError, match=r"tensor model.layers.0.mlp.up_proj.weight has 2 non-finite values"):
        Model.from_pretrained(src)
    assert cli.main(["convert", "hf-to-orbax", str(src), str(tmp_path / "out")]) == 2
    assert "model.layers.0.mlp.up_proj.weight has 2 non-finite values" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_integer_weights_are_not_cast_to_float(ref, hub_dir, tmp_path, capsys):
    name = "model.language_model.norm.weight"
    src = _hub_copy_with(ref, hub_dir, tmp_path / "int", name, torch.arange(CONFIG.text.hidden_size, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"tensor model.norm.weight is stored as int32"):
        Model.from_pretrained(src)
    assert cli.main(["convert", "hf-to-orbax", str(src), str(tmp_path / "out")]) == 2
    assert "model.norm.weight is stored as int32" in capsys.readouterr().err


# Writing "5" to /proc/self/clear_refs resets VmHWM (the peak RSS of this process image) to the current RSS,
# so VmHWM - RSS at the reset is the peak during the load alone. RSS counts the safetensors file pages the
# loader has mapped (one tensor's at a time) besides anonymous memory.
_MEASURE = """
import sys
import jax.numpy as jnp
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
def kb(field):
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(field))
jnp.zeros(1).block_until_ready()
open('/proc/self/clear_refs', 'w').write('5')
base = kb('VmRSS:')
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1], dtype=jnp.bfloat16)
print((kb('VmHWM:') - base) * 1024, (kb('VmRSS:') - base) * 1024)
"""


@pytest.mark.slow
def test_bfloat16_load_peak_memory(tmp_path):
    """Loading streams tensors: peak host memory stays near one copy of the checkpoint, and once loaded the
    process holds the weights only (no host buffer of a tensor outlives its transfer)."""
    config = tiny_config(
        vocab_size=60000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        mrope_section=(16, 24, 24),
        torch_dtype="bfloat16",
    )
    # ~440 MB: large enough that the fixed cost of building the abstract model is a small share.
    tensors = {k: np.full(s, 0.01, ml_dtypes.bfloat16) for k, s in param_shapes(config).items()}
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    del tensors
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    size = (tmp_path / "model.safetensors").stat().st_size
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path)], capture_output=True, text=True, check=True)
    peak, after = map(int, out.stdout.split()[-2:])
    assert peak <= 1.3 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB checkpoint"
    assert after <= 1.05 * size, f"{after / 1e6:.0f} MB held after loading a {size / 1e6:.0f} MB checkpoint"


@pytest.mark.slow
def test_abstract_7b_model_matches_the_config(hf_configs_dir):
    """Shape-only 7B model (as the memory planner builds it): every parameter has its hub shape."""
    config = Qwen2_5_VLConfig.from_pretrained(hf_configs_dir / "qwen2_5_vl_7b_instruct.config.json")
    model = nnx.eval_shape(lambda: Model(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16))
    shapes = {path: v.get_value().shape for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert sum(int(np.prod(s)) for s in shapes.values()) == config.num_params()
    assert shapes[nnx_path("visual.patch_embed.proj.weight")] == (1176, 1280)
