"""The Grain loader on real PyAV clips and PNG images written here, with a tiny tokenizer."""

import itertools
import json
import logging
import pathlib
import threading

import av
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from data_pipeline import video
from data_pipeline.arrayrecord_io import write_split
from data_pipeline.loader import (
    SKIP_KINDS,
    LoaderConfig,
    LoaderStopped,
    SourceConfig,
    UnusableSourceError,
    make_eval_loader,
    make_loader,
)
from data_pipeline.samples import Sample
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from data_pipeline.vision_inputs import merged_token_count, patchify_video
from models.qwen2_5_vl.config import tiny_config

TOKEN_BUCKETS = (64, 128, 256)
PATCH_BUCKETS = (128, 256, 512)


def tg_prompt(sample):
    return f"When does {sample['query']} happen? Answer as <answer>start to end</answer>."


def order_prompt(sample):
    return "Put the frames in order."


def tg_answer(sample):
    start, end = sample["segments"][0]
    return f"<answer>{start:.1f} to {end:.1f}</answer>"


PROMPTS = {"tg": tg_prompt, "order": order_prompt}


def write_clip(path: pathlib.Path, seconds: float, seed: int, fps: int = 10, size=(64, 48)) -> None:
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.full((height, width, 3), (i * 9) % 256, np.uint8)
            frame[:, : width // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tg_sample(i, name, seconds=2.0):
    return {
        "id": f"tg{i}",
        "task": "tg",
        "source": "test",
        "query": f"event {i}",
        "video": name,
        "duration": seconds,
        "segments": [[0.5, 1.5]],
    }


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    media = root / "media"
    media.mkdir()
    good = []
    for i in range(8):
        seconds = 2.0 if i % 2 == 0 else 4.0  # two token/patch sizes
        write_clip(media / f"v{i}.mp4", seconds, seed=i)
        good.append(tg_sample(i, f"v{i}.mp4", seconds))
    write_clip(media / "full.mp4", 4.0, seed=99)
    data = (media / "full.mp4").read_bytes()
    (media / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (media / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    bad = [tg_sample(100, "corrupt.mp4"), tg_sample(101, "truncated.mp4"), tg_sample(102, "missing.mp4")]
    orders = []
    for i in range(4):
        names = []
        for k in range(3):
            name = f"img{i}_{k}.png"
            Image.fromarray(np.full((40, 40, 3), 60 * k + i, np.uint8)).save(media / name)
            names.append(name)
        orders.append(
            {"id": f"order{i}", "task": "order", "source": "test", "query": "order", "images": names, "answer": "ABC"}
        )
    mixed_bad = good[:3] + [bad[0]] + good[3:5] + [bad[1]] + good[5:] + [bad[2]]
    tok = train_tiny_tokenizer([tg_prompt(s) + tg_answer(s) for s in good] * 3, root / "tok", vocab_size=320)
    return {
        "root": root,
        "media": str(media),
        "good": good,
        "bad": bad,
        "tok": tok,
        "model": tiny_config(**special_token_ids(tok)),
        "tg": write_jsonl(root / "tg.jsonl", good),
        "order": write_jsonl(root / "order.jsonl", orders),
        "with_bad": write_jsonl(root / "with_bad.jsonl", mixed_bad),
    }


def config(data, sources, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("shard_index", 0)
    kw.setdefault("shard_count", 1)
    kw.setdefault("read_threads", 1)
    kw.setdefault("token_buckets", TOKEN_BUCKETS)
    kw.setdefault("patch_buckets", PATCH_BUCKETS)
    srcs = tuple(SourceConfig(data[name], weight=w, media_dir=data["media"]) for name, w in sources)
    return LoaderConfig(sources=srcs, **kw)


def ids_of(batch):
    return [s["id"] for s in batch["samples"]]


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
    assert [ids_of(x) for x in a] == [ids_of(x) for x in b]
    for x, y in zip(a, b):
        assert x["skipped"] == y["skipped"]
        np.testing.assert_array_equal(x["valid"], y["valid"])
        for field in ("input_ids", "attention_mask", "position_ids", "pixel_values", "window_index"):
            np.testing.assert_array_equal(getattr(x["inputs"], field), getattr(y["inputs"], field))


def test_tokens_match_grids_and_buckets(data):
    tok, model = data["tok"], data["model"]
    it = make_eval_loader(config(data, [("tg", None), ("order", None)], batch_size=5), tok, model, PROMPTS)
    batches = list(it)
    assert [len(b["samples"]) for b in batches] == [5, 5, 2]
    assert [i for b in batches for i in ids_of(b)] == [s["id"] for s in data["good"]] + [f"order{i}" for i in range(4)]
    assert batches[-1]["valid"].tolist() == [True, True, False, False, False]
    seen_shapes = set()
    for batch in batches:
        x = batch["inputs"]
        seen_shapes.add((x.seq_len, x.num_patches))
        assert x.seq_len in TOKEN_BUCKETS and x.num_patches in PATCH_BUCKETS
        for blocks in x.layout_sizes[:2]:  # a power of two, or all the blocks the patches can fill
            assert blocks & (blocks - 1) == 0 or blocks == x.num_patches // 4
        for row, sample in enumerate(batch["samples"]):
            ids, mask = x.input_ids[row], x.attention_mask[row]
            n = int(mask.sum())
            assert mask[-n:].all() and not mask[:-n].any()  # left padded for generation
            assert tok.decode(ids[-n:]).startswith("<|im_start|>system\n")
            tail = PROMPTS[sample["task"]](sample) + "<|im_end|>\n<|im_start|>assistant\n"
            assert tok.decode(ids[-n:]).endswith(tail)
            kind = model.video_token_id if sample["task"] == "tg" else model.image_token_id
            n_tokens = int((ids == kind).sum())
            assert n_tokens * 4 == int(x.patch_valid[row].sum())
            if sample["task"] == "tg":  # the same grid as decoding the clip directly
                frames, info = video.read_video(pathlib.Path(data["media"]) / sample["video"])
                _, grid, _ = patchify_video(frames, info["sample_fps"])
                assert n_tokens == int(merged_token_count(grid)[0])
            else:
                assert n_tokens == 3 * 4  # three 56x56 images, 4 merged tokens each
    assert len(seen_shapes) > 1  # different clip lengths land in different buckets


def test_mixing_proportions_and_seeded_shuffle(data):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("tg", 3.0), ("order", 1.0)], batch_size=4, seed=7)
    batches = take(make_loader(cfg, tok, model, PROMPTS), 4)
    tasks = [s["task"] for b in batches for s in b["samples"]]
    assert tasks.count("tg") == 12 and tasks.count("order") == 4
    tg_ids = [i for b in batches for i in ids_of(b) if i.startswith("tg")]
    assert sorted(tg_ids[:8]) == sorted(s["id"] for s in data["good"])  # one epoch of the source, shuffled
    assert tg_ids[:8] != sorted(tg_ids[:8], key=lambda s: int(s[2:]))
    again = take(make_loader(cfg, tok, model, PROMPTS), 1)
    other = take(make_loader(config(data, [("tg", 3.0), ("order", 1.0)], batch_size=4, seed=8), tok, model, PROMPTS), 2)
    assert ids_of(again[0]) == ids_of(batches[0])
    assert [ids_of(b) for b in other] != [ids_of(b) for b in batches[:2]]


def test_finite_epochs_use_every_sample(data):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("tg", None), ("order", None)], batch_size=4, num_epochs=2)
    ids = [i for b in make_loader(cfg, tok, model, PROMPTS) for i in ids_of(b)]
    expected = [s["id"] for s in data["good"]] + [f"order{i}" for i in range(4)]
    assert sorted(ids) == sorted(expected * 2)


def test_bad_videos_are_skipped_and_counted(data):
    tok, model = data["tok"], data["model"]
    train = make_loader(config(data, [("with_bad", None)], batch_size=3, num_epochs=1), tok, model, PROMPTS)
    batches = list(train)
    assert all(len(b["samples"]) == 3 and b["valid"].all() for b in batches)  # batches stay full
    assert len(batches) == 2  # 8 good samples: the last 2 do not fill a batch
    reported = [s["id"] for b in batches for s in b["skipped"]]
    assert train.stats()["skipped"] == len(reported) and set(reported) <= {"tg100", "tg101", "tg102"}
    ev = make_eval_loader(config(data, [("with_bad", None)], batch_size=3), tok, model, PROMPTS)
    batches = list(ev)
    assert sorted(i for b in batches for i in ids_of(b)) == sorted(s["id"] for s in data["good"])
    skipped = [s for b in batches for s in b["skipped"]]
    assert sorted(s["id"] for s in skipped) == ["tg100", "tg101", "tg102"]
    assert "not found" in next(s["reason"] for s in skipped if s["id"] == "tg102")
    stats = ev.stats()
    assert stats["skipped"] == 3 and stats["samples"] == 8 and len(stats["recent_skipped"]) == 3


def test_rows_beyond_the_largest_bucket_are_skipped(data):
    tok, model = data["tok"], data["model"]
    # 2 s clips need 160 patches, 4 s clips 320: with a largest patch bucket of 256 the long ones go.
    it = make_eval_loader(config(data, [("tg", None)], batch_size=4, patch_buckets=(128, 256)), tok, model, PROMPTS)
    batches = list(it)
    assert [i for b in batches for i in ids_of(b)] == ["tg0", "tg2", "tg4", "tg6"]
    skipped = [s for b in batches for s in b["skipped"]]
    assert [s["id"] for s in skipped] == ["tg1", "tg3", "tg5", "tg7"]
    assert all("too long" in s["reason"] for s in skipped) and it.stats()["skipped"] == 4


def test_restore_continues_with_the_same_batches(data, tmp_path):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("with_bad", None), ("order", None)], batch_size=2, seed=3)
    it = make_loader(cfg, tok, model, PROMPTS)
    take(it, 2)
    state = it.get_state()
    json.dumps(state)  # JSON-able, as orbax's grain handler writes it
    manager = ocp.CheckpointManager(tmp_path / "ckpt")
    manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = take(it, 5)
    expected_stats = it.stats()
    assert expected_stats["skipped"] >= 1  # the restored window crosses skipped samples

    fresh = make_loader(cfg, tok, model, PROMPTS)
    fresh.set_state(state)
    assert_same_batches(take(fresh, 5), expected)
    assert {k: v for k, v in fresh.stats().items() if k != "recent_skipped"} == {
        k: v for k, v in expected_stats.items() if k != "recent_skipped"
    }

    via_orbax = make_loader(cfg, tok, model, PROMPTS)
    manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(via_orbax)))
    assert_same_batches(take(via_orbax, 5), expected)


def test_shards_are_disjoint_and_complete(data):
    tok, model = data["tok"], data["model"]
    seen = []
    for index in range(2):
        cfg = config(data, [("tg", None)], batch_size=2, shard_index=index, shard_count=2, num_epochs=1)
        train_ids = [i for b in make_loader(cfg, tok, model, PROMPTS) for i in ids_of(b)]
        eval_ids = [i for b in make_eval_loader(cfg, tok, model, PROMPTS) for i in ids_of(b)]
        assert sorted(train_ids) == sorted(eval_ids) and len(eval_ids) == 4
        seen.append(set(eval_ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {s["id"] for s in data["good"]}


def test_sft_rows_mask_only_the_answer(data):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("tg", None)], batch_size=2, padding_side="right", num_epochs=1)
    batch = next(make_loader(cfg, tok, model, {"tg": tg_prompt}, answer_builders={"tg": tg_answer}))
    x, mask = batch["inputs"], batch["completion_mask"]
    assert mask.shape == x.input_ids.shape
    for row, sample in enumerate(batch["samples"]):
        assert tok.decode(x.input_ids[row][mask[row] == 1]) == tg_answer(sample) + "<|im_end|>"
        assert x.attention_mask[row][0] == 1  # right padded


def test_arrayrecord_source(data, tmp_path):
    tok, model = data["tok"], data["model"]
    write_split(tmp_path, "train", [Sample.from_dict(s) for s in data["good"][:4]])
    cfg = LoaderConfig(
        sources=(SourceConfig(str(tmp_path), split="train", media_dir=data["media"]),),
        batch_size=2,
        token_buckets=TOKEN_BUCKETS,
        patch_buckets=PATCH_BUCKETS,
        shard_index=0,
        shard_count=1,
        read_threads=1,
    )
    ids = [i for b in make_eval_loader(cfg, tok, model, PROMPTS) for i in ids_of(b)]
    assert ids == ["tg0", "tg1", "tg2", "tg3"]


def test_errors_are_clear(data):
    tok, model = data["tok"], data["model"]
    with pytest.raises(ValueError, match="weight to every source"):
        config(data, [("tg", 1.0), ("order", None)])
    with pytest.raises(ValueError, match="token_buckets"):
        config(data, [("tg", None)], token_buckets=(128, 64))
    with pytest.raises(ValueError, match="no prompt builder for task 'order'"):
        next(make_eval_loader(config(data, [("order", None)]), tok, model, {"tg": tg_prompt}))
    with pytest.raises(ValueError, match="multiples of 4"):
        make_loader(config(data, [("tg", None)], patch_buckets=(130,)), tok, model, PROMPTS)


@pytest.mark.slow  # ~6 s idle (worker start-up), over 20 s on a loaded 2-core machine
def test_one_worker_prefetch_and_restore(data):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("tg", None), ("order", None)], batch_size=2, num_workers=1, seed=5)
    it = make_loader(cfg, tok, model, PROMPTS)
    try:
        take(it, 1)
        state = json.loads(json.dumps(it.get_state()))  # the round trip orbax's grain handler does
        expected = take(it, 2)
    finally:
        it.close()
    fresh = make_loader(cfg, tok, model, PROMPTS)
    try:
        fresh.set_state(state)
        assert_same_batches(take(fresh, 2), expected)
    finally:
        fresh.close()


# ---- robustness: no hang, counted skips, stop requests ------------------------------------------


def _missing_media_config(data, tmp_path, **kw):
    """The good samples with a media directory that holds none of their videos."""
    (tmp_path / "empty").mkdir(exist_ok=True)
    source = SourceConfig(data["tg"], media_dir=str(tmp_path / "empty"))
    return LoaderConfig(
        sources=(source,),
        batch_size=2,
        token_buckets=TOKEN_BUCKETS,
        patch_buckets=PATCH_BUCKETS,
        shard_index=0,
        shard_count=1,
        read_threads=1,
        **kw,
    )


def test_a_source_with_no_usable_sample_stops_with_a_clear_error(data, tmp_path, caplog):
    tok, model = data["tok"], data["model"]
    it = make_loader(_missing_media_config(data, tmp_path), tok, model, PROMPTS)
    with caplog.at_level(logging.WARNING, logger="data_pipeline.loader"), pytest.raises(UnusableSourceError) as info:
        next(it)
    message = str(info.value)
    assert data["tg"] in message and "missing_file: 16" in message and "file not found" in message
    assert str(tmp_path / "empty") in message  # the media directory to check
    assert len(caplog.records) <= 8  # no line per retry
    # A finite run over the same data ends with the same error, not with an empty StopIteration.
    with pytest.raises(UnusableSourceError):
        next(make_loader(_missing_media_config(data, tmp_path, num_epochs=1), tok, model, PROMPTS))


def test_one_unusable_source_among_good_ones_is_named(data, tmp_path):
    tok, model = data["tok"], data["model"]
    missing = write_jsonl(tmp_path / "missing.jsonl", [tg_sample(200 + i, f"nope{i}.mp4") for i in range(3)])
    sources = (SourceConfig(data["tg"], media_dir=data["media"]), SourceConfig(missing, media_dir=data["media"]))
    cfg = LoaderConfig(
        sources=sources,
        batch_size=2,
        token_buckets=TOKEN_BUCKETS,
        patch_buckets=PATCH_BUCKETS,
        shard_index=0,
        shard_count=1,
        read_threads=1,
    )
    it = make_loader(cfg, tok, model, PROMPTS)
    with pytest.raises(UnusableSourceError, match="missing.jsonl"):
        take(it, 20)


def test_skip_counts_per_source_and_reason(data, tmp_path):
    tok, model = data["tok"], data["model"]
    long_clip = tg_sample(300, "v1.mp4", 3600.0)  # annotated 3600 s, the file lasts 4 s
    with_long = write_jsonl(tmp_path / "long.jsonl", [long_clip, data["good"][0], data["good"][2]])
    sources = [
        SourceConfig(data["with_bad"], media_dir=data["media"]),
        SourceConfig(with_long, media_dir=data["media"]),
    ]
    cfg = LoaderConfig(
        sources=tuple(sources),
        batch_size=3,
        token_buckets=TOKEN_BUCKETS,
        patch_buckets=(128, 256),
        shard_index=0,
        shard_count=1,
        read_threads=1,
    )
    ev = make_eval_loader(cfg, tok, model, PROMPTS)
    batches = list(ev)
    counts = ev.skip_counts()
    assert {kind for kinds in counts.values() for kind in kinds} <= set(SKIP_KINDS)
    assert counts[data["with_bad"]] == {"decode_error": 2, "missing_file": 1, "too_long": 4}
    assert counts[with_long] == {"duration_mismatch": 1}
    skipped = {s["id"]: s for b in batches for s in b["skipped"]}
    assert skipped["tg300"]["kind"] == "duration_mismatch"
    assert "annotated duration 3600 s" in skipped["tg300"]["reason"] and "4 s" in skipped["tg300"]["reason"]
    assert skipped["tg102"]["kind"] == "missing_file" and skipped["tg102"]["source"] == data["with_bad"]
    # The counts are part of the state: a restored iterator continues them.
    train = make_loader(config(data, [("with_bad", None)], batch_size=2, seed=1), tok, model, PROMPTS)
    take(train, 6)
    state = json.loads(json.dumps(train.get_state()))
    fresh = make_loader(config(data, [("with_bad", None)], batch_size=2, seed=1), tok, model, PROMPTS)
    fresh.set_state(state)
    assert fresh.skip_counts() == train.skip_counts() and sum(train.skip_counts()[data["with_bad"]].values()) >= 1


def test_each_skipped_sample_is_logged_once(data, caplog):
    tok, model = data["tok"], data["model"]
    cfg = config(data, [("with_bad", None)], batch_size=3, num_epochs=4)
    with caplog.at_level(logging.WARNING, logger="data_pipeline.loader"):
        batches = list(make_loader(cfg, tok, model, PROMPTS))
    reported = [s["id"] for b in batches for s in b["skipped"]]
    assert reported.count("tg102") >= 2  # skipped in several epochs ...
    lines = [r.getMessage() for r in caplog.records]
    assert sum("'tg102'" in line for line in lines) == 1  # ... but logged once


def test_jsonl_source_with_a_bad_line_names_it(data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(data["good"][0]) + "\n{not json\n")
    cfg = LoaderConfig(sources=(SourceConfig(str(bad), media_dir=data["media"]),), shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: not valid JSON"):
        make_loader(cfg, data["tok"], data["model"], PROMPTS)


def test_a_stop_request_interrupts_a_waiting_loader(data):
    tok, model = data["tok"], data["model"]
    gate = threading.Event()

    def blocking_prompt(sample):  # a sample that takes forever to prepare
        gate.wait(60)
        return tg_prompt(sample)

    polls = itertools.count()
    cfg = config(data, [("tg", None)], batch_size=2)
    it = make_loader(cfg, tok, model, {"tg": blocking_prompt}, should_stop=lambda: next(polls) >= 3)
    before = it.get_state()
    try:
        with pytest.raises(LoaderStopped):
            next(it)
        assert it.get_state() == before  # the interrupted batch is not half-consumed in the state
        with pytest.raises(LoaderStopped):
            next(it)
    finally:
        gate.set()
    # Without a stop request the same loader works as before.
    assert len(next(make_loader(cfg, tok, model, PROMPTS, should_stop=lambda: False))["samples"]) == 2


def slow_prompt(sample):  # module level: worker processes unpickle it
    import time

    time.sleep(1)
    return tg_prompt(sample)


@pytest.mark.slow  # worker start-up and shut-down
def test_a_stop_request_interrupts_waiting_on_worker_processes(data):
    tok, model = data["tok"], data["model"]
    polls = itertools.count()
    cfg = config(data, [("tg", None)], batch_size=2, num_workers=1)
    it = make_loader(cfg, tok, model, {"tg": slow_prompt}, should_stop=lambda: next(polls) >= 2)
    try:
        before = it.get_state()
        with pytest.raises(LoaderStopped):
            next(it)
        assert it.get_state() == before
    finally:
        it.close()
