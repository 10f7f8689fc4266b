"""The deploy as a PaaS makes it: the buildpack's files, the install from the deploy file alone,
and the Procfile run by honcho with the platform's variables on PostgreSQL and each broker a
platform hands out (Redis, Redis over TLS with a self-signed certificate, RabbitMQ)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.requirements import Requirement

from tests.common.databases import (
    REQUIRE_SERVICES,
    create_postgres_database,
    drop_postgres_database,
)
from tests.common.production import (
    GRACE_PERIOD,
    ROOT,
    Formation,
    export_app,
    normalise,
    pinned,
    production_venv,
)
from webhook_app.tools.client import Client
from webhook_app.tools.stack import free_port, wait_until

PACKAGE_MANAGER_FILES = ("requirements.txt", "uv.lock", "poetry.lock", "Pipfile.lock", "Pipfile")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def tracked() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    return set(listed.stdout.split())


def procfile_types() -> list[str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


# --- what the buildpack reads ---------------------------------------------------------------


def test_exactly_one_package_manager_file_and_the_python_the_suite_runs_on() -> None:
    # The buildpack refuses an app with none, or with more than one (lib/package_manager.sh).
    assert [name for name in PACKAGE_MANAGER_FILES if name in tracked()] == ["requirements.txt"]
    assert ".python-version" in tracked()
    wanted = (ROOT / ".python-version").read_text().strip()
    assert wanted == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_deploy_file_pins_every_runtime_dependency_and_nothing_for_tests() -> None:
    project = pyproject()["project"]
    requirements = ROOT / "requirements.txt"
    pins = pinned(requirements)
    for line in project["dependencies"]:
        wanted = Requirement(line)
        name = normalise(wanted.name)
        assert name in pins, f"{wanted.name} is a dependency but requirements.txt lacks it"
        assert wanted.specifier.contains(pins[name]), f"{name}=={pins[name]} is not {wanted}"
    entries = [
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The project itself, last, so the pins above are what its dependencies resolve to.
    assert entries[-1] == "."
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s]+", entry) for entry in entries[:-1])


def test_app_json_describes_the_procfiles_formation_addons_and_secrets() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert sorted(app["formation"]) == sorted(set(procfile_types()) - {"release"})
    plans = {addon["plan"].split(":")[0] for addon in app["addons"]}
    assert plans == {"heroku-postgresql", "heroku-redis"}
    generated = {name for name, spec in app["env"].items() if spec.get("generator") == "secret"}
    assert generated == {"CALLBACK_SECRET", "SECRET_KEY", "API_TOKENS"}
    assert app["env"]["APP_ENV"]["value"] == "production"
    readme = (ROOT / "README.md").read_text()
    for name in app["env"]:
        assert f"`{name}`" in readme, f"app.json sets {name}, which the README does not document"
    assert procfile_types()[0] == "release"


# --- the install from the deploy file alone -------------------------------------------------


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return production_venv(export_app(tmp_path_factory.mktemp("deploy-export")))


def runtime_closure(site: Path) -> set[str]:
    """Every distribution webhook-app needs, by the metadata installed in `site`."""
    dists = {normalise(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    needed: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("webhook-app", frozenset())]
    while todo:
        name, extras = todo.pop()
        for line in dists[name].requires or []:
            wanted = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if wanted.marker and not any(wanted.marker.evaluate(e) for e in environments):
                continue
            dependency = normalise(wanted.name)
            if dependency not in needed or wanted.extras:
                needed.add(dependency)
                todo.append((dependency, frozenset(wanted.extras)))
    return needed


IMPORT_EVERYTHING = """
import importlib, pkgutil
import migrations, webhook_app, workers
for package in (webhook_app, workers):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
from kombu import Connection
# Every broker the README documents: loading the transport imports its client library.
for url in ("redis://h", "rediss://h", "amqp://h", "amqps://h", "sqla+sqlite:///x"):
    print(url, Connection(url).transport.driver_version())
import gunicorn.workers.gthread, psycopg, boto3
print("all imported")
"""


def test_the_production_install_holds_exactly_the_pins_and_imports_everything(
    venv: Path,
) -> None:
    python = str(venv / "bin" / "python")
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude", "webhook-app"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {
        normalise(line.split("==")[0]): line.split("==")[1]
        for line in freeze.stdout.splitlines()
        if "==" in line
    }
    assert installed == pinned(ROOT / "requirements.txt")
    # And nothing is pinned that the project does not need: the pins are its closure.
    site = next((venv / "lib").glob("python*/site-packages"))
    assert set(installed) == runtime_closure(site)
    subprocess.run([python, "-m", "pip", "check"], check=True, capture_output=True)
    # Not from the repository: from the app directory, as a dyno runs it.
    imported = subprocess.run(
        [python, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, cwd=venv
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().endswith("all imported")


# --- the Procfile, run by honcho with the platform's variables ------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "redis.crt", directory / "redis.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_file


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and REQUIRE_SERVICES=1")
    pytest.skip(reason)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own that speaks TLS only, with a self-signed certificate
    and a password, as Heroku-style Redis add-ons are."""
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis-server is not installed")
    cert, key = self_signed_certificate(tmp_path)
    port, password = free_port(), secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [
            str(server), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
            "--requirepass", password, "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        url = f"rediss://:{password}@127.0.0.1:{port}/0"

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(url, ssl_cert_reqs="none").ping())
            except redis.RedisError:
                return False

        wait_until(answers, 20, "redis over TLS")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A virtual host of the test's own on the machine's RabbitMQ, so no other run's worker
    can take its tasks."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        unavailable("rabbitmqctl is not installed")
    vhost = f"webhook-app-test-{secrets.token_hex(4)}"
    made = subprocess.run([str(ctl), "add_vhost", vhost], capture_output=True, text=True)
    if made.returncode != 0:
        unavailable(f"RabbitMQ refused a virtual host: {made.stderr.strip()[:200]}")
    try:
        subprocess.run(
            [str(ctl), "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([str(ctl), "delete_vhost", vhost], capture_output=True)


@pytest.fixture(params=["redis", "rediss", "amqp"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The broker's variable, as each kind of add-on sets it."""
    if request.param == "redis":
        base = request.getfixturevalue("redis_url").rsplit("/", 1)[0]
        database = 1 + secrets.randbelow(12)  # the suite's own runs use 14 and 15
        import redis

        redis.Redis.from_url(f"{base}/{database}").flushdb()
        return {"REDIS_URL": f"{base}/{database}"}
    if request.param == "rediss":
        return {"REDIS_URL": request.getfixturevalue("tls_redis")}
    return {"CELERY_BROKER_URL": request.getfixturevalue("rabbitmq_vhost")}


@pytest.fixture
def platform(
    request: pytest.FixtureRequest, tmp_path: Path, broker_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """The platform's variables for a new app: its database, its broker, its port, its
    secrets, and a sandbox playing Depositphotos with an API key of its own."""
    server = request.getfixturevalue("postgres_server")
    database = create_postgres_database(server)
    request.addfinalizer(lambda: drop_postgres_database(server, database))
    port, sandbox_port = free_port(), free_port()
    dp = {
        "DP_API_KEY": secrets.token_urlsafe(12),
        "DP_LOGIN_USER": "deploy-test",
        "DP_LOGIN_PASSWORD": secrets.token_urlsafe(12),
        "DP_API_URL": f"http://127.0.0.1:{sandbox_port}",
    }
    sandbox_dir = tmp_path / "sandbox"
    sandbox_dir.mkdir()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "webhook_app", "sandbox", "--port", str(sandbox_port)],
        cwd=sandbox_dir,
        env={
            "PATH": "/usr/bin:/bin",
            "SANDBOX_API_KEY": dp["DP_API_KEY"],
            "SANDBOX_PREVIEW_DELAY": "0.3",
            "SANDBOX_FINAL_DELAY": "0.6",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    request.addfinalizer(sandbox.kill)
    wait_until(
        lambda: requests.get(f"{dp['DP_API_URL']}/_sandbox/stats", timeout=1).ok, 20, "sandbox"
    )
    yield {
        # PaaS databases are handed out in the postgres:// form.
        "DATABASE_URL": database.replace("postgresql+psycopg://", "postgres://"),
        **broker_env,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "APP_ENV": "production",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CALLBACK_SECRET": secrets.token_urlsafe(24),
        "API_TOKENS": secrets.token_urlsafe(24),
        "SECRET_KEY": secrets.token_urlsafe(32),
        # Callbacks that meet the restart are confirmed by polling soon, not in two minutes.
        "CALLBACK_OVERDUE_AFTER": "5",
        "RECONCILE_INTERVAL": "2",
        **dp,
    }


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_procfile_runs_a_job_to_completion_and_stops_on_sigterm_losing_nothing(
    venv: Path, tmp_path: Path, platform: dict[str, str]
) -> None:
    app_dir = export_app(tmp_path / "app")
    formation = Formation(app_dir, venv, platform, tmp_path / "honcho.log")
    url = f"http://127.0.0.1:{platform['PORT']}"
    client = Client(url, platform["API_TOKENS"], timeout=10)
    sandbox = platform["DP_API_URL"]
    try:
        formation.release()
        formation.start("web", "worker", "beat")
        ready = formation.wait_ready(url)
        password = re.search(r"//[^:/]*:([^@]+)@", platform.get("REDIS_URL", "") or "x")
        assert password is None or password.group(1) not in json.dumps(ready)

        first = client.create_job("a lighthouse at dawn")
        assert client.wait(first["id"], timeout=60)["status"] == "completed"

        # The tools every Celery user reaches for find the worker app.
        inspect = subprocess.run(
            [str(venv / "bin" / "celery"), "-A", "workers", "inspect", "ping", "--timeout", "5"],
            cwd=app_dir,
            env=formation.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "pong" in inspect.stdout, inspect.stdout + inspect.stderr

        # A deploy or a dyno restart: SIGTERM to every process while jobs are under way.
        more = [client.create_job(f"a harbour at dusk {n}")["id"] for n in range(6)]
        stopped_in = formation.terminate()
        assert stopped_in < GRACE_PERIOD, formation.output()
        assert formation.leftovers() == [], formation.output()
        # Every process ended by itself: nothing killed, no task cut short.
        assert "SIGKILL" not in formation.output()
        assert "WorkerLostError" not in formation.output()

        formation.start("web", "worker", "beat")
        formation.wait_ready(url)
        for job_id in [first["id"], *more]:
            assert client.wait(job_id, timeout=90)["status"] == "completed", formation.output()
        # Each job generated once: nothing paid twice, nothing lost.
        stats = requests.get(f"{sandbox}/_sandbox/stats", timeout=5).json()
        assert stats["generate_calls"] == 1 + len(more)
        formation.terminate()
        for secret in ("API_TOKENS", "CALLBACK_SECRET", "DP_API_KEY", "DP_LOGIN_PASSWORD"):
            assert platform[secret] not in formation.output(), f"{secret} was logged"
    finally:
        formation.kill()


@pytest.mark.e2e
def test_the_embedded_default_works_from_a_fresh_directory(venv: Path, tmp_path: Path) -> None:
    """serve + worker + sandbox, started one by one in an empty folder, with a SQLite database
    of one's own elsewhere and no broker named: every folder a default needs is made."""
    here = tmp_path / "fresh"
    here.mkdir()
    port, sandbox_port = free_port(), free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(here),
        "DATABASE_URL": f"sqlite:///{tmp_path}/elsewhere/jobs.sqlite3",
        "PORT": str(port),
        "SANDBOX_PORT": str(sandbox_port),
        "DP_API_URL": f"http://127.0.0.1:{sandbox_port}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    formation = Formation(here, venv, env, tmp_path / "fresh.log")
    command = str(venv / "bin" / "webhook-app")
    migrated = subprocess.run(
        [command, "migrate"], cwd=here, env=formation.env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    processes = []
    try:
        with open(formation.log, "ab") as log:
            for part in ("sandbox", "serve", "worker"):
                processes.append(
                    subprocess.Popen(
                        [command, part], cwd=here, env=formation.env, stdout=log, stderr=log
                    )
                )
        client = Client(f"http://127.0.0.1:{port}", "dev-token", timeout=10)
        formation.wait_ready(f"http://127.0.0.1:{port}")
        job = client.create_job("a lighthouse in a fresh folder")
        assert client.wait(job["id"], timeout=60)["status"] == "completed", formation.output()
        assert (here / "var" / "celery-broker.sqlite3").is_file()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        formation.kill()
