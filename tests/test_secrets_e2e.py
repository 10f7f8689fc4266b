"""A newcomer tries the doors of a running system, and nothing it wrote holds a secret.

Real gunicorn, Celery worker and beat, and the sandbox with real-looking credentials (an API
key it requires, a login, a password). Afterwards every file in the stack's directory (process
logs, SQLite files), every column of every table and every CLI output is searched for each
secret: the API key, the login, the password, the upstream session id, both callback secrets,
every callback token, and the API tokens.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import requests
from sqlalchemy import MetaData, create_engine, select

from tests.test_e2e import FAST, finished
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.db import Database
from webhook_app.services.upstream_sessions import DatabaseSessionStore, session_key
from webhook_app.tools.client import ApiError, Client
from webhook_app.tools.stack import Stack, wait_until

pytestmark = pytest.mark.e2e

NOT_FOUND = {"error": {"code": "not_found", "message": "no such callback"}}


def everything_in_the_database(url: str) -> str:
    engine = create_engine(url)
    metadata = MetaData()
    metadata.reflect(engine)
    parts = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value).decode("latin-1"))
                    else:
                        parts.append(json.dumps(value, default=str))
    engine.dispose()
    return "\n".join(parts)


def test_a_newcomer_is_refused_everywhere_and_no_secret_is_written(stack: Stack) -> None:
    credentials = {
        "DP_API_KEY": "dpkey-" + secrets.token_hex(12),
        "DP_LOGIN_USER": "dpuser-" + secrets.token_hex(6),
        "DP_LOGIN_PASSWORD": "dppass-" + secrets.token_hex(12),
    }
    new_secret, old_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    stack.env.update(
        credentials,
        SANDBOX_API_KEY=credentials["DP_API_KEY"],
        CALLBACK_SECRET=f"{new_secret},{old_secret}",
    )
    stack.start_all(**FAST)
    outputs: list[str] = []

    def cli(*args: str) -> Any:
        result = stack.cli(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)
        return result

    # An operator mints a read-only token; `tokens create` is the one output that shows it.
    made = stack.cli("tokens", "create", "--name", "dashboard", "--scope", "read")
    assert made.returncode == 0, made.stderr
    read_token = made.stdout.strip()
    reader = Client(stack.url, read_token, timeout=10)

    writer = stack.client()
    other = writer.create_job("a red kite")
    waited = cli("submit", "a lighthouse", "--wait", "--json", "--timeout", "90")
    job_ids = [json.loads(waited.stdout)["id"], other["id"]]
    jobs = wait_until(lambda: finished(stack, job_ids), 90, "both jobs completed and enriched")
    job_id, other_id = job_ids

    # The newcomer's attempts: each refused with a clear answer, none leaves a trace.
    before = {j["id"]: j for j in jobs}
    kept_before = len(writer.deliveries(job_id))
    body = b'{"type": "success", "data": {"uuid": "x", "status": "completed"}}'
    for path in (
        f"/callbacks/{job_id}/{'A' * 32}",  # a guessed token
        f"/callbacks/{job_id}/{callback_token(new_secret, other_id)}",  # another job's token
        f"/callbacks/not-a-job/{callback_token(new_secret, 'not-a-job')}",
        f"/callbacks/{job_id}",
    ):
        response = requests.post(stack.url + path, data=body, timeout=10)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), path
    assert requests.get(f"{stack.url}/api/v1/jobs", timeout=10).status_code == 401
    with pytest.raises(ApiError) as refused:
        reader.create_job("not allowed")
    assert refused.value.status == 403 and refused.value.code == "insufficient_scope"
    own_url = f"{stack.url}/callbacks/{job_id}/{callback_token(old_secret, job_id)}"
    too_big = requests.post(own_url, data=b"{" + b" " * (1024 * 1024) + b"}", timeout=10)
    assert too_big.status_code == 413
    garbage = requests.post(own_url, data=b"\x00\xffgarbage", timeout=10)  # old secret: valid
    assert (garbage.status_code, garbage.json()) == (200, {"received": True, "duplicate": False})
    kept = wait_until(
        lambda: [d for d in writer.deliveries(job_id) if d["outcome"] == "unparseable"],
        30,
        "the garbage applied as unparseable",
    )
    assert len(kept) == 1 and len(writer.deliveries(job_id)) == kept_before + 1
    assert {j["id"]: j for j in (writer.get_job(i) for i in job_ids)} == before

    listed = cli("tokens", "list").stdout
    token_id = next(line.split()[0] for line in listed.splitlines() if "dashboard" in line)
    assert {j["id"] for j in reader.list_jobs()["jobs"]} >= set(job_ids)
    cli("tokens", "revoke", token_id)
    with pytest.raises(ApiError) as revoked:
        reader.list_jobs()
    assert revoked.value.status == 401
    cli("jobs")
    cli("job", job_id, "--events")
    stack.stop_all()  # every log is complete

    url = stack.env["DATABASE_URL"]
    db = Database(url)
    key = session_key(*credentials.values())
    upstream_session = DatabaseSessionStore(db, key).load()
    db.dispose()
    assert upstream_session is not None  # the workers logged in, and the session is readable

    hidden = {
        **credentials,
        "the upstream session id": upstream_session.session_id,
        "the new callback secret": new_secret,
        "the old callback secret": old_secret,
        "the API token": stack.token,
        "the minted API token": read_token,
    }
    for n, one in enumerate(job_ids):
        for name, secret in (("new", new_secret), ("old", old_secret)):
            hidden[f"job {n}'s callback token ({name} secret)"] = callback_token(secret, one)

    written = {
        path.name: path.read_bytes().decode("latin-1")
        for path in stack.workdir.rglob("*")
        if path.is_file()
    }
    written["the database"] = everything_in_the_database(url)
    written["the CLI's output"] = "\n".join(outputs)
    assert "web.log" in written and "worker.log" in written
    # The request log did record the callbacks, by route and job, never by their path.
    assert "route=/callbacks/<job_id>/<token>" in written["web.log"]
    assert f"job_id={job_id}" in written["web.log"]
    leaks = [
        f"{what} in {where}"
        for what, secret in hidden.items()
        for where, text in written.items()
        if secret in text
    ]
    assert leaks == []
