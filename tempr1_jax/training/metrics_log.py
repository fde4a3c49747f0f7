"""Per-step metrics: `metrics.jsonl` (one JSON object per step), TensorBoard events and a tqdm bar."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from data_pipeline import paths

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-friendly scalar: numpy/jax scalars to Python, non-finite floats to None."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    arr = np.asarray(value)
    if arr.dtype == bool:
        return bool(arr)
    if np.issubdtype(arr.dtype, np.integer):
        return int(arr)
    f = float(arr)
    return f if math.isfinite(f) else None


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """All records of `workdir/metrics.jsonl` (empty if the file does not exist)."""
    path = paths.as_path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Append step records to `workdir/metrics.jsonl`, mirror scalars to TensorBoard, drive a progress bar.

    On resume, `start_step` drops records of steps after the restored checkpoint (they are redone),
    so the file holds each step exactly once.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        *,
        total_steps: int | None = None,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        desc: str = "train",
    ) -> None:
        self.workdir = paths.as_path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        kept = [r for r in read_metrics(self.workdir) if int(r.get("step", 0)) <= start_step]
        self._lines = [json.dumps(r) + "\n" for r in kept]
        self.path.write_text("".join(self._lines))
        # Bucket objects cannot be appended to: a remote file is rewritten whole at each record.
        self._file = None if paths.is_remote(self.path) else self.path.open("a")
        self._tb = None
        self._tb_stage = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            tb_dir = self.workdir / "tensorboard"
            if paths.is_remote(tb_dir):
                # Event files are written locally and uploaded after each flush: tensorboardX's own bucket
                # writer re-uploads from its finaliser, which retries for minutes once the bucket is gone.
                self._tb_stage = pathlib.Path(tempfile.mkdtemp(prefix="tempr1-tb-"))
            self._tb = SummaryWriter(str(self._tb_stage or tb_dir), purge_step=start_step + 1)
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record {"step": step, **metrics}; returns it as written."""
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        if self._file is None:
            self._lines.append(json.dumps(record) + "\n")
            self.path.write_text("".join(self._lines))
        else:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
            self._upload_tensorboard()
        if self._bar is not None:
            self._bar.update(1)
            shown = {k: record[k] for k in ("loss", "reward_mean") if isinstance(record.get(k), float)}
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
        return record

    def _upload_tensorboard(self) -> None:
        if self._tb_stage is not None:
            paths.upload_dir(self._tb_stage, self.workdir / "tensorboard")

    def close(self) -> None:
        """Close the metrics file, TensorBoard (uploading a staged copy) and the progress bar."""
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._upload_tensorboard()
            if self._tb_stage is not None:
                shutil.rmtree(self._tb_stage, ignore_errors=True)
        if self._bar is not None:
            self._bar.close()
