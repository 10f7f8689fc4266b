"""The test app's secrets, the fake at its broker seam, and the worker's applier played
in-process for tests that use Flask's test client."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from webhook_app.infra.queue import Enqueuer
from webhook_app.services.applying import apply_pending


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
