"""The tiny Qwen2.5-VL-style tokenizer: special tokens, HF round trip, chat template rendering."""

import json
import unicodedata

import pytest
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, special_token_ids, train_tiny_tokenizer
from models.qwen2_5_vl.config import tiny_config

CORPUS = [
    "When does the person open the door? <answer>12.5 to 30.0</answer>",
    "<think>The red square appears after the blue circle.</think><answer>3.0 to 7.5, 9.0 to 11.5</answer>",
    "Which option is right? (A) jumping (B) running <answer>B</answer><glue>1.0 to 4.0</glue>",
] * 10

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tiny_tokenizer(CORPUS, out, vocab_size=400)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def test_saved_in_hf_format(tok_dir):
    names = {p.name for p in tok_dir.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in json.loads(
        (tok_dir / "tokenizer_config.json").read_text()
    )
    special = json.loads((tok_dir / "special_tokens_map.json").read_text())
    assert special["eos_token"] == "<|im_end|>" and special["pad_token"] == "<|endoftext|>"


def test_special_tokens_follow_the_vocabulary_in_qwen_order(tok, tok_dir):
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))
    assert ids[-1] == len(tok) - 1 and len(tok) <= 400
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # Special tokens are atomic; digits are split one by one as in Qwen2.
    text = "<|vision_start|><|video_pad|><|vision_end|>at 12.5"
    pieces = tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False))
    assert pieces[:3] == ["<|vision_start|>", "<|video_pad|>", "<|vision_end|>"]
    assert pieces[-4:] == ["1", "2", ".", "5"]


def test_reload_encodes_like_the_trained_tokenizer(tok, tok_dir, tmp_path):
    fresh = train_tiny_tokenizer(CORPUS, tmp_path, vocab_size=400)
    text = "Ünïcode ✓ text, 3.25 to 8 <answer>C</answer>\n\nnew line"
    assert fresh.encode(text) == tok.encode(text)
    assert tok.decode(tok.encode(text)) == text  # byte-level: nothing is unknown


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=40))
def test_any_text_round_trips(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == unicodedata.normalize("NFC", text)


def test_special_token_ids_build_a_matching_tiny_config(tok):
    ids = special_token_ids(tok)
    assert ids["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert ids["video_token_id"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert ids["eos_token_id"] == tok.eos_token_id and ids["pad_token_id"] == tok.pad_token_id
    config = tiny_config(**ids)
    assert config.text.vocab_size == len(tok)
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")


def test_special_token_ids_rejects_a_foreign_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    plain = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")), unk_token="[UNK]"
    )
    with pytest.raises(ValueError, match="image_pad"):
        special_token_ids(plain)


def test_vocab_size_too_small_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tiny_tokenizer(CORPUS, tmp_path, vocab_size=100)


# Expected renderings: Qwen2.5-VL-Instruct's chat format, written out by hand.
@pytest.mark.parametrize(
    "messages, kwargs, expected",
    [
        ([{"role": "user", "content": "Hi"}], {}, SYSTEM + "<|im_start|>user\nHi<|im_end|>\n"),
        (
            [{"role": "user", "content": "Hi"}],
            {"add_generation_prompt": True},
            SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            {},
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
        ),
        (
            [{"role": "user", "content": [{"type": "video", "video": "a.mp4"}, {"type": "text", "text": "When?"}]}],
            {"add_generation_prompt": True},
            SYSTEM + "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>When?<|im_end|>\n"
            "<|im_start|>assistant\n",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"image": "1.jpg"},
                        {"image_url": "2.jpg"},
                        {"video": "v.mp4"},
                        {"type": "text", "text": "Order?"},
                    ],
                }
            ],
            {"add_vision_id": True},
            SYSTEM + "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Picture 2: "
            "<|vision_start|><|image_pad|><|vision_end|>Video 1: <|vision_start|><|video_pad|><|vision_end|>"
            "Order?<|im_end|>\n",
        ),
        (
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "<answer>B</answer>"}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "C"}]},
            ],
            {"add_vision_id": True, "add_generation_prompt": True},
            SYSTEM + "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>A<|im_end|>\n"
            "<|im_start|>assistant\n<answer>B</answer><|im_end|>\n"
            "<|im_start|>user\nPicture 2: <|vision_start|><|image_pad|><|vision_end|>C<|im_end|>\n"
            "<|im_start|>assistant\n",
        ),
    ],
)
def test_chat_template_renders_like_qwen(tok, messages, kwargs, expected):
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.apply_chat_template(messages, tokenize=False, **kwargs) == expected
