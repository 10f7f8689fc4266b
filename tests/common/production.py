"""The production install as a PaaS makes it: a virtualenv from the deploy file alone, an app
directory holding only what git tracks, and the Procfile run by a Procfile runner (honcho).

Each virtualenv is built once for a given requirements.txt and app (cached by their hash,
one build at a time across test processes), so it always holds the code under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from webhook_app.tools.stack import wait_until

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "webhook-app"
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]
# What the platform waits between SIGTERM and SIGKILL (Heroku: 30 s).
GRACE_PERIOD = 30.0
# honcho itself, given the platform's grace period instead of its own 5 s.
HONCHO = [
    sys.executable,
    "-c",
    "import sys, honcho.manager, honcho.command; "
    f"honcho.manager.KILL_WAIT = {GRACE_PERIOD:g}; sys.argv[0] = 'honcho'; "
    "honcho.command.main()",
    "--no-colour",
]


def export_app(dest: Path) -> Path:
    """What a `git push` hands the platform: the tracked files, as they are in the tree."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def pinned(requirements: Path) -> dict[str, str]:
    """name (normalised) -> version, for every `name==version` line."""
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def production_venv(app_dir: Path) -> Path:
    """A virtualenv holding exactly what `pip install -r requirements.txt` installs.

    Kept by the hash of the deploy file and of the app's files: another checkout running the
    suite at the same time never has its install replaced under it.
    """
    digest = hashlib.sha256(
        (app_dir / "requirements.txt").read_bytes() + source_digest(app_dir).encode()
    ).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = CACHE / f"production-venv-{version}-{digest}"
    with open(CACHE / "production-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if not (venv / "complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            # Exactly the buildpack's install: the deploy file, from the app's directory.
            _pip(venv / "bin" / "python", app_dir, "install", "-r", "requirements.txt")
            (venv / "complete").touch()
            _forget_old(version, keep=venv)
    return venv


def _forget_old(version: str, keep: Path, count: int = 3) -> None:
    """Older builds go, but for the newest few (other checkouts may be using them)."""
    builds = sorted(
        (path for path in CACHE.glob(f"production-venv-{version}-*") if path != keep),
        key=lambda path: path.stat().st_mtime,
    )
    for old in builds[: max(0, len(builds) - count)]:
        shutil.rmtree(old, ignore_errors=True)


def source_digest(app_dir: Path) -> str:
    """What the project's own install depends on: every file of the exported app."""
    digest = hashlib.sha256()
    for path in sorted(p for p in app_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(app_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _pip(python: Path, cwd: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), *PIP, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


class Formation:
    """The Procfile's processes, started and stopped by honcho as a dyno manager would."""

    def __init__(self, app_dir: Path, venv: Path, env: dict[str, str], log: Path) -> None:
        self.app_dir = app_dir
        self.venv = venv
        self.log = log
        # The platform's variables and nothing of this test process's environment.
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(app_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def honcho(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HONCHO, *args],
            cwd=self.app_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def release(self) -> None:
        """The Procfile's `release` line, as the platform runs it before a new release."""
        result = self.honcho("start", "release")
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self, *process_types: str) -> None:
        port = self.env["PORT"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "honcho",
                    "--no-colour",
                    "start",
                    "-p",
                    port,
                    *process_types,
                ],
                cwd=self.app_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, url: str, timeout: float = 60) -> dict[str, object]:
        def ready() -> dict[str, object] | None:
            self.check_running()
            answer = requests.get(f"{url}/readyz", timeout=2)
            body: dict[str, object] = answer.json()
            return body if answer.ok and body.get("workers") == "ok" else None

        return dict(wait_until(ready, timeout, "the formation to be ready"))

    def check_running(self) -> None:
        assert self.process is None or self.process.poll() is None, self.output()

    def terminate(self) -> float:
        """SIGTERM, as the platform stops a dyno; seconds until every process was gone."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=GRACE_PERIOD + 5)
        finally:
            self.kill()
        return time.monotonic() - started

    def leftovers(self) -> list[int]:
        """Processes still running in the app's directory (honcho starts each in a session
        of its own, so they are found by where they run, not by group)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == self.app_dir:
                        found.append(int(entry.name))
        return found

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running(formation: Formation) -> Iterator[Formation]:
    try:
        yield formation
    finally:
        formation.kill()
