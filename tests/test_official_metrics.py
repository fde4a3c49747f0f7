"""`evaluation.score` against plain-Python re-statements of the peers' public evaluation scripts, on
predictions generated from the real annotation files (jittered, past the video's end, point spans,
several segments, no answer).

Each `*_official` function below re-states one script's metric from reading it (not a copy):
Time-R1 `src/vllm_inference/eval_all.py` (+ `evaluate.py`'s answer extraction), VideoChat-R1
`src_eval/evaluate_tg.py` and `evaluate_gqa.py`, MUSEG `src/eval_grounding.py` (nncore IoU),
moment_detr `standalone_eval/eval.py` (MR-R1) and NExT-GQA `code/TempGQA/eval_ground.py`. `score`
must agree within 0.05 points, with the named option where a script differs by convention.
"""

from __future__ import annotations

import csv
import json
import pathlib
import random
import re
import tempfile

import pytest

from tempr1_jax.evaluation import score
from tempr1_jax.prediction_formats import align, read_predictions

TOL = 0.05


def _close(ours: dict, theirs: dict) -> None:
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=TOL), (key, ours[key], value)


# --- predictions generated from the ground truth -----------------------------------------------------


def _jitter(rng, s, e):
    """A positive-length segment near [s, e] (never a point, never reversed, never negative)."""
    length = max(e - s, 1.0)
    a = max(0.0, s + rng.uniform(-0.3, 0.3) * length)
    b = max(a + 0.05, e + rng.uniform(-0.3, 0.3) * length)
    return (round(a, 2), round(b, 2))


def _tg_predictions(rng, gt, duration, kind):
    """Predicted segments for one TG query, or None for an output with no answer."""
    s, e = gt
    if kind == 0:
        return [_jitter(rng, s, e)]
    if kind == 1:  # past the video's end
        return [(round(_jitter(rng, s, e)[0], 2), round(duration + rng.uniform(1, 10), 2))]
    if kind == 2:  # a point span
        t = round(rng.uniform(0, duration), 2)
        return [(t, t)]
    if kind == 3:  # two segments, the right one first or last
        other = tuple(sorted(round(rng.uniform(0, duration), 2) for _ in range(2)))
        pair = [_jitter(rng, s, e), (other[0], other[1] + 0.1)]
        return pair if rng.random() < 0.5 else pair[::-1]
    if kind == 4:
        return None
    # the ground truth itself; for an instant (TVGBench) a jittered one, as 0 / 0 has no IoU
    return [(s, e)] if e > s else [_jitter(rng, s, e)]


def _to_text(segments):
    """Our / Time-R1 / VideoChat-R1 style: '<answer>a to b, c to d</answer>'."""
    if segments is None:
        return "<think>I cannot tell.</think><answer>unsure</answer>"
    return (
        "<think>Looking at the video.</think><answer>"
        + ", ".join(f"{a:.2f} to {b:.2f}" for a, b in segments)
        + "</answer>"
    )


def _to_museg_text(segments):
    """MUSEG style: '<answer>a-b c-d</answer>'."""
    if segments is None:
        return "<think>No idea.</think>"
    return (
        "<think>Looking at the video.</think><answer>" + " ".join(f"{a:.2f}-{b:.2f}" for a, b in segments) + "</answer>"
    )


# --- Time-R1 -----------------------------------------------------------------------------------------


def time_r1_extract(text):
    """evaluate.py: the last 'x to y' / 'x and y' (one space each side) anywhere in the output."""
    found = re.findall(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)", text)
    if not found:
        return [None, None]
    return [float(found[-1][0]), float(found[-1][2])]


def time_r1_official(preds, gts):
    """eval_all.py: IoU = intersection / hull; 0 without a prediction; mIoU and R1@thr with IoU > thr."""
    scores = []
    for pred, (s, e) in zip(preds, gts):
        if None in pred:
            scores.append(0.0)
            continue
        inter = max(0.0, min(pred[1], e) - max(pred[0], s))
        hull = max(0.0, max(pred[1], e) - min(pred[0], s))
        scores.append(inter / hull)
    out = {"mIoU": 100 * sum(scores) / len(scores)}
    for thr in (0.3, 0.5, 0.7):
        out[f"R1@{thr}"] = 100 * sum(x > thr for x in scores) / len(scores)
    return out


# --- VideoChat-R1 --------------------------------------------------------------------------------------


def videochat_tg_official(texts, gts):
    """evaluate_tg.py: last 'x to y'; IoU = (min end - max start) / (max end - min start), floored at 0 for
    the mean; recall counts thr <= IoU; an output without a pair adds IoU 0."""
    ious, hits = [], {0.3: 0, 0.5: 0, 0.7: 0}
    for text, (s, e) in zip(texts, gts):
        sp, ep = time_r1_extract(text)
        if sp is None:
            ious.append(0.0)
            continue
        value = (min(e, ep) - max(s, sp)) / (max(e, ep) - min(s, sp))
        ious.append(max(value, 0.0))
        for thr in hits:
            hits[thr] += thr <= value
    out = {"mIoU": 100 * sum(ious) / len(ious)}
    out.update({f"R1@{thr}": 100 * n / len(ious) for thr, n in hits.items()})
    return out


def videochat_gqa_official(texts, truths):
    """evaluate_gqa.py: accuracy of the first A-G letter of the <answer> block; IoU of the merged unions
    of the <glue> list [(s, e), ...] and the ground truth (1 if both are empty). An invalid glue list
    leaves the script's previous IoU in place; the generator below never writes one."""

    def letter(text):
        for phrase in (
            "The best answer is",
            "The correct answer is",
            "The answer is",
            "The answer",
            "The best option is",
            "The correct option is",
            "Best answer:Best option:",
        ):
            text = text.strip().replace(phrase, "")
        found = re.search(r"[ABCDEFG]", text)
        return found.group(0) if found else ""

    def merged(spans):
        out = []
        for s, e in sorted(map(list, spans)):
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], e)
            else:
                out.append([s, e])
        return out

    def union_iou(a, b):
        a, b = merged(a), merged(b)
        inter, i, j = 0.0, 0, 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            inter += max(0.0, hi - lo)
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        union = sum(e - s for s, e in a) + sum(e - s for s, e in b) - inter
        return 1.0 if union == 0 else inter / union

    accs, ious = [], []
    for text, (answer, glue) in zip(texts, truths):
        found = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        accs.append(float(bool(found) and letter(found.group(1)) == letter(answer)))
        found = re.search(r"<glue>(.*?)</glue>", text, re.DOTALL)
        spans = [(float(a), float(b)) for a, b in re.findall(r"\((\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?)\)", found.group(1))]
        ious.append(union_iou(spans, glue))
    return {"Acc": 100 * sum(accs) / len(accs), "mIoU": 100 * sum(ious) / len(ious)}


# --- MUSEG ---------------------------------------------------------------------------------------------


def museg_parse(text):
    """eval_grounding.py: the one <answer> block, its numbers in pairs; any flaw -> no segments."""
    if len(re.findall("<answer>", text)) != 1 or len(re.findall("</answer>", text)) != 1:
        return []
    content = re.search("<answer>(.*)</answer>", text, re.DOTALL).group(1).strip()
    nums = re.findall(r"\d+\.*\d*", content)
    if len(nums) % 2:
        return []
    try:
        pairs = [[float(nums[i]), float(nums[i + 1])] for i in range(0, len(nums), 2)]
    except ValueError:
        return []
    return [] if any(a >= b for a, b in pairs) else pairs


def _nncore_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def museg_official(texts, gts_lists, mode):
    """eval_grounding.py: 'tvg' = IoU of the first GT and first prediction (m_iou, f1_single@thr with
    IoU >= thr); 'tal' = per query F1 of the GT x prediction IoU matrix at thr (0 if its max < thr)."""
    thrs = (0.1, 0.3, 0.5, 0.7)
    miou, single, multi = 0.0, [0.0] * 4, [0.0] * 4
    for text, gts in zip(texts, gts_lists):
        preds = museg_parse(text)
        if not preds:
            continue
        first = _nncore_iou(gts[0], preds[0])
        matrix = [[_nncore_iou(g, p) for p in preds] for g in gts]
        miou += first
        for i, thr in enumerate(thrs):
            single[i] += first >= thr
            if max(max(row) for row in matrix) < thr:
                continue
            rec = sum(max(row) >= thr for row in matrix) / len(gts)
            prc = sum(max(col) >= thr for col in zip(*matrix)) / len(preds)
            if rec > 0 and prc > 0:
                multi[i] += 2 * prc * rec / (prc + rec)
    n = len(texts)
    if mode == "tvg":
        return {"mIoU": 100 * miou / n, **{f"R1@{thr}": 100 * single[i] / n for i, thr in enumerate(thrs) if thr > 0.1}}
    out = {f"F1@{thr}": 100 * multi[i] / n for i, thr in enumerate(thrs)}
    out["mF1"] = sum(out.values()) / len(thrs)
    return out


# --- moment_detr -----------------------------------------------------------------------------------------


def moment_detr_r1_official(top_windows, gt_windows):
    """standalone_eval/eval.py compute_mr_r1: the first predicted window against the GT window of highest
    IoU with it; R1@thr = share with IoU >= thr, rounded to 2 decimals."""

    def one_iou(a, b):
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        union = max(a[1], b[1]) - min(a[0], b[0])
        return inter / union if union > 0 else 0.0

    best = [max(one_iou(top, g) for g in gts) for top, gts in zip(top_windows, gt_windows)]
    return {f"MR_R1@{thr}": float(f"{100 * sum(x >= thr for x in best) / len(best):.2f}") for thr in (0.5, 0.7)}


# --- NExT-GQA --------------------------------------------------------------------------------------------


def nextgqa_official(ground, pred_spans, pred_qa):
    """eval_ground.py: per question with a predicted span, the max IoU and max IoP over the evidence spans
    (a point span inside one: IoP 1, IoU 0); means and rates (>= thr) over those questions only;
    Acc@GQA = right answer and IoP >= 0.5."""

    def iou_iop(loc, span):
        if span[0] == span[1]:
            return (0.0, 1.0) if loc[0] <= span[0] <= loc[1] else (0.0, 0.0)
        inter = min(loc[1], span[1]) - max(loc[0], span[0])
        hull = max(loc[1], span[1]) - min(loc[0], span[0])
        return (inter / hull if hull > 0 else 0.0), inter / (span[1] - span[0])

    n = m_iou = m_iop = iop3 = iop5 = iou3 = iou5 = right = 0
    for vid, entry in ground.items():
        for qid, locs in entry["location"].items():
            key = f"{vid}_{qid}"
            if key not in pred_spans:
                continue
            best_iou = best_iop = 0.0
            for loc in locs:
                a, b = iou_iop(loc, pred_spans[key])
                best_iou, best_iop = max(best_iou, a), max(best_iop, b)
            n += 1
            m_iou, m_iop = m_iou + best_iou, m_iop + best_iop
            iop3, iop5 = iop3 + (best_iop >= 0.3), iop5 + (best_iop >= 0.5)
            iou3, iou5 = iou3 + (best_iou >= 0.3), iou5 + (best_iou >= 0.5)
            right += best_iop >= 0.5 and pred_qa[key]["answer"] == pred_qa[key]["prediction"]
    return {
        "Acc@GQA": 100 * right / n,
        "gqa_mIoP": 100 * m_iop / n,
        "gqa_IoP@0.3": 100 * iop3 / n,
        "gqa_IoP@0.5": 100 * iop5 / n,
        "gqa_mIoU": 100 * m_iou / n,
        "gqa_IoU@0.3": 100 * iou3 / n,
        "gqa_IoU@0.5": 100 * iou5 / n,
    }


# --- the real files ------------------------------------------------------------------------------------


def _dict_targets(path):
    data = json.loads(path.read_text())
    return [
        {"id": f"{vid}#{i}", "video": f"{vid}.mp4", "duration": v["duration"], "segments": [seg]}
        for vid, v in data.items()
        for i, seg in enumerate(v["timestamps"])
    ]


def _tvgbench_targets(path):
    rows = json.loads(path.read_text())
    return [
        {"id": f"q{i}", "duration": r["duration"], "segments": [[float(x) for x in r["answer"].split("-")]]}
        for i, r in enumerate(rows)
    ]


def _tg_case(targets, seed):
    rng = random.Random(seed)
    preds = [_tg_predictions(rng, t["segments"][0], t["duration"], i % 6) for i, t in enumerate(targets)]
    return preds, [t["segments"][0] for t in targets]


@pytest.mark.parametrize("name", ["charades_sta_test.json", "activitynet_captions_val_2.json", "tvgbench.json"])
def test_time_r1_and_videochat_r1_grounding(annotations_dir, name):
    path = annotations_dir / name
    targets = _tvgbench_targets(path) if name == "tvgbench.json" else _dict_targets(path)
    preds, gts = _tg_case(targets, seed=len(name))
    texts = [_to_text(p) for p in preds]
    # Time-R1: IoU > thr on the last pair; VideoChat-R1: IoU >= thr on the last pair.
    _close(
        score("tg", texts, targets, strict=True, pick="last"),
        time_r1_official([time_r1_extract(x) for x in texts], gts),
    )
    _close(score("tvg", texts, targets, strict=True), time_r1_official([time_r1_extract(x) for x in texts], gts))
    _close(score("tg", texts, targets, pick="last"), videochat_tg_official(texts, gts))


def test_time_r1_result_file_is_rescored(annotations_dir, tmp_path):
    """Time-R1's evaluate.py rows (its qids, pred and target) go through `--format time_r1` unchanged."""
    targets = _dict_targets(annotations_dir / "charades_sta_test.json")
    preds, gts = _tg_case(targets, seed=7)
    texts = [_to_text(p) for p in preds]
    path = tmp_path / "tg_0_1.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "qid": f"charades_{k}",
                    "pred": time_r1_extract(x),
                    "target": gt,
                    "duration": t["duration"],
                    "output_text": x,
                }
            )
            + "\n"
            for k, (x, gt, t) in enumerate(zip(texts, gts, targets))
        )
    )
    outputs, unmatched = align(read_predictions(path, "time_r1", "tg"), targets)
    assert unmatched == 0 and None not in outputs
    theirs = time_r1_official([time_r1_extract(x) for x in texts], gts)
    _close(score("tg", outputs, targets, strict=True), theirs)


@pytest.mark.parametrize("name", ["charades_sta_test.json", "tvgbench.json"])
def test_museg_grounding(annotations_dir, name):
    path = annotations_dir / name
    targets = _tvgbench_targets(path) if name == "tvgbench.json" else _dict_targets(path)
    preds, _ = _tg_case(targets, seed=3)
    texts = [_to_museg_text(p) for p in preds]
    theirs = museg_official(texts, [t["segments"] for t in targets], "tvg")
    _close(score("tg", _museg_outputs(texts, "tg"), targets, pick="first"), theirs)


def _museg_outputs(texts, task):
    """Raw MUSEG texts through the `museg` reader, as `tempr1 score --format museg` reads them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "p.jsonl"
        path.write_text("".join(json.dumps({"id": str(i), "output": x}) + "\n" for i, x in enumerate(texts)))
        return [p.output for p in read_predictions(path, "museg", task)]


def test_museg_thumos14_tal(annotations_dir, tmp_path):
    rows = json.loads((annotations_dir / "museg_thumos14_tal.json").read_text())
    # the file has no durations; the metric does not use them on raw times
    targets = [
        {
            "id": str(i),
            "video": r["video"],
            "duration": max(e for _, e in r["groundtruth"]) + 10.0,
            "segments": r["groundtruth"],
        }
        for i, r in enumerate(rows)
    ]
    rng = random.Random(11)
    texts = []
    for i, t in enumerate(targets):
        segs = [_jitter(rng, s, e) for s, e in t["segments"]]
        kind = i % 5
        if kind == 1:  # drop half, add some past the end
            segs = segs[::2] + [(t["duration"] + 5.0, t["duration"] + 9.0)]
        elif kind == 2:  # a point span makes MUSEG drop the whole answer
            segs = segs + [(3.0, 3.0)]
        elif kind == 3:
            segs = segs[:1]
        elif kind == 4 and i % 10 == 4:
            segs = None
        texts.append(_to_museg_text(segs))
    theirs = museg_official(texts, [t["segments"] for t in targets], "tal")
    # MUSEG's own output file: a list of {video, groundtruth, result: {output}} and a stats object
    path = tmp_path / "eval_thumos14.json"
    path.write_text(
        json.dumps(
            [
                {
                    "video": r["video"],
                    "groundtruth": r["groundtruth"],
                    "result": {
                        "output": x.split("<answer>")[-1].split("</answer>")[0].strip() if "<answer>" in x else ""
                    },
                }
                for r, x in zip(rows, texts)
            ]
            + [{"tot": len(rows)}]
        )
    )
    outputs, unmatched = align(read_predictions(path, "museg", "tal"), targets)
    assert unmatched == 0 and None not in outputs
    _close(score("tal", outputs, targets), theirs)
    _close(score("tal", _museg_outputs(texts, "tal"), targets), theirs)


def test_moment_detr_qvhighlights(annotations_dir):
    rows = [
        json.loads(line)
        for line in (annotations_dir / "qvhighlights_highlight_val_release.jsonl").read_text().splitlines()
        if line
    ]
    targets = [{"id": r["qid"], "duration": r["duration"], "segments": r["relevant_windows"]} for r in rows]
    rng = random.Random(5)
    windows = []
    for i, t in enumerate(targets):
        gt = t["segments"][rng.randrange(len(t["segments"]))]
        top = _tg_predictions(rng, gt, t["duration"], i % 4)  # jittered, past the end, point, two windows
        windows.append(top + [_jitter(rng, *t["segments"][0])])
    ours = score("vhd", [_to_text(w) for w in windows], targets, official=True)
    _close(ours, moment_detr_r1_official([w[0] for w in windows], [t["segments"] for t in targets]))


def _nextgqa(annotations_dir):
    ground = json.loads((annotations_dir / "nextgqa_gsub_test.json").read_text())
    with open(annotations_dir / "nextgqa_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    targets = []
    for row in rows:
        options = [row[f"a{i}"] for i in range(5)]
        entry = ground[row["video_id"]]
        targets.append(
            {
                "id": f"{row['video_id']}_{row['qid']}",
                "video": f"{row['video_id']}.mp4",
                "duration": entry["duration"],
                "options": options,
                "answer": "ABCDE"[options.index(row["answer"])],
                "segments": entry["location"][row["qid"]],
            }
        )
    return ground, targets


def _gqa_case(targets, seed):
    """(letter, first span or None, all spans) per question."""
    rng = random.Random(seed)
    out = []
    for i, t in enumerate(targets):
        kind, gts, d = i % 6, t["segments"], t["duration"]
        letter = t["answer"] if rng.random() < 0.7 else "ABCDE"[("ABCDE".index(t["answer"]) + 1) % 5]
        g = gts[rng.randrange(len(gts))]
        if kind == 0:
            spans = [_jitter(rng, *g)]
        elif kind == 1:  # a point span inside an evidence span
            spans = [(round((g[0] + g[1]) / 2, 2),) * 2]
        elif kind == 2:  # a point span anywhere
            spans = [(round(rng.uniform(0, d), 2),) * 2]
        elif kind == 3:  # past the end
            spans = [(_jitter(rng, *g)[0], round(d + rng.uniform(1, 5), 2))]
        elif kind == 4:
            spans = []
        else:
            spans = [_jitter(rng, *g), _jitter(rng, *gts[0])]
        out.append((letter, spans))
    return out


def test_nextgqa_official(annotations_dir):
    ground, targets = _nextgqa(annotations_dir)
    case = _gqa_case(targets, seed=9)
    texts = [
        f"<think>Hm.</think><answer>{letter}</answer><glue>"
        + ", ".join(f"{a:.2f} to {b:.2f}" for a, b in spans)
        + "</glue>"
        for letter, spans in case
    ]
    pred_spans = {t["id"]: spans[0] for t, (_, spans) in zip(targets, case) if spans}
    pred_qa = {t["id"]: {"answer": t["answer"], "prediction": letter} for t, (letter, _) in zip(targets, case)}
    theirs = nextgqa_official(ground, pred_spans, pred_qa)
    ours = score("gvqa", texts, targets, official=True)
    _close(ours, theirs)
    assert ours["Acc"] == pytest.approx(
        100 * sum(letter == t["answer"] for t, (letter, _) in zip(targets, case)) / len(targets)
    )
    # the default keeps the questions without a span (IoU and IoP 0) in the means
    every = score("gvqa", texts, targets)
    assert every["gqa_mIoP"] == pytest.approx(ours["gqa_mIoP"] * len(pred_spans) / len(targets))


def test_videochat_r1_nextgqa(annotations_dir, tmp_path):
    _, targets = _nextgqa(annotations_dir)
    case = _gqa_case(targets, seed=13)
    texts = [
        f"<think>Hm.</think><answer>({letter}) the option</answer><glue>["
        + ", ".join(f"({a}, {b})" for a, b in spans)
        + "]</glue>"
        for letter, spans in case
    ]
    theirs = videochat_gqa_official(texts, [(t["answer"], t["segments"]) for t in targets])
    # VideoChat-R1's log rows: no ids, matched by video, evidence spans and answer
    path = tmp_path / "cuda:0.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "video_path": f"/videos/{t['video']}",
                    "prompt": "...",
                    "gt": {"answer": t["answer"], "glue": t["segments"]},
                    "pred": x,
                    "acc": 0.0,
                    "iou": 0.0,
                }
            )
            + "\n"
            for t, x in zip(targets, texts)
        )
    )
    outputs, unmatched = align(read_predictions(path, "videochat_r1", "gvqa"), targets)
    assert unmatched == 0 and None not in outputs
    _close(score("gvqa", outputs, targets), theirs)


def test_charades_clipping_changes_r1_at_0_7(annotations_dir):
    """562 Charades-STA test queries end past their listed duration: clipping the times (the old
    default, still the `clip` option) scores a jittered prediction set higher than the scripts do."""
    targets = _dict_targets(annotations_dir / "charades_sta_test.json")
    assert sum(t["segments"][0][1] > t["duration"] for t in targets) == 562
    rng = random.Random(0)
    texts = [_to_text([_jitter(rng, *t["segments"][0])]) for t in targets]
    raw, clipped = score("tg", texts, targets), score("tg", texts, targets, clip=True)
    gts = [t["segments"][0] for t in targets]
    _close(raw, videochat_tg_official(texts, gts))
    assert clipped["R1@0.7"] > raw["R1@0.7"] + 1.0
