"""What one sandbox app holds at run time, reachable from any of its request handlers."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .callbacks import CallbackDispatcher
from .state import SandboxState

EXTENSION_KEY = "depositphotos_sandbox"


@dataclass(frozen=True)
class SandboxRuntime:
    state: SandboxState
    callbacks: CallbackDispatcher
    # Base of preview URLs; None means the host the request came in on.
    public_url: str | None = None

    def close(self) -> None:
        """Stop callback delivery and release requests held by `hang_rate`."""
        self.callbacks.close()


def current_runtime() -> SandboxRuntime:
    runtime: SandboxRuntime = current_app.extensions[EXTENSION_KEY]
    return runtime
