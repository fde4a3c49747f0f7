"""Local paths and bucket URLs (`gs://...` and other fsspec URLs) through one abstraction, `etils.epath`.

`as_path` is the one way to turn a user's path string into a path object: a local path or a URL, never
a mangled URL (`gs:/bucket`, `gs:` as a first directory) that would silently become a local folder.
Readers that need a local file (ArrayRecord, safetensors, transformers' tokenizers) take `local_copy`,
a copy in a cache directory (`TEMPR1_CACHE_DIR`, default `~/.cache/tempr1/remote`) reused while the
remote file keeps its size; writers that need a local directory write into `staged_dir` and upload.
Videos and images are read through a file object (`open_binary`), which PyAV and Pillow accept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO

import fsspec
from etils import epath

PathLike = str | os.PathLike
CACHE_ENV = "TEMPR1_CACHE_DIR"
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_MANGLED = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:(/|$)|^(gs|gcs|s3|s3a|az|abfs|abfss|hf|http|https):")


def is_remote(path: PathLike) -> bool:
    """True for a URL such as `gs://bucket/x` (after `check`)."""
    return bool(_URL.match(check(path)))


def check(path: PathLike) -> str:
    """`path` as a string; ValueError for a mangled URL (`gs:/b/x`, `gs:b`, a first component `gs:`),
    which a local file system would take as a folder named `gs:`."""
    text = os.fspath(path)
    if not isinstance(text, str):
        text = text.decode()
    if not _URL.match(text) and _MANGLED.match(text):
        raise ValueError(
            f"{text!r} looks like a URL with a missing '/': write scheme://bucket/path "
            f"(e.g. gs://bucket/run); a local folder named {text.split('/')[0]!r} is refused"
        )
    return text


def as_path(path: PathLike) -> epath.Path:
    """A path object for a local path or a URL (`gs://`, `s3://`, ... through fsspec); see `check`."""
    text = check(path)
    if isinstance(path, epath.Path) and not isinstance(path, pathlib.Path):
        return path
    return epath.Path(text)


def absolute(path: PathLike) -> epath.Path:
    """`as_path(path)`, made absolute (and resolved) when local."""
    p = as_path(path)
    return p if is_remote(p) else epath.Path(pathlib.Path(os.fspath(p)).resolve())


def join(base: PathLike, relative: str) -> epath.Path:
    """`relative` under `base` unless it is absolute or a URL itself."""
    if is_remote(relative) or pathlib.PurePath(relative).is_absolute():
        return as_path(relative)
    return as_path(base) / relative


def open_binary(path: PathLike) -> IO[bytes]:
    """A seekable binary file object for reading (local file, or streamed ranges of a remote one)."""
    if not is_remote(path):
        return open(os.fspath(path), "rb")
    return as_path(path).open("rb")


@contextlib.contextmanager
def media(path: PathLike) -> Iterator[str | IO[bytes]]:
    """What PyAV's `av.open` or Pillow's `Image.open` read: a local file name, or an open remote file
    object (streamed by range requests, closed at the end of the block)."""
    if not is_remote(path):
        yield os.fspath(path)
        return
    with open_binary(path) as f:
        yield f


def cache_dir() -> pathlib.Path:
    """The local cache of remote files (`$TEMPR1_CACHE_DIR`, default `~/.cache/tempr1/remote`)."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "tempr1" / "remote")


def local_copy(path: PathLike) -> pathlib.Path:
    """A local path with the content of `path`: itself when local; for a URL, a copy of the file or of
    the directory tree in `cache_dir()`, keyed by the URL. Files whose size is unchanged are reused."""
    if not is_remote(path):
        return pathlib.Path(os.fspath(path))
    url = check(path).rstrip("/")
    fs, root = fsspec.core.url_to_fs(url)
    dst = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:20] / (root.rsplit("/", 1)[-1] or "root")
    if not fs.exists(root):
        raise FileNotFoundError(f"{url} does not exist")
    if fs.isdir(root):
        for name, info in fs.find(root, detail=True).items():
            _fetch(fs, name, info["size"], dst / name[len(root.rstrip("/")) + 1 :])
    else:
        _fetch(fs, root, fs.info(root)["size"], dst)
    return dst


def _fetch(fs: fsspec.AbstractFileSystem, name: str, size: int, dst: pathlib.Path) -> None:
    if dst.is_file() and dst.stat().st_size == size:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".part{os.getpid()}")
    fs.get_file(name, str(tmp))
    os.replace(tmp, dst)


def upload_dir(local: PathLike, dst: PathLike) -> None:
    """Copy the tree `local` into `dst` (a URL or a local directory), file by file."""
    local = pathlib.Path(local)
    out = as_path(dst)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target = out / file.relative_to(local).as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "rb") as fin, target.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 8 << 20)


def remove_tree(path: PathLike) -> None:
    """Delete a file or directory tree (local or remote) if it exists."""
    p = as_path(path)
    if p.is_dir():
        p.rmtree()
    elif p.exists():
        p.unlink()


@contextlib.contextmanager
def staged_dir(dst: PathLike) -> Iterator[pathlib.Path]:
    """A local directory to write `dst` into: `dst` itself when local (created, and removed again if the
    block fails and it did not exist before); for a URL, a temporary directory uploaded into `dst` when
    the block ends without an error."""
    if not is_remote(dst):
        out = pathlib.Path(os.fspath(dst))
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            yield out
        except BaseException:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        return
    with tempfile.TemporaryDirectory(prefix="tempr1-stage-") as tmp:
        yield pathlib.Path(tmp)
        upload_dir(tmp, dst)
