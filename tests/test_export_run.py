"""A `tempr1 train` run ends with a Hugging Face export of its policy (`W/hf`) that transformers loads with
our logits; `tempr1 convert orbax-to-hf W OUT` rebuilds the same weights from the run's checkpoint.

One 2-step run of configs/demo.gin (frozen vision tower, model built from a seed) shared by the module.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
import safetensors.numpy
import transformers
from model_oracle import VIDEO_GRID, hf_logits, pixels, rel_err, vision_prompt

from models.qwen2_5_vl.config import Qwen2_5_VLConfig
from tempr1_jax import cli
from tempr1_jax.training.export import SETUP_FILE, restore_policy
from tempr1_jax.training.model_setup import ModelSetup, base_model

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = tmp_path_factory.mktemp("run")
    args = [
        "train",
        "--gin_file",
        str(REPO / "configs" / "demo.gin"),
        "--steps",
        "2",
        "--workdir",
        str(w),
        "--gin_binding",
        "TrainConfig.tensorboard = False",
        "--gin_binding",
        "TrainConfig.progress = False",
    ]
    assert cli.main(args) == 0
    return w


def _tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(str(directory / "model.safetensors"))


def test_hf_export_loads_in_transformers_with_our_logits(workdir):
    policy, step = restore_policy(workdir)
    assert step == 2
    ref = (
        transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(workdir / "hf", attn_implementation="eager")
        .float()
        .eval()
    )
    config = policy.config
    rng = np.random.default_rng(0)
    kwargs = dict(
        input_ids=np.array([vision_prompt(config, rng, [VIDEO_GRID], ["video"])]),
        pixel_values_videos=pixels(config, rng, [VIDEO_GRID]),
        video_grid_thw=np.array([VIDEO_GRID]),
        second_per_grid_ts=np.array([0.5]),
    )
    err = rel_err(np.asarray(policy(**kwargs)), hf_logits(ref, config, **kwargs))
    assert err <= 1e-4, err
    tokenizer = transformers.AutoTokenizer.from_pretrained(workdir / "hf")
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == config.video_token_id


def test_training_changed_the_trained_weights_only(workdir):
    exported = _tensors(workdir / "hf")
    setup = ModelSetup(**json.loads((workdir / "model" / SETUP_FILE).read_text()))
    base = base_model(setup, Qwen2_5_VLConfig.from_pretrained(workdir / "model"))
    base_dir = workdir.parent / "base_export"
    base.save_pretrained(base_dir)
    initial = _tensors(base_dir)
    assert exported.keys() == initial.keys()
    changed = {k for k in exported if not np.array_equal(exported[k], initial[k])}
    assert changed and all(not k.startswith("visual.") for k in changed)  # demo.gin freezes the vision tower
    shutil.rmtree(base_dir)


def test_convert_workdir_gives_the_exported_weights(workdir, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["convert", "orbax-to-hf", str(workdir), str(out)]) == 0
    a, b = _tensors(workdir / "hf"), _tensors(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert json.loads((out / "config.json").read_text()) == json.loads((workdir / "hf" / "config.json").read_text())
    assert (out / "tokenizer.json").read_text() == (workdir / "hf" / "tokenizer.json").read_text()
    # An older step differs; a missing step is a clear error.
    assert cli.main(["convert", "orbax-to-hf", str(workdir), str(tmp_path / "s1"), "--step", "1"]) == 0
    assert any(not np.array_equal(a[k], v) for k, v in _tensors(tmp_path / "s1").items())
    assert cli.main(["convert", "orbax-to-hf", str(workdir), str(tmp_path / "s7"), "--step", "7"]) == 2


def test_convert_rejects_unknown_layouts_and_empty_runs(workdir, tmp_path, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    assert cli.main(["convert", "orbax-to-hf", str(odd), str(tmp_path / "o1")]) == 2
    assert "is neither an orbax parameter directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(workdir / "model", empty / "model")
    (empty / "checkpoints").mkdir()
    assert cli.main(["convert", "orbax-to-hf", str(empty), str(tmp_path / "o2")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
