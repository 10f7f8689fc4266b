"""The S3 archive store against a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.test_archive import Clock, job_with, sandbox_generation
from webhook_app.archive.storage import S3Storage, StorageError, storage_from_settings
from webhook_app.infra.db import Database
from webhook_app.sandbox import SandboxKnobs, SandboxServer
from webhook_app.services import archive
from webhook_app.settings import Settings
from webhook_app.tools.stack import free_port, wait_until

BUCKET = "results"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(endpoint, timeout=1).ok, 30, "the S3 server")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(knobs=SandboxKnobs(preview_delay=0, final_delay=0)) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    return dataclasses.replace(
        settings,
        archive_s3_bucket=BUCKET,
        archive_s3_endpoint_url=s3_endpoint,
        archive_s3_prefix="archive",
    )


def test_images_are_archived_to_the_bucket_and_served_from_it(
    settings: Settings,
    s3_endpoint: str,
    database: Database,
    sandbox: SandboxServer,
    client: Any,
    auth: dict[str, str],
) -> None:
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    data = sandbox_generation(sandbox)
    public_id, uuids, _ = job_with(database, data)

    state = archive.archive_items(
        database,
        storage,
        requests.Session(),
        [uuids[0]],
        clock=Clock(),
        max_bytes=1024 * 1024,
        timeout=5,
    )[0]

    assert state == archive.ARCHIVED
    upstream = requests.get(data["items"][0]["previewUrl"], timeout=5).content
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    kept = s3.get_object(Bucket=BUCKET, Key=f"archive/{public_id}/{uuids[0]}.png")
    assert kept["Body"].read() == upstream and kept["ContentType"] == "image/png"

    served = client.get(f"/api/v1/jobs/{public_id}/items/{uuids[0]}/image", headers=auth)
    assert served.status_code == 200 and served.data == upstream

    with pytest.raises(StorageError):
        b"".join(storage.open("no/such/object.png"))


def test_the_local_directory_is_the_default(tmp_path: Path) -> None:
    storage = storage_from_settings(Settings(archive_dir=str(tmp_path)))
    storage.put("a/b.png", b"bytes", "image/png")
    assert b"".join(storage.open("a/b.png")) == b"bytes"
    assert os.listdir(tmp_path / "a") == ["b.png"]  # written atomically: no temporary left
    with pytest.raises(ValueError, match="unsafe"):
        storage.put("../escape.png", b"x", "image/png")
