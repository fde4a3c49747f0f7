"""Qwen2.5-VL patches: images equal transformers' Qwen2VLImageProcessorPil; videos the same layout on frame pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from data_pipeline.video import read_image, resize_rgb, smart_resize
from data_pipeline.vision_inputs import (
    PreprocessorValues,
    merged_token_count,
    patchify_images,
    patchify_video,
)


@pytest.fixture(scope="module")
def values():
    return PreprocessorValues()


@pytest.fixture(scope="module")
def processor(values):
    return Qwen2VLImageProcessorPil(
        min_pixels=values.min_pixels,
        max_pixels=values.max_pixels,
        image_mean=list(values.image_mean),
        image_std=list(values.image_std),
        patch_size=values.patch_size,
        temporal_patch_size=values.temporal_patch_size,
        merge_size=values.merge_size,
    )


def _rand(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_default_is_the_published_config(hf_configs_dir):
    assert PreprocessorValues.from_json(hf_configs_dir / "qwen2_5_vl.preprocessor_config.json") == PreprocessorValues()


def test_preprocessor_values(values, tmp_path):
    assert values.patch_dim == 1176 and values.factor == 28
    # transformers 5 writes the pixel range as `size`.
    (tmp_path / "p.json").write_text(
        json.dumps({"size": {"shortest_edge": 100, "longest_edge": 5000}, "merge_size": 2})
    )
    loaded = PreprocessorValues.from_json(tmp_path / "p.json")
    assert (loaded.min_pixels, loaded.max_pixels, loaded.image_mean) == (
        100,
        5000,
        PreprocessorValues().image_mean,
    )
    (tmp_path / "bad.json").write_text(json.dumps({"patch_size": 0}))
    with pytest.raises(ValueError, match="patch_size"):
        PreprocessorValues.from_json(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"image_mean": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="image_mean"):
        PreprocessorValues.from_json(tmp_path / "bad2.json")


def test_images_equal_transformers(values, processor):
    images = [_rand(shape, i) for i, shape in enumerate([(56, 84, 3), (112, 28, 3), (140, 252, 3), (28, 28, 3)])]
    ours, grid = patchify_images(images, values)
    ref = processor(images, do_resize=False, return_tensors="np")
    assert ours.dtype == np.float32 and ours.shape == (
        sum(h * w // 196 for h, w, _ in (i.shape for i in images)),
        1176,
    )
    np.testing.assert_array_equal(ours, ref["pixel_values"])
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])


def test_resized_images_equal_transformers(values, processor):
    """The processor's own resize (do_resize=True) equals smart_resize + PIL bicubic done beforehand."""
    raw = [_rand(shape, 10 + i) for i, shape in enumerate([(97, 131, 3), (300, 41, 3), (33, 500, 3)])]
    resized = [
        resize_rgb(
            Image.fromarray(r),
            *smart_resize(r.shape[0], r.shape[1], 28, values.min_pixels, values.max_pixels),
        )
        for r in raw
    ]
    ours, grid = patchify_images(resized, values)
    ref = processor(raw, return_tensors="np")
    np.testing.assert_array_equal(ours, ref["pixel_values"])
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_image_files_equal_transformers(values, processor, tmp_path, mode):
    """read_image + patchify_images == the processor on the opened file (incl. transparency on white)."""
    rgba = _rand((61, 90, 4), 3)
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, rgba[..., 3])
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    if mode == "P":
        image.info["transparency"] = 0
    image.save(tmp_path / "x.png")
    ours, grid = patchify_images([read_image(tmp_path / "x.png", values.min_pixels, values.max_pixels)], values)
    with Image.open(tmp_path / "x.png") as opened:
        ref = processor([opened], return_tensors="np")
    np.testing.assert_array_equal(ours, ref["pixel_values"])
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])


@pytest.mark.parametrize("n_frames", [4, 5])
def test_video_is_image_layout_on_frame_pairs(values, processor, n_frames):
    frames = _rand((n_frames, 84, 112, 3), 7)
    ours, grid, seconds = patchify_video(frames, sample_fps=1.75, values=values)
    assert seconds == pytest.approx(2 / 1.75)
    t = (n_frames + 1) // 2
    np.testing.assert_array_equal(grid, [[t, 6, 8]])
    padded = np.concatenate([frames, frames[-1:]]) if n_frames % 2 else frames
    per_group = 6 * 8
    assert ours.shape == (t * per_group, 1176)
    for g in range(t):
        # The image processor repeats an image over the temporal axis; a video pair takes one slot from each frame.
        first = processor([padded[2 * g]], do_resize=False, return_tensors="np")["pixel_values"].reshape(-1, 3, 2, 196)
        second = processor([padded[2 * g + 1]], do_resize=False, return_tensors="np")["pixel_values"].reshape(
            -1, 3, 2, 196
        )
        expected = np.stack([first[:, :, 0], second[:, :, 1]], axis=2).reshape(per_group, 1176)
        np.testing.assert_array_equal(ours[g * per_group : (g + 1) * per_group], expected)


def test_bad_inputs(values):
    with pytest.raises(ValueError, match="multiple of 28"):
        patchify_images([_rand((50, 56, 3), 0)], values)
    with pytest.raises(ValueError, match="uint8"):
        patchify_video(np.zeros((2, 28, 28, 3), np.float32), 2.0, values)
    with pytest.raises(ValueError, match="sample_fps"):
        patchify_video(_rand((2, 28, 28, 3), 0), 0.0, values)
    with pytest.raises(ValueError, match="at least one"):
        patchify_images([], values)


def test_merged_token_count(values):
    np.testing.assert_array_equal(merged_token_count([[1, 6, 10], [224, 8, 8]], values), [15, 224 * 16])
