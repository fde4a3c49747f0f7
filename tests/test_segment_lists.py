"""The compiled segment-list reader against the strict template's regex and `float`."""

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tempr1_jax import tasks
from tempr1_jax.rewards.segment_lists import read_segment_lists

BODY = re.compile(rf"\s*{tasks.SEGMENT_LIST}\s*")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def regex_read(bodies, single):
    """What the strict templates say: per body, matches? and its numbers read with `float`."""
    ok, counts, values = [], [], []
    for body in bodies:
        nums = [float(x) for x in NUMBER.findall(body)] if BODY.fullmatch(body) else []
        good = bool(nums) and (not single or len(nums) == 2)
        ok.append(good)
        counts.append(len(nums) // 2 if good else 0)
        values += nums if good else []
    return np.array(ok, bool), np.array(counts, np.int64), np.array(values, np.float64).reshape(-1, 2)


def check(bodies, single=False):
    got, want = read_segment_lists(bodies, single), regex_read(bodies, single)
    np.testing.assert_array_equal(got[0], want[0], err_msg=repr(bodies))
    np.testing.assert_array_equal(got[1], want[1], err_msg=repr(bodies))
    assert got[2].shape == want[2].shape, bodies
    np.testing.assert_array_equal(got[2], want[2], err_msg=repr(bodies))  # bit-exact


PIECES = list("0123456789") + [
    ".",
    " ",
    ",",
    "t",
    "o",
    "to",
    " to ",
    ", ",
    "\t",
    "\n",
    "\x0b",
    "\x1c",
    "x",
    "-",
    "1.5",
    "12.25",
    "٣",
    "\u2003",
    "<",
    "1234567890123456789",
    "0.000000000000001",
]
SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), max_size=8), st.booleans())
def test_random_bodies_match_the_regex(bodies, single):
    check(bodies, single)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.decimals(0, 10**6, places=3, allow_nan=False), st.decimals(0, 10**6, places=2, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([" to ", "to", " to\n"]),
    st.sampled_from([", ", ",", " ,  "]),
)
def test_well_formed_lists_read_exactly(pairs, to, comma):
    body = comma.join(f"{a}{to}{b}" for a, b in pairs)
    check([body, f"  {body}\n"])


def test_hand_cases():
    bodies = [
        "1 to 2",
        " 3.5to4 , 5 to 6.25 ",
        "1.5 to",
        "1..2 to 3",
        "1. to 2",
        ".5 to 1",
        "1 to 2,",
        "1 to 2, ",
        "12345678901234567 to 2.123456789012345678",
        "0.1 to 0.3",
        "1 2 to 3",
        "1 t o 2",
        "1 too 2",
        "",
    ]
    check(bodies)
    check(bodies, single=True)
    ok, counts, values = read_segment_lists(["0.1 to 0.3, 7 to 8", "x"])
    assert ok.tolist() == [True, False] and counts.tolist() == [2, 0]
    assert values.tolist() == [[0.1, 0.3], [7.0, 8.0]]


def test_non_ascii_and_terminator_take_the_regex_route():
    check(["١ to ٢", "1 to 2", "1\u2003to 2"])
    check(["1 to 2<", "3 to 4"])
    assert read_segment_lists([])[2].shape == (0, 2)
