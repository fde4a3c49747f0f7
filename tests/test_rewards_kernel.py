"""The batched kernel against the plain-Python reference, the DP matcher against brute force,
and `compute_rewards` against junk."""

import itertools
import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempr1_jax import tasks
from tempr1_jax.rewards import compute_rewards, kernel
from tempr1_jax.rewards import reference as ref

WIDTH = 8  # padded segment width used by the property tests: one compiled shape for all of them
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

number = st.one_of(
    st.floats(-50, 250, allow_nan=False).map(lambda x: round(x, 1)),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e300]),
)
pred_segment = st.tuples(number, number)


@st.composite
def gt_segment(draw):
    s = draw(st.floats(0, 200).map(lambda x: round(x, 1)))
    return (s, s + draw(st.floats(0, 80).map(lambda x: round(x, 1))))


row = st.tuples(
    st.sampled_from(["type1", "type2", "type3", "tiou"]),
    st.lists(pred_segment, max_size=WIDTH),
    st.lists(gt_segment(), min_size=1, max_size=WIDTH),
    st.floats(1, 300),
    st.sampled_from([1.0, 0.5, 2.0]),
)


def _pad(rows):
    arr = np.zeros((len(rows), WIDTH, 2))
    mask = np.zeros((len(rows), WIDTH), bool)
    for i, segs in enumerate(rows):
        for j, seg in enumerate(segs):
            arr[i, j], mask[i, j] = seg, True
    return arr, mask


@SETTINGS
@given(
    st.lists(row, min_size=1, max_size=8),
    st.sampled_from([1.0, 0.5, 2.0]),
    st.sampled_from([(True, "dp"), (False, "dp"), (True, "sequential"), (False, "sequential")]),
)
def test_kernel_matches_reference(rows, sigma, type3_variant):
    kinds, preds, gts, durations, _ = zip(*rows)
    pred, pred_mask = _pad(preds)
    gt, gt_mask = _pad(gts)
    got = kernel.loc_rewards(
        pred,
        pred_mask,
        gt,
        gt_mask,
        np.array(durations),
        np.array([kernel.KINDS[k] for k in kinds]),
        sigma,
        *type3_variant,
    )
    want = [
        ref.loc_reward(k, list(p), list(g), d, sigma, *type3_variant)
        for k, p, g, d in zip(kinds, preds, gts, durations)
    ]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@SETTINGS
@given(
    st.integers(0, 5),
    st.lists(
        st.tuples(st.sampled_from([0.0, 1.0, 2.5, math.inf, 7.0]), st.sampled_from([0.0, 1.0, 3.0, math.inf])),
        min_size=32,
        max_size=32,
    ),
)
def test_sorting_network_matches_lexsort(log_n, pairs):
    n = 2**log_n
    key = np.array([k for k, _ in pairs[:n]] * 3).reshape(3, n).T  # [N, B] with B = 3 equal columns
    other = np.array([o for _, o in pairs[:n]] * 3).reshape(3, n).T
    with jax.enable_x64(True):
        got_k, got_o = (np.asarray(x) for x in jax.jit(kernel.sort_pairs)(key, other))
    order = np.lexsort((other[:, 0], key[:, 0]))
    np.testing.assert_array_equal(got_k[:, 1], key[order, 0])
    np.testing.assert_array_equal(got_o[:, 2], other[order, 0])


def _brute_force_siou(matrix):
    m, n = len(matrix), len(matrix[0])
    best = 0.0
    for k in range(1, min(m, n) + 1):
        for rows in itertools.combinations(range(m), k):
            for cols in itertools.combinations(range(n), k):
                best = max(best, sum(matrix[r][c] for r, c in zip(rows, cols)))
    return best


@st.composite
def iou_matrix(draw):
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    values = st.one_of(st.just(0.0), st.floats(0, 1))
    return [[draw(values) for _ in range(n)] for _ in range(m)]


@SETTINGS
@given(st.lists(iou_matrix(), min_size=1, max_size=8))
def test_dp_matcher_equals_brute_force(matrices):
    padded = np.zeros((8, 6, 6))
    for i, mat in enumerate(matrices):
        padded[i, : len(mat), : len(mat[0])] = mat
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(kernel.dp_siou)(np.moveaxis(padded, 0, -1)))
    for i, mat in enumerate(matrices):
        want = _brute_force_siou(mat)
        assert ref.dp_matching(mat)[0] == pytest.approx(want, abs=1e-12)
        assert got[i] == pytest.approx(want, abs=1e-9)
        _, pairs = ref.dp_matching(mat)
        assert sum(mat[i][j] for i, j in pairs) == pytest.approx(want, abs=1e-12)
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(pairs))


TARGETS = {
    "tg": {"id": "tg", "duration": 30.0, "segments": [[2.0, 7.5]]},
    "dtg": {"id": "dtg", "duration": 60.0, "segments": [[0, 10], [12, 30]]},
    "vhd": {"id": "vhd", "duration": 150.0, "segments": [[82, 150], [10, 20]]},
    "gvqa": {"id": "gvqa", "duration": 35.0, "segments": [[0.5, 12.6]], "options": ["a", "b", "c"], "answer": "B"},
    "tal": {"id": "tal", "duration": 200.0, "segments": [[67.5, 75.9], [85.9, 90.6], [139.3, 148.2]]},
    "tvg": {"id": "tvg", "duration": 30.0, "segments": [[13.4, 28.1]]},
    "order": {"id": "order", "answer": "CABD"},
    "mcq": {"id": "mcq", "options": ["x", "y", "z"], "answer": "C"},
}
MAX_TOTAL = {"tg": 2, "dtg": 2, "vhd": 2, "gvqa": 3, "tal": 3, "tvg": 2, "order": 0.92, "mcq": 0.92}
NAMES = sorted(TARGETS)

fragments = st.sampled_from(
    [
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
        "<glue>",
        "</glue>",
        " to ",
        "to",
        ",",
        "-",
        " and ",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "-3",
        "12.5",
        "7",
        "0",
        "1e308",
        "s",
        " ",
        "\n",
        "B",
        "C",
        "CABD",
        "\x00",
        "é",
    ]
)
junk = st.one_of(st.text(max_size=200), st.lists(fragments, max_size=40).map("".join))


def _check_ranges(out, names):
    for key, values in out.items():
        assert values.dtype == np.float32 and np.isfinite(values).all(), key
    assert set(np.unique(out["format"])) <= {0.0, 1.0}
    for i, name in enumerate(names):
        assert 0.0 <= out["loc"][i] <= (2.0 if name == "tal" else 1.0) + 1e-6
        assert 0.0 <= out["total"][i] <= MAX_TOTAL[name] + 1e-5
        if "cls" in out:
            assert out["cls"][i] in (0.0, 1.0)


@SETTINGS
@given(st.lists(junk, min_size=len(NAMES), max_size=len(NAMES)))
def test_junk_never_raises_and_stays_in_range(texts):
    out = compute_rewards(NAMES, texts, [TARGETS[n] for n in NAMES], max_segments=WIDTH)
    _check_ranges(out, NAMES)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(NAMES), junk, st.booleans()), min_size=1, max_size=8), st.booleans())
def test_compute_rewards_equals_reference_on_junk(rows, think):
    names = [name for name, _, _ in rows]
    # half of the texts wrapped in a valid think block, so both parsing routes are exercised
    texts = [f"<think>x</think><answer>{text}</answer>" if wrap else text for _, text, wrap in rows]
    out = compute_rewards(names, texts, [TARGETS[n] for n in names], think=think, max_segments=WIDTH)
    for i, (name, text) in enumerate(zip(names, texts)):
        want = ref.reward_reference(name, text, TARGETS[name], think=think, max_segments=WIDTH)
        for key, value in want.items():
            assert out[key][i] == pytest.approx(value, abs=1e-6), (key, name, text)


def test_explicit_junk():
    many = "<think>x</think><answer>" + ", ".join(f"{i} to {i + 1}" for i in range(1000)) + "</answer>"
    big = "<answer>" + "1 to 2 " * 15000 + "</answer>"  # ~100 KB
    texts = [
        many,
        big,
        "",
        "<answer>1e999 to -1e999, nan to nan</answer>",
        "<answer>99999999 to 1e308</answer>",
        "<think>" * 5000,
        "<answer>" + "9" * 5000 + " to 1</answer>",
        None,
        "<think>.</think><answer>" + "9" * 400 + " to 1, 0 to 1" + "0" * 400 + "</answer>",
    ]
    for name in NAMES:
        out = compute_rewards(name, texts, [TARGETS[name]] * len(texts), max_segments=WIDTH)
        _check_ranges(out, [name] * len(texts))
        assert out["total"][2] == 0.0 and out["total"][7] == 0.0
        want = [
            ref.reward_reference(name, t, TARGETS[name], max_segments=WIDTH)["total"] for t in texts[:7] + texts[8:]
        ]
        np.testing.assert_allclose(np.delete(out["total"], 7), want, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_compute_rewards_equals_reference(name):
    task = tasks.get_task(name)
    target = TARGETS[name]
    texts = [
        task.reference_answer(target, think=True),
        task.reference_answer(target, think=False),
        "<think>.</think><answer>1 to 20, 5 to 6, 70 to 80</answer><glue>0 to 3, 2 to 9</glue>",
        "<think>.</think><answer>A</answer><glue>40 to 10, nan to 3, 100 to 90</glue>",
        "<think>.</think><answer>ACBD</answer>",
        "garbage",
    ]
    out = compute_rewards(name, texts, [target] * len(texts), sigma=0.7, max_segments=WIDTH)
    for i, text in enumerate(texts):
        want = ref.reward_reference(name, text, target, sigma=0.7, max_segments=WIDTH)
        assert set(out) == set(want)
        for key in want:
            assert out[key][i] == pytest.approx(want[key], abs=1e-6), (key, text)


def test_mixed_batch_equals_per_task_and_options():
    texts = [tasks.get_task(n).reference_answer(TARGETS[n], think=True) for n in NAMES]
    mixed = compute_rewards(NAMES, texts, [TARGETS[n] for n in NAMES], max_segments=WIDTH)
    for i, name in enumerate(NAMES):
        single = compute_rewards(name, [texts[i]], [TARGETS[name]], max_segments=WIDTH)
        for key in single:
            assert mixed[key][i] == single[key][0]
    assert "cls" not in compute_rewards("tg", texts[:1], [TARGETS["tg"]])
    no_think = compute_rewards(
        "tg", ["<answer>2 to 7.5</answer>"], [TARGETS["tg"]], think=False, format_weight=0.5, loc_weight=2.0
    )
    assert no_think["format"][0] == 1.0 and no_think["total"][0] == pytest.approx(2.5)
    for options in ({"use_count_reward": False}, {"matching": "sequential"}):
        got = compute_rewards(NAMES, texts, [TARGETS[n] for n in NAMES], max_segments=WIDTH, **options)["loc"]
        want = [
            ref.reward_reference(n, t, TARGETS[n], max_segments=WIDTH, **options)["loc"] for n, t in zip(NAMES, texts)
        ]
        np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="matching"):
        compute_rewards("tal", texts[:1], [TARGETS["tal"]], matching="greedy")


def test_malformed_target_raises_with_id():
    with pytest.raises(ValueError, match="'broken'"):
        compute_rewards("tal", ["<answer>1 to 2</answer>"], [{"id": "broken", "duration": 10, "segments": [[5, 1]]}])
    with pytest.raises(ValueError, match="completions"):
        compute_rewards("tg", ["a", "b"], [TARGETS["tg"]])
    with pytest.raises(ValueError, match="sigma"):
        compute_rewards("tal", ["<answer>1 to 2</answer>"], [TARGETS["tal"]], sigma=0.0)
    for name in NAMES:
        for bad in (None, 5, {"id": "empty"}):
            with pytest.raises(ValueError):
                compute_rewards(name, ["<answer>A</answer>"], [bad])


def test_compiles_once_per_bucket():
    def call(b, p):
        pred = np.tile(np.array([[1.0, 2.0]]), (b, p, 1))
        gt = np.tile(np.array([[1.0, 3.0]]), (b, 3, 1))
        return kernel.loc_rewards(
            pred, np.ones((b, p), bool), gt, np.ones((b, 3), bool), np.full(b, 10.0), np.full(b, 3)
        )

    call(9, 5)
    size = kernel._loc_rewards._cache_size()
    call(16, 8)
    np.testing.assert_allclose(call(12, 6), call(9, 6)[:1].repeat(12))
    assert kernel._loc_rewards._cache_size() == size
    assert kernel.bucket(9, 8) == 16 and kernel.bucket(1, 8) == 8 and kernel.bucket(64) == 64


def test_non_ascii_digits_in_strict_template():
    # `\d` and `\s` of the strict template also match non-ASCII digits and spaces
    texts = ["<think>x</think><answer>١ to ٣, 2 to 5</answer>", "<think>x</think><answer>1\u2003to 3</answer>"]
    out = compute_rewards("tal", texts, [TARGETS["tal"]] * 2)
    for i, text in enumerate(texts):
        want = ref.reward_reference("tal", text, TARGETS["tal"])
        for key, value in want.items():
            assert out[key][i] == pytest.approx(value, abs=1e-6), (key, text)


# Arabic-Indic, Extended Arabic-Indic (Persian), full-width and Devanagari digits: Python's `float` reads them,
# but only ASCII digits are numbers in a completion.
OTHER_DIGITS = ["٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "０１２３４５６７８９", "०१२३४५६७८९"]
SEGMENT_NAMES = [n for n in NAMES if tasks.get_task(n).has_segments]


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_non_ascii_digits_are_not_numbers(digits):
    to_other = str.maketrans("0123456789", digits)
    for name in SEGMENT_NAMES:
        perfect = tasks.get_task(name).reference_answer(TARGETS[name], think=True)
        texts = [perfect, perfect.translate(to_other)]
        out = compute_rewards(name, texts, [TARGETS[name]] * 2)
        assert out["loc"][0] > 0.5 and out["format"][0] == 1.0
        assert out["loc"][1] == 0.0 and out["format"][1] == 0.0, (name, texts[1])
        for i, text in enumerate(texts):
            want = ref.reward_reference(name, text, TARGETS[name])
            for key, value in want.items():
                assert out[key][i] == pytest.approx(value, abs=1e-6), (key, name, text)
        assert tasks.get_task(name).parse(texts[1], fallback=True).segments == ()


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SEGMENT_NAMES),
            st.lists(
                st.sampled_from(
                    ["1", "2.5", "٣", "４", "1٣", "٣.5", "7.８", " to ", ", ", "<answer>", "</answer>", "-", " "]
                ),
                max_size=12,
            ).map("".join),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mixed_digit_scripts_kernel_equals_reference(rows):
    names = [name for name, _ in rows]
    texts = [f"<think>x</think><answer>{text}</answer>" for _, text in rows]
    out = compute_rewards(names, texts, [TARGETS[n] for n in names], max_segments=WIDTH)
    for i, (name, text) in enumerate(zip(names, texts)):
        want = ref.reward_reference(name, text, TARGETS[name], max_segments=WIDTH)
        for key, value in want.items():
            assert out[key][i] == pytest.approx(value, abs=1e-6), (key, name, text)
