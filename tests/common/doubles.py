"""The test app's secrets, the fake at its broker seam, the worker's applier played
in-process for tests that use Flask's test client, and a worker's context for tasks called
directly."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

import workers.context
from webhook_app.infra.db import Database
from webhook_app.infra.queue import Enqueuer
from webhook_app.services.applying import apply_pending
from webhook_app.settings import Settings
from workers.context import WorkerContext


class RecordingEnqueuer(Enqueuer):
    """Records the tasks the web side would send, instead of talking to a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def send(self, name: str, *args: Any) -> bool:
        self.sent.append((name, args))
        return True

    def check(self) -> str:
        return "ok"


TEST_SECRET = "test-callback-secret"
TEST_TOKEN = "test-api-token"


class ApplyingClient(FlaskClient):
    """Flask's test client, which applies what a callback stored before the call returns, as
    a worker's applier would soon after (with the app's enqueuer, so follow-ups are seen)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        path = args[0] if args and isinstance(args[0], str) else kwargs.get("path", "")
        if str(path).startswith("/callbacks/") and response.status_code == 200:
            apply_all(self.application)
        return response


def apply_all(app: Any) -> None:
    svc = app.extensions["webhook_app"]
    while apply_pending(
        svc.db, limit=svc.settings.apply_batch_size, recheck_after=svc.settings.recheck_after
    ):
        pass


def use_worker(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    client: Any,
    enqueuer: Enqueuer,
    *,
    pacer: Any = None,
    **settings: Any,
) -> WorkerContext:
    """The context the tasks find for the rest of the test: the test settings (`settings` over
    them) on `db`, with these doubles at its seams, and no storage nor HTTP session."""
    configured = Settings(
        environment="test",
        database_url=str(db.engine.url),
        public_base_url="http://testserver",
        callback_secrets=(TEST_SECRET,),
        api_tokens=(TEST_TOKEN,),
        **settings,
    )
    ctx = WorkerContext(configured, db, client, enqueuer, None, pacer, None)  # type: ignore[arg-type]
    monkeypatch.setattr(workers.context, "_context", ctx)
    return ctx
