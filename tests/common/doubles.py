"""The test app's secrets, and the fake at its broker seam."""

from __future__ import annotations

from typing import Any

from webhook_app.infra.queue import Enqueuer


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
