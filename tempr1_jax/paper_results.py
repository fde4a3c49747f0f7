"""Published figures to print beside ours, keyed by (dataset, metric) -> {method: percent}.

Sources (seeds/): TempR1 Tables 1-2 (and the full-model row of Table 3 for TAL F1@thr) and Fig. 3
(see `FIG3`), Time-R1's slides (its own tables), TPRU's summary. Metric names are ours (`evaluation.score` keys): the
TempR1 table's VHD "R1@thr" columns are our vhd "R@thr". Methods marked * were fine-tuned on
that single dataset after multi-task training. `paper_convention` says how a figure was computed
where its source says so (its public evaluation script), for the report tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TG = ("mIoU", "R1@0.3", "R1@0.5", "R1@0.7")
_LOC = ("mIoU", "R@0.3", "R@0.5", "R@0.7")


def _rows(dataset: str, metrics: tuple[str, ...], rows: dict[str, tuple[float | None, ...]]):
    for method, values in rows.items():
        for metric, value in zip(metrics, values):
            if value is not None:
                yield (dataset, metric), method, value


_TABLES = [
    # TempR1 Table 1.
    *_rows(
        "charades_sta",
        _TG,
        {
            "TempR1": (61.4, 83.2, 72.7, 51.2),
            "TempR1*": (62.5, 83.0, 73.2, 52.3),
            "Time-R1*": (58.8, 82.8, 72.2, 50.1),
            "Time-R1 (zero-shot, Time-R1 slides)": (58.1, 78.1, 60.8, 35.3),
        },
    ),
    *_rows(
        "activitynet_captions",
        _TG,
        {
            "TempR1": (32.2, 47.6, 28.9, 14.0),
            "TempR1*": (51.9, 72.5, 55.4, 34.1),
            "Time-R1*": (None, 73.3, 55.6, 34.0),
            "Time-R1 (zero-shot, Time-R1 slides)": (40.5, 58.6, 39.0, 21.4),
        },
    ),
    *_rows(
        "qvhighlights",
        _LOC,
        {
            "TempR1": (71.1, 91.1, 79.4, 61.4),
            "TempR1*": (71.6, 91.5, 80.1, 62.0),
            "Time-R1*": (44.7, 63.2, 47.1, 28.0),
        },
    ),
    # TempR1 Table 2.
    *_rows(
        "activitynet_captions_dtg",
        _LOC,
        {
            "TempR1": (59.8, 82.6, 66.7, 43.4),
            "Time-R1": (33.0, 48.5, 29.7, 13.9),
        },
    ),
    *_rows(
        "nextgqa",
        ("mIoU", "R@0.3", "R@0.5", "R@0.7", "Acc"),
        {
            "TempR1": (39.2, 58.9, 35.9, 17.1, 70.1),
            "Time-R1": (28.3, 39.2, 18.6, 8.2, 62.1),
        },
    ),
    *_rows("activitynet_1.3", ("mF1",), {"TempR1": (71.0,), "Time-R1": (52.8,)}),
    *_rows(
        "activitynet_1.3",
        ("F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7"),
        {
            "TempR1 (Table 3 ablation, full)": (89.8, 77.3, 64.5, 50.9),
        },
    ),
    # Time-R1 slides: TVGBench.
    *_rows("tvgbench", _TG, {"Time-R1": (29.2, 41.8, 29.4, 16.4)}),
    # TPRU summary: TPRU-Test overall accuracy (all three task types together).
    *_rows("tpru_test", ("Acc",), {"TPRU-7B": (75.70,)}),
]

# TempR1 Fig. 3: general video understanding (accuracy, percent) of the base model, SFT on the same
# training data, and TempR1. The figure is a chart whose values are not in the text this project has
# (seeds/tempr1_paper.md: only that SFT falls below the base model and TempR1 rises above it), so they
# are None here, printed as "-", until read off the figure; a value filled in here also shows in the
# per-benchmark tables (`paper_figure`).
FIG3_BENCHMARKS = ("videomme", "perception_test", "tempcompass", "mvbench")
FIG3_METHODS = ("Qwen2.5-VL-7B", "SFT", "TempR1")
FIG3: dict[str, dict[str, float | None]] = {b: {m: None for m in FIG3_METHODS} for b in FIG3_BENCHMARKS}
_TABLES += [row for b in FIG3_BENCHMARKS for row in _rows(b, ("Acc",), {m: (v,) for m, v in FIG3[b].items()})]

PAPER_RESULTS: dict[tuple[str, str], dict[str, float]] = {}
for _key, _method, _value in _TABLES:
    PAPER_RESULTS.setdefault(_key, {})[_method] = _value

_ALIASES = {
    "charades": "charades_sta",
    "charadessta": "charades_sta",
    "activitynet": "activitynet_captions",
    "anet": "activitynet_captions",
    "activitynetcaptions": "activitynet_captions",
    "anetcaptions": "activitynet_captions",
    "qvh": "qvhighlights",
    "qvhighlights": "qvhighlights",
    "nextgqa": "nextgqa",
    "activitynet13": "activitynet_1.3",
    "activitynetv13": "activitynet_1.3",
    "anet13": "activitynet_1.3",
    "anetv13": "activitynet_1.3",
    "tvgbench": "tvgbench",
    "tpru": "tpru_test",
    "tprutest": "tpru_test",
    "videomme": "videomme",
    "perceptiontest": "perception_test",
    "tempcompass": "tempcompass",
    "mvbench": "mvbench",
}


def canonical_dataset(name: str | None, task: str | None = None) -> str | None:
    """Our dataset key for a user or `source` name ("Charades-STA" -> "charades_sta").

    ActivityNet Captions is one key for TG and another for DTG (same metric names, other table).
    """
    if not name:
        return None
    key = _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()), name.lower())
    if key == "activitynet_captions" and task == "dtg":
        return "activitynet_captions_dtg"
    if key == "activitynet_captions" and task == "tal":
        return "activitynet_1.3"
    return key


# Time-R1's own figures come from its public `eval_all.py`: IoU > thr on the last "x to y" of the output.
_TIME_R1_SCRIPT = "IoU > thr, last 'x to y' of the answer, raw times (Time-R1 eval_all)"
PAPER_CONVENTIONS: dict[tuple[str, str], str] = {
    ("charades_sta", "Time-R1 (zero-shot, Time-R1 slides)"): _TIME_R1_SCRIPT,
    ("activitynet_captions", "Time-R1 (zero-shot, Time-R1 slides)"): _TIME_R1_SCRIPT,
    ("tvgbench", "Time-R1"): _TIME_R1_SCRIPT,
}


def paper_convention(dataset: str | None, method: str, task: str | None = None) -> str:
    """How the published figure of `method` on `dataset` was computed, or "not stated by the source"."""
    return PAPER_CONVENTIONS.get((canonical_dataset(dataset, task), method), "not stated by the source")


def paper_figure(dataset: str | None, metric: str, task: str | None = None) -> tuple[str, float] | None:
    """(method, value) to print beside our `metric`: TempR1's figure if given, else the first."""
    figures = PAPER_RESULTS.get((canonical_dataset(dataset, task), metric))
    if not figures:
        return None
    method = "TempR1" if "TempR1" in figures else next(iter(figures))
    return method, figures[method]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def general_video_table(metrics: Mapping[tuple[str, str], Mapping[str, float]]) -> str:
    """Our accuracy on the Fig. 3 benchmarks found in `metrics` ((dataset, task) -> metric -> value, as
    `apps.evaluate.score_predictions` returns) beside Fig. 3's methods, as a markdown table ("" if none)."""
    ours = {canonical_dataset(dataset, task): values.get("Acc") for (dataset, task), values in metrics.items()}
    rows = [b for b in FIG3_BENCHMARKS if b in ours]
    if not rows:
        return ""
    lines = [
        "### General video understanding (TempR1 Fig. 3)",
        "",
        "| benchmark | ours | " + " | ".join(FIG3_METHODS) + " |",
        "|---|---:|" + "---:|" * len(FIG3_METHODS),
    ]
    lines += [f"| {b} | {_fmt(ours[b])} | " + " | ".join(_fmt(FIG3[b][m]) for m in FIG3_METHODS) + " |" for b in rows]
    return "\n".join(lines) + "\n"
