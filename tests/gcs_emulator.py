"""A real Cloud Storage JSON API server (`gcp-storage-emulator`) for tests, and the environment that
points gcsfs (hence etils.epath), tensorstore and orbax at it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
    """Variables that send every client to the emulator at `url`, with test credentials."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
        # gcsfs otherwise asks a gRPC control API for the bucket type (60 s timeouts per bucket)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore, hence orbax's array storage
        "TENSORSTORE_GCS_HTTP_VERSION": "1",
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
    }


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[dict[str, str]]:
    """Start the emulator with `bucket` on a free port of 127.0.0.1; yields its `client_env` (not yet set)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory", "--default-bucket", bucket],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        yield client_env(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def set_env(env: dict[str, str]) -> None:
    """Set `env` in this process and drop gcsfs's cached file systems made before it."""
    os.environ.update(env)
    import fsspec

    fsspec.filesystem("gs").clear_instance_cache()
