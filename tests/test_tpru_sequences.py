"""TPRU questions built from image sequences (`tpru_sequences`): ordering, next and previous frame with a
configurable share of "none of the choices" negatives; and the image labels in multi-image prompts."""

import json
import string

import numpy as np
import pytest
from PIL import Image

from data_pipeline.loader import LoaderConfig, SourceConfig, make_eval_loader
from data_pipeline.prompts import build_messages, build_prompt_ids
from data_pipeline.samples import read_jsonl, validate_sample
from data_pipeline.sources import load
from data_pipeline.sources.tpru import NONE_OF_THE_CHOICES
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl.config import tiny_config
from tempr1_jax.cli import main
from tempr1_jax.tasks import get_task


def sequence(i, scenario, frames=4):
    return {
        "id": f"s{i}",
        "images": [f"s{i}/{k}.png" for k in range(frames)],
        "caption": f"task {i}",
        "scenario": scenario,
    }


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    root = tmp_path_factory.mktemp("tpru")
    records = [sequence(i, "robot" if i < 4 else "gui") for i in range(7)] + [{"id": "short", "images": ["x.png"]}]
    for record in records:
        for k, name in enumerate(record["images"]):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((28, 28, 3), 30 * k, np.uint8)).save(root / name)
    path = root / "sequences.json"
    path.write_text(json.dumps(records))
    return root, path, {r["id"]: r for r in records}


def questions(path, **kw):
    return {s.id: s for s in load("tpru_sequences", path, **kw)}


def test_order_questions_reconstruct_the_sequence(sequences):
    _, path, records = sequences
    out = questions(path, seed=3)
    assert "short#order" not in out  # fewer than 3 frames: skipped
    for seq_id in (f"s{i}" for i in range(7)):
        q = out[f"{seq_id}#order"]
        assert q.task == "order" and q.query == records[seq_id]["caption"]
        by_letter = dict(zip(string.ascii_uppercase, q.images))
        assert [by_letter[letter] for letter in q.answer] == records[seq_id]["images"]
        validate_sample(q, where="t")


@pytest.mark.parametrize("share, negatives", [(0.0, 0), (0.25, 4), (0.5, 7), (1.0, 14)])
def test_frame_questions_and_the_negative_share(sequences, share, negatives):
    _, path, records = sequences
    out = questions(path, negative_share=share, seed=1)
    choice = [q for q in out.values() if q.task == "mcq"]
    assert len(choice) == 14 and sum(q.extra["negative"] for q in choice) == negatives  # round(share * 14)
    for q in choice:
        frames = records[q.extra["sequence"]]["images"]
        asked = 2 if q.extra["kind"] == "next" else 0  # frames 1, 2, 4 given, frame 3 asked; or the first
        given, candidates = q.images[:3], q.images[3:]
        assert list(given) == [f for i, f in enumerate(frames) if i != asked] and len(candidates) == 3
        assert q.options == ("Image D", "Image E", "Image F", NONE_OF_THE_CHOICES)
        if q.extra["negative"]:
            assert q.answer == "D" and frames[asked] not in candidates
        else:
            assert candidates["ABC".index(q.answer)] == frames[asked]
        scenario = records[q.extra["sequence"]]["scenario"]
        others = [
            f
            for r in records.values()
            if r["id"] != q.extra["sequence"] and r.get("scenario") == scenario
            for f in r["images"]
        ]
        assert all(c in others or c == frames[asked] for c in candidates)  # distractors from the same scenario
        validate_sample(q, where="t")


def test_seeded(sequences):
    _, path, _ = sequences
    a, b, c = (questions(path, seed=s) for s in (5, 5, 6))
    assert a == b and a != c


def test_prepare_with_a_negative_share(sequences, tmp_path, capsys):
    root, path, _ = sequences
    out = tmp_path / "tpru"
    assert (
        main(
            [
                "prepare",
                "--dataset",
                "tpru_sequences",
                "--annotations",
                str(path),
                "--videos",
                str(root),
                "--out",
                str(out),
                "--split",
                "train",
                "--negative_share",
                "0.5",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    samples = read_jsonl(out / "train.jsonl")
    assert len(samples) == 21 and sum(s.extra.get("negative", False) for s in samples) == 7
    assert (
        main(["prepare", "--dataset", "tpru", "--annotations", str(path), "--out", str(out), "--negative_share", "0.5"])
        == 2
    )
    assert "--negative_share applies to tpru_sequences only" in capsys.readouterr().err
    assert (
        main(
            [
                "prepare",
                "--dataset",
                "tpru_sequences",
                "--annotations",
                str(path),
                "--out",
                str(out),
                "--negative_share",
                "1.5",
                "--no_video_check",
            ]
        )
        == 2
    )
    assert "negative_share must be in [0, 1]" in capsys.readouterr().err


def test_image_labels_precede_each_image(sequences, tmp_path):
    root, path, _ = sequences
    sample = next(q for q in load("tpru_sequences", path) if q.task == "mcq").to_dict()
    content = build_messages(sample, "q", label_images=True)[0]["content"]
    assert [c.get("text") or c["type"] for c in content[:4]] == ["Image A: ", "image", "Image B: ", "image"]
    assert [c["type"] for c in build_messages(sample, "q")[0]["content"]][:2] == ["image", "image"]  # default: none

    tok = train_tiny_tokenizer(["Image A: which frame? <answer>B</answer>"] * 10, tmp_path / "tok", vocab_size=300)
    prompt = get_task("mcq").build_prompt
    ids = build_prompt_ids(tok, sample, prompt, image_token_counts=[1] * 6, label_images=True)
    text = tok.decode(ids)
    for letter in "ABCDEF":
        assert f"Image {letter}: <|vision_start|><|image_pad|><|vision_end|>" in text
    assert "A. Image D" in text and f"D. {NONE_OF_THE_CHOICES}" in text

    (tmp_path / "one.jsonl").write_text(json.dumps(sample) + "\n")
    cfg = LoaderConfig(
        sources=(SourceConfig(str(tmp_path / "one.jsonl"), media_dir=str(root)),),
        batch_size=1,
        shard_index=0,
        shard_count=1,
        read_threads=1,
        label_images=True,
        token_buckets=(512,),
        patch_buckets=(256,),
    )
    (batch,) = list(make_eval_loader(cfg, tok, tiny_config(**special_token_ids(tok)), {"mcq": prompt}))
    decoded = tok.decode(batch["inputs"].input_ids[0])
    assert decoded.count("Image ") >= 6 and "Image F: <|vision_start|>" in decoded


def test_tpru_config_labels_the_images():
    import gin

    from tempr1_jax.configurables import parse_gin
    from tempr1_jax.training.data_setup import LoaderConfig

    parse_gin(files=["tpru_7b.gin"])
    try:
        assert LoaderConfig(sources=(SourceConfig("x"),)).label_images is True
    finally:
        gin.clear_config()
