"""gin-config plumbing shared by every `tempr1` command.

- `--gin_file FILE` (repeatable): a path, or a name searched in `configs/` under the current directory
  and next to the installed package (so `--gin_file demo.gin` and `--gin_file configs/demo.gin` work
  from anywhere in a checkout). `include 'base.gin'` inside a file uses the same search path.
- `--gin.NAME=VALUE` (t5x style): rewritten to the binding `NAME = VALUE`. VALUE is used verbatim when it
  is a Python literal, a `@reference` or a `%MACRO`; anything else is quoted as a string, so
  `--gin.LoaderConfig.split=train` binds the string 'train'.
- `write_operative_config(workdir)`: the values the run actually used, as `operative_config.gin`.

argparse cannot declare options whose names are only known at run time, so `add_gin_arguments` turns the
parser into a `GinArgumentParser`, which rewrites `--gin.NAME=VALUE` into `--gin_binding` before parsing.
"""

from __future__ import annotations

import argparse
import ast
import logging
import pathlib
import sys
from collections.abc import Iterable, Sequence

import gin

from data_pipeline import paths

GIN_PREFIX = "--gin."
OPERATIVE_CONFIG = "operative_config.gin"
_SEARCH_PATHS_ADDED: set[str] = set()


def config_search_dirs() -> list[pathlib.Path]:
    """Directories searched for `--gin_file` names and gin `include`s (existing ones, in order)."""
    candidates = [
        pathlib.Path.cwd() / "configs",
        pathlib.Path(__file__).resolve().parent.parent / "configs",
        pathlib.Path(__file__).resolve().parent / "configs",
    ]
    seen: list[pathlib.Path] = []
    for d in candidates:
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


def resolve_gin_file(name: str) -> pathlib.Path:
    """The path of a gin file given as a path or a name in a `configs/` directory.

    Raises ValueError naming every place looked at when the file does not exist.
    """
    direct = pathlib.Path(name)
    candidates = [direct]
    for d in config_search_dirs():
        candidates += [c for c in (d / name, d / direct.name) if c not in candidates]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ValueError(f"gin file {name!r} not found; looked at: {', '.join(str(c) for c in candidates)}")


def quote_value(value: str) -> str:
    """A gin-parsable VALUE: literals, @references and %macros verbatim, anything else as a string."""
    text = value.strip()
    if text.startswith(("@", "%")):
        return text
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return repr(value)
    return text


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
    """Rewrite `--gin.NAME=VALUE` (or `--gin.NAME VALUE`) into `--gin_binding 'NAME = VALUE'`."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(GIN_PREFIX):
            body = arg[len(GIN_PREFIX) :]
            if "=" in body:
                name, value = body.split("=", 1)
            elif i + 1 < len(args):
                name, value = body, args[i + 1]
                i += 1
            else:
                raise ValueError(f"{arg}: expected --gin.NAME=VALUE")
            if not name:
                raise ValueError(f"{arg}: empty binding name in --gin.NAME=VALUE")
            out += ["--gin_binding", f"{name} = {quote_value(value)}"]
        else:
            out.append(arg)
        i += 1
    return out


class GinArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that accepts `--gin.NAME=VALUE` overrides (see `rewrite_gin_args`)."""

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else args
        return super().parse_known_args(rewrite_gin_args(argv), namespace)


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--gin_file` / `--gin_binding` and enable `--gin.NAME=VALUE` on `parser`."""
    if type(parser) is argparse.ArgumentParser:
        parser.__class__ = GinArgumentParser
    elif not isinstance(parser, GinArgumentParser):
        raise TypeError(f"add_gin_arguments needs an argparse.ArgumentParser, got {type(parser).__name__}")
    parser.add_argument(
        "--gin_file",
        action="append",
        default=[],
        metavar="FILE",
        help="gin config file (repeatable; names are searched in configs/)",
    )
    parser.add_argument(
        "--gin_binding",
        action="append",
        default=[],
        metavar="BINDING",
        help="a gin binding 'NAME = VALUE'; --gin.NAME=VALUE is the short form",
    )


def parse_gin(
    args: argparse.Namespace | None = None, *, files: Iterable[str] = (), bindings: Iterable[str] = ()
) -> None:
    """Clear gin and parse the files and bindings of `args` (plus `files` and `bindings`), files first."""
    all_files = [*(getattr(args, "gin_file", None) or []), *files]
    all_bindings = [*(getattr(args, "gin_binding", None) or []), *bindings]
    gin.clear_config()
    for d in config_search_dirs():
        if str(d) not in _SEARCH_PATHS_ADDED:
            gin.add_config_file_search_path(str(d))
            _SEARCH_PATHS_ADDED.add(str(d))
    resolved = [str(resolve_gin_file(f)) for f in all_files]
    root = logging.getLogger()
    root.addFilter(_quiet_search_misses)
    try:
        gin.parse_config_files_and_bindings(resolved, all_bindings, finalize_config=False)
    finally:
        root.removeFilter(_quiet_search_misses)


def _quiet_search_misses(record: logging.LogRecord) -> bool:
    """Drop gin's ERROR log for each search-path directory that lacks an included file."""
    return not (record.getMessage().startswith("Path not found") and "gin" in record.pathname)


def write_operative_config(workdir: str | pathlib.Path) -> pathlib.Path:
    """Write the operative gin config (values actually used so far) to `workdir/operative_config.gin`."""
    path = paths.as_path(workdir) / OPERATIVE_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gin.operative_config_str())
    return path
