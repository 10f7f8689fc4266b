"""Secrets kept out of log records, stored bodies and the stored upstream session."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from webhook_app.depositphotos.client import CachedSession
from webhook_app.infra.db import Database
from webhook_app.infra.redaction import (
    REDACTED,
    Redactor,
    install_redaction,
    mask_callback_paths,
    remember_secret,
    settings_secrets,
)
from webhook_app.models import UpstreamSession
from webhook_app.services.upstream_sessions import DatabaseSessionStore, session_key
from webhook_app.settings import Settings

JOB = "6f1c2d3e-0000-4000-8000-000000000001"
TOKEN = "Zm9vYmFyYmF6cXV4cXV1eF9fLS1hYmNk"


@pytest.mark.parametrize(
    "text",
    [
        f"POST /callbacks/{JOB}/{TOKEN} HTTP/1.1",
        f"https://app.example.com/callbacks/{JOB}/{TOKEN}?x=1",
        f"dp_callback_url=https%3A%2F%2Fapp.example.com%2Fcallbacks%2F{JOB}%2F{TOKEN}&dp_x=1",
        f'{{"url": "https:\\/\\/app.example.com\\/callbacks\\/{JOB}\\/{TOKEN}"}}',
    ],
)
def test_callback_tokens_are_masked_in_every_spelling(text: str) -> None:
    masked = mask_callback_paths(text)
    assert TOKEN not in masked
    assert JOB in masked and REDACTED in masked
    assert mask_callback_paths(masked) == masked


@pytest.mark.parametrize(
    "text",
    [
        f"POST /callbacks/{JOB}/{TOKEN} HTTP/1.1",
        f"POST /CallBacks/{JOB}/{TOKEN} HTTP/1.1",
        f"dp_callback_url=https%3A%2F%2Fapp.example.com%2FCALLBACKS%2F{JOB}%2F{TOKEN}&dp_x=1",
        f'{{"url": "https:\\/\\/app.example.com\\/callbacks\\/{JOB}\\/{TOKEN}"}}',
    ],
)
def test_a_body_has_its_callback_tokens_masked_in_any_case(text: str) -> None:
    masked = Redactor().redact_bytes(text.encode())
    assert TOKEN.encode() not in masked
    assert JOB.encode() in masked and REDACTED.encode() in masked
    body = f'{{"note": "no callback here", "id": "{JOB}/{TOKEN}"}}'.encode()
    assert Redactor().redact_bytes(body) == body


def test_text_without_a_callback_url_is_left_alone() -> None:
    text = "GET /api/v1/jobs/6f1c2d3e/events 200 callbacks are fine"
    assert mask_callback_paths(text) == text


def test_secrets_and_their_url_encodings_are_replaced_longest_first() -> None:
    redact = Redactor(["p@ss/word!", "p@ss/word!-longer", "short", None, ""])
    assert redact("a p@ss/word!-longer b") == f"a {REDACTED} b"
    assert redact("form: pw=p%40ss%2Fword%21 and p%40ss%2Fword%21") == (
        f"form: pw={REDACTED} and {REDACTED}"
    )
    assert redact("too short to hide: short") == "too short to hide: short"
    assert redact.redact_bytes(b"x p@ss/word! y") == b"x " + REDACTED.encode() + b" y"


def test_a_remembered_secret_is_replaced_from_then_on() -> None:
    redact = Redactor(["fixed-secret"])
    assert redact("session 0123456789abcdef") == "session 0123456789abcdef"
    redact.remember("0123456789abcdef")
    assert redact("session 0123456789abcdef, fixed-secret") == (f"session {REDACTED}, {REDACTED}")


def test_settings_secrets_are_the_configured_ones_and_not_sandbox_placeholders() -> None:
    real = Settings(
        dp_api_key="real-key-123",
        dp_login_user="real-user",
        dp_login_password="real-password",
        uses_sandbox=False,
        callback_secrets=("new-secret", "old-secret"),
        api_tokens=("token-one",),
        database_url="postgresql+psycopg://app:db-password@db/app",
    )
    assert {
        "real-key-123",
        "real-user",
        "real-password",
        "new-secret",
        "old-secret",
        "token-one",
        "db-password",
    } <= set(settings_secrets(real))
    assert "sandbox" not in settings_secrets(Settings())


@pytest.fixture
def installed() -> Iterator[None]:
    install_redaction(
        Settings(callback_secrets=("callback-secret-x",), api_tokens=("api-token-x",))
    )
    yield
    install_redaction(None)


def _records(caplog: pytest.LogCaptureFixture) -> str:
    return (
        "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
        + caplog.text
    )


def test_log_records_of_any_logger_are_redacted(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = logging.getLogger("webhook_app.test.quiet")
    quiet.propagate = False  # like gunicorn's access log: root's filters never see it
    quiet.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("some.library").warning("token %s", "api-token-x")
            quiet.info("%(r)s %(s)s", {"r": f"POST /callbacks/{JOB}/{TOKEN} HTTP/1.1", "s": 200})
            remember_secret("session-id-abcdef")
            logging.getLogger("webhook_app.x").info("session-id-abcdef in use")
            try:
                raise RuntimeError("failed with callback-secret-x")
            except RuntimeError:
                logging.getLogger("webhook_app.y").exception("boom")
    finally:
        quiet.removeHandler(caplog.handler)
    text = _records(caplog)
    for secret in ("api-token-x", TOKEN, "session-id-abcdef", "callback-secret-x"):
        assert secret not in text
    assert text.count(REDACTED) >= 4 and "RuntimeError" in text


# --- the upstream session at rest -----------------------------------------------------------


def test_the_stored_session_is_sealed_and_opens_only_with_the_same_credentials(
    database: Database,
) -> None:
    key = session_key("api-key", "user", "password")
    store = DatabaseSessionStore(database, key, remember=0)  # every load reads the row
    store.save(CachedSession("session-0123456789abcdef", 1000.0))
    with database.transaction() as session:
        stored = session.scalar(select(UpstreamSession.session_id))
    assert stored and "session-0123456789abcdef" not in stored
    loaded = store.load()
    assert loaded == CachedSession("session-0123456789abcdef", 1000.0)

    other = DatabaseSessionStore(
        database, session_key("api-key", "user", "new-password"), remember=0
    )
    assert other.load() is None  # a changed password: log in again
    other.discard("anything")  # an unreadable session is dropped too
    assert store.load() is None


def test_discard_drops_only_the_session_that_failed(database: Database) -> None:
    store = DatabaseSessionStore(database, session_key("k", "u", "p"))
    store.save(CachedSession("fresh-session-from-another-worker", 2000.0))
    store.discard("the-old-session")
    assert store.load() == CachedSession("fresh-session-from-another-worker", 2000.0)
    store.discard("fresh-session-from-another-worker")
    assert store.load() is None
