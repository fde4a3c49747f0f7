"""Helpers for the Qwen2.5-VL parity tests: tiny transformers models and matching inputs.

transformers (CPU torch, float32, eager attention) is the oracle. Used by tests/test_model_*.py.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from models.qwen2_5_vl.rope_index import token_types

# Two images per prompt edge cases are covered by the rope-index tests; the model tests use the
# grids below: a non-square image with partial windows (merged 3x5 with 2x2 windows) and a video
# with 3 temporal groups and partial windows (merged 3x2).
IMAGE_GRID = (1, 6, 10)
VIDEO_GRID = (3, 6, 4)


def hf_model(config: Qwen2_5_VLConfig, seed: int = 0) -> transformers.Qwen2_5_VLForConditionalGeneration:
    """A float32 eager transformers model for `config` with random (non-trivial) weights."""
    torch.manual_seed(seed)
    hf_config = transformers.Qwen2_5_VLConfig(**config.to_hf_dict())
    hf_config._attn_implementation = "eager"
    model = transformers.Qwen2_5_VLForConditionalGeneration(hf_config).eval().float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


# transformers 5 numbers the text after an image/video by its own rule; a config compared with the
# oracle's own position ids must use it (tests of the default rule pass explicit `position_ids`).
ORACLE_RULE = "transformers5"


def config_for_tests(**overrides) -> Qwen2_5_VLConfig:
    """`tiny_config(**overrides)` with the oracle's position rule (unless overridden)."""
    return tiny_config(**{"text_after_vision": ORACLE_RULE, **overrides})


def vision_prompt(config: Qwen2_5_VLConfig, rng: np.random.Generator, grids, kinds, text_len: int = 5) -> list[int]:
    """Token ids: random text, then per vision item `<start> placeholders <end>` and more text."""
    ids: list[int] = list(rng.integers(0, 280, text_len))
    for grid, kind in zip(grids, kinds):
        n = int(np.prod(grid)) // config.vision.merge_unit
        token = config.image_token_id if kind == "image" else config.video_token_id
        ids += [config.vision_start_token_id] + [token] * n + [config.vision_end_token_id]
        ids += list(rng.integers(0, 280, text_len))
    return ids


def pixels(config: Qwen2_5_VLConfig, rng: np.random.Generator, grids) -> np.ndarray | None:
    if not grids:
        return None
    n = sum(int(np.prod(g)) for g in grids)
    return rng.standard_normal((n, config.vision.patch_dim)).astype(np.float32)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = r
        mask[i, length - len(r) :] = 1
    return ids, mask


def hf_logits(
    model,
    config: Qwen2_5_VLConfig,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    position_ids=None,
) -> np.ndarray:
    """Logits of the transformers model (mm_token_type_ids derived from the placeholder ids).

    `position_ids` [3, B, L], if given, replace the ids transformers would compute itself.
    """
    t = lambda x, dt=None: None if x is None else torch.as_tensor(np.asarray(x), dtype=dt)
    with torch.no_grad():
        out = model(
            input_ids=t(input_ids, torch.long),
            attention_mask=t(attention_mask, torch.long),
            pixel_values=t(pixel_values, torch.float32),
            image_grid_thw=t(image_grid_thw, torch.long),
            pixel_values_videos=t(pixel_values_videos, torch.float32),
            video_grid_thw=t(video_grid_thw, torch.long),
            second_per_grid_ts=t(second_per_grid_ts, torch.float32),
            mm_token_type_ids=t(token_types(config, np.asarray(input_ids)), torch.int32),
            position_ids=t(position_ids, torch.long),
        )
    return out.logits.float().numpy()


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
