"""Real processes on loopback (the sandbox, gunicorn, Celery worker and beat), for the test
suite and the benchmark kit.

Each part runs the same console script a user runs, with its output in a log file that is
printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from webhook_app.tools.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (requests.RequestException, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Stack:
    """One deployment of the system, started part by part."""

    def __init__(self, workdir: Path, database_url: str, broker_url: str, **env: str) -> None:
        self.workdir = workdir
        self.web_port = free_port()
        self.sandbox_port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.env = {
            **os.environ,
            "APP_ENV": "test",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DP_API_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.web_port}",
            "CALLBACK_SECRET": secrets.token_urlsafe(24),
            "API_TOKENS": self.token,
            # Its own queue, so stacks that share a Redis never take each other's tasks.
            "CELERY_QUEUE": f"test-{secrets.token_hex(6)}",
            "PYTHONUNBUFFERED": "1",
            # Far above what a test sends, unless a test is about the pace.
            "UPSTREAM_RATE_LIMIT": "200",
            **env,
        }
        self.env.pop("DP_API_KEY", None)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kind = "sqlite"
        self.postgres_server: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def client(self) -> Client:
        return Client(self.url, self.token, timeout=10)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "WEBHOOK_APP_URL": self.url, "WEBHOOK_APP_TOKEN": self.token}
        return subprocess.run(
            [sys.executable, "-m", "webhook_app", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, *args: str, **env: str) -> None:
        """Run `webhook-app ARGS` as the part called `name`."""
        self.start_command(name, [sys.executable, "-m", "webhook_app", *args], **env)

    def start_command(self, name: str, argv: list[str], **env: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            argv,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()

    def start_sandbox(self, **knobs: str) -> None:
        self.start("sandbox", "sandbox", "--port", str(self.sandbox_port), **knobs)
        wait_until(
            lambda: requests.get(f"{self.sandbox_url}/_sandbox/stats", timeout=1).ok,
            20,
            "the sandbox",
        )

    def migrate(self) -> None:
        result = self.cli("migrate")
        assert result.returncode == 0, result.stderr

    def start_web(self, workers: int = 2, name: str = "web", port: int | None = None) -> str:
        """Start a gunicorn (another one when given a name and port); return its URL."""
        port = port or self.web_port
        self.start(
            name, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=1).ok, 30, f"gunicorn {name}")
        return url

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> None:
        self.start(name, "worker", "--concurrency", str(concurrency))

    def start_beat(self) -> None:
        self.start("beat", "beat")

    def start_all(self, concurrency: int = 2, **knobs: str) -> None:
        self.start_sandbox(**knobs)
        self.migrate()
        self.start_web()
        self.start_worker(concurrency=concurrency)
        self.start_beat()

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        # The leader only: a Celery worker stops its pool children itself (warm shutdown);
        # signalling the whole group kills them mid-task and leaves the worker waiting on them.
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
        process.wait()

    def stop_all(self, timeout: float = 30) -> None:
        """Stop every part at once: each ends as `stop` ends it, in the time the slowest takes
        (an idle Celery worker's warm shutdown alone takes several seconds)."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for name in list(self.processes):
            self.stop(name)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(
                f"----- {path.name} (last 60 lines) -----\n" + "\n".join(text.splitlines()[-60:])
            )
        return "\n".join(parts)

    def sandbox(self, path: str, payload: Any = None) -> Any:
        url = f"{self.sandbox_url}/_sandbox/{path}"
        response = (
            requests.post(url, json=payload, timeout=5)
            if payload is not None
            else requests.get(url, timeout=5)
        )
        response.raise_for_status()
        return response.json()
