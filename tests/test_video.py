"""read_video / read_image against the Qwen2.5-VL rules and a decode-everything reference."""

from __future__ import annotations

import fractions
import math

import av
import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from data_pipeline import video
from data_pipeline.video import VideoDecodeError, read_image, read_video, smart_resize


def _frame(i: int, height: int, width: int) -> np.ndarray:
    """Frame i: red level 20 + 2*(i % 100) over the whole frame (readable after compression), a moving bar."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = 20 + 2 * (i % 100)
    x = (i * 3) % max(1, width - 8)
    img[:, x : x + 8, 1] = 255
    return img


def write_clip(path, n, width, height, fps, codec="libx264", pix_fmt="yuv420p", options=None, faststart=False):
    """Write n frames of `_frame` with PyAV; `faststart` puts the mp4 index before the data."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.bit_rate = 4_000_000  # mpeg4's default is too lossy for the red-level check
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i, height, width), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def rule_indices(total, native_fps, fps=2.0, min_frames=4, max_frames=448, start=None, end=None):
    """DESIGN §4 written out independently of the module."""
    first, last = 0, total - 1
    if start is not None:
        first = math.ceil(min(max(start, 0), total / native_fps) * native_fps)
    if end is not None:
        last = min(math.floor(min(max(end, 0), total / native_fps) * native_fps), total - 1)
    count = last - first + 1
    n = min(max(count / native_fps * fps, min_frames), max_frames, count)
    n = int(n // 2 * 2)
    return np.round(np.linspace(first, last, n)).astype(int), n / count * native_fps


def reference(path, start=None, end=None, **kw):
    """Decode every frame, pick by the rules, resize with PIL bicubic."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        native_fps = float(stream.average_rate)
        frames = [f.to_image() for f in c.decode(stream)]
    idx, sample_fps = rule_indices(len(frames), native_fps, start=start, end=end, **kw)
    per_frame = max(min(768 * 784, 3584 * 784 / len(idx) * 2), int(16 * 784 * 1.05))
    h, w = hf_smart_resize(frames[0].height, frames[0].width, 28, 16 * 784, per_frame)
    out = np.stack([np.asarray(frames[i].resize((w, h), Image.Resampling.BICUBIC)) for i in idx])
    return out, idx, sample_fps, native_fps


def check_against_reference(path, **kw):
    frames, info = read_video(path, video_start=kw.get("start"), video_end=kw.get("end"))
    ref, idx, sample_fps, native_fps = reference(path, **kw)
    assert info["indices"] == idx.tolist()
    assert info["sample_fps"] == pytest.approx(sample_fps, rel=1e-12)
    assert info["native_fps"] == pytest.approx(native_fps)
    assert info["timestamps"] == pytest.approx((idx / native_fps).tolist())
    assert frames.dtype == np.uint8 and frames.shape == ref.shape
    assert info["resized_hw"] == ref.shape[1:3]
    np.testing.assert_array_equal(frames, ref)
    # Decoder-independent check of the frame choice: the red level encodes the frame number.
    red = frames[..., 0].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(red, 20 + 2 * (idx % 100), atol=4)
    return frames, info


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    ntsc = fractions.Fraction(30000, 1001)
    return {
        # 29.97 fps, sides not multiples of 28, B-frames, key frame every 12 frames (so seeks happen).
        "ntsc": write_clip(d / "ntsc.mp4", 190, 250, 142, ntsc, options={"g": "12"}),
        # portrait, odd sides (4:4:4), 25 fps, default GOP.
        "portrait": write_clip(d / "portrait.mp4", 150, 97, 151, 25, pix_fmt="yuv444p"),
        # long: 250 s at 4 fps -> capped at 448 frames; tiny frames are scaled up to min_pixels.
        "long": write_clip(d / "long.mp4", 1000, 56, 32, 4, options={"g": "50"}),
        # short: 5 frames -> 4 sampled (min_frames=4 but never more than the frame count).
        "short": write_clip(d / "short.mp4", 5, 64, 48, 8),
        "mpeg4": write_clip(d / "mpeg4.mp4", 60, 151, 97, 12, codec="mpeg4", options={"g": "10"}),
        # Matroska stores no frame count: counted by demuxing.
        "mkv": write_clip(d / "clip.mkv", 70, 128, 72, 10),
        # Already the planned size (112 x 112 = min_pixels): frames are used as decoded, no resize.
        "exact": write_clip(d / "exact.mp4", 40, 112, 112, 10),
    }


@pytest.mark.parametrize("name", ["ntsc", "portrait", "long", "short", "mpeg4", "mkv", "exact"])
def test_matches_reference(clips, name):
    frames, info = check_against_reference(clips[name])
    assert (frames.shape[0] % 2 == 0 and 4 <= frames.shape[0] <= 448) or info["total_frames"] < 4


def test_rule_values(clips):
    _, info = read_video(clips["long"])
    assert len(info["indices"]) == 448 and info["total_frames"] == 1000
    assert info["sample_fps"] == pytest.approx(448 / 1000 * 4)
    # 448 frames share 3584*28*28 pixels: per-frame cap max(12544, int(1.05 * 12544)) = 13171; these tiny
    # frames are scaled up to min_pixels instead (smart_resize's min branch does not re-check the cap).
    assert info["resized_hw"] == smart_resize(32, 56, 28, 16 * 784, 13171) == (112, 168)
    _, info = read_video(clips["short"])
    assert info["indices"] == [0, 1, 3, 4] and info["sample_fps"] == pytest.approx(4 / 5 * 8)
    _, info = read_video(clips["ntsc"])
    # 190 frames / 29.97 fps * 2 = 12.68 -> 12 frames
    assert len(info["indices"]) == 12 and info["duration"] == pytest.approx(190 * 1001 / 30000)


def test_rules_sweep():
    """sample_frame_indices / frame_max_pixels against the rules written out above, many sizes and rates."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        total = int(rng.integers(2, 20000))
        native = float(rng.choice([4, 10, 23.976, 24, 25, 29.97, 30, 50, 59.94, 60]))
        start = end = None
        if rng.random() < 0.3:
            start = float(rng.uniform(0, total / native / 2))
            end = float(rng.uniform(start + 2, total / native + 5))
        try:
            expected, expected_fps = rule_indices(total, native, start=start, end=end)
        except ValueError:
            continue
        if len(expected) < 2:
            with pytest.raises(ValueError):
                video.sample_frame_indices(total, native, video_start=start, video_end=end)
            continue
        indices, sample_fps = video.sample_frame_indices(total, native, video_start=start, video_end=end)
        np.testing.assert_array_equal(indices, expected)
        assert sample_fps == pytest.approx(expected_fps, rel=1e-12)
        assert len(indices) % 2 == 0 and len(indices) <= 448
        cap = video.frame_max_pixels(len(indices), 16 * 784, 768 * 784, 3584 * 784)
        assert cap == max(min(768 * 784, 3584 * 784 / len(indices) * 2), 13171)


@pytest.mark.parametrize("start,end", [(2.0, 5.5), (0.9, None), (None, 3.0), (6.05, 6.3)])
def test_window_matches_reference(clips, start, end):
    check_against_reference(clips["ntsc"], start=start, end=end)


def test_window_seek_other_codecs(clips):
    check_against_reference(clips["mpeg4"], start=2.5, end=4.0)
    check_against_reference(clips["long"], start=100.0)


def test_empty_window_raises(clips):
    with pytest.raises(VideoDecodeError, match="ntsc.mp4"):
        read_video(clips["ntsc"], video_start=5.0, video_end=5.0)


@pytest.mark.parametrize("regular", [True, False])
def test_fewer_frames_than_announced_remaps(clips, monkeypatch, regular):
    real = video._scan

    def announce_more(container, stream, native_fps):
        timeline = real(container, stream, native_fps)
        origin = timeline.origin_pts if regular else None
        return video._Timeline(timeline.total_frames + 3, origin)

    monkeypatch.setattr(video, "_scan", announce_more)
    check_against_reference(clips["ntsc"])


def test_irregular_timestamps_count_frames(clips, monkeypatch):
    real = video._scan
    monkeypatch.setattr(video, "_scan", lambda c, s, f: video._Timeline(real(c, s, f).total_frames, None))
    for name in ("ntsc", "mpeg4"):
        check_against_reference(clips[name])
    check_against_reference(clips["ntsc"], start=2.0, end=5.5)


def test_truncated_announcement_raises(clips, monkeypatch):
    monkeypatch.setattr(video, "_scan", lambda c, s, f: video._Timeline(1000, None))
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_video(clips["ntsc"])


def test_bad_files_raise(tmp_path, clips):
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        read_video(garbage)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError):
        read_video(empty)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clips["ntsc"].read_bytes()[: clips["ntsc"].stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        read_video(cut)
    # With the index at the front, a cut file still opens: its missing frames give it away.
    whole = write_clip(tmp_path / "whole.mp4", 80, 64, 48, 8, faststart=True)
    cut_front = tmp_path / "cut_front.mp4"
    cut_front.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(VideoDecodeError, match="cut_front.mp4.*truncated"):
        read_video(cut_front)
    one = write_clip(tmp_path / "one.mp4", 1, 64, 48, 8)
    with pytest.raises(VideoDecodeError, match="one.mp4"):
        read_video(one)
    assert issubclass(VideoDecodeError, ValueError)


def test_decode_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found") as info:
        read_video(tmp_path / "missing.mp4")
    assert info.value.kind == "missing_file"
    (tmp_path / "clips.mp4").mkdir()
    with pytest.raises(VideoDecodeError, match="is a directory, not a video file") as info:
        read_video(tmp_path / "clips.mp4")
    assert info.value.kind == "not_a_file"
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError) as info:
        read_video(tmp_path / "bad.mp4")
    assert info.value.kind == "decode_error"
    with pytest.raises(VideoDecodeError, match="is a directory, not an image file") as info:
        read_image(tmp_path / "clips.mp4")
    assert info.value.kind == "not_a_file"
    with pytest.raises(VideoDecodeError, match="file not found") as info:
        read_image(tmp_path / "nope.png")
    assert info.value.kind == "missing_file"


def test_smart_resize_equals_transformers():
    rng = np.random.default_rng(1)
    sizes = [(h, w) for h in (14, 28, 97, 142, 360, 1080) for w in (15, 56, 151, 640, 1920)]
    sizes += [tuple(int(v) for v in rng.integers(14, 3000, 2)) for _ in range(200)]
    for h, w in sizes:
        for lo, hi in [
            (16 * 784, 768 * 784),
            (3136, 12845056),
            (16 * 784, 13171),
            (16 * 784, 3584 * 784 / 30 * 2),
        ]:
            assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi)
    with pytest.raises(ValueError):
        smart_resize(10, 2500)


def test_read_image(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (97, 151, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    h, w = hf_smart_resize(97, 151, 28, video.IMAGE_MIN_PIXELS, video.IMAGE_MAX_PIXELS)
    expected = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(VideoDecodeError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(VideoDecodeError, match="bad.png"):
        read_image(tmp_path / "bad.png")
