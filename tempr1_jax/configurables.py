"""Every gin configurable of the project, registered in one place.

Each command parses its gin files through `parse_gin` here, after this module has imported every module
that declares a configurable. So every command knows every configurable, and the operative config that
any run writes (a demo phase's included) is a valid `--gin_file` for any other command.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from tempr1_jax import config as gin_config
from tempr1_jax.apps import demo, sft  # noqa: F401  (DemoConfig, SFTConfig)
from tempr1_jax.rl import trainer  # noqa: F401  (TrainConfig, RolloutConfig, LossConfig and the training core's)


def parse_gin(
    args: argparse.Namespace | None = None, *, files: Iterable[str] = (), bindings: Iterable[str] = ()
) -> None:
    """`config.parse_gin` with every configurable registered."""
    gin_config.parse_gin(args, files=files, bindings=bindings)
