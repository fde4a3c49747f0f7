"""A tiny byte-level BPE tokenizer with Qwen2.5-VL's special tokens and chat template.

The demo and the tests cannot download Qwen's 151k-token tokenizer, so they train a small one here
with the `tokenizers` library on their own text. It keeps everything the pipeline relies on: the
same special tokens (appended after the learned vocabulary in Qwen's order, as in the real
tokenizer), the same pre-tokenisation (Qwen2's split regex, then byte-level), the same chat
rendering (`CHAT_TEMPLATE` is our own Jinja with the output of Qwen2.5-VL's template), and it is
saved in Hugging Face format so `transformers.AutoTokenizer.from_pretrained(dir)` loads it offline.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# Qwen2.5-VL's special tokens, in the order of their ids in the released tokenizer (151643...).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2's pre-tokenisation split: contractions, letter runs, single digits, punctuation runs, newlines.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Renders exactly what Qwen2.5-VL-Instruct's template renders: a default system turn when the
# conversation does not open with one; string contents verbatim; list contents as vision blocks
# (an item is an image if its type is "image" or it has an "image"/"image_url" key, a video if its
# type is "video" or it has a "video" key) and text; optional "Picture n: " / "Video n: " labels.
CHAT_TEMPLATE = (
    "{%- set seen = namespace(images=0, videos=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{%- set seen.images = seen.images + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Picture ' ~ seen.images ~ ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{%- set seen.videos = seen.videos + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Video ' ~ seen.videos ~ ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item -%}"
    "{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_tiny_tokenizer(
    texts: Iterable[str],
    out_dir: str | pathlib.Path,
    vocab_size: int = 512,
    min_frequency: int = 2,
) -> transformers.PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`, save it in HF format to `out_dir`, return it.

    `vocab_size` is the total size including the 14 special tokens; a small corpus may learn fewer
    merges, so read the real size from `len(tokenizer)` (or `special_token_ids(...)["vocab_size"]`).
    All 256 byte symbols are in the base alphabet, so any text encodes without an unknown token.
    """
    n_learned = vocab_size - len(SPECIAL_TOKENS)
    if n_learned < 256:
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens), got {vocab_size}"
        )
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_learned,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # Added after training so they take the ids right after the learned vocabulary, in Qwen's order.
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS),
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    save_tokenizer(tokenizer, out_dir)
    return tokenizer


def save_tokenizer(tokenizer: transformers.PreTrainedTokenizerBase, out_dir: str | pathlib.Path) -> None:
    """`save_pretrained` plus a `special_tokens_map.json` (transformers 5 no longer writes it)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    special = {
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "additional_special_tokens": list(SPECIAL_TOKENS),
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def special_token_ids(tokenizer: transformers.PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids a matching model config needs, named as `Qwen2_5_VLConfig` fields (plus `vocab_size`).

    `models.qwen2_5_vl.config.tiny_config(**special_token_ids(tok))` builds a tiny model whose
    embedding covers the tokenizer. As in the published config, bos is <|endoftext|>.
    """

    def tid(token: str) -> int:
        i = tokenizer.convert_tokens_to_ids(token)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no token {token!r}: not a Qwen2.5-VL style tokenizer")
        return int(i)

    return {
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
        "vision_token_id": tid("<|vision_pad|>"),
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid(EOS_TOKEN),
        "pad_token_id": tid(PAD_TOKEN),
        "vocab_size": len(tokenizer),
    }
