"""Host-side (numpy) preparation of every data-dependent model input.

The jitted model only sees `ModelInputs`: arrays of static shape, batched per sample. Everything that
depends on the number and size of the images/videos (M-RoPE ids, vision rotary ids, the window
permutation, attention segments, where each merged vision feature goes) is computed here.

Layout of one sample's vision patches (`P` rows, padded): the sample's images in order, then its
videos in order, each in Qwen2.5-VL's patch order (the rows of HF `pixel_values`), then padding.
Merged vision features (`P // merge_unit`) follow the same order, so the image tokens of a sample
take merged features 0, 1, ... and its video tokens continue after the last image feature.

Window attention: `window_index` is the patch permutation that makes each window contiguous (HF's
`window_index` over merge units, expanded to the `merge_unit` patches of each unit, per sample); the
tower gathers patches with it, runs the blocks, merges groups of `merge_unit` consecutive patches,
and gathers the merged features back to patch order with `window_inverse[:, ::merge_unit] // merge_unit`.
Attention blocks, in the permuted order: window layers attend within each window (HF
`cu_window_seqlens`), full-attention layers within each temporal group of an image/video (HF
`cu_seqlens`); both are contiguous runs of the permuted order. Each kind is given as a block
layout of static shape: `*_blocks [B, R, S]` holds the permuted patch index of every slot of R
blocks of S slots (one window or temporal group per block, padded with -1), `*_slot [B, P]` the
flat slot (block * S + offset) of every permuted patch (-1 for padding patches, which attend to
nothing). S is `window_merged**2 * merge_unit` for windows; R and the temporal-group S depend on
the data and are rounded up (`layout_size`: R to one of 4 sizes per octave, the temporal-group S to
one of 8). Batches of the data loader round R further, to a power of two at most the P / merge_unit
blocks that P patches can fill (`batch_layout_sizes`): every new shape is a compile (minutes for a
large model on TPU), and R follows the clip lengths within a patch bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.struct
import numpy as np

from .config import Qwen2_5_VLConfig
from .rope_index import IMAGE, VIDEO, get_rope_index, token_types


@flax.struct.dataclass
class ModelInputs:
    """Static-shape model inputs; a pytree of arrays (numpy on the host, jax arrays once on device).

    Shapes: B samples, L tokens, P patches per sample (multiple of merge_unit),
    D = in_channels * temporal_patch_size * patch_size**2.
    """

    input_ids: np.ndarray  # [B, L] int32
    attention_mask: np.ndarray  # [B, L] int32, 1 = real token
    position_ids: np.ndarray  # [3, B, L] int32 M-RoPE ids (0 on padding)
    rope_deltas: np.ndarray  # [B, 1] int32
    pixel_values: np.ndarray  # [B, P, D] float32, images then videos, HF patch order
    vision_pos_ids: np.ndarray  # [B, P, 2] int32 (row, col) rotary ids, HF patch order
    window_index: np.ndarray  # [B, P] int32: permuted patch i = original patch window_index[i]
    window_inverse: np.ndarray  # [B, P] int32: argsort(window_index)
    window_blocks: np.ndarray  # [B, NW, WL] int32 permuted patch index per window slot, -1 = empty
    window_slot: np.ndarray  # [B, P] int32 flat slot in window_blocks per permuted patch, -1 = padding
    frame_blocks: np.ndarray  # [B, NF, FL] int32 permuted patch index per temporal-group slot, -1 = empty
    frame_slot: np.ndarray  # [B, P] int32 flat slot in frame_blocks per permuted patch, -1 = padding
    patch_valid: np.ndarray  # [B, P] bool, HF patch order
    vision_token_index: np.ndarray  # [B, L] int32 merged-feature index per token, -1 = text

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def num_patches(self) -> int:
        return self.pixel_values.shape[1]

    @property
    def layout_sizes(self) -> tuple[int, int, int]:
        """(window blocks, temporal-group blocks, temporal-group block length): the data-dependent
        sizes of the block layouts (the window block length is fixed by the config)."""
        return self.window_blocks.shape[1], *self.frame_blocks.shape[1:]

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """(rows, tokens, patches, *layout_sizes): what batches padded to one shape (the rows of one
        global array on several processes) must agree on; see `collate_model_inputs`."""
        return (self.batch_size, self.seq_len, self.num_patches, *self.layout_sizes)


def build_model_inputs(
    config: Qwen2_5_VLConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    pixel_values: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
    pixel_values_videos: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    pad_patches_to: int | None = None,
) -> ModelInputs:
    """Build `ModelInputs` from HF-style arguments (images and videos concatenated over the batch).

    Tokens keep their given length and padding. Patches are padded to `pad_patches_to` (default: the
    largest sample's patch count). Raises ValueError on a mismatch between vision tokens and grids, a
    wrong `pixel_values` width or row count, or a `second_per_grid_ts` of the wrong length.
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    ids = ids.astype(np.int32)
    b, length = ids.shape
    if attention_mask is None:
        mask = np.ones((b, length), np.int32)
    else:
        mask = np.asarray(attention_mask).reshape(b, length).astype(np.int32)
    vis = config.vision
    image_grids, images = _split_patches(config, pixel_values, image_grid_thw, "pixel_values", "image_grid_thw")
    video_grids, videos = _split_patches(
        config, pixel_values_videos, video_grid_thw, "pixel_values_videos", "video_grid_thw"
    )
    # Validates tokens against grids and second_per_grid_ts against the videos.
    position_ids, rope_deltas = get_rope_index(
        config,
        ids,
        image_grid_thw=image_grids,
        video_grid_thw=video_grids,
        second_per_grid_ts=second_per_grid_ts,
        attention_mask=mask,
    )
    types = token_types(config, ids) * mask.astype(bool)

    samples = []
    next_grid = {IMAGE: 0, VIDEO: 0}
    for row in range(b):
        grids, chunks = [], []
        token_index = np.full(length, -1, np.int32)
        n_merged = 0
        for kind, all_grids, all_chunks in ((IMAGE, image_grids, images), (VIDEO, video_grids, videos)):
            where = np.flatnonzero(types[row] == kind)
            token_index[where] = n_merged + np.arange(len(where), dtype=np.int32)
            n_merged += len(where)
            need = len(where)
            while need > 0:
                k = next_grid[kind]
                grids.append(all_grids[k])
                chunks.append(all_chunks[k])
                need -= int(np.prod(all_grids[k])) // vis.merge_unit
                next_grid[kind] += 1
        samples.append((grids, chunks, token_index))

    needed = max((sum(int(np.prod(g)) for g in s[0]) for s in samples), default=0)
    n_patches = needed if pad_patches_to is None else int(pad_patches_to)
    if n_patches < needed:
        raise ValueError(f"pad_patches_to={pad_patches_to} is smaller than the {needed} patches of a sample")
    if n_patches % vis.merge_unit:
        raise ValueError(f"pad_patches_to={n_patches} must be a multiple of merge_unit={vis.merge_unit}")
    per_sample = [_vision_arrays(config, grids, chunks, n_patches) for grids, chunks, _ in samples]
    runs = {name: [s.pop(name) for s in per_sample] for name in ("window", "frame")}
    stacked = {k: np.stack([s[k] for s in per_sample]) for k in per_sample[0]}
    return ModelInputs(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        rope_deltas=rope_deltas,
        vision_token_index=np.stack([s[2] for s in samples]),
        **stacked,
        **_block_layouts(config, runs["window"], runs["frame"], n_patches),
    )


def layout_size(n: int, steps_per_octave: int = 4) -> int:
    """`n` rounded up to one of `steps_per_octave` (a power of two) evenly spaced sizes per octave
    (at least 1): the static size of a data-dependent block count or length (waste < 1 / steps)."""
    if n <= steps_per_octave:
        return max(n, 1)
    step = 1 << (n.bit_length() - steps_per_octave.bit_length())
    return -(-n // step) * step


def block_count(n: int, n_patches: int, merge_unit: int) -> int:
    """Static number of blocks for `n` windows or temporal groups in `n_patches` (padded) patches: `n`
    rounded up to a power of two, capped at the n_patches // merge_unit blocks the patches can fill
    (each window or group holds at least one merged token), so a patch bucket takes few layouts."""
    return max(n, min(layout_size(n, 1), n_patches // merge_unit))


def batch_layout_sizes(
    config: Qwen2_5_VLConfig, samples: Sequence[ModelInputs], n_patches: int
) -> tuple[int, int, int]:
    """`ModelInputs.layout_sizes` for `samples` collated into `n_patches` patches: the samples'
    largest, block counts rounded up by `block_count` (pass as `collate_model_inputs`'s
    `pad_layout_to`, so that batches of one patch bucket take few shapes)."""
    windows, groups, group_len = (max(s.layout_sizes[i] for s in samples) for i in range(3))
    unit = config.vision.merge_unit
    return block_count(windows, n_patches, unit), block_count(groups, n_patches, unit), group_len


def window_len(config: Qwen2_5_VLConfig) -> int:
    """Slots of a window block: the patches of a full window."""
    return config.vision.window_merged**2 * config.vision.merge_unit


def block_layout_shapes(config: Qwen2_5_VLConfig, n_patches: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the block-layout fields for planning without data: one image of
    `n_patches` patches in full windows (one temporal group: the costliest full-attention layer)."""
    width = window_len(config)
    return {
        "window_blocks": (block_count(-(-n_patches // width), n_patches, config.vision.merge_unit), width),
        "window_slot": (n_patches,),
        "frame_blocks": (1, layout_size(n_patches, 8)),
        "frame_slot": (n_patches,),
    }


def collate_model_inputs(
    samples: Sequence[ModelInputs],
    pad_len_to: int,
    pad_patches_to: int,
    *,
    padding_side: Literal["left", "right"] = "left",
    pad_token_id: int = 0,
    pad_layout_to: Sequence[int] | None = None,
) -> ModelInputs:
    """Stack single-sample (or any-batch) `ModelInputs` into one batch of static shape.

    Tokens are padded to `pad_len_to` on `padding_side` (left by default: generation appends new
    tokens on the right of every prompt; training may use right padding). Padding tokens get
    `pad_token_id`, attention 0, position 0 and vision index -1. Patches are padded at the end
    to `pad_patches_to` (a multiple of merge_unit). Block layouts are padded to `pad_layout_to`
    (`ModelInputs.layout_sizes`; default: the largest of the samples') with empty blocks and slots.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    samples = [_np(s) for s in samples]
    needed = tuple(max(s.layout_sizes[i] for s in samples) for i in range(3))
    sizes = needed if pad_layout_to is None else tuple(int(n) for n in pad_layout_to)
    if len(sizes) != 3 or any(a < b for a, b in zip(sizes, needed)):
        raise ValueError(f"pad_layout_to={pad_layout_to} does not fit the samples' block layouts {needed}")
    layout = {"window_blocks": (sizes[0], samples[0].window_blocks.shape[2]), "frame_blocks": sizes[1:]}
    parts = []
    for s in samples:
        length, patches = s.seq_len, s.num_patches
        if length > pad_len_to:
            raise ValueError(f"sample of {length} tokens does not fit pad_len_to={pad_len_to}")
        if patches > pad_patches_to:
            raise ValueError(f"sample of {patches} patches does not fit pad_patches_to={pad_patches_to}")
        extra = pad_len_to - length
        tok_pad = (extra, 0) if padding_side == "left" else (0, extra)
        parts.append(
            dict(
                input_ids=np.pad(s.input_ids, ((0, 0), tok_pad), constant_values=pad_token_id),
                attention_mask=np.pad(s.attention_mask, ((0, 0), tok_pad)),
                position_ids=np.pad(s.position_ids, ((0, 0), (0, 0), tok_pad)),
                rope_deltas=s.rope_deltas,
                vision_token_index=np.pad(s.vision_token_index, ((0, 0), tok_pad), constant_values=-1),
                **_pad_patch_metadata(s, pad_patches_to, layout),
            )
        )
    # The pixels dominate the batch's bytes: write each sample's once into the padded batch array.
    first = samples[0].pixel_values
    pixel_values = np.zeros((sum(s.batch_size for s in samples), pad_patches_to, first.shape[2]), first.dtype)
    row = 0
    for s in samples:
        pixel_values[row : row + s.batch_size, : s.num_patches] = s.pixel_values
        row += s.batch_size
    return ModelInputs(
        pixel_values=pixel_values,
        **{f: np.concatenate([p[f] for p in parts], axis=1 if f == "position_ids" else 0) for f in parts[0]},
    )


# ----------------------------------------------------------------------------------------------


def _np(s: ModelInputs) -> ModelInputs:
    return ModelInputs(**{f: np.asarray(getattr(s, f)) for f in ModelInputs.__dataclass_fields__})


def _split_patches(config: Qwen2_5_VLConfig, pixels, grid_thw, pixels_name: str, grid_name: str):
    """Check one modality's patches against its grids; return (grids [n, 3], per-item patch arrays)."""
    vis = config.vision
    if pixels is None and grid_thw is None:
        return np.zeros((0, 3), np.int64), []
    if pixels is None or grid_thw is None:
        raise ValueError(f"{pixels_name} and {grid_name} must be given together")
    grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    px = np.asarray(pixels, np.float32)
    if px.ndim != 2 or px.shape[1] != vis.patch_dim:
        raise ValueError(f"{pixels_name} must be [n_patches, {vis.patch_dim}] (C*T*patch*patch), got shape {px.shape}")
    if np.any(grids <= 0) or np.any(grids[:, 1:] % vis.spatial_merge_size):
        raise ValueError(
            f"{grid_name} {grids.tolist()}: sizes must be positive and h, w multiples of "
            f"spatial_merge_size={vis.spatial_merge_size}"
        )
    counts = grids.prod(axis=1)
    if px.shape[0] != counts.sum():
        raise ValueError(f"{pixels_name} has {px.shape[0]} rows but {grid_name} describes {counts.sum()} patches")
    return grids, np.split(px, np.cumsum(counts)[:-1])


def _grid_pos_ids(grid, m: int) -> np.ndarray:
    """(row, col) rotary ids [t*h*w, 2] of one grid in patch order (merge blocks contiguous)."""
    t, h, w = (int(x) for x in grid)
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([block(hh), block(ww)], axis=-1), (t, 1))


def _grid_windows(grid, m: int, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Window order of one grid's merge units: (unit permutation, window number of each permuted unit)."""
    t, h, w = (int(x) for x in grid)
    h, w = h // m, w // m
    units = np.arange(t * h * w).reshape(t, h, w)
    order, window_of = [], []
    n = 0
    for f in range(t):
        for r0 in range(0, h, win):
            for c0 in range(0, w, win):
                block = units[f, r0 : r0 + win, c0 : c0 + win].reshape(-1)
                order.append(block)
                window_of.append(np.full(len(block), n))
                n += 1
    return np.concatenate(order), np.concatenate(window_of)


def _vision_arrays(config: Qwen2_5_VLConfig, grids, chunks, n_patches: int) -> dict[str, np.ndarray]:
    """One sample's vision arrays, padded to n_patches, and the lengths of its windows ("window") and
    temporal groups ("frame") in the permuted order (runs from patch 0 on)."""
    vis = config.vision
    m, unit = vis.spatial_merge_size, vis.merge_unit
    pixels = np.zeros((n_patches, vis.patch_dim), np.float32)
    pos = np.zeros((n_patches, 2), np.int32)
    window_index = np.arange(n_patches, dtype=np.int32)
    valid = np.zeros(n_patches, bool)
    window_runs, frame_runs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    start = 0  # in patches
    for grid, chunk in zip(grids, chunks):
        t, h, w = (int(x) for x in grid)
        n = t * h * w
        pixels[start : start + n] = chunk
        pos[start : start + n] = _grid_pos_ids(grid, m)
        order, window_of = _grid_windows(grid, m, vis.window_merged)
        window_index[start : start + n] = start + (order[:, None] * unit + np.arange(unit)).reshape(-1)
        # Units never cross a window or a frame, and windows stay inside their frame, so the
        # permuted layout keeps both windows and frames contiguous.
        window_runs.append(np.bincount(window_of) * unit)
        frame_runs.append(np.full(t, h * w))
        valid[start : start + n] = True
        start += n
    return dict(
        pixel_values=pixels,
        vision_pos_ids=pos,
        window_index=window_index,
        window_inverse=np.argsort(window_index).astype(np.int32),
        patch_valid=valid,
        window=np.concatenate(window_runs),
        frame=np.concatenate(frame_runs),
    )


def _block_layouts(
    config: Qwen2_5_VLConfig, window_runs: Sequence[np.ndarray], frame_runs: Sequence[np.ndarray], n_patches: int
) -> dict[str, np.ndarray]:
    """`window_blocks`, `window_slot`, `frame_blocks`, `frame_slot` of a batch from each sample's run
    lengths (windows / temporal groups, contiguous from permuted patch 0; see the module docstring)."""
    frame_len = layout_size(max((int(r.max()) for r in frame_runs if len(r)), default=1), 8)
    out = {}
    for name, runs, width in (("window", window_runs, window_len(config)), ("frame", frame_runs, frame_len)):
        rows = layout_size(max(len(r) for r in runs))
        pairs = [_blocks(r, rows, width, n_patches) for r in runs]
        out[f"{name}_blocks"] = np.stack([p[0] for p in pairs])
        out[f"{name}_slot"] = np.stack([p[1] for p in pairs])
    return out


def _blocks(lengths: np.ndarray, rows: int, width: int, n_patches: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample's ([rows, width] patch index per slot, [n_patches] slot per patch) for runs of `lengths`."""
    starts = np.cumsum(lengths) - lengths
    offsets = np.arange(width)
    blocks = np.full((rows, width), -1, np.int32)
    blocks[: len(lengths)] = np.where(offsets < lengths[:, None], starts[:, None] + offsets, -1)
    run = np.repeat(np.arange(len(lengths)), lengths)
    slot = np.full(n_patches, -1, np.int32)
    slot[: len(run)] = run * width + np.arange(len(run)) - starts[run]
    return blocks, slot


def _pad_patch_metadata(s: ModelInputs, n_patches: int, layout: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Pad a batch's per-patch metadata (at the end) to n_patches and its block layouts to `layout`
    (blocks name -> (rows, width)); padded patches map to themselves and to no slot."""
    extra = n_patches - s.num_patches
    tail = np.broadcast_to(np.arange(s.num_patches, n_patches, dtype=np.int32), (s.batch_size, extra))
    out = dict(
        vision_pos_ids=np.pad(s.vision_pos_ids, ((0, 0), (0, extra), (0, 0))),
        window_index=np.concatenate([s.window_index, tail], axis=1),
        window_inverse=np.concatenate([s.window_inverse, tail], axis=1),
        patch_valid=np.pad(s.patch_valid, ((0, 0), (0, extra))),
    )
    for name in ("window", "frame"):
        blocks, slot = getattr(s, f"{name}_blocks"), getattr(s, f"{name}_slot")
        (rows, width), old = layout[f"{name}_blocks"], blocks.shape[2]
        out[f"{name}_blocks"] = np.pad(
            blocks, ((0, 0), (0, rows - blocks.shape[1]), (0, width - old)), constant_values=-1
        )
        moved = np.where(slot >= 0, slot // old * width + slot % old, -1).astype(np.int32)
        out[f"{name}_slot"] = np.pad(moved, ((0, 0), (0, extra)), constant_values=-1)
    return out
