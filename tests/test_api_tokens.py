"""Query API tokens: made and revoked with the CLI, stored as hashes, read and write scopes."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from webhook_app.infra.db import Database
from webhook_app.infra.refusals import refusal_counts
from webhook_app.models import ApiToken, utcnow
from webhook_app.services import api_tokens
from webhook_app.tools.cli import main


def mint(database: Database, scope: str, name: str = "test") -> tuple[int, str]:
    with database.transaction() as session:
        row, token = api_tokens.create_token(session, name=name, scope=scope, now=utcnow())
        return row.id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_only_a_hash_of_the_token_is_stored(database: Database) -> None:
    token_id, token = mint(database, "read")
    assert token.startswith(api_tokens.PREFIX) and len(token) >= 40
    with database.transaction() as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        stored = [row.name, row.scope, row.token_hash]
        assert api_tokens.find_active(session, token) is row
        assert api_tokens.find_active(session, token + "x") is None
        assert api_tokens.find_active(session, row.token_hash) is None
    assert token not in " ".join(stored)


@pytest.mark.parametrize(("name", "scope"), [("", "read"), ("x" * 101, "read"), ("ok", "admin")])
def test_bad_names_and_scopes_are_refused(database: Database, name: str, scope: str) -> None:
    with database.transaction() as session, pytest.raises(ValueError):
        api_tokens.create_token(session, name=name, scope=scope, now=utcnow())


def test_a_read_token_reads_but_may_not_write(client: Any, database: Database) -> None:
    _, reader = mint(database, "read")
    _, writer = mint(database, "write")
    job = client.post("/api/v1/jobs", json={"prompt": "a fox"}, headers=bearer(writer))
    assert job.status_code == 202
    job_id = job.get_json()["id"]
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/events"):
        assert client.get(path, headers=bearer(reader)).status_code == 200

    refused_before = refusal_counts().get("api_scope", 0)
    writes = [("/api/v1/jobs", {"prompt": "x"})] + [
        (f"/api/v1/jobs/{job_id}/{action}", None) for action in ("refresh", "retry", "cancel")
    ]
    for path, body in writes:
        response = client.post(path, json=body, headers=bearer(reader))
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert refusal_counts()["api_scope"] == refused_before + len(writes)
    listed = client.get("/api/v1/jobs?limit=200", headers=bearer(reader)).get_json()["jobs"]
    assert [j["prompt"] for j in listed].count("x") == 0


def test_api_tokens_from_the_environment_may_write(client: Any, auth: dict[str, str]) -> None:
    assert client.post("/api/v1/jobs", json={"prompt": "x"}, headers=auth).status_code == 202


def test_a_revoked_token_is_refused_at_once(client: Any, database: Database) -> None:
    token_id, token = mint(database, "write")
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 200
    with database.transaction() as session:
        assert api_tokens.revoke_token(session, token_id, now=utcnow()) is not None
    refused_before = refusal_counts().get("api_unauthenticated", 0)
    response = client.get("/api/v1/jobs", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert refusal_counts()["api_unauthenticated"] == refused_before + 1


def test_the_cli_makes_lists_and_revokes_tokens(
    database_url: str, database: Database, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("APP_ENV", "test")
    runner = CliRunner()

    made = runner.invoke(main, ["tokens", "create", "--name", "billing", "--scope", "read"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith(api_tokens.PREFIX) and "\n" not in token
    assert "shown only now" in made.stderr
    with database.transaction() as session:
        row = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == api_tokens.hash_token(token))
        )
        assert row is not None and row.name == "billing" and row.scope == "read"
        token_id = row.id
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 200

    listed = runner.invoke(main, ["tokens", "list"])
    assert listed.exit_code == 0
    line = next(line for line in listed.stdout.splitlines() if line.split()[0] == str(token_id))
    assert "billing" in line and "read" in line and "active" in line
    assert token not in listed.output and row.token_hash not in listed.output

    revoked = runner.invoke(main, ["tokens", "revoke", str(token_id)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 401
    again = runner.invoke(main, ["tokens", "list"]).stdout
    assert "revoked" in next(
        line for line in again.splitlines() if line.split()[0] == str(token_id)
    )

    missing = runner.invoke(main, ["tokens", "revoke", "999999"])
    assert missing.exit_code != 0 and "no token 999999" in missing.output
    bad = runner.invoke(main, ["tokens", "create", "--name", "x", "--scope", "admin"])
    assert bad.exit_code != 0
