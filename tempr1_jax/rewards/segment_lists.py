"""Compiled reading of strict-template segment lists ("1.5 to 3, 4 to 5.25") for the reward path.

A strict template's answer body (`tasks.SEGMENT_LIST` between optional spaces) has the grammar

    \\s* NUM \\s* to \\s* NUM ( \\s* , \\s* NUM \\s* to \\s* NUM )* \\s*      NUM = [0-9]+ ( \\. [0-9]+ )?

Checking it with `re` and converting the numbers with `np.fromstring` costs ~30 ns per character,
more than all the rest of `compute_rewards` on long TAL answers. `read_segment_lists` joins the bodies
of a batch into one byte string and reads them in one compiled pass (numba): a four-state machine
per body (number, "to", number, comma or end) that accumulates each number's digits as an integer.
A number is that integer divided by a power of ten, which equals `float(text)` exactly for up to 15
digits (both are exact doubles and IEEE division rounds correctly); longer numbers are re-read with
`float`. Bodies with non-ASCII text (the regex's `\\s` also matches other Unicode spaces; digits are
ASCII only) go through the regex one by one. Tests check both routes against the regex.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numba
import numpy as np

from tempr1_jax import tasks as tasks_lib

_END = "<"  # ends each body in the joined text; a body never holds it (the templates read `[^<]*`)
_SPACE = np.array([re.fullmatch(r"\s", chr(c)) is not None for c in range(128)] + [False] * 128)
_MAX_DIGITS = 15  # integers below 10**15 < 2**53 are exact doubles
_POW10 = 10.0 ** np.arange(_MAX_DIGITS + 1)
_BODY = re.compile(rf"\s*{tasks_lib.SEGMENT_LIST}\s*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@numba.njit(cache=True, nogil=True)
def _scan(text, space, pow10, n_bodies, single):  # pragma: no cover - compiled
    """(ok, counts, values, long numbers as (value index, start, stop) triples) of the joined bodies.

    `text` is uint8 with every body followed by `<` and two padding zeros after the last one.
    """
    ok = np.zeros(n_bodies, np.bool_)
    counts = np.zeros(n_bodies, np.int64)
    values = np.empty(len(text) // 2 + 2, np.float64)
    longs = np.empty(3 * (len(text) // 2 + 2), np.int64)
    n_values = 0
    n_longs = 0
    i = 0
    for body in range(n_bodies):
        first_value, first_long = n_values, n_longs
        state = 0  # expecting: 0 a start, 1 "to", 2 an end, 3 a comma or the end of the body
        good = True
        while text[i] != 60:  # '<'
            c = text[i]
            if space[c] or not good:
                i += 1
            elif state == 0 or state == 2:
                if c < 48 or c > 57:
                    good = False
                    continue
                start = i
                mantissa = 0
                digits = 0
                frac = 0
                while 48 <= text[i] <= 57:
                    mantissa = mantissa * 10 + (text[i] - 48) if digits < _MAX_DIGITS else mantissa
                    digits += 1
                    i += 1
                if text[i] == 46:  # '.' must be followed by digits
                    i += 1
                    if not 48 <= text[i] <= 57:
                        good = False
                        continue
                    while 48 <= text[i] <= 57:
                        mantissa = mantissa * 10 + (text[i] - 48) if digits < _MAX_DIGITS else mantissa
                        digits += 1
                        frac += 1
                        i += 1
                    if text[i] == 46:
                        good = False
                        continue
                if digits > _MAX_DIGITS:
                    longs[3 * n_longs] = n_values
                    longs[3 * n_longs + 1] = start
                    longs[3 * n_longs + 2] = i
                    n_longs += 1
                    values[n_values] = 0.0
                else:
                    values[n_values] = mantissa / pow10[frac]
                n_values += 1
                state += 1
            elif state == 1:
                if c == 116 and text[i + 1] == 111:  # "to"
                    i += 2
                    state = 2
                else:
                    good = False
            elif c == 44 and not single:  # ','
                i += 1
                state = 0
            else:
                good = False
        i += 1
        if good and state == 3:
            ok[body] = True
            counts[body] = (n_values - first_value) // 2
        else:
            n_values, n_longs = first_value, first_long
    return ok, counts, values[:n_values].copy(), longs[: 3 * n_longs].copy()


def read_segment_lists(bodies: Sequence[str], single: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which bodies follow the segment-list grammar, and their segments.

    Returns (ok [n] bool, counts [n] int64 segments per body (0 where not ok), values
    [sum(counts), 2] float64 in body order). `single`: a body must hold exactly one segment (the
    one-segment template). Never raises on body text.
    """
    text = _END.join(bodies) + _END
    if not text.isascii() or text.count(_END) != len(bodies) + (not bodies):
        return _read_one_by_one(bodies, single)
    raw = np.frombuffer(text.encode("ascii") + b"\0\0", np.uint8)
    ok, counts, values, longs = _scan(raw, _SPACE, _POW10, len(bodies), single)
    for k in range(0, len(longs), 3):
        values[longs[k]] = float(text[longs[k + 1] : longs[k + 2]])
    return ok, counts, values.reshape(-1, 2)


def _read_one_by_one(bodies: Sequence[str], single: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`read_segment_lists` with the regex and `float` (non-ASCII text, or a body holding `<`)."""
    read = []
    for body in bodies:
        nums = [float(x) for x in _NUMBER.findall(body)] if _BODY.fullmatch(body) else []
        read.append(nums if nums and (not single or len(nums) == 2) else None)
    ok = np.array([r is not None for r in read], bool)
    counts = np.array([len(r) // 2 if r else 0 for r in read], np.int64)
    values = np.array([x for r in read if r for x in r], np.float64).reshape(-1, 2)
    return ok, counts, values
