"""The published `config.json` of the Qwen2.5-VL Instruct checkpoints (values of the public model cards).

They let `tempr1 plan` size a model without its weights: `config_for("checkpoints/Qwen2.5-VL-7B-Instruct")`
finds `qwen2_5_vl_7b_instruct.config.json` from the checkpoint directory's name.
"""

from __future__ import annotations

import pathlib
import re

DIR = pathlib.Path(__file__).parent


def config_for(checkpoint: str) -> pathlib.Path | None:
    """The shipped config.json whose model name matches the basename of `checkpoint`, or None."""
    name = re.sub(r"[^a-z0-9]+", "_", pathlib.Path(checkpoint).name.lower()).strip("_")
    path = DIR / f"{name}.config.json"
    return path if path.is_file() else None
