"""The original M-RoPE rule (the default, as the published weights were trained): hand-worked ids, the
independent reference (`mrope_reference.py`) against `get_rope_index`, and our logits and greedy tokens
against transformers' forward fed the reference's `position_ids` (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_oracle import hf_logits, hf_model, left_pad, pixels, rel_err, vision_prompt
from mrope_reference import original_completion_ids, original_rope_ids

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.inputs import build_model_inputs
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from models.qwen2_5_vl.rope_index import completion_position_ids, get_rope_index, token_types

CONFIG = tiny_config()  # the default rule; tokens_per_second 2, spatial_merge_size 2
VS, VE, IMG, VID = (
    CONFIG.vision_start_token_id,
    CONFIG.vision_end_token_id,
    CONFIG.image_token_id,
    CONFIG.video_token_id,
)
TOL = 1e-4

# Worked out by hand. tokens_per_second = 2, so a video's temporal interval is 2 * second_per_grid_t.
HAND = {
    # text, a 3-group video (merged 2x2) at 2.0 s per group (interval 4), text: the temporal ids (3, 7, 11)
    # run past the merged size; the following text continues at 11 + 1 (transformers 5: 3 + 2 = 5).
    "video_runs_past_text": dict(
        ids=[5, 6, VS] + [VID] * 12 + [VE, 7, 8],
        images=[],
        videos=[(3, 4, 4)],
        seconds=[2.0],
        t=[0, 1, 2, 3, 3, 3, 3, 7, 7, 7, 7, 11, 11, 11, 11, 12, 13, 14],
        h=[0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 3, 3, 4, 4, 12, 13, 14],
        w=[0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4, 12, 13, 14],
        next=15,
    ),
    # an image (merged 2x3) then a 2-group video (merged 1x2) at 1.5 s per group (interval 3) in one prompt
    "image_then_video": dict(
        ids=[5, VS] + [IMG] * 6 + [VE, VS] + [VID] * 4 + [VE, 6],
        images=[(1, 4, 6)],
        videos=[(2, 2, 4)],
        seconds=[1.5],
        t=[0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 7, 7, 10, 10, 11, 12],
        h=[0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7, 7, 7, 7, 11, 12],
        w=[0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8, 7, 8, 11, 12],
        next=13,
    ),
    # 2/3 s per group: int(g * 2/3 * 2) = 0, 1, 2, 4 for g = 0..3 (merged 1x1)
    "two_thirds_second": dict(
        ids=[5, VS] + [VID] * 4 + [VE, 6],
        images=[],
        videos=[(4, 2, 2)],
        seconds=[2 / 3],
        t=[0, 1, 2, 3, 4, 6, 7, 8],
        h=[0, 1, 2, 2, 2, 2, 7, 8],
        w=[0, 1, 2, 2, 2, 2, 7, 8],
        next=9,
    ),
}


def _args(case):
    return dict(
        image_grid_thw=np.array(case["images"]) if case["images"] else None,
        video_grid_thw=np.array(case["videos"]) if case["videos"] else None,
        second_per_grid_ts=np.array(case["seconds"], np.float32) if case["seconds"] else None,
    )


@pytest.mark.parametrize("name", list(HAND))
def test_hand_worked_ids(name):
    case = HAND[name]
    ids = np.array([case["ids"]])
    expected = np.array([case["t"], case["h"], case["w"]])[:, None]
    reference = original_rope_ids(CONFIG, ids, case["images"], case["videos"], case["seconds"])
    np.testing.assert_array_equal(reference, expected)
    pos, deltas = get_rope_index(CONFIG, ids, **_args(case))
    np.testing.assert_array_equal(pos, expected)
    assert deltas.tolist() == [[case["next"] - len(case["ids"])]]
    mask = np.ones_like(ids)
    generated = [case["next"], case["next"] + 1, case["next"] + 2]
    np.testing.assert_array_equal(original_completion_ids(expected, mask, 3)[:, 0], [generated] * 3)
    np.testing.assert_array_equal(completion_position_ids(CONFIG, pos, mask, 3), [[generated]] * 3)


def test_hand_worked_rows_left_padded_in_one_batch():
    a, b = HAND["video_runs_past_text"], HAND["image_then_video"]
    ids, mask = left_pad([a["ids"], b["ids"]], CONFIG.pad_token_id)
    pos, _ = get_rope_index(
        CONFIG,
        ids,
        np.array(b["images"]),
        np.array(a["videos"] + b["videos"]),
        np.array(a["seconds"] + b["seconds"], np.float32),
        mask,
    )
    assert ids.shape == (2, 18) and mask[1, :2].tolist() == [0, 0]
    np.testing.assert_array_equal(pos[:, 0], [a["t"], a["h"], a["w"]])
    np.testing.assert_array_equal(pos[:, 1], [[0, 0] + b[k] for k in "thw"])  # padding has id 0
    np.testing.assert_array_equal(completion_position_ids(CONFIG, pos, mask, 2)[0], [[15, 16], [13, 14]])


def _long_batch(rng, seconds):
    """Left-padded rows of long videos (temporal ids far past the trailing text), images, several blocks."""
    grids = [
        [((16, 4, 4), "video")],
        [((1, 4, 6), "image"), ((10, 2, 4), "video"), ((1, 2, 2), "image")],
        [((8, 4, 2), "video"), ((12, 2, 2), "video")],
    ]
    rows, images, videos = [], [], []
    for r, items in enumerate(grids):
        rows.append(vision_prompt(CONFIG, rng, [g for g, _ in items], [k for _, k in items], text_len=2 + 3 * r))
        images += [g for g, k in items if k == "image"]
        videos += [g for g, k in items if k == "video"]
    ids, mask = left_pad(rows, CONFIG.pad_token_id)
    seconds = np.array(seconds[: len(videos)], np.float32)
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels(CONFIG, rng, images),
        image_grid_thw=np.array(images),
        pixel_values_videos=pixels(CONFIG, rng, videos),
        video_grid_thw=np.array(videos),
        second_per_grid_ts=seconds,
    )


SECONDS = {"1.0": [1.0] * 4, "0.5": [0.5] * 4, "1.5": [1.5] * 4, "2/3": [2 / 3] * 4, "mixed": [1.0, 0.5, 1.5, 2 / 3]}


def _reference(kwargs):
    return original_rope_ids(
        CONFIG,
        kwargs["input_ids"],
        kwargs["image_grid_thw"],
        kwargs["video_grid_thw"],
        kwargs["second_per_grid_ts"],
        kwargs["attention_mask"],
    )


@pytest.mark.parametrize("seconds", list(SECONDS))
def test_get_rope_index_equals_the_reference_on_long_videos(seconds):
    kwargs = _long_batch(np.random.default_rng(0), SECONDS[seconds])
    expected = _reference(kwargs)
    pos, deltas = get_rope_index(
        CONFIG,
        kwargs["input_ids"],
        kwargs["image_grid_thw"],
        kwargs["video_grid_thw"],
        kwargs["second_per_grid_ts"],
        kwargs["attention_mask"],
    )
    np.testing.assert_array_equal(pos, expected)
    # The videos reach past their trailing text: the temporal span exceeds the merged size.
    vid = kwargs["input_ids"][0] == VID
    assert expected[0, 0][vid].max() - expected[0, 0][vid].min() > 2
    mask = kwargs["attention_mask"]
    np.testing.assert_array_equal(
        completion_position_ids(CONFIG, pos, mask, 4), original_completion_ids(expected, mask, 4)
    )
    n_valid = mask.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(n_valid + deltas, original_completion_ids(expected, mask, 1)[0])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, our model loaded from its checkpoint) under the default (original) rule."""
    ref = hf_model(CONFIG)
    path = tmp_path_factory.mktemp("hf_original")
    ref.save_pretrained(path)
    ours = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    assert ours.config.text_after_vision == "max_plus_one"
    return ref, ours


@pytest.mark.parametrize("seconds", ["mixed", "2/3"])
def test_logits_equal_transformers_fed_the_reference_ids(pair, seconds):
    ref, ours = pair
    kwargs = _long_batch(np.random.default_rng(1), SECONDS[seconds])
    got = np.asarray(ours(**kwargs))
    expected = hf_logits(ref, CONFIG, **kwargs, position_ids=_reference(kwargs))
    valid = kwargs["attention_mask"].astype(bool)
    assert rel_err(got[valid], expected[valid]) <= TOL
    # transformers' own (transformers 5) ids give other logits on these prompts.
    assert rel_err(hf_logits(ref, CONFIG, **kwargs)[valid], expected[valid]) > 10 * TOL


def test_greedy_tokens_equal_transformers_fed_the_reference_ids(pair):
    """Greedy decoding: transformers' forward over prompt + tokens so far, completion ids max + 1 + k."""
    ref, ours = pair
    steps = 6
    kwargs = _long_batch(np.random.default_rng(2), SECONDS["mixed"])
    prompt_pos, mask = _reference(kwargs), kwargs["attention_mask"]
    ids = kwargs["input_ids"]
    vision = {k: torch.as_tensor(v) for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        for k in range(steps):
            pos = np.concatenate([prompt_pos, original_completion_ids(prompt_pos, mask, k)], axis=2)
            full_mask = np.pad(mask, ((0, 0), (0, k)), constant_values=1)
            logits = ref(
                input_ids=torch.as_tensor(ids),
                attention_mask=torch.as_tensor(full_mask),
                mm_token_type_ids=torch.as_tensor(token_types(CONFIG, ids)),
                position_ids=torch.as_tensor(pos),
                **vision,
            ).logits[:, -1]
            ids = np.concatenate([ids, logits.argmax(-1).numpy()[:, None]], axis=1)
    expected = ids[:, -steps:]
    inputs = jax.tree.map(jnp.asarray, build_model_inputs(CONFIG, **kwargs))
    got = np.asarray(generate(ours, inputs, max_new_tokens=steps, temperature=0.0, eos_token_id=()))
    np.testing.assert_array_equal(got, expected)
