"""Prompt token ids through the tokenizer's chat template, with vision placeholders expanded.

A sample's user turn is its vision content (one video item, or one image item per image, in
order) followed by the task text from the caller's `prompt_builder(sample) -> str` (the task
registry's builder: this layer does not know the tasks). The chat template renders one
`<|image_pad|>` / `<|video_pad|>` per vision item; each is then repeated to the number of language
tokens of its grid, t*h*w / merge_size**2 (`vision_inputs.merged_token_count`), exactly as
Qwen2.5-VL's processor does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import transformers

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

PromptBuilder = Callable[[Mapping[str, Any]], str]


def image_label(index: int) -> str:
    """The text placed before the `index`-th image with `label_images`: "Image A: ", "Image B: ", ..."""
    return f"Image {chr(ord('A') + index)}: "


def build_messages(
    sample: Mapping[str, Any], prompt_text: str, system_prompt: str | None = None, label_images: bool = False
) -> list[dict]:
    """Chat messages: optional system turn, then the user turn (vision items, then `prompt_text`).

    label_images: put "Image A: ", "Image B: ", ... before the images, so that a prompt (TPRU's
    ordering and frame-choice questions) can refer to them by letter.
    """
    content: list[dict[str, Any]] = []
    if sample.get("video"):
        content.append({"type": "video", "video": str(sample["video"])})
    for index, path in enumerate(sample.get("images") or ()):
        if label_images:
            content.append({"type": "text", "text": image_label(index)})
        content.append({"type": "image", "image": str(path)})
    content.append({"type": "text", "text": prompt_text})
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def build_prompt_ids(
    tokenizer: transformers.PreTrainedTokenizerBase,
    sample: Mapping[str, Any],
    prompt_builder: PromptBuilder,
    *,
    image_token_counts: Sequence[int] = (),
    video_token_counts: Sequence[int] = (),
    system_prompt: str | None = None,
    label_images: bool = False,
) -> np.ndarray:
    """Token ids [L] (int32) of the generation prompt, ending with `<|im_start|>assistant\\n`.

    `image_token_counts` / `video_token_counts` give, per image / video of the sample in order, the
    number of placeholder tokens (`vision_inputs.merged_token_count` of its grid). Raises ValueError when the counts do
    not match the sample's vision items. `label_images` as in `build_messages`.
    """
    messages = build_messages(sample, prompt_builder(sample), system_prompt, label_images)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), np.int32)
    ids = _expand(ids, _token_id(tokenizer, IMAGE_PAD), image_token_counts, "image", sample)
    return _expand(ids, _token_id(tokenizer, VIDEO_PAD), video_token_counts, "video", sample)


def encode_completion(tokenizer: transformers.PreTrainedTokenizerBase, text: str) -> np.ndarray:
    """Token ids [N] (int32) of an assistant answer followed by the end-of-turn (eos) token."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token: cannot terminate a completion")
    ids = tokenizer.encode(text, add_special_tokens=False)
    return np.asarray([*ids, tokenizer.eos_token_id], np.int32)


def build_sft_ids(
    tokenizer: transformers.PreTrainedTokenizerBase,
    sample: Mapping[str, Any],
    prompt_builder: PromptBuilder,
    answer: str,
    *,
    image_token_counts: Sequence[int] = (),
    video_token_counts: Sequence[int] = (),
    system_prompt: str | None = None,
    label_images: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A full supervised sequence: (ids [L] int32, completion_mask [L] int32).

    ids = prompt ids + answer ids + eos; the mask is 1 exactly on the answer and eos tokens, so the
    loss covers only what the model must generate.
    """
    prompt = build_prompt_ids(
        tokenizer,
        sample,
        prompt_builder,
        image_token_counts=image_token_counts,
        video_token_counts=video_token_counts,
        system_prompt=system_prompt,
        label_images=label_images,
    )
    completion = encode_completion(tokenizer, answer)
    mask = np.concatenate([np.zeros(len(prompt), np.int32), np.ones(len(completion), np.int32)])
    return np.concatenate([prompt, completion]), mask


def _token_id(tokenizer: transformers.PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {token} token")
    return int(token_id)


def _expand(ids: np.ndarray, token_id: int, counts: Sequence[int], name: str, sample: Mapping[str, Any]) -> np.ndarray:
    """Repeat the k-th occurrence of `token_id` counts[k] times."""
    where = np.flatnonzero(ids == token_id)
    if len(where) != len(counts):
        raise ValueError(
            f"sample {sample.get('id')!r}: prompt has {len(where)} {name} placeholder(s) but "
            f"{len(counts)} {name} token count(s) were given"
        )
    if any(int(c) < 1 for c in counts):
        raise ValueError(f"sample {sample.get('id')!r}: {name} token counts must be >= 1, got {list(counts)}")
    repeats = np.ones(len(ids), np.int64)
    repeats[where] = np.asarray(counts, np.int64)
    return np.repeat(ids, repeats)
