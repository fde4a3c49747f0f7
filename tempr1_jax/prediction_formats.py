"""Readers for the prediction files of the projects we compare with, so `tempr1 score` can rescore them.

A reader turns each prediction row into a `Prediction`: the peer's raw answer read with the peer's own
rules and written back in this project's answer format (`<answer>s to e, ...</answer>`, or
`<answer>B</answer><glue>s to e, ...</glue>`), so that our metrics see what the peer's script saw.
Every format also takes our row layout, `{"id", "output"}` with the peer's raw model text as output.

- `tempr1` (default): JSONL of `{"id", "output"}`, read by our task parser.
- `time_r1`: Time-R1 `evaluate.py` JSONL, `{"qid", "pred": [s, e] or [null, null], "target",
  "duration", "output_text"}`; `pred` is what `eval_all` scores. Raw text is read as Time-R1 reads it:
  the last "x to y" (or "x and y") of the whole output. Tasks tg, tvg.
- `videochat_r1`: VideoChat-R1 `src_eval`: grounding log rows (`{"video_path", "query", "answer",
  "ans"}`, `ans` the ground truth) or raw text read as Time-R1 reads it (last "x to y"); NExT-GQA log
  rows (`{"video_path", "gt": {"answer", "glue"}, "pred"}`) or raw text: the option is the first letter
  A-G of the first `<answer>` block (after its answer phrases are removed), the spans the first
  `<glue>` block as a Python list `[(s, e), ...]` with s <= e (anything else: no span; the script
  itself keeps the previous item's IoU then). Tasks tg, tvg, gvqa.
- `museg`: MUSEG `eval_grounding.py` output json (a list of `{"video", "groundtruth", "result":
  {"output"}}` and a final stats object) or raw text: exactly one `<answer>` block, its numbers paired
  in order ("s-e s-e"); an odd count or a pair with s >= e leaves no prediction. Segment tasks.

Rows without one of our ids (Time-R1's `qid`s, MUSEG's and VideoChat-R1's files) are matched to targets
by ground truth (and video name, duration and answer letter where the row has them): a row goes to the
first target not yet matched whose values agree, so targets that share a match have equal metrics.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tempr1_jax import tasks as tasks_lib


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One prediction: our id if the row has one, the output in our format, and what the row says about
    its target (used to match rows without our id)."""

    id: str | None
    output: str | None
    ground_truth: tuple[tuple[float, float], ...] | None = None
    video: str | None = None
    duration: float | None = None
    answer: str | None = None


def _segment_list(segments: Sequence[tuple[float, float]]) -> str:
    return ", ".join(f"{float(s)!r} to {float(e)!r}" for s, e in segments)


def _answer(segments: Sequence[tuple[float, float]]) -> str:
    return f"<answer>{_segment_list(segments)}</answer>"


# --- Time-R1 and VideoChat-R1 grounding: the last "x to y" of the whole output -----------------------
_TO = re.compile(r"(\d+\.?\d*) (?:to|and) (\d+\.?\d*)")


def last_to_segment(text: str) -> tuple[float, float] | None:
    """Time-R1 / VideoChat-R1: the last "x to y" (or "x and y") anywhere in the output, or None."""
    pairs = _TO.findall(text)
    return (float(pairs[-1][0]), float(pairs[-1][1])) if pairs else None


# --- VideoChat-R1 NExT-GQA ------------------------------------------------------------------------
# The script's list, with its two concatenated literals ("Best answer:" "Best option:") kept as one.
_ANSWER_PHRASES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:Best option:",
)
_PAIR = r"\(\d+(?:\.\d+)?,\s*\d+(?:\.\d+)?\)"
_GLUE_LIST = re.compile(rf"\[(?:{_PAIR}(?:,\s*{_PAIR})*,?)?\]\n?\Z")
_NUMBER_PAIR = re.compile(r"\((\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?)\)")


def videochat_letter(text: str) -> str | None:
    """VideoChat-R1's option letter of an answer: the first of A-G once its answer phrases are removed
    (None if there is none)."""
    text = text.strip()
    for phrase in _ANSWER_PHRASES:
        text = text.replace(phrase, "")
    match = re.search(r"[ABCDEFG]", text)
    return match[0] if match else None


def videochat_glue(text: str) -> list[tuple[float, float]] | None:
    """VideoChat-R1's spans: a Python list of (s, e) number pairs with s <= e; None otherwise."""
    if not _GLUE_LIST.match(text):
        return None
    pairs = [(float(s), float(e)) for s, e in _NUMBER_PAIR.findall(text)]
    return pairs if all(s <= e for s, e in pairs) else None


def _videochat_gqa_output(text: str) -> str:
    answer = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    letter = videochat_letter(answer[1]) if answer else None
    glue = re.search(r"<glue>(.*?)</glue>", text, re.DOTALL)
    spans = (videochat_glue(glue[1]) if glue else None) or []
    return f"<answer>{letter or ''}</answer><glue>{_segment_list(spans)}</glue>"


# --- MUSEG -------------------------------------------------------------------------------------------
def museg_answer(text: str) -> str:
    """MUSEG's answer content: the text of the one `<answer>` block ('' unless there is exactly one)."""
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return ""
    match = re.search(r"<answer>(.*)</answer>", text, re.DOTALL)
    return match[1].strip() if match else ""


def museg_segments(content: str) -> list[tuple[float, float]]:
    """MUSEG's segments of an answer content: its numbers paired in order; none if their count is
    odd, one does not parse or a pair has start >= end."""
    numbers = re.findall(r"\d+\.*\d*", content)
    try:
        values = [float(x) for x in numbers]
    except ValueError:
        return []
    pairs = list(zip(values[::2], values[1::2]))
    if len(values) % 2 or any(s >= e for s, e in pairs):
        return []
    return pairs


# --- formats -----------------------------------------------------------------------------------------
def _segments(value: Any) -> tuple[tuple[float, float], ...] | None:
    try:
        return tuple((float(s), float(e)) for s, e in value)
    except (TypeError, ValueError):
        return None


def _grounding_text(text: str) -> str:
    seg = last_to_segment(text)
    return _answer([seg]) if seg else ""


def _text_row(row: Mapping[str, Any], read: Callable[[str], str]) -> Prediction | None:
    """Our `{"id", "output"}` layout, the output read by `read`."""
    if "id" not in row:
        return None
    output = row.get("output")
    return Prediction(str(row["id"]), read(output) if isinstance(output, str) else None)


def _tempr1(row: Mapping[str, Any], task: str) -> Prediction | None:
    return _text_row(row, str)


def _time_r1(row: Mapping[str, Any], task: str) -> Prediction | None:
    if "id" in row:
        return _text_row(row, _grounding_text)
    if "qid" not in row or not ("pred" in row or "output_text" in row):
        return None
    pred = row.get("pred")
    if isinstance(pred, (list, tuple)) and None in pred:
        output = ""
    elif pred is not None:
        segments = _segments([pred])
        if segments is None:
            return None
        output = _answer(segments)
    else:
        output = _grounding_text(str(row.get("output_text") or ""))
    target = row.get("target")
    duration = row.get("duration")
    return Prediction(
        str(row["qid"]),
        output,
        _segments([target]) if target is not None else None,
        duration=float(duration) if isinstance(duration, (int, float)) else None,
    )


def _videochat_r1(row: Mapping[str, Any], task: str) -> Prediction | None:
    read = _videochat_gqa_output if task == "gvqa" else _grounding_text
    if "id" in row:
        return _text_row(row, read)
    if task != "gvqa" and "ans" in row and "answer" in row:
        return Prediction(
            None, read(str(row.get("answer") or "")), _segments([row["ans"]]), video=row.get("video_path")
        )
    gt = row.get("gt")
    if not (task == "gvqa" and isinstance(gt, Mapping) and "pred" in row):
        return None
    answer = videochat_letter(str(gt.get("answer", "")))
    return Prediction(
        None,
        read(str(row.get("pred") or "")),
        _segments(gt.get("glue") or ()),
        video=row.get("video_path"),
        answer=answer,
    )


def _museg(row: Mapping[str, Any], task: str) -> Prediction | None:
    if "id" in row:
        return _text_row(row, lambda text: _answer(museg_segments(museg_answer(text))))
    result = row.get("result")
    if "groundtruth" not in row or not isinstance(result, Mapping):
        return None
    content = result.get("output")
    output = _answer(museg_segments(content)) if isinstance(content, str) else None
    return Prediction(None, output, _segments(row["groundtruth"]), video=row.get("video"))


@dataclasses.dataclass(frozen=True)
class Format:
    """A prediction-file format: its row reader, the tasks it covers (None: all) and its layout."""

    read_row: Callable[[Mapping[str, Any], str], Prediction | None]
    tasks: tuple[str, ...] | None
    layout: str


_SEGMENT_TASKS = tuple(name for name, t in tasks_lib.TASKS.items() if t.answer in ("segment", "segments"))
_OURS = '{"id", "output"}'
FORMATS: dict[str, Format] = {
    "tempr1": Format(_tempr1, None, _OURS),
    "time_r1": Format(_time_r1, ("tg", "tvg"), f'{{"qid", "pred", "target", "duration", "output_text"}} or {_OURS}'),
    "videochat_r1": Format(
        _videochat_r1,
        ("tg", "tvg", "gvqa"),
        f'{{"video_path", "answer", "ans"}} (grounding), {{"video_path", "gt", "pred"}} (gvqa) or {_OURS}',
    ),
    "museg": Format(_museg, _SEGMENT_TASKS, f'{{"video", "groundtruth", "result": {{"output"}}}} or {_OURS}'),
}


def _rows(path: pathlib.Path) -> list[tuple[int, Any]]:
    """(row number, value) of a JSON list file, or of a JSONL file (1-based line numbers)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"predictions {path}: not JSON ({e.msg})") from None
        return list(enumerate(data))
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"predictions {path}:{lineno}: not JSON ({e.msg})") from None
    return rows


def read_predictions(path: str | pathlib.Path, fmt: str, task: str) -> list[Prediction]:
    """The predictions of a `fmt` file for `task`; ValueError naming the row that fits no layout.

    A MUSEG file's final stats object (no `groundtruth`, has `tot`) is skipped."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown prediction format {fmt!r}; known: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    tasks_lib.get_task(task)
    if spec.tasks is not None and task not in spec.tasks:
        raise ValueError(f"prediction format {fmt!r} covers tasks {', '.join(spec.tasks)}, not {task!r}")
    path = pathlib.Path(path)
    out = []
    for number, row in _rows(path):
        if fmt == "museg" and isinstance(row, Mapping) and "tot" in row and "groundtruth" not in row:
            continue
        pred = spec.read_row(row, task) if isinstance(row, Mapping) else None
        if pred is None:
            raise ValueError(f"predictions {path} row {number}: not a {fmt} prediction (expected {spec.layout})")
        out.append(pred)
    return out


def _key(segments: Iterable[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    return tuple(sorted((round(float(s), 3), round(float(e), 3)) for s, e in segments))


def _stem(path: Any) -> str:
    return pathlib.PurePosixPath(str(path)).stem


def _agrees(pred: Prediction, target: Mapping[str, Any]) -> bool:
    video, duration = target.get("video"), target.get("duration")
    if pred.video is not None and video is not None and _stem(pred.video) != _stem(video):
        return False
    if pred.duration is not None and duration is not None and abs(pred.duration - float(duration)) > 1e-6:
        return False
    return pred.answer is None or pred.answer == tasks_lib.answer_letter(target)


def align(predictions: Sequence[Prediction], targets: Sequence[Mapping[str, Any]]) -> tuple[list[str | None], int]:
    """Outputs aligned with `targets` (None: no prediction) and the number of predictions matching no
    target: by our id, else (rows without one of our ids) by ground truth as the module docstring says."""
    index = {str(t["id"]): i for i, t in enumerate(targets)}
    outputs: list[str | None] = [None] * len(targets)
    unmatched, pending = 0, []
    for pred in predictions:
        if pred.id is not None and pred.id in index:
            outputs[index[pred.id]] = pred.output
        elif pred.ground_truth is not None:
            pending.append(pred)
        else:
            unmatched += 1
    if pending:
        by_truth = collections.defaultdict(list)
        for i, t in enumerate(targets):
            if outputs[i] is None:
                by_truth[_key(tasks_lib.target_segments(t)[0])].append(i)
        taken: set[int] = set()
        for pred in pending:
            match = next(
                (i for i in by_truth.get(_key(pred.ground_truth), ()) if i not in taken and _agrees(pred, targets[i])),
                None,
            )
            if match is None:
                unmatched += 1
                continue
            taken.add(match)
            outputs[match] = pred.output
    return outputs, unmatched
