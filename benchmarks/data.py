"""Data pipeline benchmarks (issue 3): `python benchmarks/data.py [--repeats N] [--workdir DIR]`.

Each benchmark is a function `bench_*(args) -> dict` listed in `BENCHMARKS`; `main` runs them in
order and prints one JSON line per benchmark. Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from PIL import Image

from data_pipeline import video


def _write_benchmark_clip(
    path: pathlib.Path, seconds: int = 60, width: int = 640, height: int = 360, fps: int = 30
) -> None:
    """A panning noise texture (so the encoder produces a realistic bitrate), libx264 default settings."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 4, (width + seconds * fps) // 4 + 1, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((texture.shape[1] * 4, height), Image.Resampling.BICUBIC))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            frame = np.ascontiguousarray(texture[:, i : i + width])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def _decode_every_frame(path: pathlib.Path, threaded: bool) -> np.ndarray:
    """Baseline: decode and convert every frame to RGB, then pick and resize by the same rules."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threaded:
            stream.thread_type = "AUTO"
        native_fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    indices, _ = video.sample_frame_indices(len(frames), native_fps)
    per_frame = video.frame_max_pixels(len(indices), video.MIN_PIXELS, video.VIDEO_MAX_PIXELS, video.VIDEO_TOTAL_PIXELS)
    h, w = video.smart_resize(*frames[0].shape[:2], video.IMAGE_FACTOR, video.MIN_PIXELS, per_frame)
    return np.stack([video.resize_rgb(Image.fromarray(frames[i]), h, w) for i in indices])


def _timed(
    fns: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Median wall and CPU (all threads) seconds of each function, runs interleaved so load drifts hit all alike."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return (
        {k: statistics.median(v) for k, v in wall.items()},
        {k: statistics.median(v) for k, v in cpu.items()},
        results,
    )


def bench_read_video(args: argparse.Namespace) -> dict[str, Any]:
    """read_video at 2 FPS on a 60 s 640x360 30 fps clip vs decoding every frame (goal: >= 2x)."""
    clip = pathlib.Path(args.workdir) / "bench_60s_640x360_30fps.mp4"
    if not clip.exists():
        _write_benchmark_clip(clip)
    wall, cpu, results = _timed(
        {
            "read_video": lambda: video.read_video(clip)[0],
            "decode_all": lambda: _decode_every_frame(clip, threaded=False),
            "decode_all_threaded": lambda: _decode_every_frame(clip, threaded=True),
        },
        args.repeats,
    )
    if not np.array_equal(results["read_video"], results["decode_all"]):
        raise AssertionError("read_video differs from the decode-every-frame baseline")
    return {
        "benchmark": "read_video",
        "clip": "60 s, 640x360, 30 fps, libx264 defaults",
        "frames": list(results["read_video"].shape),
        "wall_s": {k: round(v, 3) for k, v in wall.items()},
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "speedup_wall": round(wall["decode_all"] / wall["read_video"], 2),
        "speedup_wall_vs_threaded": round(wall["decode_all_threaded"] / wall["read_video"], 2),
        "speedup_cpu": round(cpu["decode_all"] / cpu["read_video"], 2),
        "repeats": args.repeats,
    }


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Loader throughput (samples/s, wall) with 0, 1 and 2 workers on synthetic clips of all seven tasks.

    One source per task (mixed in proportion to size), batch 4, infinite epochs. The first batch
    (worker start-up, warm-up) is timed apart; throughput is the median over `repeats` windows of
    8 batches.
    """
    from data_pipeline.loader import LoaderConfig, SourceConfig, make_loader
    from data_pipeline.synthetic import write_synthetic_dataset
    from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
    from models.qwen2_5_vl.config import tiny_config
    from tempr1_jax.tasks import get_task

    root = pathlib.Path(args.workdir) / "loader_synthetic"
    split = write_synthetic_dataset(root, seed=0, samples_per_task=4, split_names=("train",))["train"]
    by_task: dict[str, list[str]] = {}
    for line in split.read_text().splitlines():
        by_task.setdefault(json.loads(line)["task"], []).append(line)
    sources = []
    for task, lines in by_task.items():
        (root / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
        sources.append(SourceConfig(str(root / f"{task}.jsonl"), media_dir=str(root)))
    tokenizer = train_tiny_tokenizer(
        [json.loads(x)["query"] for v in by_task.values() for x in v], root / "tokenizer", vocab_size=1024
    )
    model_config = tiny_config(**special_token_ids(tokenizer))
    builders = {task: get_task(task).build_prompt for task in by_task}
    batch_size, window = 4, 8
    result: dict[str, Any] = {
        "benchmark": "loader",
        "tasks": sorted(by_task),
        "batch_size": batch_size,
        "batches_per_window": window,
        "repeats": args.repeats,
    }
    for workers in (0, 1, 2):
        config = LoaderConfig(
            sources=tuple(sources),
            batch_size=batch_size,
            token_buckets=(512, 1024, 2048),
            patch_buckets=(1024, 2048, 4096),
            num_workers=workers,
            shard_index=0,
            shard_count=1,
        )
        it = make_loader(config, tokenizer, model_config, builders)
        try:
            start = time.perf_counter()
            next(it)
            first = time.perf_counter() - start
            windows = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for _ in range(window):
                    next(it)
                windows.append(time.perf_counter() - start)
        finally:
            it.close()
        result[f"workers_{workers}"] = {
            "first_batch_s": round(first, 2),
            "samples_per_s": round(window * batch_size / statistics.median(windows), 1),
        }
    return result


# Benchmarks run by `main`, in order. Add further data benchmarks here.
BENCHMARKS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [bench_read_video, bench_loader]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--workdir", default=None, help="where to keep generated clips (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)
        for bench in BENCHMARKS:
            print(json.dumps(bench(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
