"""The import graph points one way: model <- data <- tasks/rewards/metrics <- training core <- rl <- applications
<- commands. Every import of every module (module level or inside a function) is read from its source."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("models", "data_pipeline", "tempr1_jax")

# Module-name prefixes, lowest layer first; a module belongs to the first (longest) prefix that matches it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("models",)),
    ("data", ("data_pipeline",)),
    (
        "tasks, rewards, metrics",
        (
            "tempr1_jax.config",
            "tempr1_jax.tasks",
            "tempr1_jax.rewards",
            "tempr1_jax.evaluation",
            "tempr1_jax.paper_results",
            "tempr1_jax.difficulty",
            "tempr1_jax.prediction_formats",
            "tempr1_jax.baselines",
        ),
    ),
    ("training core", ("tempr1_jax.training",)),
    ("rl", ("tempr1_jax.rl",)),
    ("applications", ("tempr1_jax.apps",)),
    ("commands", ("tempr1_jax.commands", "tempr1_jax.cli", "tempr1_jax.configurables")),
)


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """Index of the layer holding `module` (or the package it names); KeyError if none does."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise KeyError(module)
    return best[0]


def imported_modules(path: pathlib.Path) -> set[str]:
    """Our modules that `path` imports (`from a.b import c` counts a.b and a.b.c when c is a module)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if (ROOT / candidate.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / candidate.replace(".", "/") / "__init__.py"
                ).is_file():
                    out.add(candidate)
    # A bare package name (`from tempr1_jax import tasks`) names no layer; its modules do.
    return {m for m in out if m.split(".")[0] in PACKAGES and m not in PACKAGES}


def sources() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if module_name(p) not in PACKAGES)


def test_every_module_has_a_layer():
    unplaced = []
    for path in sources():
        try:
            layer_of(module_name(path))
        except KeyError:
            unplaced.append(module_name(path))
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_only_point_down():
    upward = []
    for path in sources():
        here = module_name(path)
        for target in imported_modules(path):
            if layer_of(target) > layer_of(here):
                upward.append(f"{here} ({LAYERS[layer_of(here)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    "module, layer",
    [
        ("models.qwen2_5_vl.generation", "model"),
        ("tempr1_jax.training.loop", "training core"),
        ("tempr1_jax.rl.trainer", "rl"),
        ("tempr1_jax.apps.sft", "applications"),
        ("tempr1_jax.configurables", "commands"),
    ],
)
def test_layer_assignment(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
