"""Task registry: prompts, output templates, parsers, rewards and metrics per task.

Each task is one frozen `Task` record (data, not a class hierarchy). Its behaviour is chosen
by two fields: `answer` (what the `<answer>` block holds) and `reward` (which localisation or
exact-match reward scores it). DESIGN §2 defines the rewards, §3 the metrics.

Two parsers exist on purpose:
- `Task.format_ok(text, think)` is the strict template of the format reward (a full regex match).
- `Task.parse(text, fallback)` is lenient and feeds both the rewards and the evaluation. With
  `fallback=False` (rewards) only the last `<answer>` (and `<glue>`) block is read, as the peers'
  public reward code does; with `fallback=True` (evaluation) text without tags is read whole, so
  that untagged zero-shot outputs can still be scored.

Numbers are read leniently: signs, decimals, exponents, `nan` and `inf` are kept as floats, so the
reward rules of DESIGN §2 (clip, reversed or non-finite = IoU 0) decide what they are worth. Only
ASCII digits are digits: `float` would also read Arabic-Indic or full-width ones, but both
parsers (and the strict template) leave them alone, so "١ to ٣" is no segment. At
most `max_segments` segments are kept per completion (128 by default, in reading order; `tvg`
keeps only the last one): later segments are dropped and not counted, which bounds the padded
shapes that a 1000-segment or 100 KB completion can produce.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

# Enough for real outputs (THUMOS14 queries have up to 128 instances), small enough to bound junk.
MAX_SEGMENTS = 128

# --- strict templates (format reward) -------------------------------------------------------
# Possessive quantifiers (Python >= 3.11) only skip backtracking that could never succeed here.
_P = "+" if sys.version_info >= (3, 11) else ""
_NUM = rf"[0-9]+{_P}(?:\.[0-9]+{_P})?{_P}"
_SEG = rf"{_NUM}\s*{_P}to\s*{_P}{_NUM}"
# A strict answer's list of segments ("1.5 to 3, 4 to 5.25").
SEGMENT_LIST = rf"{_SEG}(?:\s*{_P},\s*{_P}{_SEG})*{_P}"
# Reasoning text may be anything except the template's own tags (so a second block cannot hide in it).
_THINK = rf"<think>[^<]*{_P}(?:<(?!/?(?:think|answer|glue)>)[^<]*{_P})*{_P}</think>\s*{_P}"
# `@SEG@` / `@SEGS@` stand for the answer's segment list; `_output_regex` fills them in.
_ANSWER_BODY = {
    "segment": r"<answer>@SEG@</answer>",
    "segments": r"<answer>@SEGS@</answer>",
    "choice_glue": r"<answer>\s*(?P<choice>[A-Z])\s*</answer>\s*<glue>@SEGS@</glue>",
    "choice": r"<answer>\s*[A-Z]\s*</answer>",
    "order": r"<answer>\s*[A-Z]{2,}\s*</answer>",
}

# --- lenient reading (rewards and evaluation) -----------------------------------------------
_LNUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:nan|inf(?:inity)?)"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_LSEG = re.compile(rf"(?<![\w.])({_LNUM}){_UNIT}\s*(?:to|and|-|–|—|~)\s*({_LNUM}){_UNIT}", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")
_LETTER_RUN = re.compile(r"(?<![A-Za-z])([A-Z]{2,})(?![A-Za-z])")


def last_block(text: str, tag: str) -> str | None:
    """Content of the last `<tag>` block (to `</tag>`, or to the end if it is never closed)."""
    start = text.rfind(f"<{tag}>")
    if start < 0:
        return None
    start += len(tag) + 2
    end = text.find(f"</{tag}>", start)
    return text[start:] if end < 0 else text[start:end]


# Characters of a well-formed "1.5 to 3, 4 to 5.25" list; anything else goes to the regex.
_PLAIN_CHARS = str.maketrans("", "", "0123456789.,to \t\r\n")


def _plain_segments(text: str) -> list[tuple[float, float]] | None:
    """Fast path for a well-formed list (digits, dots, "to", commas): the regex's result, or None."""
    if text.translate(_PLAIN_CHARS):
        return None
    parts = text.split(",")
    if text.count("to") != len(parts) or not all("to" in part for part in parts):
        return None
    try:
        nums = list(map(float, text.replace("to", ",").split(",")))
    except ValueError:
        return None
    return list(zip(nums[::2], nums[1::2]))


def parse_segments(text: str, max_segments: int = MAX_SEGMENTS, last: bool = False) -> list[tuple[float, float]]:
    """Every "x to y" pair in `text` as raw floats (may be NaN, inf, negative or reversed).

    Keeps the first `max_segments` pairs, or only the last pair when `last` is set.
    """
    segs = _plain_segments(text)
    if segs is None:
        segs = [(float(a), float(b)) for a, b in _LSEG.findall(text)]
    return segs[-1:] if last else segs[:max_segments]


def _parse_choice(text: str) -> str | None:
    m = _LETTER.search(text)
    return m.group(1) if m else None


def _parse_order(text: str) -> str | None:
    runs = _LETTER_RUN.findall(text)
    if runs:
        return runs[-1]
    letters = _LETTER.findall(text)
    return "".join(letters) if len(letters) >= 2 else None


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What a completion says: its segments (raw floats) and its choice letter(s), if any."""

    segments: tuple[tuple[float, float], ...] = ()
    choice: str | None = None


def _fmt_seconds(x: float) -> str:
    """Seconds with at most two decimals and no trailing zeros ("4.14", "24.3", "0")."""
    s = f"{float(x):.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _fmt_segments(segments) -> str:
    return ", ".join(f"{_fmt_seconds(s)} to {_fmt_seconds(e)}" for s, e in segments)


def _letters(n: int) -> str:
    return "".join(chr(ord("A") + i) for i in range(n))


THINK_INSTRUCTION = "Reason about the video first inside <think> </think>, then give the final answer. "

_PROMPTS = {
    "tg": (
        'The video lasts {duration} seconds. When does this happen: "{query}"? '
        "{think}Reply with the start and end time in seconds as <answer>START to END</answer>."
    ),
    "dtg": (
        "The video lasts {duration} seconds. These events happen in this order:\n{query}\n"
        "Locate each of them. {think}Reply with one interval per event, in the same order, as "
        "<answer>S1 to E1, S2 to E2, ...</answer> (seconds)."
    ),
    "vhd": (
        'The video lasts {duration} seconds. Find every part of the video that shows: "{query}". '
        "{think}Reply with all the intervals in seconds as <answer>S1 to E1, S2 to E2, ...</answer>."
    ),
    "gvqa": (
        "The video lasts {duration} seconds. {query}\nOptions:\n{options}\n"
        "{think}Reply with the letter of the right option and the intervals (seconds) that show the "
        "evidence, as <answer>LETTER</answer><glue>S1 to E1, ...</glue>."
    ),
    "tal": (
        'The video lasts {duration} seconds. Find every instance of the action "{query}". '
        "{think}Reply with one interval per instance in seconds as "
        "<answer>S1 to E1, S2 to E2, ...</answer>."
    ),
    "tvg": (
        'The video lasts {duration} seconds. Find the moment described by "{query}". '
        "{think}Reply with its start and end in seconds as <answer>START to END</answer>."
    ),
    "order": (
        "The {n_images} images, labelled {labels} in the order shown, are shuffled steps of: "
        '"{query}". Put them in the order in which they happened. '
        "{think}Reply with the labels in that order, e.g. <answer>{labels}</answer>."
    ),
    "mcq": (
        "{query}\nOptions:\n{options}\n{think}Reply with the letter of the right option as <answer>LETTER</answer>."
    ),
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its prompt, its output template, how to read it, its reward and its metrics.

    answer: "segment" | "segments" | "choice_glue" | "choice" | "order".
    reward: "type1" | "type2" | "type3" | "tiou" (localisation) or "exact" (TPRU).
    weights: default reward weights (format, loc, cls); `total = sum(w * term)`.
    pick: which parsed segment single-segment metrics use ("first", or "last" for Time-R1).
    """

    name: str
    description: str
    prompt_template: str
    answer: str
    reward: str
    metrics: tuple[str, ...]
    weights: tuple[float, float, float] = (1.0, 1.0, 0.0)
    has_cls: bool = False
    pick: str = "first"

    @property
    def has_segments(self) -> bool:
        """Whether the targets carry segments and a duration."""
        return self.answer in ("segment", "segments", "choice_glue")

    def output_regex(self, think: bool = True, open_segments: bool = False) -> re.Pattern:
        """The strict template the format reward matches (whole completion, optional spaces).

        open_segments: the segment list is left open as a `body` group of any text without `<`, for
        a caller that checks its grammar itself (`rewards.segment_lists`).
        """
        return _output_regex(self.answer, think, open_segments)

    def format_ok(self, text: str, think: bool = True) -> bool:
        """R_format: does the whole completion match the template?"""
        return self.output_regex(think).fullmatch(text) is not None

    def parse(self, text: str, fallback: bool = False, max_segments: int = MAX_SEGMENTS) -> Parsed:
        """Leniently read a completion; see the module docstring for `fallback`."""
        text = text if isinstance(text, str) else ""
        block = last_block(text, "answer")
        if block is None and fallback:
            block = text
        if block is None:
            return Parsed()
        if self.answer in ("segment", "segments"):
            return Parsed(tuple(parse_segments(block, max_segments, last=self.pick == "last")))
        if self.answer == "choice_glue":
            glue = last_block(text, "glue")
            if glue is None and fallback:
                glue = text
            segs = () if glue is None else tuple(parse_segments(glue, max_segments))
            return Parsed(segs, _parse_choice(block))
        if self.answer == "choice":
            return Parsed((), _parse_choice(block))
        return Parsed((), _parse_order(block))

    def build_prompt(self, sample: Mapping[str, Any], think: bool = True, template: str | None = None) -> str:
        """The user text of the prompt (vision blocks are inserted by the data pipeline).

        `template` overrides `prompt_template`; it may use {query}, {duration}, {options},
        {n_images}, {labels} and {think}.
        """
        query = sample.get("query", "")
        if isinstance(query, (list, tuple)):
            query = "\n".join(f"{i + 1}. {q.strip()}" for i, q in enumerate(query))
        options = sample.get("options") or []
        n_images = len(sample.get("images") or [])
        duration = sample.get("duration")
        fields = {
            "query": str(query).strip(),
            "duration": _fmt_seconds(duration) if duration is not None else "?",
            "options": "\n".join(f"{l}. {o}" for l, o in zip(_letters(len(options)), options)),
            "n_images": n_images,
            "labels": _letters(n_images),
            "think": THINK_INSTRUCTION if think else "",
        }
        return (template or self.prompt_template).format(**fields)

    def expected_choice(self, sample: Mapping[str, Any]) -> str:
        """The target's right letter (choice tasks) or letter order ("order"); ValueError if absent."""
        if not isinstance(sample, Mapping):
            raise ValueError(f"target is not a mapping: {type(sample).__name__}")
        if self.answer != "order":
            return answer_letter(sample)
        order = str(sample.get("answer") or "").strip().upper()
        if not order.isalpha():
            raise ValueError(f"sample {sample.get('id')!r}: answer {sample.get('answer')!r} is not a letter order")
        return order

    def reference_answer(self, sample: Mapping[str, Any], think: bool = False) -> str:
        """The ideal completion for `sample` (SFT cold start and tests); matches the template."""
        segs = sample.get("segments") or []
        if self.answer == "segment":
            body = f"<answer>{_fmt_segments(segs[:1])}</answer>"
            thought = f"The described moment spans {_fmt_segments(segs[:1])} seconds."
        elif self.answer == "segments":
            body = f"<answer>{_fmt_segments(segs)}</answer>"
            thought = f"I find {len(segs)} relevant interval(s): {_fmt_segments(segs)} seconds."
        elif self.answer == "choice_glue":
            letter = self.expected_choice(sample)
            body = f"<answer>{letter}</answer><glue>{_fmt_segments(segs)}</glue>"
            thought = f"The evidence is at {_fmt_segments(segs)} seconds, so the answer is {letter}."
        elif self.answer == "choice":
            letter = self.expected_choice(sample)
            body = f"<answer>{letter}</answer>"
            thought = f"Option {letter} fits what the images show."
        else:
            order = self.expected_choice(sample)
            body = f"<answer>{order}</answer>"
            thought = f"Following the steps, the order is {order}."
        return f"<think>{thought}</think>{body}" if think else body


_REGEX_CACHE: dict[tuple[str, bool, bool], re.Pattern] = {}


def _output_regex(answer: str, think: bool, open_segments: bool = False) -> re.Pattern:
    key = (answer, think, open_segments)
    if key not in _REGEX_CACHE:
        prefix = _THINK if think else ""
        if open_segments:
            seg = segs = r"(?P<body>[^<]*)"
        else:
            seg, segs = rf"\s*(?P<body>{_SEG})\s*", rf"\s*(?P<body>{SEGMENT_LIST})\s*"
        body = _ANSWER_BODY[answer].replace("@SEGS@", segs).replace("@SEG@", seg)
        _REGEX_CACHE[key] = re.compile(rf"\s*{prefix}{body}\s*", re.DOTALL)
    return _REGEX_CACHE[key]


def answer_letter(sample: Mapping[str, Any]) -> str:
    """The target's answer as one upper-case letter (a letter, an option's text or an index)."""
    ans = sample.get("answer")
    options = sample.get("options") or ()
    # the common case first (an upper-case letter that is not also an option's text): rewards read it per row
    if ans.__class__ is str and len(ans) == 1 and "A" <= ans <= "Z" and ans not in options:
        return ans
    options = list(options)
    if isinstance(ans, bool) or ans is None:
        raise ValueError(f"sample {sample.get('id')!r}: missing answer")
    if isinstance(ans, int) and 0 <= ans < 26:
        return chr(ord("A") + ans)
    text = str(ans).strip()
    if text in options:
        return chr(ord("A") + options.index(text))
    if len(text) == 1 and "A" <= text.upper() <= "Z":
        return text.upper()
    raise ValueError(f"sample {sample.get('id')!r}: answer {ans!r} is not a letter or an option")


_LOC_METRICS = ("mIoU", "R@0.3", "R@0.5", "R@0.7")
_TG_METRICS = ("mIoU", "R1@0.3", "R1@0.5", "R1@0.7")
_GQA_METRICS = (
    "Acc",
    *_LOC_METRICS,
    "gqa_mIoP",
    "gqa_IoP@0.3",
    "gqa_IoP@0.5",
    "gqa_mIoU",
    "gqa_IoU@0.3",
    "gqa_IoU@0.5",
    "Acc@GQA",
)
_TAL_METRICS = ("F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7", "mF1")

# TPRU's public reward, as DESIGN §2 writes it: 0.9 * exact + 0.1 * format-ok * 0.2, i.e. a
# format weight of 0.1 * 0.2 = 0.02 (the exact-match term is reported as `cls`).
TPRU_WEIGHTS = (0.1 * 0.2, 0.0, 0.9)

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("tg", "temporal grounding (TempR1 Type 1)", _PROMPTS["tg"], "segment", "type1", _TG_METRICS),
        Task("dtg", "dense temporal grounding (Type 1)", _PROMPTS["dtg"], "segments", "type1", _LOC_METRICS),
        Task("vhd", "video highlight detection (Type 2)", _PROMPTS["vhd"], "segments", "type2", _LOC_METRICS),
        Task(
            "gvqa",
            "grounded video QA (Type 2 + R_cls)",
            _PROMPTS["gvqa"],
            "choice_glue",
            "type2",
            _GQA_METRICS,
            weights=(1.0, 1.0, 1.0),
            has_cls=True,
        ),
        Task("tal", "temporal action localisation (Type 3)", _PROMPTS["tal"], "segments", "type3", _TAL_METRICS),
        Task("tvg", "temporal grounding, Time-R1 tIoU", _PROMPTS["tvg"], "segment", "tiou", _TG_METRICS, pick="last"),
        Task(
            "order",
            "TPRU frame ordering",
            _PROMPTS["order"],
            "order",
            "exact",
            ("Acc",),
            weights=TPRU_WEIGHTS,
            has_cls=True,
        ),
        Task(
            "mcq",
            "TPRU next/previous frame choice",
            _PROMPTS["mcq"],
            "choice",
            "exact",
            ("Acc",),
            weights=TPRU_WEIGHTS,
            has_cls=True,
        ),
    )
}


def get_task(name: str) -> Task:
    """The registered task `name` (ValueError listing the known names otherwise)."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def target_segments(sample: Mapping[str, Any]) -> tuple[list[tuple[float, float]], float]:
    """A target's ground-truth (start, end) segments and duration, validated.

    Raises ValueError naming the sample id for a missing/non-positive duration, missing segments,
    non-numeric or non-finite numbers, or a segment with start > end.
    """
    if not isinstance(sample, Mapping):
        raise ValueError(f"target is not a mapping: {type(sample).__name__}")
    sid = sample.get("id")
    duration = sample.get("duration")
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise ValueError(f"sample {sid!r}: missing or non-numeric duration {duration!r}") from None
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"sample {sid!r}: duration must be finite and > 0, got {duration!r}")
    raw = sample.get("segments")
    try:
        segs = [] if raw is None else [(float(s), float(e)) for s, e in raw]
    except (TypeError, ValueError):
        raise ValueError(f"sample {sid!r}: segments are not [[start, end], ...]: {raw!r}") from None
    if not segs:
        raise ValueError(f"sample {sid!r}: missing ground-truth segments")
    for s, e in segs:
        if not -math.inf < s <= e < math.inf:
            what = "start > end" if math.isfinite(s) and math.isfinite(e) else "non-finite number"
            raise ValueError(f"sample {sid!r}: segment {what} in {[s, e]!r}")
    return segs, duration
