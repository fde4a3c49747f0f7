"""Host-side M-RoPE ids (`get_rope_index`) against transformers' own function."""

import numpy as np
import pytest
import torch
import transformers
from model_oracle import config_for_tests, left_pad, vision_prompt

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.rope_index import get_rope_index, token_types

CONFIG = config_for_tests()  # compared with transformers 5's own get_rope_index


@pytest.fixture(scope="module")
def hf_model():
    return transformers.Qwen2_5_VLModel(transformers.Qwen2_5_VLConfig(**CONFIG.to_hf_dict()))


def _hf(hf_model, ids, mask, image_grids, video_grids, seconds):
    t = lambda x, dt=torch.long: None if x is None else torch.as_tensor(np.asarray(x), dtype=dt)
    pos, deltas = hf_model.get_rope_index(
        t(ids),
        mm_token_type_ids=t(token_types(CONFIG, ids), torch.int32),
        image_grid_thw=t(image_grids),
        video_grid_thw=t(video_grids),
        second_per_grid_ts=t(seconds, torch.float32),
        attention_mask=t(mask),
    )
    return pos.numpy(), deltas.numpy()


CASES = {
    # rows of (grid, kind); grids are patch grids (t, h, w)
    "image_and_video_rows": [[((1, 6, 10), "image")], [((3, 6, 4), "video")]],
    "two_images_one_row": [[((1, 4, 4), "image"), ((1, 2, 6), "image")], [((1, 8, 2), "image")]],
    "video_then_image": [[((4, 4, 4), "video"), ((1, 6, 6), "image")], [((2, 2, 2), "video")]],
    "long_video": [[((12, 4, 6), "video")], [((5, 10, 2), "video")]],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seconds", [None, (0.5, 1.25, 3.0)])
def test_matches_transformers_with_left_padding(hf_model, case, seconds):
    rng = np.random.default_rng(0)
    rows, image_grids, video_grids = [], [], []
    for r, items in enumerate(CASES[case]):
        grids = [g for g, _ in items]
        rows.append(vision_prompt(CONFIG, rng, grids, [k for _, k in items], text_len=3 + 4 * r))
        image_grids += [g for g, k in items if k == "image"]
        video_grids += [g for g, k in items if k == "video"]
    ids, mask = left_pad(rows, CONFIG.pad_token_id)
    seconds = None if seconds is None or not video_grids else seconds[: len(video_grids)]
    images = np.array(image_grids) if image_grids else None
    videos = np.array(video_grids) if video_grids else None
    ours_pos, ours_deltas = get_rope_index(CONFIG, ids, images, videos, seconds, mask)
    ref_pos, ref_deltas = _hf(hf_model, ids, mask, images, videos, seconds)
    np.testing.assert_array_equal(ours_pos, ref_pos)
    np.testing.assert_array_equal(ours_deltas, ref_deltas)
    assert ours_pos.dtype == np.int32 and ours_pos.shape == (3,) + ids.shape and ours_deltas.shape == (2, 1)


def test_text_only_and_fractional_interval():
    ids = np.arange(10)[None] % 7
    pos, deltas = get_rope_index(CONFIG, ids)
    np.testing.assert_array_equal(pos, np.broadcast_to(np.arange(10), (3, 1, 10)))
    assert deltas.tolist() == [[0]]
    # 0.3 s per group * 2 tokens/s = 0.6 -> temporal ids int(0.6 * g) = 0, 0, 1, 1, 2 (+ start 1)
    rng = np.random.default_rng(0)
    row = vision_prompt(CONFIG, rng, [(5, 2, 2)], ["video"], text_len=1)
    pos, _ = get_rope_index(CONFIG, np.array([row]), video_grid_thw=np.array([[5, 2, 2]]), second_per_grid_ts=[0.3])
    assert pos[0, 0, 2:7].tolist() == [2, 2, 3, 3, 4]


def test_max_plus_one_rule():
    config = tiny_config(text_after_vision="max_plus_one")
    rng = np.random.default_rng(0)
    row = vision_prompt(config, rng, [(4, 2, 2)], ["video"], text_len=2)
    pos, deltas = get_rope_index(
        config, np.array([row]), video_grid_thw=np.array([[4, 2, 2]]), second_per_grid_ts=[2.0]
    )
    # video at start 3: temporal 3, 7, 11, 15; the following text continues at 16
    assert pos[0, 0, 3:7].tolist() == [3, 7, 11, 15] and pos[0, 0, 7] == 16
    assert deltas[0, 0] == pos.max() + 1 - len(row)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(image_grid_thw=[[1, 4, 4], [1, 4, 4]]), "image_grid_thw describes 2 images"),
        (dict(image_grid_thw=[[1, 4, 6]]), "needs 6 image tokens"),
        (dict(image_grid_thw=None), "more image tokens"),
        (dict(image_grid_thw=[[1, 4, 4]], video_grid_thw=[[2, 2, 2]]), "video_grid_thw describes 1 video"),
        (dict(image_grid_thw=[[1, 4, 4]], second_per_grid_ts=[1.0]), "second_per_grid_ts has 1 entries"),
    ],
)
def test_mismatches_raise(kwargs, message):
    row = vision_prompt(CONFIG, np.random.default_rng(0), [(1, 4, 4)], ["image"])
    with pytest.raises(ValueError, match=message):
        get_rope_index(CONFIG, np.array([row]), **kwargs)
