"""Qwen2.5-VL vision inputs: normalisation and patches in the model's order (DESIGN §4).

Layout (the same for images and videos): a clip of T frames, H x W pixels (multiples of
patch_size * merge_size), becomes `grid_t * grid_h * grid_w` rows of `3 * temporal_patch_size *
patch_size**2` values, rows ordered (t, h-block, w-block, h-in-block, w-in-block) so that the 2x2
merge groups are consecutive, each row ordered (channel, frame-in-pair, y, x). An image is one
temporal group made of the image twice. Values are rescaled by 1/255 in float64, cast to float32
and normalised in float32 exactly as transformers' PIL image processor does, so the results are
bit-identical to `Qwen2VLImageProcessorPil`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class PreprocessorValues:
    """The checkpoint's preprocessor settings; the defaults equal Qwen2.5-VL's preprocessor_config.json."""

    image_mean: tuple[float, float, float] = _CLIP_MEAN
    image_std: tuple[float, float, float] = _CLIP_STD
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        """Side multiple that resized images must have (patch_size * merge_size)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of `pixel_values`: 3 * temporal_patch_size * patch_size**2."""
        return 3 * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PreprocessorValues:
        """Read a Hugging Face preprocessor_config.json (min/max_pixels at the top level or in `size`)."""
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        size = cfg.get("size") or {}
        values = {
            "image_mean": cfg.get("image_mean"),
            "image_std": cfg.get("image_std"),
            "patch_size": cfg.get("patch_size"),
            "temporal_patch_size": cfg.get("temporal_patch_size"),
            "merge_size": cfg.get("merge_size"),
            "min_pixels": cfg.get("min_pixels", size.get("shortest_edge")),
            "max_pixels": cfg.get("max_pixels", size.get("longest_edge")),
            "rescale_factor": cfg.get("rescale_factor"),
        }
        values = {k: v for k, v in values.items() if v is not None}
        for key in ("image_mean", "image_std"):
            if key in values:
                if len(values[key]) != 3:
                    raise ValueError(f"{path}: {key} must have 3 values, got {values[key]}")
                values[key] = tuple(float(v) for v in values[key])
        for key in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
            if key in values and (not isinstance(values[key], int) or values[key] <= 0):
                raise ValueError(f"{path}: {key} must be a positive integer, got {values[key]!r}")
        return cls(**values)


def normalize(pixels: np.ndarray, values: PreprocessorValues) -> np.ndarray:
    """uint8 [..., 3] -> float32 (x / 255 - mean) / std, with transformers' dtype steps."""
    scaled = (pixels.astype(np.float64) * values.rescale_factor).astype(np.float32)
    mean = np.asarray(values.image_mean, dtype=np.float32)
    std = np.asarray(values.image_std, dtype=np.float32)
    return (scaled - mean) / std


def _check_frames(frames: np.ndarray, values: PreprocessorValues, what: str) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % values.factor or width % values.factor or height == 0 or width == 0:
        raise ValueError(
            f"{what} size {height}x{width} is not a positive multiple of {values.factor}; "
            "resize with smart_resize first"
        )


def _patchify(frames: np.ndarray, values: PreprocessorValues) -> tuple[np.ndarray, list[int]]:
    """Normalised patches of uint8 [T, H, W, 3] with T a multiple of temporal_patch_size, and [t, h, w]."""
    p, m, tp = values.patch_size, values.merge_size, values.temporal_patch_size
    t, height, width, channels = frames.shape
    gt, gh, gw = t // tp, height // p, width // p
    x = normalize(frames, values).reshape(gt, tp, gh // m, m, p, gw // m, m, p, channels)
    # -> (t, h-block, w-block, h-in-block, w-in-block, channel, frame-in-pair, y, x)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return x.reshape(gt * gh * gw, channels * tp * p * p), [gt, gh, gw]


def patchify_images(
    images: Sequence[np.ndarray], values: PreprocessorValues = PreprocessorValues()
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [H, W, 3], already resized to multiples of patch*merge) -> (pixel_values, image_grid_thw).

    pixel_values: float32 [sum(h*w), 3*2*14*14]; image_grid_thw: int64 [n, 3] with t = 1.
    """
    if not images:
        raise ValueError("patchify_images needs at least one image")
    rows, grids = [], []
    for image in images:
        image = np.asarray(image)
        _check_frames(image[None], values, "image")
        tiled = np.broadcast_to(image[None], (values.temporal_patch_size, *image.shape))
        patches, grid = _patchify(tiled, values)
        rows.append(patches)
        grids.append(grid)
    return np.concatenate(rows, axis=0), np.asarray(grids, dtype=np.int64)


def patchify_video(
    frames: np.ndarray, sample_fps: float, values: PreprocessorValues = PreprocessorValues()
) -> tuple[np.ndarray, np.ndarray, float]:
    """Frames uint8 [T, H, W, 3] (already resized) -> (pixel_values_videos, video_grid_thw [1, 3], second_per_grid_ts).

    Consecutive frame pairs form the temporal patches; an odd frame count is padded by repeating the
    last frame. second_per_grid_ts = temporal_patch_size / sample_fps.
    """
    frames = np.asarray(frames)
    _check_frames(frames, values, "video frames")
    if not sample_fps > 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    pad = -frames.shape[0] % values.temporal_patch_size
    if pad:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    patches, grid = _patchify(frames, values)
    return patches, np.asarray([grid], dtype=np.int64), values.temporal_patch_size / sample_fps


def merged_token_count(grid_thw: np.ndarray, values: PreprocessorValues = PreprocessorValues()) -> np.ndarray:
    """Visual tokens the LLM sees per image/video: t * h * w / merge_size**2 (int64 [n])."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    return grid.prod(axis=1) // values.merge_size**2
