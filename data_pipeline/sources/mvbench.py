"""MVBench (`json/{task}.json` of OpenGVLab/MVBench), a general video benchmark of TempR1 Fig. 3.

Each file is one of the 20 tasks, a list of

    {"video": "name.ext", "question": str, "candidates": [str, ...], "answer": str,
     "start": s, "end": e (seconds; the tasks marked "bound" below)}

One `mcq` sample per record, id `"{file stem}_{k}"`, the candidates as options in their order (as
the official evaluation lists them), the answer as the letter of its text, the bound as the clip
window. `extra["task_type"]` is the task's name, which the official accuracy is broken down by.
Videos are `{videos_dir}/{prefix}{video}` with the release's per-task prefix (`TASKS`). The
Episodic Reasoning videos are released as frame directories (`tvqa/frames_fps3_hq/{video}/`): this
reader expects each converted to `tvqa/frames_fps3_hq/{video}.mp4` at 3 FPS.

`annotations` are task json files, or directories holding them (the release's `json/`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence

from data_pipeline import paths
from data_pipeline.samples import LETTERS, Sample
from data_pipeline.sources._common import PathLike, as_paths, expect_type, optional_number, read_json

SOURCE = "mvbench"

# file stem -> (task name, video prefix, has a start/end bound, released as frames)
TASKS: dict[str, tuple[str, str, bool, bool]] = {
    "action_sequence": ("Action Sequence", "star/Charades_v1_480/", True, False),
    "action_prediction": ("Action Prediction", "star/Charades_v1_480/", True, False),
    "action_antonym": ("Action Antonym", "ssv2_video/", False, False),
    "fine_grained_action": ("Fine-grained Action", "Moments_in_Time_Raw/videos/", False, False),
    "unexpected_action": ("Unexpected Action", "FunQA_test/test/", False, False),
    "object_existence": ("Object Existence", "clevrer/video_validation/", False, False),
    "object_interaction": ("Object Interaction", "star/Charades_v1_480/", True, False),
    "object_shuffle": ("Object Shuffle", "perception/videos/", False, False),
    "moving_direction": ("Moving Direction", "clevrer/video_validation/", False, False),
    "action_localization": ("Action Localization", "sta/sta_video/", True, False),
    "scene_transition": ("Scene Transition", "scene_qa/video/", False, False),
    "action_count": ("Action Count", "perception/videos/", False, False),
    "moving_count": ("Moving Count", "clevrer/video_validation/", False, False),
    "moving_attribute": ("Moving Attribute", "clevrer/video_validation/", False, False),
    "state_change": ("State Change", "perception/videos/", False, False),
    "fine_grained_pose": ("Fine-grained Pose", "nturgbd/", False, False),
    "character_order": ("Character Order", "perception/videos/", False, False),
    "egocentric_navigation": ("Egocentric Navigation", "vlnqa/", False, False),
    "episodic_reasoning": ("Episodic Reasoning", "tvqa/frames_fps3_hq/", True, True),
    "counterfactual_inference": ("Counterfactual Inference", "clevrer/video_validation/", False, False),
}


def task_files(annotations: PathLike | Sequence[PathLike]) -> list[pathlib.Path]:
    """The task json files named by `annotations` (directories expand to their known task files)."""
    files = []
    for path in as_paths(annotations):
        files += sorted(p for p in path.glob("*.json") if p.stem in TASKS) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"mvbench: no task json files in {[str(p) for p in as_paths(annotations)]}")
    unknown = [str(p) for p in files if p.stem not in TASKS]
    if unknown:
        raise ValueError(f"mvbench: {unknown} are not MVBench task files (known stems: {', '.join(TASKS)})")
    return files


def load(annotations: PathLike | Sequence[PathLike], videos_dir: PathLike | None = None) -> Iterator[Sample]:
    """One multiple-choice sample per record of each task file."""
    base = paths.absolute(videos_dir) if videos_dir is not None else None
    for path in task_files(annotations):
        name, prefix, bound, frames = TASKS[path.stem]
        for k, record in enumerate(expect_type(read_json(path), list, path, "a list of questions")):
            record = record if isinstance(record, dict) else {}
            options = tuple(str(c) for c in record.get("candidates") or ())
            answer = str(record.get("answer", ""))
            video = f"{prefix}{record.get('video', '')}" + (".mp4" if frames else "")
            yield Sample(
                id=f"{path.stem}_{k}",
                task="mcq",
                source=SOURCE,
                query=str(record.get("question", "")).strip(),
                video=str(base / video) if base is not None else video,
                options=options,
                answer=LETTERS[options.index(answer)] if answer in options else None,
                video_start=optional_number(record.get("start")) if bound else None,
                video_end=optional_number(record.get("end")) if bound else None,
                extra={"task_type": name},
            )
