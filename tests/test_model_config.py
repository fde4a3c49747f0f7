"""Qwen2.5-VL config parsing: published configs, both rope forms, refusals, HF round trip."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import transformers

from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from tempr1_jax.training.model_setup import init_model


def _load(hf_configs_dir, name):
    return json.loads((hf_configs_dir / f"qwen2_5_vl_{name}_instruct.config.json").read_text())


@pytest.mark.parametrize("name,billions", [("7b", 8.29), ("3b", 3.75)])
def test_published_configs_and_param_counts(hf_configs_dir, name, billions):
    config = Qwen2_5_VLConfig.from_hf_dict(_load(hf_configs_dir, name))
    assert config.text.mrope_section == (16, 24, 24)
    assert config.vision.fullatt_block_indexes == (7, 15, 23, 31)
    assert config.vision.window_merged == 4 and config.vision.patch_dim == 1176
    assert config.image_token_id == 151655 and config.video_token_id == 151656
    assert config.tie_word_embeddings == (name == "3b")
    assert round(config.num_params() / 1e9, 2) == billions


def test_param_count_matches_transformers():
    config = tiny_config(tie_word_embeddings=True)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(**config.to_hf_dict()))
    assert config.num_params() == sum(p.numel() for p in hf.parameters())


def test_rope_parameters_form_equals_rope_scaling_form(hf_configs_dir):
    flat = _load(hf_configs_dir, "7b")
    nested = transformers.Qwen2_5_VLConfig(**flat).to_dict()  # transformers-5 form: text_config + rope_parameters
    assert "rope_parameters" in nested["text_config"] and "rope_scaling" not in nested["text_config"]
    assert Qwen2_5_VLConfig.from_hf_dict(nested) == Qwen2_5_VLConfig.from_hf_dict(flat)


@pytest.mark.parametrize("rule", ["max_plus_one", "transformers5"])
def test_to_hf_dict_round_trip_through_transformers(rule):
    config = tiny_config(eos_token_id=(296, 295), text_after_vision=rule)
    hf = transformers.Qwen2_5_VLConfig(**config.to_hf_dict())
    assert hf.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert hf.vision_config.fullatt_block_indexes == [1, 3]
    assert Qwen2_5_VLConfig.from_hf_dict(hf.to_dict()) == config
    assert Qwen2_5_VLConfig.from_hf_dict(config.to_hf_dict()) == config


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(model_type="qwen2_vl"), "model_type"),
        (lambda d: d.pop("model_type"), "model_type"),
        (lambda d: d.pop("rope_scaling"), "mrope_section"),
        (lambda d: d["rope_scaling"].pop("mrope_section"), "mrope_section"),
        (lambda d: d.pop("hidden_size"), "'hidden_size'"),
        (lambda d: d.pop("video_token_id"), "'video_token_id'"),
        (lambda d: d["vision_config"].pop("window_size"), "vision_config is missing field 'window_size'"),
        (lambda d: d["vision_config"].pop("fullatt_block_indexes"), "'fullatt_block_indexes'"),
        (lambda d: d["vision_config"].pop("tokens_per_second"), "'tokens_per_second'"),
        (lambda d: d.pop("vision_config"), "'vision_config'"),
        (lambda d: d["rope_scaling"].update(mrope_section=[16, 24, 23]), "mrope_section"),
    ],
)
def test_refusals_name_the_field(hf_configs_dir, edit, message):
    d = copy.deepcopy(_load(hf_configs_dir, "7b"))
    edit(d)
    with pytest.raises(ValueError, match=message):
        Qwen2_5_VLConfig.from_hf_dict(d)


def test_tiny_config_overrides():
    config = tiny_config(
        vision_depth=2,
        vision_fullatt_block_indexes=[0],
        num_hidden_layers=3,
        hidden_size=32,
        mrope_section=[2, 1, 1],
        tie_word_embeddings=True,
    )
    assert config.vision.depth == 2 and config.text.num_hidden_layers == 3
    assert config.vision.out_hidden_size == 32 and config.tie_word_embeddings
    with pytest.raises(ValueError, match="unknown override 'nope'"):
        tiny_config(nope=1)


def test_original_position_rule_is_the_default(hf_configs_dir):
    """The published weights were trained with max(ids so far) + 1 after a vision block."""
    assert tiny_config().text_after_vision == "max_plus_one"
    published = _load(hf_configs_dir, "7b")
    assert "text_after_vision" not in published
    assert Qwen2_5_VLConfig.from_hf_dict(published).text_after_vision == "max_plus_one"
    assert "text_after_vision" not in tiny_config().to_hf_dict()  # the default writes the published form
    assert tiny_config(text_after_vision="transformers5").to_hf_dict()["text_after_vision"] == "transformers5"
    with pytest.raises(ValueError, match="text_after_vision must be one of"):
        tiny_config(text_after_vision="last_plus_one")


@pytest.mark.parametrize("rule", ["max_plus_one", "transformers5"])
def test_position_rule_survives_save_and_reload(tmp_path, rule):
    config = tiny_config(text_after_vision=rule, num_hidden_layers=1, vision_depth=1, vision_fullatt_block_indexes=[0])
    init_model(config, 0).save_pretrained(tmp_path)
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path).config
    assert loaded.text_after_vision == rule and dataclasses.replace(loaded, torch_dtype=None) == config


def test_init_model_fan_in_scale():
    """std=None draws each kernel with standard deviation 1 / sqrt(fan_in) (an embedding: 1 / sqrt(width));
    the default keeps HF's N(0, 0.02**2); biases 0 and norm weights 1 either way."""
    config = tiny_config(hidden_size=64, intermediate_size=256, vocab_size=2048)
    for std in (None, 0.02):
        model = init_model(config, 0, std=std)
        lm = model.model.language_model
        cases = {
            "embedding": (lm.embed_tokens.embedding[...], 64),
            "down_proj": (lm.layers[0].mlp.down_proj.kernel[...], 256),
            "q_proj": (lm.layers[0].self_attn.q_proj.kernel[...], 64),
            "patch_embed": (model.model.visual.patch_embed.proj.kernel[...], config.vision.patch_dim),
        }
        for name, (value, fan_in) in cases.items():
            value = np.asarray(value)
            want = 0.02 if std is not None else 1 / np.sqrt(fan_in)
            assert abs(value.std() / want - 1) < 0.1, (std, name, value.std(), want)
        assert np.all(np.asarray(lm.layers[0].self_attn.q_proj.bias[...]) == 0)
        assert np.all(np.asarray(lm.norm.weight[...]) == 1)
