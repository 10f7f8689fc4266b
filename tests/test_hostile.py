"""Hostile callback bodies, each POSTed with a valid token: a clear answer, never a 5xx, and
every job exactly as it was. The corpus is tests/fixtures/hostile/ (manifest.json says what
each file is and the content type it is sent with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.common.doubles import TEST_SECRET
from tests.common.factories import envelope, generation
from webhook_app.infra.callback_tokens import callback_token

CORPUS = Path(__file__).parent / "fixtures" / "hostile"
MANIFEST: dict[str, dict[str, str]] = json.loads((CORPUS / "manifest.json").read_text())
# Kept and ignored: the job is left alone and the upstream is asked for the truth.
KEPT_AND_IGNORED = {"unparseable", "upstream_failure"}


def url(job_id: str) -> str:
    return f"/callbacks/{job_id}/{callback_token(TEST_SECRET, job_id)}"


@pytest.fixture
def jobs(client: Any, auth: dict[str, str]) -> list[str]:
    """A queued job (it has no generation yet, so it would adopt one) and a processing one."""
    ids = []
    for prompt in ("queued", "processing"):
        response = client.post("/api/v1/jobs", json={"prompt": prompt}, headers=auth)
        ids.append(response.get_json()["id"])
    assert client.post(url(ids[1]), data=envelope(generation("preview"))).status_code == 200
    return ids


def deliveries(client: Any, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/jobs/{job_id}/deliveries", headers=auth).get_json()
    return list(answer["deliveries"])


def snapshot(client: Any, auth: dict[str, str], ids: list[str]) -> list[dict[str, Any]]:
    return [client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json() for job_id in ids]


def test_the_corpus_is_complete() -> None:
    on_disk = {path.name for path in CORPUS.iterdir()} - {"manifest.json"}
    assert on_disk == set(MANIFEST)
    assert len(MANIFEST) >= 40


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_hostile_body_gets_a_clear_answer_and_changes_no_job(
    client: Any, auth: dict[str, str], jobs: list[str], name: str
) -> None:
    body = (CORPUS / name).read_bytes()
    content_type = MANIFEST[name]["content_type"]
    before = snapshot(client, auth, jobs)
    for job_id in jobs:
        response = client.post(url(job_id), data=body, content_type=content_type)
        answer = response.get_json()
        assert response.status_code < 500, answer
        if response.status_code == 200:  # kept: what became of it is on the delivery
            assert answer == {"received": True, "duplicate": False}
            kept = [d for d in deliveries(client, auth, job_id) if d["outcome"] != "applied"]
            assert len(kept) == 1 and kept[0]["detail"], kept
            assert kept[0]["outcome"] in KEPT_AND_IGNORED, kept
        else:
            assert 400 <= response.status_code < 500 and answer["error"]["message"], answer
    assert snapshot(client, auth, jobs) == before


def test_an_oversized_body_is_refused_and_not_kept(
    client: Any, auth: dict[str, str], jobs: list[str]
) -> None:
    before = snapshot(client, auth, jobs)
    body = b'{"type": "success", "data": {"uuid": "' + b"A" * (1024 * 1024) + b'"}}'
    response = client.post(url(jobs[0]), data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"
    assert snapshot(client, auth, jobs) == before
    kept = client.get(f"/api/v1/jobs/{jobs[0]}/deliveries", headers=auth).get_json()
    assert kept["deliveries"] == []
