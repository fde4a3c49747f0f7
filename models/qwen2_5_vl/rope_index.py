"""3-D M-RoPE position ids: host-side (numpy) `get_rope_index` and the rule for generated tokens.

`get_rope_index` is a port of Qwen2.5-VL's, with either rule for the text after an image or video
(`config.text_after_vision`):

* text tokens get the same id on the three axes and advance by one;
* a vision block starting at `p` (first id after the preceding text) gets temporal ids
  `p + int(g * tokens_per_second * second_per_grid_t)` for temporal group `g` (images: interval 1),
  row ids `p + r`, column ids `p + c` over the merged grid;
* the text after a vision block continues at `max(all ids so far) + 1` ("max_plus_one", the default:
  the original Qwen2.5-VL code, transformers 4.x and vLLM, which the published weights were trained
  with), or at `p + max(h, w) // spatial_merge_size` ("transformers5", transformers 5.x). The two
  differ for every video whose temporal span `(t - 1) * interval` reaches `max(h, w) // merge`;
* padding (attention_mask == 0) is skipped and gets id 0;
* `rope_deltas = max(position) + 1 - n_valid_tokens` (as in transformers).

Images and videos are consumed in order over the whole batch (row-major), as in transformers.
The temporal interval is computed in float32 (the dtype of `second_per_grid_ts` in transformers).

Generated tokens (`completion_start`, `completion_position_ids`, jittable) continue a prompt as the
reference implementation of each rule does, the same on the three axes for prompts that end with
text: "max_plus_one" at `max(prompt ids) + 1 + k` (`n_valid + k + rope_delta`, transformers 4.x and
vLLM decoding), "transformers5" at `last prompt id + 1 + k` per axis (transformers 5 `generate`).
Either equals what `get_rope_index` gives the tokens when prompt and completion are numbered as one
sequence (SFT), for prompts that end with text. Sampling, training log-probs, SFT and evaluation
all use this one rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .config import Qwen2_5_VLConfig

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(config: Qwen2_5_VLConfig, input_ids: np.ndarray) -> np.ndarray:
    """Modality of every token: 0 text, 1 image placeholder, 2 video placeholder (int32, same shape)."""
    ids = np.asarray(input_ids)
    out = np.zeros(ids.shape, np.int32)
    out[ids == config.image_token_id] = IMAGE
    out[ids == config.video_token_id] = VIDEO
    return out


def vision_block_positions(config: Qwen2_5_VLConfig, start: int, grid_thw, interval: float) -> np.ndarray:
    """Positions [3, t*h'*w'] of one image/video block starting at `start` (h', w' = merged grid)."""
    t, h, w = (int(x) for x in grid_thw)
    m = config.vision.spatial_merge_size
    h, w = h // m, w // m
    temporal = (np.arange(t, dtype=np.float32) * np.float32(interval)).astype(np.int64)
    tt, hh, ww = np.meshgrid(temporal, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1) + start


def get_rope_index(
    config: Qwen2_5_VLConfig,
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute M-RoPE position ids for a batch.

    Args:
      config: model config (token ids, spatial_merge_size, tokens_per_second).
      input_ids: [B, L] token ids with image/video placeholders already expanded.
      image_grid_thw: [n_images, 3] patch grids (before merging), in batch order.
      video_grid_thw: [n_videos, 3] patch grids, in batch order.
      second_per_grid_ts: [n_videos] seconds per temporal group (default 1.0 each).
      attention_mask: [B, L] 1 for real tokens, 0 for padding (left or right).

    Returns:
      (position_ids [3, B, L] int32, rope_deltas [B, 1] int32).

    Raises:
      ValueError: when the vision placeholders do not match the grids, or second_per_grid_ts has
        the wrong length.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {ids.shape}")
    b, length = ids.shape
    mask = np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    grids = {IMAGE: _grids(image_grid_thw, "image_grid_thw"), VIDEO: _grids(video_grid_thw, "video_grid_thw")}
    n_videos = len(grids[VIDEO])
    if second_per_grid_ts is None:
        seconds = np.ones(n_videos, np.float32)
    else:
        seconds = np.asarray(second_per_grid_ts, np.float32).reshape(-1)
        if len(seconds) != n_videos:
            raise ValueError(f"second_per_grid_ts has {len(seconds)} entries but video_grid_thw has {n_videos} videos")
    tokens_per_second = np.float32(config.vision.tokens_per_second)
    merge_unit = config.vision.merge_unit
    types = token_types(config, ids)
    next_grid = {IMAGE: 0, VIDEO: 0}
    position_ids = np.zeros((3, b, length), np.int64)
    deltas = np.zeros((b, 1), np.int64)
    for row in range(b):
        row_types = types[row][mask[row]]
        pieces, pos, i = [], 0, 0
        while i < len(row_types):
            kind = row_types[i]
            j = i
            while j < len(row_types) and row_types[j] == kind:
                j += 1
            if kind == TEXT:
                pieces.append(np.broadcast_to(np.arange(pos, pos + j - i), (3, j - i)))
                pos += j - i
                i = j
                continue
            # A run of placeholders may hold several adjacent images/videos: consume grids until covered.
            while i < j:
                name = "image" if kind == IMAGE else "video"
                k = next_grid[kind]
                if k >= len(grids[kind]):
                    raise ValueError(f"input_ids hold more {name} tokens than {name}_grid_thw describes")
                grid = grids[kind][k]
                n_tokens = int(np.prod(grid)) // merge_unit
                if n_tokens > j - i:
                    raise ValueError(
                        f"{name} {k} with grid {grid.tolist()} needs {n_tokens} {name} tokens, "
                        f"row {row} has a run of {j - i}"
                    )
                next_grid[kind] += 1
                interval = tokens_per_second * seconds[k] if kind == VIDEO else 1.0
                block = vision_block_positions(config, pos, grid, interval)
                pieces.append(block)
                if config.text_after_vision == "max_plus_one":
                    pos = int(block.max()) + 1
                else:
                    pos += max(int(grid[1]), int(grid[2])) // config.vision.spatial_merge_size
                i += n_tokens
        row_pos = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        position_ids[:, row, mask[row]] = row_pos
        deltas[row, 0] = (row_pos.max() + 1 - row_pos.shape[1]) if row_pos.size else 0
    for kind, name in ((IMAGE, "image"), (VIDEO, "video")):
        if next_grid[kind] != len(grids[kind]):
            raise ValueError(
                f"{name}_grid_thw describes {len(grids[kind])} {name}s but input_ids hold tokens for {next_grid[kind]}"
            )
    return position_ids.astype(np.int32), deltas.astype(np.int32)


def _grids(grid_thw: np.ndarray | None, name: str) -> np.ndarray:
    if grid_thw is None:
        return np.zeros((0, 3), np.int64)
    g = np.asarray(grid_thw, np.int64)
    if g.ndim != 2 or g.shape[1] != 3:
        raise ValueError(f"{name} must be [n, 3], got shape {g.shape}")
    return g


def completion_start(config: Qwen2_5_VLConfig, position_ids, attention_mask) -> jax.Array:
    """M-RoPE ids [3, N] of the first token generated after each prompt row (see the module docstring).

    `position_ids` [3, N, L] and `attention_mask` [N, L] are the prompts' (either padding side); jittable.
    """
    pos = jnp.asarray(position_ids)
    mask = jnp.asarray(attention_mask).astype(bool)
    if config.text_after_vision == "max_plus_one":
        top = jnp.max(jnp.where(mask[None], pos, 0), axis=(0, 2))
        return jnp.broadcast_to(top + 1, pos.shape[:2])
    last = pos.shape[2] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.take_along_axis(pos, last[None, :, None], axis=2)[..., 0] + 1


def completion_position_ids(config: Qwen2_5_VLConfig, position_ids, attention_mask, steps: int) -> jax.Array:
    """M-RoPE ids [3, N, steps] of the tokens generated after each prompt row; jittable."""
    start = completion_start(config, position_ids, attention_mask)
    return start[:, :, None] + jnp.arange(steps, dtype=start.dtype)
