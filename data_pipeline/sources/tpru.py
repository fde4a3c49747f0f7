"""TPRU-style multi-image tasks, in this project's documented json form.

TPRU's public release has no fixed file layout, so the adapter reads a list of records

    {"id": "q1", "task": "order" | "mcq", "images": ["a.jpg", ...], "question": str,
     "options": [str, ...] (mcq only), "answer": "CABD" (order) | "B" (mcq)}

Image paths are relative to the media directory (`videos_dir`), or absolute. `order`: the images
are shown labelled A, B, ... and the answer is the letter string in true temporal order. `mcq`:
next- or previous-frame choice, one option letter (options may include a "none" choice). A record
that is not an object is dropped and counted (`_common.Dropped`).

`load_sequences` (`--dataset tpru_sequences`) builds the three question kinds from plain image
sequences instead, with a configurable share of "none of the choices" negatives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from data_pipeline import paths
from data_pipeline.samples import LETTERS, Sample
from data_pipeline.sources._common import Dropped, PathLike, expect_type, not_an_object, read_json, single_path

SOURCE = "tpru"


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample | Dropped]:
    """One multi-image sample per record."""
    path = single_path(annotations, SOURCE)
    records = expect_type(read_json(path), list, path, "a list of records")
    base = paths.absolute(videos_dir) if videos_dir is not None else None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            yield not_an_object(f"record {index}", record)
            continue
        images = [str(p) for p in record.get("images") or []]
        options = record.get("options")
        yield Sample(
            id=str(record.get("id", index)),
            task=str(record.get("task", "")),
            source=SOURCE,
            query=str(record.get("question", "")).strip(),
            images=tuple(str(base / p) if base is not None else p for p in images),
            options=tuple(str(o) for o in options) if isinstance(options, list) else None,
            answer=str(record["answer"]) if record.get("answer") is not None else None,
        )


# ---- questions generated from image sequences ----------------------------------------------------

NONE_OF_THE_CHOICES = "None of the choices provided."
KINDS = ("order", "next", "previous")


def load_sequences(
    annotations: PathLike | Sequence[PathLike],
    videos_dir: PathLike | None = None,
    *,
    negative_share: float = 0.25,
    num_candidates: int = 3,
    seed: int = 0,
    kinds: Sequence[str] = KINDS,
) -> Iterator[Sample]:
    """TPRU's three question kinds built from ordered image sequences, with "none of the choices" negatives.

    `annotations` is a json list of sequences, frames in temporal order (paths as in `load`):

        {"id": "s1", "images": ["s1/0.jpg", "s1/1.jpg", "s1/2.jpg", "s1/3.jpg"],
         "caption": "pick up the fork" (optional), "scenario": "robot" (optional)}

    Per sequence of at least 3 frames (others are skipped), one sample per kind, id `"{id}#{kind}"`:

    - `order`: the frames shuffled (labelled A, B, ... as shown); the answer is the letter string in
      temporal order.
    - `next` (TPRU's next-frame prediction: frames 1, 2 and 4 given, frame 3 asked) and `previous`
      (the last frames given, the first asked): `mcq` samples whose images are the given frames, then
      `num_candidates` candidate frames; the options are "Image X" for each candidate and
      `NONE_OF_THE_CHOICES`. Distractors are frames of other sequences, of the same `scenario` when
      there are enough. In a `negative_share` of these questions (exactly round(share x count), chosen
      with `seed`) every candidate is a distractor and the answer is the last option.

    Everything random (shuffles, distractors, candidate positions, negatives) follows `seed`.
    `extra` records the kind, whether the question is a negative, and the source sequence.
    """
    if not 0 <= negative_share <= 1:
        raise ValueError(f"negative_share must be in [0, 1], got {negative_share}")
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown TPRU question kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    path = single_path(annotations, SOURCE)
    records = expect_type(read_json(path), list, path, "a list of image sequences")
    base = paths.absolute(videos_dir) if videos_dir is not None else None
    sequences = []
    for index, record in enumerate(records):
        record = record if isinstance(record, dict) else {}
        frames = [str(base / p) if base is not None else str(p) for p in record.get("images") or []]
        if len(frames) >= 3:
            sequences.append(
                (
                    str(record.get("id", index)),
                    frames,
                    str(record.get("caption") or "").strip(),
                    str(record.get("scenario") or ""),
                )
            )
    rng = np.random.default_rng(seed)
    choice_kinds = [k for k in kinds if k != "order"]
    n_choice = len(sequences) * len(choice_kinds)
    negative = np.zeros(n_choice, bool)
    negative[rng.permutation(n_choice)[: round(negative_share * n_choice)]] = True
    k = 0
    for position, (seq_id, frames, caption, scenario) in enumerate(sequences):
        about = f' of "{caption}"' if caption else ""
        for kind in kinds:
            extra = {"kind": kind, "sequence": seq_id}
            if kind == "order":
                shown = rng.permutation(len(frames))
                yield Sample(
                    id=f"{seq_id}#order",
                    task="order",
                    source=SOURCE,
                    query=caption or "the steps of one procedure",
                    images=tuple(frames[i] for i in shown),
                    answer="".join(LETTERS[int(np.flatnonzero(shown == t)[0])] for t in range(len(frames))),
                    extra=extra,
                )
                continue
            asked = len(frames) - 2 if kind == "next" else 0
            given = [f for i, f in enumerate(frames) if i != asked]
            pool = _distractor_pool(sequences, position, scenario, num_candidates)
            candidates = [pool[i] for i in rng.choice(len(pool), num_candidates, replace=False)]
            if not negative[k]:
                candidates[int(rng.integers(num_candidates))] = frames[asked]
            labels = [LETTERS[len(given) + i] for i in range(num_candidates)]
            names = ", ".join(LETTERS[: len(given)])
            where = (
                f"frames 1 to {len(given)} except frame {asked + 1}"
                if kind == "next"
                else f"the last {len(given)} frames"
            )
            question = (
                f"Images {names} are {where} of a sequence{about}, in order. Which of the candidate "
                f"images {', '.join(labels)} is frame {asked + 1}?"
            )
            yield Sample(
                id=f"{seq_id}#{kind}",
                task="mcq",
                source=SOURCE,
                query=question,
                images=tuple(given + candidates),
                options=tuple(f"Image {label}" for label in labels) + (NONE_OF_THE_CHOICES,),
                answer=LETTERS[num_candidates if negative[k] else candidates.index(frames[asked])],
                extra={**extra, "negative": bool(negative[k])},
            )
            k += 1


def _distractor_pool(sequences, position: int, scenario: str, needed: int) -> list[str]:
    """Frames of the other sequences, those of the same scenario if they are enough."""
    others = [s for i, s in enumerate(sequences) if i != position]
    same = [f for s in others if s[3] == scenario for f in s[1]]
    pool = same if len(same) >= needed else [f for s in others for f in s[1]]
    if len(pool) < needed:
        raise ValueError(f"tpru sequences: {needed} distractor frames needed, only {len(pool)} in the other sequences")
    return pool
