"""What defines a run, kept in its workdir, and the check that a resumed run is still that run.

A run's *fingerprint* is every setting its results depend on (model and tokenizer source, data sources
and loader settings, loss, optimizer, rollout, the trainer's own config), as plain JSON: the trainer
lists the configs (`Trainer.definition`), `fingerprint` turns them into nested dicts without the fields
that do not change what is learned (`NOT_DEFINING`: step count, logging, export, mesh, checkpoint
interval, ...). Files in the workdir:

- `run.json`: {"fingerprint": ...} of the settings the workdir's checkpoints were trained with;
- `run_history.jsonl`: one record per event: `start` (time, start step, process count, and the
  `changed` settings a start with `allow_changed` accepted), `stopped` (step) and `finished` (step).

`check_workdir` runs before anything is written to the workdir: a start whose fingerprint differs from
the recorded one raises `ChangedConfigError` listing each difference, unless `allow_changed` (the
`--allow_changed_config` flag of `tempr1 train` / `tempr1 sft`); the accepted differences go into the
history and the new fingerprint into `run.json`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from data_pipeline import paths

RUN_FILE = "run.json"
HISTORY_FILE = "run_history.jsonl"

# Fields that may change between the starts of one run: they do not change what it learns.
NOT_DEFINING: dict[str, frozenset[str]] = {
    "TrainConfig": frozenset(
        {
            "steps",
            "tensorboard",
            "progress",
            "export_hf",
            "eval_every",
            "eval_sources",
            "eval_samples",
            "eval_max_new_tokens",
        }
    ),
    "SFTConfig": frozenset({"steps", "tensorboard", "progress", "export", "chunk"}),
    "ModelSetup": frozenset({"remat"}),
    # LoaderConfig.sources are DataConfig.sources resolved against the workdir (whose path may change).
    "LoaderConfig": frozenset({"sources", "worker_buffer_size", "read_threads", "shard_index", "shard_count"}),
}


class ChangedConfigError(ValueError):
    """A start in a workdir whose recorded run was defined by other settings (`differences`: one line each)."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def plain(value: Any) -> Any:
    """`value` as JSON data: dataclasses and mappings as dicts, sequences as lists, other objects by repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fingerprint(parts: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON fingerprint of named configs (`plain`), without their `NOT_DEFINING` fields."""
    out = {}
    for name, part in parts.items():
        value = plain(part)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NOT_DEFINING.get(name, ())}
        out[name] = value
    return out


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else k, out)
    else:
        out[prefix] = value
    return out


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per setting that differs: `Name.field: recorded -> current` ("(unset)" where one lacks it)."""
    old, new = _flatten(dict(recorded), "", {}), _flatten(dict(current), "", {})
    missing = "(unset)"
    return [
        f"{key}: {json.dumps(old.get(key, missing))} -> {json.dumps(new.get(key, missing))}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]


def recorded_fingerprint(workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """The fingerprint in `workdir/run.json`, or None if the workdir has none."""
    path = paths.as_path(workdir) / RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())["fingerprint"]


def check_workdir(workdir: str | pathlib.Path, current: Mapping[str, Any], allow_changed: bool = False) -> list[str]:
    """The differences between `current` and the workdir's recorded fingerprint (none for a new workdir).

    Raises ChangedConfigError listing them unless `allow_changed`. Reads only.
    """
    recorded = recorded_fingerprint(workdir)
    changed = [] if recorded is None else differences(recorded, current)
    if changed and not allow_changed:
        lines = "\n  ".join(changed)
        raise ChangedConfigError(
            f"{workdir} holds a run trained with other settings ({paths.as_path(workdir) / RUN_FILE}); "
            f"this start differs in:\n  {lines}\nUse another --workdir, restore those settings, or pass "
            f"--allow_changed_config to continue this run with the new ones (recorded in {HISTORY_FILE}).",
            changed,
        )
    return changed


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record_event(workdir: str | pathlib.Path, event: str, **fields: Any) -> None:
    """Append `{"event": event, "time": ..., **fields}` to the workdir's run history."""
    path = paths.as_path(workdir) / HISTORY_FILE
    line = json.dumps({"event": event, "time": _now(), **fields}) + "\n"
    if paths.is_remote(path):  # bucket objects cannot be appended to: rewritten whole
        path.write_text((path.read_text() if path.exists() else "") + line)
        return
    with path.open("a") as f:
        f.write(line)


def record_start(
    workdir: str | pathlib.Path, current: Mapping[str, Any], step: int, changed: list[str], processes: int
) -> None:
    """Write `run.json` (whole or not at all) and append the start to the history."""
    path = paths.as_path(workdir) / RUN_FILE
    text = json.dumps({"fingerprint": dict(current)}, indent=1)
    if paths.is_remote(path):  # a bucket object is written whole or not at all
        path.write_text(text)
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    record_event(workdir, "start", step=step, processes=processes, **({"changed": changed} if changed else {}))


def read_history(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of the workdir's run history, oldest first."""
    path = paths.as_path(workdir) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = [
    "HISTORY_FILE",
    "NOT_DEFINING",
    "RUN_FILE",
    "ChangedConfigError",
    "check_workdir",
    "differences",
    "fingerprint",
    "plain",
    "read_history",
    "record_event",
    "record_start",
    "recorded_fingerprint",
]
