"""Hand-worked examples for every reward equation (TempR1 eq. 3-11, Time-R1 tIoU, TPRU) and edge case."""

import math

import pytest

from tempr1_jax.rewards import reference as ref

NAN, INF = float("nan"), float("inf")


def test_clip_segment():
    assert ref.clip_segment((-5.0, 5.0), 10.0) == (0.0, 5.0)
    assert ref.clip_segment((8.0, 20.0), 10.0) == (8.0, 10.0)
    assert ref.clip_segment((12.0, 20.0), 10.0) == (10.0, 10.0)
    assert ref.clip_segment((5.0, 2.0), 10.0) is None  # reversed
    assert ref.clip_segment((NAN, 2.0), 10.0) is None
    assert ref.clip_segment((1.0, INF), 10.0) is None


def test_iou():
    assert ref.iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert ref.iou((0, 10), (0, 10)) == 1.0
    assert ref.iou((0, 10), (10, 20)) == 0.0  # touching
    assert ref.iou((0, 10), (2, 4)) == pytest.approx(0.2)
    assert ref.iou((3, 3), (3, 3)) == 0.0  # empty union
    assert ref.iou(None, (0, 1)) == 0.0


def test_type1_eq4_and_count_mismatch():
    gts = [(0, 10), (20, 30)]
    assert ref.type1_reward([(0, 10), (25, 30)], gts, 100) == pytest.approx((1 + 0.5) / 2)
    # an extra prediction: divide by max(n_pred, n_gt) = 3
    assert ref.type1_reward([(0, 10), (20, 30), (40, 50)], gts, 100) == pytest.approx(2 / 3)
    # a missing prediction: divide by 2
    assert ref.type1_reward([(0, 10)], gts, 100) == pytest.approx(0.5)
    # index-aligned, not matched: swapped order scores 0
    assert ref.type1_reward([(20, 30), (0, 10)], gts, 100) == 0.0
    assert ref.type1_reward([], gts, 100) == 0.0
    # invalid predictions count but score 0
    assert ref.type1_reward([(NAN, 5), (20, 30)], gts, 100) == pytest.approx(0.5)
    assert ref.type1_reward([(10, 0), (20, 30)], gts, 100) == pytest.approx(0.5)
    # clipping: (-5, 10) -> (0, 10), (25, 1e9) -> (25, 30) with duration 30
    assert ref.type1_reward([(-5, 10), (25, 1e9)], gts, 30) == pytest.approx((1 + 0.5) / 2)


def test_merge_union():
    assert ref.merge_union([(5, 15), (0, 10), (20, 25), None, (25, 26)]) == [(0, 15), (20, 26)]
    assert ref.merge_union([]) == []


def test_type2_eq5_union_iou():
    # Up = [0, 15] (overlapping preds), Ug = [0, 5] u [10, 20]; inter = 5 + 5, union = 20
    assert ref.union_iou([(0, 10), (5, 15)], [(0, 5), (10, 20)], 100) == pytest.approx(0.5)
    # duplicates and containment do not change the union
    assert ref.union_iou([(0, 10), (0, 10), (2, 3)], [(0, 10)], 100) == 1.0
    # the count does not matter (many-to-one): two preds tiling one GT
    assert ref.union_iou([(0, 5), (5, 10)], [(0, 10)], 100) == 1.0
    # invalid predictions are left out of the union
    assert ref.union_iou([(NAN, 3), (0, 10), (8, 2)], [(0, 10)], 100) == 1.0
    assert ref.union_iou([(8, 2)], [(0, 10)], 100) == 0.0
    assert ref.union_iou([], [(0, 10)], 100) == 0.0


def test_count_reward_eq6():
    assert ref.count_reward(3, 3) == 1.0
    assert ref.count_reward(5, 3) == pytest.approx(math.exp(-2 / 3))
    assert ref.count_reward(7, 10) == pytest.approx(math.exp(-1))  # min(N_gt, 3) = 3
    assert ref.count_reward(1, 2) == pytest.approx(math.exp(-1 / 2))
    assert ref.count_reward(5, 3, sigma=2.0) == pytest.approx(math.exp(-2 / 6))
    assert ref.count_reward(0, 1) == pytest.approx(math.exp(-1))


def test_dp_matching_algorithm1():
    # crossing pairs (0,1)+(1,0) = 1.7 are not order preserving; the best is (0,1) alone = 0.9
    s, pairs = ref.dp_matching([[0.5, 0.9], [0.8, 0.1]])
    assert s == pytest.approx(0.9) and pairs == [(0, 1)]
    s, pairs = ref.dp_matching([[0.9, 0.0, 0.0], [0.0, 0.2, 0.7]])
    assert s == pytest.approx(1.6) and pairs == [(0, 0), (1, 2)]
    assert ref.dp_matching([])[0] == 0.0


def test_match_reward_eq7_8():
    preds = [(0, 10), (20, 30), (40, 50)]
    gts = [(0, 10), (20, 30)]
    # sIoU = 2, P = 2/3, R = 1, F1 = 0.8
    assert ref.match_reward(preds, gts, 100) == pytest.approx(0.8)
    # chronological sorting first: order of the predictions does not matter
    assert ref.match_reward(preds[::-1], gts, 100) == pytest.approx(0.8)
    # half overlaps: IoU 1/3 each, sIoU = 2/3, P = R = 1/3
    assert ref.match_reward([(5, 15), (25, 35)], gts, 100) == pytest.approx(1 / 3)
    assert ref.match_reward([(50, 60)], gts, 100) == 0.0


def test_type3_eq9():
    preds = [(40, 50), (0, 10), (20, 30)]
    gts = [(0, 10), (20, 30)]
    assert ref.type3_reward(preds, gts, 100) == pytest.approx(math.exp(-1 / 2) + 0.8)
    assert ref.type3_reward(gts, gts, 100) == pytest.approx(2.0)
    # invalid segments count in N_pred: N = 3, sIoU = 2 -> F1 = 2*2/(3+2)
    assert ref.type3_reward([(0, 10), (NAN, 1), (20, 30)], gts, 100) == pytest.approx(math.exp(-1 / 2) + 0.8)
    # nothing parsed: 0, not R_num
    assert ref.type3_reward([], gts, 100) == 0.0
    assert ref.type3_reward(gts, gts, 100, sigma=0.5) == pytest.approx(2.0)


def test_type3_table3_variants():
    # chronological order: (0, 10) <-> (0, 10), (20, 30) <-> (20, 30); (5, 8) sorts between them
    preds = [(20, 30), (0, 10), (5, 8)]
    gts = [(0, 10), (20, 30)]
    # DP: sIoU = 2, F1 = 2 * 2 / (3 + 2) = 0.8; R_num = exp(-1 / 2)
    assert ref.type3_reward(preds, gts, 100, use_count_reward=False) == pytest.approx(0.8)
    # sequential: (0, 10) vs (0, 10) = 1, (5, 8) vs (20, 30) = 0 -> sIoU = 1, F1 = 2 / 5
    assert ref.match_reward(preds, gts, 100, matching="sequential") == pytest.approx(0.4)
    assert ref.type3_reward(preds, gts, 100, matching="sequential") == pytest.approx(math.exp(-1 / 2) + 0.4)
    assert ref.type3_reward(preds, gts, 100, use_count_reward=False, matching="sequential") == pytest.approx(0.4)
    assert ref.type3_reward([], gts, 100, use_count_reward=False) == 0.0


def test_tiou():
    # IoU 0.6, factors (1 - 2/20) * (1 - 2/20)
    assert ref.tiou_reward([(2, 8)], [(0, 10)], 20) == pytest.approx(0.6 * 0.81)
    assert ref.tiou_reward([(0, 10)], [(0, 10)], 20) == 1.0
    assert ref.tiou_reward([(8, 2)], [(0, 10)], 20) == 0.0
    assert ref.tiou_reward([], [(0, 10)], 20) == 0.0
    # clipped first: (-5, 10) -> (0, 10)
    assert ref.tiou_reward([(-5, 10)], [(0, 10)], 20) == 1.0


TG = {"id": "s", "duration": 20.0, "segments": [[0, 10]]}
GQA = {"id": "q", "duration": 20.0, "segments": [[0, 10]], "options": ["a", "b", "c"], "answer": "B"}


def test_total_eq11_and_format_eq3():
    r = ref.reward_reference("tg", "<think>x</think><answer>0 to 5</answer>", TG)
    assert r == {"format": 1.0, "loc": 0.5, "total": 1.5}
    r = ref.reward_reference("tg", "<answer>0 to 5</answer>", TG)
    assert r == {"format": 0.0, "loc": 0.5, "total": 0.5}
    assert ref.reward_reference("tg", "<answer>0 to 5</answer>", TG, think=False)["format"] == 1.0
    r = ref.reward_reference("gvqa", "<think>.</think><answer>B</answer><glue>0 to 10</glue>", GQA)
    assert r == {"format": 1.0, "loc": 1.0, "cls": 1.0, "total": 3.0}
    r = ref.reward_reference("gvqa", "<think>.</think><answer>C</answer><glue>0 to 5</glue>", GQA)
    assert r == {"format": 1.0, "loc": 0.5, "cls": 0.0, "total": 1.5}
    r = ref.reward_reference("tg", "<think>x</think><answer>0 to 5</answer>", TG, weights=(0.5, 2.0, 0.0))
    assert r["total"] == pytest.approx(0.5 + 1.0)


def test_tvg_uses_last_pair_and_tiou():
    r = ref.reward_reference("tvg", "<think>.</think><answer>5 to 9 hmm 2 to 8</answer>", TG)
    assert r["loc"] == pytest.approx(0.6 * (1 - 2 / 20) * (1 - 2 / 20)) and r["format"] == 0.0


def test_tpru_reward_as_written():
    # 0.9 * exact + 0.1 * format-ok * 0.2
    order = {"id": "o", "answer": "CABD"}
    assert ref.reward_reference("order", "<think>.</think><answer>CABD</answer>", order)["total"] == pytest.approx(0.92)
    assert ref.reward_reference("order", "<think>.</think><answer>ABCD</answer>", order)["total"] == pytest.approx(0.02)
    assert ref.reward_reference("order", "the order is CABD", order)["total"] == 0.0
    mcq = {"id": "m", "options": ["x", "y"], "answer": "A"}
    r = ref.reward_reference("mcq", "<answer>A</answer>", mcq)
    assert r == {"format": 0.0, "loc": 0.0, "cls": 1.0, "total": pytest.approx(0.9)}


@pytest.mark.parametrize("junk", ["", "no tags 1 to 2", "<answer></answer>", "<answer>soon</answer>", "\x00" * 10])
def test_unparseable_scores_zero(junk):
    for task, target in (("tg", TG), ("tal", TG), ("vhd", TG), ("tvg", TG)):
        r = ref.reward_reference(task, junk, target)
        assert r["loc"] == 0.0 and r["total"] == 0.0
    r = ref.reward_reference("gvqa", junk, GQA)
    assert r["total"] == 0.0 and r["cls"] == 0.0


def test_malformed_target_raises_with_id():
    with pytest.raises(ValueError, match="'bad-id'"):
        ref.reward_reference("tg", "<answer>1 to 2</answer>", {"id": "bad-id", "segments": [[1, 2]]})
    with pytest.raises(ValueError, match="'bad-id'"):
        ref.reward_reference("tal", "<answer>1 to 2</answer>", {"id": "bad-id", "duration": 9, "segments": [[3, 2]]})
