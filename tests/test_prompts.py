"""Prompt ids through the chat template, vision placeholder expansion, completions and SFT masks."""

import numpy as np
import pytest

from data_pipeline.prompts import build_messages, build_prompt_ids, build_sft_ids, encode_completion
from data_pipeline.tokenizer import special_token_ids, train_tiny_tokenizer
from data_pipeline.vision_inputs import merged_token_count
from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.rope_index import get_rope_index

CORPUS = [
    "When does the red square flash? <answer>2.0 to 4.5</answer>",
    "Put the frames in order. <answer>CABD</answer>",
] * 10


def task_prompt(sample):
    return f"Find: {sample['query']}"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(CORPUS, tmp_path_factory.mktemp("tok"), vocab_size=320)


def test_build_messages_orders_vision_before_text():
    video = build_messages({"video": "v.mp4"}, "q", system_prompt="S")
    assert video[0] == {"role": "system", "content": "S"}
    assert [c["type"] for c in video[1]["content"]] == ["video", "text"]
    images = build_messages({"images": ["a.png", "b.png"]}, "q")
    assert [c.get("image") for c in images[0]["content"]] == ["a.png", "b.png", None]


def test_video_placeholder_expands_to_grid_tokens(tok):
    ids_map = special_token_ids(tok)
    sample = {"id": "s1", "video": "v.mp4", "query": "the red square flashes"}
    grid = [[3, 4, 6]]
    counts = merged_token_count(grid).tolist()
    ids = build_prompt_ids(tok, sample, task_prompt, video_token_counts=counts)
    assert ids.dtype == np.int32
    where = np.flatnonzero(ids == ids_map["video_token_id"])
    assert len(where) == 18 and np.all(np.diff(where) == 1)
    assert ids[where[0] - 1] == ids_map["vision_start_token_id"]
    assert ids[where[-1] + 1] == ids_map["vision_end_token_id"]
    expected = tok.apply_chat_template(
        build_messages(sample, task_prompt(sample)), tokenize=False, add_generation_prompt=True
    ).replace("<|video_pad|>", "<|video_pad|>" * 18)
    assert tok.decode(ids) == expected
    assert tok.decode(ids).endswith("Find: the red square flashes<|im_end|>\n<|im_start|>assistant\n")
    # The ids feed the model's host-side M-RoPE directly.
    pos, _ = get_rope_index(
        tiny_config(**ids_map), ids[None], video_grid_thw=np.asarray(grid), second_per_grid_ts=np.asarray([1.0])
    )
    assert pos.shape == (3, 1, len(ids))


def test_images_expand_in_order(tok):
    ids_map = special_token_ids(tok)
    sample = {"id": "s2", "images": ["a.png", "b.png", "c.png"], "query": "order"}
    ids = build_prompt_ids(tok, sample, task_prompt, image_token_counts=[4, 1, 6], system_prompt="Sys")
    is_img = (ids == ids_map["image_token_id"]).astype(int)
    runs = np.split(is_img, np.flatnonzero(np.diff(is_img)) + 1)
    assert [len(r) for r in runs if r[0] == 1] == [4, 1, 6]
    assert tok.decode(ids).startswith("<|im_start|>system\nSys<|im_end|>\n")


def test_text_only_sample(tok):
    ids = build_prompt_ids(tok, {"query": "x"}, task_prompt)
    assert tok.decode(ids).endswith("<|im_start|>user\nFind: x<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "sample, kwargs, match",
    [
        ({"id": "a", "video": "v.mp4", "query": "q"}, {}, "1 video placeholder"),
        ({"id": "b", "video": "v.mp4", "query": "q"}, {"video_token_counts": [2, 3]}, "2 video token count"),
        ({"id": "c", "images": ["a.png"], "query": "q"}, {"image_token_counts": [0]}, ">= 1"),
        ({"id": "d", "query": "q"}, {"image_token_counts": [4]}, "0 image placeholder"),
    ],
)
def test_mismatched_counts_raise(tok, sample, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_prompt_ids(tok, sample, task_prompt, **kwargs)


def test_encode_completion_ends_with_eos(tok):
    ids = encode_completion(tok, "<answer>2.0 to 4.5</answer>")
    assert ids[-1] == tok.eos_token_id and ids.dtype == np.int32
    assert tok.decode(ids) == "<answer>2.0 to 4.5</answer><|im_end|>"


def test_sft_sequence_masks_only_the_answer(tok):
    sample = {"id": "s3", "video": "v.mp4", "query": "q"}
    ids, mask = build_sft_ids(tok, sample, task_prompt, "<answer>1 to 2</answer>", video_token_counts=[5])
    prompt = build_prompt_ids(tok, sample, task_prompt, video_token_counts=[5])
    answer = encode_completion(tok, "<answer>1 to 2</answer>")
    np.testing.assert_array_equal(ids, np.concatenate([prompt, answer]))
    np.testing.assert_array_equal(mask, np.r_[np.zeros(len(prompt)), np.ones(len(answer))])
    assert tok.decode(ids[mask == 1]) == "<answer>1 to 2</answer><|im_end|>"
