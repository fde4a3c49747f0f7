"""An independent, token-by-token statement of the original Qwen2.5-VL M-RoPE rule (the test oracle).

The rule the published checkpoints were trained with (Qwen's code, transformers 4.x, vLLM), stated as
simply as possible: every text token, and the first id of every image/video block, is
`max(all ids so far) + 1` (0 for the first token). Inside a block starting at `s`, the merged token
of temporal group `g`, row `r`, column `c` has ids `(s + tg, s + r, s + c)` with
`tg = int(g * second_per_grid_t * tokens_per_second)` for a video (float32, in transformers 4's
order: `(g * second_per_grid_t) * tokens_per_second`) and `tg = 0` for an image. A generated token
continues at `max(prompt ids) + 1 + k`. Padding is skipped (id 0).

Written without looking at `models/qwen2_5_vl/rope_index.py`'s structure: no run grouping, no meshgrid.
"""

from __future__ import annotations

import numpy as np


def original_rope_ids(
    config, input_ids, image_grids=(), video_grids=(), seconds=None, attention_mask=None
) -> np.ndarray:
    """Position ids [3, B, L] (int64) of a batch under the original rule; grids are consumed in batch order."""
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    images, videos = iter([tuple(g) for g in image_grids]), iter([tuple(g) for g in video_grids])
    secs = iter([1.0] * len(list(video_grids)) if seconds is None else list(seconds))
    merge, tps = config.vision.spatial_merge_size, np.float32(config.vision.tokens_per_second)
    out = np.zeros((3,) + ids.shape, np.int64)
    for b in range(ids.shape[0]):
        cols = [j for j in range(ids.shape[1]) if mask[b, j]]
        triples: list[tuple[int, int, int]] = []
        i = 0
        while i < len(cols):
            token = int(ids[b, cols[i]])
            start = max(max(t) for t in triples) + 1 if triples else 0
            if token not in (config.image_token_id, config.video_token_id):
                triples.append((start, start, start))
                i += 1
                continue
            is_video = token == config.video_token_id
            t, h, w = next(videos) if is_video else next(images)
            second = np.float32(next(secs)) if is_video else None
            for g in range(t):
                tg = int(np.float32(np.float32(g) * second) * tps) if is_video else 0
                for r in range(h // merge):
                    for c in range(w // merge):
                        triples.append((start + tg, start + r, start + c))
            i += t * (h // merge) * (w // merge)
        for k, j in enumerate(cols):
            out[:, b, j] = triples[k]
    return out


def original_completion_ids(prompt_ids: np.ndarray, attention_mask: np.ndarray, steps: int) -> np.ndarray:
    """Ids [3, B, steps] of generated tokens: max(valid prompt ids) + 1 + k on the three axes."""
    top = np.array([prompt_ids[:, b][:, np.asarray(attention_mask[b], bool)].max() for b in range(prompt_ids.shape[1])])
    return np.broadcast_to((top[:, None] + 1 + np.arange(steps))[None], (3, len(top), steps)).copy()
