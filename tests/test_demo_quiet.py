"""`tempr1 demo` does not show transformers' "PyTorch was not found" warning to a user without torch."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# A process that cannot see torch (as after `pip install -e .` without it).
_HIDE_TORCH = """
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "torch" else _find(name, *a, **k)
"""
# `tempr1 demo` with a task it refuses when it writes the data: every module of the demo is imported by then.
_DEMO = """
from tempr1_jax import cli
try:
    cli.main(["demo", "--workdir", {workdir!r}, "--gin.DemoConfig.tasks=['nope']"])
except ValueError as e:
    print("refused:", e)
"""


def _run(script: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFORMERS_")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", _HIDE_TORCH + script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out


def test_no_pytorch_warning(tmp_path):
    assert "PyTorch was not found" in _run("import transformers").stderr  # torch is hidden indeed
    demo = _run(_DEMO.format(workdir=str(tmp_path / "demo")))
    assert "refused: unknown synthetic tasks" in demo.stdout, demo.stderr
    assert "PyTorch was not found" not in demo.stderr
