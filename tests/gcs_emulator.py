"""A real Cloud Storage JSON API server (`gcp-storage-emulator`) for tests, and the environment that
points gcsfs (hence etils.epath), tensorstore and orbax at it.

The emulator (2026.7.19) lacks two parts of the API that tensorstore's OCDBT driver (orbax's default
array format) relies on: the `x-goog-generation` header of a media download and the `ifGenerationMatch`
precondition of an upload. Without them a checkpoint whose manifest is committed twice fails at random
("Malformed StorageGeneration"). Run as a script, this module starts the emulator with both added (the
server handles one request at a time, so the check and the write cannot interleave).
"""

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
        [
            sys.executable,
            __file__,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            bucket,
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


def _add_generations() -> None:
    """Patch the emulator's object handlers (before its server module is imported)."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    download, insert = objects.download, objects.insert

    def generation(request, storage) -> str:
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            return "0"
        return str(obj.get("generation") or "0")

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
            response["x-goog-generation"] = generation(request, storage)

    def insert_with_precondition(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch")
        if wanted and "name" in request.query:
            try:
                obj = storage.get_file_obj(request.params["bucket_name"], request.query["name"][0])
                current = str(obj.get("generation") or "0")
            except NotFound:
                current = "0"
            if current != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed"}})
                return None
        return insert(request, response, storage, *args, **kwargs)

    objects.download = download_with_generation
    objects.insert = insert_with_precondition


if __name__ == "__main__":
    _add_generations()
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
