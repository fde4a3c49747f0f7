"""The `tempr1` command: one entry point, one module per subcommand.

Each subcommand lives in `tempr1_jax/commands/<name>.py` and exposes
`HELP: str`, `add_arguments(parser: argparse.ArgumentParser) -> None` and
`run(args: argparse.Namespace) -> int`. Modules are imported lazily so that
`tempr1 score` does not pay for importing the model or the data pipeline.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "demo": "End-to-end run on a built-in synthetic dataset (SFT, eval, GRPO, eval, export).",
    "train": "GRPO (or DAPO/GSPO) training from gin configs.",
    "sft": "Supervised cold start on reference answers.",
    "eval": "Greedy generation over a prepared split and the benchmark metrics.",
    "score": "Score a predictions file against unified targets.",
    "prepare": "Convert benchmark annotations to validated unified samples (ArrayRecord).",
    "convert": "Convert checkpoints between Hugging Face and orbax layouts.",
    "curate": "Score sample difficulty and pick a training subset (Time-R1 recipe).",
    "plan": "Compile the train step for abstract inputs and report memory, FLOPs and MFU.",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="tempr1", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        # Only the chosen command's module is imported (see main); the others get a stub parser.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tempr1 COMMAND ...` and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"tempr1_jax.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"tempr1 {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
