"""Host-side ModelInputs: vision metadata against transformers' helpers, collation, refusals."""

import itertools

import numpy as np
import pytest
import torch
from model_oracle import IMAGE_GRID, VIDEO_GRID, pixels, vision_prompt
from transformers import vision_utils

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.inputs import block_count, build_model_inputs, collate_model_inputs, layout_size, window_len

CONFIG = tiny_config()
GRIDS = [IMAGE_GRID, VIDEO_GRID, (2, 4, 8)]  # one sample: an image then two videos


def _sample(rng, grids=GRIDS, kinds=("image", "video", "video"), **kwargs):
    ids = np.array([vision_prompt(CONFIG, rng, grids, kinds)])
    images = [g for g, k in zip(grids, kinds) if k == "image"]
    videos = [g for g, k in zip(grids, kinds) if k == "video"]
    return build_model_inputs(
        CONFIG,
        ids,
        pixel_values=pixels(CONFIG, rng, images),
        image_grid_thw=np.array(images) if images else None,
        pixel_values_videos=pixels(CONFIG, rng, videos),
        video_grid_thw=np.array(videos) if videos else None,
        second_per_grid_ts=[1.0] * len(videos) if videos else None,
        **kwargs,
    )


def _segments_from_cu(cu, n):
    ids = np.zeros(n, np.int64)
    for i, (a, b) in enumerate(itertools.pairwise(cu)):
        ids[a:b] = i + 1
    return ids


def _segments_from_blocks(blocks, slot, n):
    """Segment ids (1 + block row) of the first n permuted patches; checks `slot` inverts `blocks`."""
    width = blocks.shape[1]
    rows, offsets = np.nonzero(blocks >= 0)
    ids = np.zeros(n, np.int64)
    ids[blocks[rows, offsets]] = rows + 1
    np.testing.assert_array_equal(slot[blocks[rows, offsets]], rows * width + offsets)
    assert (slot[n:] == -1).all() and sorted(blocks[rows, offsets]) == list(range(n))
    return ids


def test_vision_metadata_matches_transformers():
    inputs = _sample(np.random.default_rng(0))
    grid = torch.tensor(GRIDS)
    n = int(grid.prod(-1).sum())
    v = CONFIG.vision
    pos = vision_utils.get_vision_position_ids(grid, v.spatial_merge_size).numpy()
    np.testing.assert_array_equal(inputs.vision_pos_ids[0, :n], pos)
    window_units, cu_window = vision_utils.get_vision_window_index(
        grid, v.spatial_merge_size, v.window_size, v.patch_size
    )
    unit = v.merge_unit
    window_patches = (window_units.numpy()[:, None] * unit + np.arange(unit)).reshape(-1)
    np.testing.assert_array_equal(inputs.window_index[0, :n], window_patches)
    np.testing.assert_array_equal(inputs.window_index[0][inputs.window_inverse[0]], np.arange(inputs.num_patches))
    window_segment_ids = _segments_from_blocks(inputs.window_blocks[0], inputs.window_slot[0], n)
    np.testing.assert_array_equal(window_segment_ids, _segments_from_cu(cu_window.numpy(), n))
    cu_full = vision_utils.get_vision_cu_seqlens(grid).numpy()
    full_segment_ids = _segments_from_blocks(inputs.frame_blocks[0], inputs.frame_slot[0], n)
    np.testing.assert_array_equal(full_segment_ids, _segments_from_cu(cu_full, n))
    # windows are partial: some window holds fewer than window_merged**2 units
    sizes = np.bincount(window_segment_ids)[1:] // unit
    assert sizes.min() < v.window_merged**2 == sizes.max()
    # one block per window / temporal group, padded to the static sizes
    assert inputs.window_blocks.shape == (1, layout_size(len(cu_window) - 1), window_len(CONFIG))
    frame_len = layout_size(int(np.diff(cu_full).max()), 8)
    assert inputs.frame_blocks.shape == (1, layout_size(len(cu_full) - 1), frame_len)


def test_layout_size_rounds_up_with_bounded_waste():
    sizes = [layout_size(n, 4) for n in range(0, 200)]
    assert sizes[:6] == [1, 1, 2, 3, 4, 5] and layout_size(9) == 10 and layout_size(17) == 20
    assert all(n <= s < max(n, 1) * 1.25 + 1 for n, s in enumerate(sizes))
    assert all(layout_size(s) == s for s in sizes) and len(set(sizes[65:129])) == 4
    assert layout_size(280, 8) == 288 and len({layout_size(n, 8) for n in range(257, 513)}) == 8


def test_block_count_is_a_power_of_two_within_the_patches():
    # 10-32 windows of one merged token (4 patches) each in 128 patches: 16 or 32 blocks, two layouts.
    assert {block_count(n, 128, 4) for n in range(10, 33)} == {16, 32}
    # capped at the blocks the patches can fill; never below the blocks needed
    assert block_count(20, 96, 4) == 24 and block_count(24, 96, 4) == 24 and block_count(3, 1024, 4) == 4
    assert all(n <= block_count(n, 4 * n, 4) < 2 * n for n in range(1, 300))


def test_token_index_points_at_images_then_videos():
    inputs = _sample(np.random.default_rng(0))
    ids, index = inputs.input_ids[0], inputs.vision_token_index[0]
    n_image = int(np.prod(IMAGE_GRID)) // CONFIG.vision.merge_unit
    assert index[ids == CONFIG.image_token_id].tolist() == list(range(n_image))
    n_video = int((ids == CONFIG.video_token_id).sum())
    assert index[ids == CONFIG.video_token_id].tolist() == list(range(n_image, n_image + n_video))
    assert (index[(ids != CONFIG.image_token_id) & (ids != CONFIG.video_token_id)] == -1).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_pads_tokens_and_patches(side):
    rng = np.random.default_rng(1)
    a = _sample(rng)
    b = _sample(rng, grids=[(1, 2, 2)], kinds=("image",))
    text = build_model_inputs(CONFIG, np.arange(7)[None])
    batch = collate_model_inputs(
        [a, b, text],
        pad_len_to=a.seq_len + 3,
        pad_patches_to=a.num_patches + 8,
        padding_side=side,
        pad_token_id=CONFIG.pad_token_id,
    )
    assert batch.input_ids.shape == (3, a.seq_len + 3) and batch.pixel_values.shape[:2] == (3, a.num_patches + 8)
    for row, s in enumerate([a, b, text]):
        keep = batch.attention_mask[row].astype(bool)
        assert keep.sum() == s.seq_len
        assert keep[-1] if side == "left" else keep[0]
        np.testing.assert_array_equal(batch.input_ids[row, keep], s.input_ids[0])
        np.testing.assert_array_equal(batch.position_ids[:, row, keep], s.position_ids[:, 0])
        np.testing.assert_array_equal(batch.vision_token_index[row, keep], s.vision_token_index[0])
        assert (batch.input_ids[row, ~keep] == CONFIG.pad_token_id).all()
        n = s.num_patches
        np.testing.assert_array_equal(batch.pixel_values[row, :n], s.pixel_values[0])
        assert batch.patch_valid[row].sum() == s.patch_valid.sum()
        valid = s.patch_valid[0].sum()
        for name in ("window", "frame"):
            blocks, slot = getattr(batch, f"{name}_blocks")[row], getattr(batch, f"{name}_slot")[row]
            np.testing.assert_array_equal(
                _segments_from_blocks(blocks, slot, valid),
                _segments_from_blocks(getattr(s, f"{name}_blocks")[0], getattr(s, f"{name}_slot")[0], valid),
            )
        np.testing.assert_array_equal(np.sort(batch.window_index[row]), np.arange(a.num_patches + 8))
    with pytest.raises(ValueError, match="pad_len_to"):
        collate_model_inputs([a], pad_len_to=3, pad_patches_to=a.num_patches)


def test_collate_pads_block_layouts_to_a_common_size():
    """Batches of several processes agree on their layout sizes as on tokens and patches."""
    a = _sample(np.random.default_rng(2))
    sizes = tuple(n + 3 for n in a.layout_sizes)
    padded = collate_model_inputs([a], a.seq_len, a.num_patches + 4, pad_layout_to=sizes)
    assert padded.padded_shape == (1, a.seq_len, a.num_patches + 4, *sizes)
    valid = a.patch_valid[0].sum()
    for name in ("window", "frame"):
        np.testing.assert_array_equal(
            _segments_from_blocks(getattr(padded, f"{name}_blocks")[0], getattr(padded, f"{name}_slot")[0], valid),
            _segments_from_blocks(getattr(a, f"{name}_blocks")[0], getattr(a, f"{name}_slot")[0], valid),
        )
    with pytest.raises(ValueError, match="pad_layout_to"):
        collate_model_inputs([a], a.seq_len, a.num_patches, pad_layout_to=(1, 1, 1))


def test_refusals():
    rng = np.random.default_rng(0)
    ids = np.array([vision_prompt(CONFIG, rng, [IMAGE_GRID], ["image"])])
    px = pixels(CONFIG, rng, [IMAGE_GRID])
    grid = np.array([IMAGE_GRID])
    with pytest.raises(ValueError, match=r"pixel_values must be \[n_patches, 1176\]"):
        build_model_inputs(CONFIG, ids, pixel_values=px[:, :-1], image_grid_thw=grid)
    with pytest.raises(ValueError, match="pixel_values has 59 rows"):
        build_model_inputs(CONFIG, ids, pixel_values=px[:-1], image_grid_thw=grid)
    with pytest.raises(ValueError, match="needs 15 image tokens"):
        build_model_inputs(CONFIG, ids[:, :-8], pixel_values=px, image_grid_thw=grid)
    with pytest.raises(ValueError, match="must be given together"):
        build_model_inputs(CONFIG, ids, pixel_values=px)
    with pytest.raises(ValueError, match="second_per_grid_ts has 2 entries"):
        vids = np.array([vision_prompt(CONFIG, rng, [VIDEO_GRID], ["video"])])
        build_model_inputs(
            CONFIG,
            vids,
            pixel_values_videos=pixels(CONFIG, rng, [VIDEO_GRID]),
            video_grid_thw=np.array([VIDEO_GRID]),
            second_per_grid_ts=[1.0, 2.0],
        )
    with pytest.raises(ValueError, match="smaller than"):
        build_model_inputs(CONFIG, ids, pixel_values=px, image_grid_thw=grid, pad_patches_to=8)
    with pytest.raises(ValueError, match="multiple of merge_unit"):
        build_model_inputs(CONFIG, ids, pixel_values=px, image_grid_thw=grid, pad_patches_to=62)
