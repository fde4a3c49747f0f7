"""Video and image decoding with Qwen2.5-VL's frame-count and resolution rules (DESIGN §4).

The rules are qwen-vl-utils' (`smart_nframes`, `calculate_video_frame_range`, `fetch_video`) with
TempR1's budget (2 FPS, 4..448 frames, 3584 visual tokens, min_pixels 16*28*28). Every rounding:

* frame range (only with `video_start` / `video_end`): times are clamped to [0, total/native_fps];
  start frame = ceil(start * native_fps), end frame = min(floor(end * native_fps), total - 1);
* nframes = floor2(min(max(total_in_range / native_fps * fps, ceil2(min_frames)), floor2(max_frames),
  total_in_range)) where ceil2/floor2 round to a multiple of FRAME_FACTOR = 2; fewer than 2 frames is
  an error (as in qwen-vl-utils);
* indices = round-half-to-even(linspace(start, end, nframes)) computed in float64 (torch uses float32;
  no tie can occur because nframes - 1 is odd, so the two agree except for float32 error on videos of
  ~10^5 frames);
* sample_fps = nframes / total_in_range * native_fps (a float, not rounded);
* per-frame max_pixels = max(min(max_pixels, total_pixels / nframes * 2), int(1.05 * min_pixels)),
  the int() truncation as in qwen-vl-utils (our `max_pixels` argument plays its VIDEO_MAX_PIXELS);
* `smart_resize` is transformers' Qwen2-VL function (round each side to a multiple of 28, then
  floor-scale into max_pixels or ceil-scale into min_pixels), so images equal the HF processor's;
  qwen-vl-utils' copy differs only for sides under 14 pixels.

Frames are converted to RGB by FFmpeg (rgb24, as `VideoFrame.to_image` does, with one scaler per
video) and resized with PIL bicubic on uint8 (the same filter as transformers' PIL image processor;
torchvision's antialiased uint8 bicubic, which qwen-vl-utils uses, is a port of PIL's and agrees to
within rounding).

Decoding does only the necessary work. A demux pass (no decoding) counts the frames and checks
that the timestamps are a regular grid (pts = pts of frame 0 + index / native_fps). If so, frames
are identified by pts: the demuxer seeks to the key frame before the first wanted frame, the
decoder skips non-reference frames that are not wanted (`skip_frame=NONREF`, which changes no
other frame) and only kept frames are converted to RGB and resized. Otherwise (or if a seek
overshoots) frames are identified by counting from the start, exactly as a decode-everything
reference would. FFmpeg decodes and converts to RGB with frame and slice threads, except videos of
at most `SMALL_VIDEO_PIXELS` per frame, which one thread decodes and converts. If fewer frames decode than the
file has packets, the indices are planned again with the decoded count (a file whose packets or decoded
frames fall short of 90% of the announced count is truncated). Timestamps are frame index / native_fps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from data_pipeline import paths

# --- constants (the paper's budget; the loader and configs read these) ---
FPS = 2.0
MIN_FRAMES = 4
MAX_FRAMES = 448
FRAME_FACTOR = 2
IMAGE_FACTOR = 28  # patch 14 x spatial merge 2
MIN_PIXELS = 16 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = 3584 * 28 * 28
# FFmpeg starts its decoder threads for every video opened; up to 448x256 frames they saved no wall
# time and cost 10-20 % more CPU (2026-12-03, 40-frame clips), and a loader of tiny clips started ~8
# threads per batch, and its RGB scaler two more per video (a 28x28 clip: 4.3 -> 2.4 ms with one
# thread). `read_video` decodes and converts frames of at most this many pixels with one thread.
SMALL_VIDEO_PIXELS = 256 * 256
# Images (TPRU sequences of several frames): the checkpoint's min_pixels and a per-image cap of 256
# visual tokens, so that a sequence of 4-8 images stays within the video token budget.
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 256 * 28 * 28
MAX_ASPECT_RATIO = 200
# A file holding (or decoding) less than this share of the frames its header announces (or of its
# packets) is truncated, not off by a rounding of the metadata.
_MIN_DECODED_SHARE = 0.9


class VideoDecodeError(ValueError):
    """A video (or image) that is missing, corrupt, truncated or unusable; the loader counts and skips these.

    `kind` names the failure for counting: "missing_file", "not_a_file" (e.g. a directory) or
    "decode_error" (anything the decoder rejects: corrupt, truncated, no video stream, too few frames).
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "decode_error"):
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"cannot read {self.path}: {reason}")


def _check_file(path: str | os.PathLike, what: str) -> None:
    """VideoDecodeError unless `path` (local or a URL) is an existing regular file."""
    p = paths.as_path(path)
    if p.is_dir():
        raise VideoDecodeError(path, f"is a directory, not {what}", kind="not_a_file")
    if not p.exists():
        raise VideoDecodeError(path, "file not found", kind="missing_file")
    if not p.is_file():
        raise VideoDecodeError(path, f"is not a regular file, not {what}", kind="not_a_file")


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: float = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's resize target (transformers' `smart_resize`): sides multiples of `factor`, area in
    [min_pixels, max_pixels] (the min branch may exceed max_pixels for tiny inputs), aspect kept.

    Raises ValueError for an aspect ratio above 200 or a non-positive side.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio must be at most {MAX_ASPECT_RATIO}, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_range(
    total_frames: int, native_fps: float, video_start: float | None = None, video_end: float | None = None
) -> tuple[int, int]:
    """Inclusive [first, last] frame of the `video_start`..`video_end` window (seconds; None = open)."""
    if video_start is None and video_end is None:
        return 0, total_frames - 1
    max_duration = total_frames / native_fps
    first = 0
    last = total_frames - 1
    if video_start is not None:
        first = math.ceil(max(0.0, min(video_start, max_duration)) * native_fps)
    if video_end is not None:
        last = min(math.floor(max(0.0, min(video_end, max_duration)) * native_fps), total_frames - 1)
    if first >= last:
        raise ValueError(f"empty frame range for video_start={video_start}, video_end={video_end}")
    return first, last


def smart_nframes(
    total_frames: int,
    native_fps: float,
    fps: float = FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> int:
    """Number of frames to sample: `fps` per second, clamped to [min_frames, max_frames] and the frame count, even."""
    lo = math.ceil(min_frames / FRAME_FACTOR) * FRAME_FACTOR
    hi = math.floor(max_frames / FRAME_FACTOR) * FRAME_FACTOR
    wanted = total_frames / native_fps * fps
    nframes = math.floor(min(max(wanted, lo), hi, total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= nframes <= total_frames:
        raise ValueError(f"cannot sample {nframes} frames from {total_frames} (need at least {FRAME_FACTOR})")
    return nframes


def sample_frame_indices(
    total_frames: int,
    native_fps: float,
    fps: float = FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
    video_start: float | None = None,
    video_end: float | None = None,
) -> tuple[np.ndarray, float]:
    """Frame indices (int64, ascending) and the resulting sample fps, by the rules in the module docstring."""
    first, last = frame_range(total_frames, native_fps, video_start, video_end)
    in_range = last - first + 1
    nframes = smart_nframes(in_range, native_fps, fps, min_frames, max_frames)
    indices = np.round(np.linspace(first, last, nframes)).astype(np.int64)
    return indices, nframes / in_range * native_fps


def frame_max_pixels(nframes: int, min_pixels: int, max_pixels: float, total_pixels: float) -> float:
    """Per-frame pixel cap so that `nframes` frames fit `total_pixels` (two frames share a token group)."""
    return max(min(max_pixels, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))


class FramePlan(NamedTuple):
    """What `read_video` decodes: frame indices, the resulting sample fps and the resized (H, W)."""

    indices: np.ndarray
    sample_fps: float
    size_hw: tuple[int, int]


def plan_frames(
    total_frames: int,
    native_fps: float,
    height: int,
    width: int,
    fps: float = FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
    min_pixels: int = MIN_PIXELS,
    max_pixels: float = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    video_start: float | None = None,
    video_end: float | None = None,
) -> FramePlan:
    """Indices, sample fps and output size for a video of `total_frames` frames of height x width."""
    indices, sample_fps = sample_frame_indices(
        total_frames, native_fps, fps, min_frames, max_frames, video_start, video_end
    )
    per_frame = frame_max_pixels(len(indices), min_pixels, max_pixels, total_pixels)
    return FramePlan(indices, sample_fps, smart_resize(height, width, IMAGE_FACTOR, min_pixels, per_frame))


class _FrameConverter:
    """Decoded frames -> resized RGB uint8 arrays, with one FFmpeg scaler for the whole video.

    `VideoFrame.to_image` builds a new scaler per frame, which costs ~1 ms even for a 28x28 frame (far
    more than decoding it); a reused `VideoReformatter` keeps its scaler while the frame format stays.
    The scaler runs `threads` threads (0: one per CPU, started for every video), as many as the decoder.
    """

    def __init__(self, size_hw: tuple[int, int], threads: int) -> None:
        self.size_hw = size_hw
        self.threads = threads
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = self.reformatter.reformat(frame, format="rgb24", threads=self.threads).to_ndarray()
        if rgb.shape[:2] == tuple(self.size_hw):  # already the planned size: resizing is the identity
            return np.ascontiguousarray(rgb)  # rows of the frame's buffer are padded (strided view)
        return resize_rgb(Image.fromarray(rgb), *self.size_hw)


def resize_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
    """Bicubic (PIL, antialiased) resize of an RGB image to uint8 [height, width, 3]."""
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers and qwen-vl-utils do)."""
    if "A" not in image.getbands() and image.info.get("transparency") is None:
        return image.convert("RGB")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def read_image(
    path: str | os.PathLike, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: float = IMAGE_MAX_PIXELS
) -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3] resized by `smart_resize` (bicubic); VideoDecodeError when unreadable.

    With the checkpoint's min/max pixels, `patchify_images` of the result equals transformers'
    image processor applied to the file.
    """
    _check_file(path, "an image file")
    try:
        with paths.media(path) as source, Image.open(source) as img:
            rgb = _to_rgb(img)
        h, w = smart_resize(rgb.height, rgb.width, IMAGE_FACTOR, min_pixels, max_pixels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    return resize_rgb(rgb, h, w)


def _native_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    raise ValueError("no frame rate in the video stream")


@dataclasses.dataclass(frozen=True)
class _Timeline:
    """The stream's frame count and, when its timestamps are a regular grid, the pts of frame 0."""

    total_frames: int
    origin_pts: int | None  # None: irregular or missing pts, frames are identified by counting

    def index(self, pts: int, time_base: float, native_fps: float) -> int:
        """The frame index of `pts` (`time_base`: the stream's, as a float)."""
        return round((pts - self.origin_pts) * time_base * native_fps)


def _scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream, native_fps: float) -> _Timeline:
    """Demux (no decoding) to count the frames and check that pts = frame 0 + index / native_fps.

    The count does not depend on container metadata (mkv and webm store none, and mp4 edit lists
    can make `stream.frames` disagree with what decodes).
    """
    pts = [p.pts for p in container.demux(stream) if p.size > 0 and not p.is_discard]
    container.seek(0)
    if not pts:
        raise ValueError("no video frames")
    if len(pts) < _MIN_DECODED_SHARE * stream.frames:
        raise ValueError(f"truncated: {len(pts)} of {stream.frames} frames present")
    if any(p is None for p in pts) or stream.time_base is None:
        return _Timeline(len(pts), None)
    origin = min(pts)
    index = np.round((np.asarray(pts, dtype=np.float64) - origin) * float(stream.time_base) * native_fps)
    regular = np.array_equal(np.sort(index), np.arange(len(pts)))
    return _Timeline(len(pts), origin if regular else None)


def _decode_by_pts(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    timeline: _Timeline,
    native_fps: float,
    plan: FramePlan,
) -> list[np.ndarray | None]:
    """Frames at `indices` found by pts: seek to the key frame before the first, and let the decoder
    skip non-reference frames that are not wanted (their absence changes no other frame)."""
    indices, convert = plan.indices, _FrameConverter(plan.size_hw, stream.codec_context.thread_count)
    wanted = {int(i): k for k, i in enumerate(indices)}
    out: list[np.ndarray | None] = [None] * len(indices)
    time_base = float(stream.time_base)  # read once: the attribute builds a new Fraction every time
    if indices[0] > 0:
        # Aim half a frame early so that rounding of the target pts cannot skip the wanted frame.
        target = timeline.origin_pts + (indices[0] - 0.5) / native_fps / time_base
        container.seek(max(0, int(target)), stream=stream, backward=True, any_frame=False)
    codec = stream.codec_context
    missing = len(indices)
    for packet in container.demux(stream):
        keep = packet.pts is None or timeline.index(packet.pts, time_base, native_fps) in wanted
        codec.skip_frame = "DEFAULT" if keep else "NONREF"
        for frame in packet.decode():
            slot = None if frame.pts is None else wanted.get(timeline.index(frame.pts, time_base, native_fps))
            if slot is not None and out[slot] is None:
                out[slot] = convert(frame)
                missing -= 1
        if not missing:
            break
    codec.skip_frame = "DEFAULT"
    return out


def _decode_by_count(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    plan: FramePlan,
) -> tuple[list[np.ndarray | None], int]:
    """Frames at the plan's indices found by counting decoded frames from the start; also the count seen."""
    indices, convert = plan.indices, _FrameConverter(plan.size_hw, stream.codec_context.thread_count)
    wanted = {int(i): k for k, i in enumerate(indices)}
    out: list[np.ndarray | None] = [None] * len(indices)
    last_wanted = int(indices[-1])
    seen = 0
    container.seek(0)
    for index, frame in enumerate(container.decode(stream)):
        seen = index + 1
        slot = wanted.get(index)
        if slot is not None:
            out[slot] = convert(frame)
        if index >= last_wanted:
            break
    return out, seen


def _decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    native_fps: float,
    plan_for: Callable[[int], FramePlan],
) -> tuple[list[np.ndarray], FramePlan, int]:
    """The planned frames, the plan and the frame count; at most two decoding passes."""
    timeline = _scan(container, stream, native_fps)
    total = timeline.total_frames
    plan = plan_for(total)
    if timeline.origin_pts is not None:
        frames = _decode_by_pts(container, stream, timeline, native_fps, plan)
        if all(f is not None for f in frames):
            return frames, plan, total
    # Irregular timestamps or a seek that overshot: identify frames by counting from the start.
    frames, seen = _decode_by_count(container, stream, plan)
    if all(f is not None for f in frames):
        return frames, plan, total
    # Fewer frames decode than there are packets: plan again with the decoded count.
    if seen < _MIN_DECODED_SHARE * total:
        raise ValueError(f"truncated: decoded {seen} of {total} frames")
    plan = plan_for(seen)
    frames, _ = _decode_by_count(container, stream, plan)
    if any(f is None for f in frames):
        raise ValueError("frame count changed between decoding passes")
    return frames, plan, seen


def read_video(
    path: str | os.PathLike,
    fps: float = FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
    min_pixels: int = MIN_PIXELS,
    max_pixels: float = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    video_start: float | None = None,
    video_end: float | None = None,
    num_threads: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the frames Qwen2.5-VL sees: uint8 [T, H, W, 3] already resized, and an info dict.

    info: `indices` (frame numbers, list of int), `timestamps` (index / native_fps, seconds),
    `sample_fps`, `native_fps`, `duration` (total_frames / native_fps), `total_frames`,
    `resized_hw` ((H, W)). `num_threads` is FFmpeg's decoder thread count (0 = automatic: one
    thread for frames of at most `SMALL_VIDEO_PIXELS`, FFmpeg's choice above).
    Raises VideoDecodeError (a ValueError) naming the path for a missing file, a directory, a corrupt
    or truncated file, a file without a video stream, or a window with too few frames.
    """
    _check_file(path, "a video file")
    try:
        with paths.media(path) as source, av.open(source) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            if num_threads == 0 and height * width <= SMALL_VIDEO_PIXELS:
                num_threads = 1
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = num_threads
            native_fps = _native_fps(stream)

            def plan_for(total: int) -> FramePlan:
                return plan_frames(
                    total,
                    native_fps,
                    height,
                    width,
                    fps,
                    min_frames,
                    max_frames,
                    min_pixels,
                    max_pixels,
                    total_pixels,
                    video_start,
                    video_end,
                )

            frames, plan, total = _decode(container, stream, native_fps, plan_for)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    info = {
        "indices": [int(i) for i in plan.indices],
        "timestamps": [float(i) / native_fps for i in plan.indices],
        "sample_fps": float(plan.sample_fps),
        "native_fps": native_fps,
        "duration": total / native_fps,
        "total_frames": total,
        "resized_hw": plan.size_hw,
    }
    return np.stack(frames), info
