"""Configuration: one frozen object built from the environment, never at import time.

Each field of `Settings` that the environment can set is declared once, with `setting(...)`:
its variable, how the variable's text is read and checked, its default and the line the
README's configuration table shows for it (`configuration_table()` writes that table).
`Settings.from_env()` reads every declared variable, then applies the rules that tie several
together (the sandbox, the broker's TLS, the secrets production requires).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_DP_API_URL = "https://api.depositphotos.com"
SANDBOX_PORT = 8001
BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "sqla+")
# Heroku-style routers cut every request at 30 s (H12): nothing may be held that long.
ROUTER_TIMEOUT = 30.0

# Explicit, printed, and refused outside development.
DEV_DEFAULTS = {
    "CALLBACK_SECRET": "dev-callback-secret",
    "API_TOKENS": "dev-token",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    "SECRET_KEY": "dev-secret-key",
}

T = TypeVar("T")
Parser = Callable[[str, str], Any]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


# What a parser returns for text that counts as no value (blank, for most variables).
UNSET: Any = _Unset()


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


def normalize_database_url(url: str) -> str:
    """Accept the PaaS `postgres://` form and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# --- how a variable's text is read ---------------------------------------------------------
# A parser gets the variable's name and its text (set and not empty) and returns the value,
# UNSET for no value, or raises SettingsError naming the variable. Messages never repeat the
# text of a secret.


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def stripped(parse: Parser) -> Parser:
    """`parse` on the text without surrounding spaces; blank text is no value."""

    def parse_stripped(name: str, raw: str) -> Any:
        value = raw.strip()
        return parse(name, value) if value else UNSET

    return parse_stripped


@stripped
def text(name: str, raw: str) -> str:
    return raw


def verbatim(name: str, raw: str) -> str:
    return raw


def number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def truncated(name: str, raw: str) -> int:
    return int(number(name, raw))


def whole_number(name: str, raw: str) -> int:
    value = number(name, raw)
    if not value.is_integer():
        raise SettingsError(f"{name} must be a whole number")
    return int(value)


def positive_whole_number(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw.strip()!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be at least 1")
    return value


def port_number(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be between 1 and 65535")
    return port


@stripped
def secret_list(name: str, raw: str) -> tuple[str, ...]:
    values = _split(raw)
    if not values:
        raise SettingsError(f"{name} must hold at least one non-empty entry")
    return values


@stripped
def http_url(name: str, raw: str) -> str:
    url = raw.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must start with http:// or https://")
    return url


@stripped
def broker_address(name: str, raw: str) -> str:
    url = raw
    if not url.startswith(BROKER_SCHEMES):
        raise SettingsError(
            "CELERY_BROKER_URL (or REDIS_URL) must be a redis://, rediss://, amqp://, "
            "amqps:// or sqla+ URL"
        )
    return url


def networks(name: str, raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    found = []
    for part in _split(raw):
        try:
            found.append(ip_network(part, strict=False))
        except ValueError:
            message = f"{name} must be a comma-separated list of networks, got {part!r}"
            raise SettingsError(message) from None
    return tuple(found)


def one_of(*choices: str, case: Callable[[str], str] = str.lower) -> Parser:
    """The text, in `case`, when it is one of `choices`."""

    @stripped
    def parse(name: str, raw: str) -> str:
        value = case(raw)
        if value not in choices:
            listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
            raise SettingsError(f"{name} must be {listed}, not {value!r}")
        return value

    return parse


@stripped
def tls_verify(name: str, raw: str) -> bool | None:
    """True or False; None when left to the broker's scheme."""
    value = raw.lower()
    if value == "default":
        return None
    if value in ("required", "true", "1", "yes"):
        return True
    if value in ("none", "false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be required or none, not {value!r}")


@stripped
def existing_file(name: str, raw: str) -> str:
    path = raw
    if not Path(path).is_file():
        raise SettingsError(f"{name} names no file: {path!r}")
    return path


def under_router_timeout(name: str, raw: str) -> float:
    value = number(name, raw)
    if value >= ROUTER_TIMEOUT:
        raise SettingsError(
            f"{name} must be under {ROUTER_TIMEOUT:g} seconds, the PaaS router's limit"
        )
    return value


def retention(name: str, raw: str) -> float:
    days = number(name, raw)
    # A timed-out job is still polled for a day, and may yet complete: keep its history.
    if 0 < days < 2:
        raise SettingsError(f"{name} must be 0 (keep everything) or at least 2")
    return days


def at_least_one_byte(name: str, raw: str) -> int:
    value = truncated(name, raw)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1")
    return value


@stripped
def metrics_port(name: str, raw: str) -> int:
    value = raw
    if not (value.isdigit() and 0 < int(value) < 65536):
        raise SettingsError(f"{name} must be a port number")
    return int(value)


@stripped
def budget(name: str, raw: str) -> int:
    value = raw
    if not value.isdigit():
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    return int(value)


@stripped
def archive_prefix(name: str, raw: str) -> str:
    return raw.strip("/")


def nonzero(parse: Parser, default: Any) -> Parser:
    """`parse`, with 0 read as the default."""
    return lambda name, raw: parse(name, raw) or default


# --- declarations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One environment variable: how its text is read, and its line in the README."""

    name: str
    parse: Parser
    help: str
    shown_default: str
    # Called at from_env time, for defaults that depend on the working directory.
    env_default: Callable[[], Any] | None = None
    # Unset in production stops start-up; elsewhere the field's default is used and reported.
    required_in_production: bool = False
    # Read when this variable is unset.
    fallback: Variable | None = None
    # Variables other code reads, documented next to this one.
    related: tuple[Variable, ...] = ()

    def read(self, env: Mapping[str, str]) -> Any:
        """The variable's value (else its fallback's), or UNSET."""
        raw = env.get(self.name)
        value = self.parse(self.name, raw) if raw else UNSET
        if value is UNSET and self.fallback:
            return self.fallback.read(env)
        return value

    def rows(self) -> Iterator[Variable]:
        """This variable's README rows: its own, its fallback's, then the related ones."""
        yield self
        if self.fallback:
            yield from self.fallback.rows()
        for variable in self.related:
            yield from variable.rows()


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, float):
        return f"`{default:g}`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default}`"


def setting(
    default: T,
    name: str,
    parse: Parser,
    help: str,
    *,
    shown: str | None = None,
    **options: Any,
) -> T:
    """A field read from the environment variable `name`."""
    variable = Variable(name, parse, help, shown or _shown(default), **options)
    result: T = field(default=default, metadata={"variable": variable})
    return result


def documented(name: str, help: str, shown: str = "unset") -> Variable:
    """A variable the README lists next to a setting, read by other code."""
    return Variable(name, verbatim, help, shown)


def _absolute_sqlite(prefix: str, path: str) -> Callable[[], str]:
    # Made absolute when read, so that the processes `run` hands the URL to share one file.
    return lambda: f"{prefix}:///{Path(path).absolute()}"


@dataclass(frozen=True)
class Settings:
    """Everything a process is configured with; tests build it directly."""

    environment: str = setting(
        "development",
        "APP_ENV",
        one_of("development", "test", "production", case=lambda value: value),
        "`development`, `test` or `production`",
    )
    database_url: str = setting(
        "sqlite:///var/webhook_app.sqlite3",
        "DATABASE_URL",
        lambda name, raw: normalize_database_url(raw),
        "SQLAlchemy URL; `postgres://` and `postgresql://` use psycopg 3",
        shown="`sqlite:///./var/webhook_app.sqlite3`",
        env_default=_absolute_sqlite("sqlite", "var/webhook_app.sqlite3"),
    )
    # Redis add-ons set (and rotate) REDIS_URL; an explicit CELERY_BROKER_URL wins.
    broker_url: str = setting(
        "sqla+sqlite:///var/celery-broker.sqlite3",
        "CELERY_BROKER_URL",
        broker_address,
        "`redis://`, `rediss://`, `amqp://`, `amqps://`, or the server-less `sqla+sqlite://`",
        shown="`REDIS_URL`, else `sqla+sqlite:///./var/celery-broker.sqlite3`",
        env_default=_absolute_sqlite("sqla+sqlite", "var/celery-broker.sqlite3"),
        fallback=Variable(
            "REDIS_URL",
            broker_address,
            "the broker when `CELERY_BROKER_URL` is unset: what Heroku-style Redis add-ons "
            "set (and rotate; a restart picks up the new one)",
            "unset",
        ),
    )
    # rediss:// and amqps://: whether the broker's certificate is checked, and against what.
    # Unset (or `default`), it follows the broker's scheme: see from_env.
    broker_tls_verify: bool = setting(
        False,
        "BROKER_TLS_VERIFY",
        tls_verify,
        "whether a TLS broker's certificate is checked: Redis add-ons present self-signed "
        "certificates, AMQP add-ons public ones",
        shown="`none` for `rediss://`, `required` for `amqps://`",
    )
    broker_tls_ca_certs: str | None = setting(
        None,
        "BROKER_TLS_CA_CERTS",
        existing_file,
        "a CA bundle (file) to check the broker's certificate against",
    )
    queue: str = setting(
        "celery",
        "CELERY_QUEUE",
        text,
        "the queue the workers consume and the web side sends to",
    )
    # Unset, the sandbox plays the upstream with its own key and login: see from_env.
    dp_api_key: str = setting(
        "sandbox",
        "DP_API_KEY",
        text,
        "Depositphotos API key; when unset, the sandbox plays the upstream",
        shown="unset: the sandbox",
    )
    dp_login_user: str = setting(
        "sandbox",
        "DP_LOGIN_USER",
        verbatim,
        "the account the workers log in as (required with `DP_API_KEY`)",
        shown="`sandbox` with the sandbox",
    )
    dp_login_password: str = setting(
        "sandbox",
        "DP_LOGIN_PASSWORD",
        verbatim,
        "the account's password (required with `DP_API_KEY`)",
        shown="`sandbox` with the sandbox",
    )
    dp_api_url: str = setting(
        f"http://127.0.0.1:{SANDBOX_PORT}",
        "DP_API_URL",
        lambda name, raw: raw.rstrip("/"),
        "any Depositphotos-compatible server",
        shown=f"`{DEFAULT_DP_API_URL}` (sandbox: `http://127.0.0.1:{SANDBOX_PORT}`)",
    )
    upstream_timeout: float = setting(
        30.0, "DP_TIMEOUT", number, "seconds to wait for an upstream answer"
    )
    callback_secrets: tuple[str, ...] = setting(
        (DEV_DEFAULTS["CALLBACK_SECRET"],),
        "CALLBACK_SECRET",
        secret_list,
        "signs callback URLs; several comma-separated: the first signs, all verify",
        required_in_production=True,
    )
    api_tokens: tuple[str, ...] = setting(
        (DEV_DEFAULTS["API_TOKENS"],),
        "API_TOKENS",
        secret_list,
        "comma-separated bearer tokens for `/api/v1`; the CLI uses the first when "
        "`WEBHOOK_APP_TOKEN` is unset",
        required_in_production=True,
    )
    public_base_url: str = setting(
        DEV_DEFAULTS["PUBLIC_BASE_URL"],
        "PUBLIC_BASE_URL",
        http_url,
        "how the upstream reaches this service; callback URLs start with it",
        required_in_production=True,
    )
    # Signs the dashboard's session cookie.
    secret_key: str = setting(
        DEV_DEFAULTS["SECRET_KEY"],
        "SECRET_KEY",
        text,
        "signs the dashboard's session cookie (a long random string in production)",
        required_in_production=True,
    )
    port: int = setting(
        8000,
        "PORT",
        port_number,
        "web port; the CLI talks to `http://127.0.0.1:$PORT` when `WEBHOOK_APP_URL` is unset",
    )
    web_concurrency: int = setting(
        2,
        "WEB_CONCURRENCY",
        positive_whole_number,
        "gunicorn processes (`serve --workers` overrides it)",
    )
    web_threads: int = setting(
        8, "WEB_THREADS", nonzero(truncated, 1), "gunicorn threads per process"
    )
    # Requests allowed to hold a thread while waiting for a job (?wait=), per web process.
    # Unset, half of the threads: see from_env.
    max_waiters: int = setting(
        4,
        "MAX_WAITERS",
        truncated,
        "requests per process that may wait for a job (`?wait=`); fewer than `WEB_THREADS`; "
        "`0` answers at once",
        shown="half of `WEB_THREADS`",
    )
    answer_cache_size: int = setting(
        10_000,
        "ANSWER_CACHE_SIZE",
        truncated,
        "job answers each web process keeps serialized by the job's version (about 2 KB "
        "each); `0` keeps none",
    )
    # The longest a request may be held (?wait=): below the 30 s a PaaS router allows.
    max_wait: float = setting(
        25.0,
        "MAX_WAIT",
        under_router_timeout,
        "the longest one request is held (`?wait=`), in seconds; must stay under the 30 s "
        "after which a PaaS router cuts a request",
    )
    # Days after a job ends when its deliveries' bodies and its events are pruned (0: never).
    retention_days: float = setting(
        0.0,
        "RETENTION_DAYS",
        retention,
        "days after a job ends when its deliveries and events are pruned (hourly, by beat, "
        "200 jobs a transaction); at least `2`; jobs, items and archived images stay",
        shown="`0` (keep everything)",
    )
    worker_concurrency: int = setting(
        2,
        "WORKER_CONCURRENCY",
        positive_whole_number,
        "Celery worker processes (`worker -c` overrides it)",
    )
    sandbox_port: int = setting(
        SANDBOX_PORT,
        "SANDBOX_PORT",
        port_number,
        "the sandbox's port (`sandbox --port` overrides it; `run` starts it without `DP_API_KEY`)",
    )
    # A job with no callback for this long is confirmed with imageGenerator.get.
    callback_overdue_after: float = setting(
        120.0,
        "CALLBACK_OVERDUE_AFTER",
        number,
        "seconds without news after which a job is polled; each poll doubles the wait",
    )
    max_poll_interval: float = setting(
        900.0, "MAX_POLL_INTERVAL", number, "the longest wait between two polls of one job"
    )
    job_deadline: float = setting(
        3600.0,
        "JOB_DEADLINE",
        number,
        "seconds after creation when an unfinished job becomes `timed_out`",
    )
    # A submission claimed this long ago with no answer recorded is treated as outcome unknown.
    submission_stale_after: float = setting(
        300.0,
        "SUBMISSION_STALE_AFTER",
        number,
        "a submission claimed this long ago with no answer recorded becomes `unknown`",
    )
    submit_max_retries: int = setting(
        8,
        "SUBMIT_MAX_RETRIES",
        truncated,
        "retries of a submission the upstream refused for a passing reason",
    )
    retry_backoff_base: float = setting(
        2.0,
        "RETRY_BACKOFF_BASE",
        number,
        "seconds before the first retry of a submission (doubling, with jitter)",
    )
    retry_backoff_max: float = setting(
        300.0, "RETRY_BACKOFF_MAX", number, "seconds: the cap on the retry delay"
    )
    # A queued job whose submission task has not run by then is enqueued again (harmless:
    # a submission is claimed in the database before it is sent).
    resubmit_queued_after: float = setting(
        60.0,
        "RESUBMIT_QUEUED_AFTER",
        number,
        "a queued job whose submission task has not run by then is enqueued again",
    )
    reconcile_interval: float = setting(
        30.0,
        "RECONCILE_INTERVAL",
        number,
        "seconds between reconciliation runs (beat)",
    )
    # The receiver only keeps deliveries; appliers in the worker processes merge them.
    apply_batch_size: int = setting(
        100,
        "APPLY_BATCH_SIZE",
        positive_whole_number,
        "stored callback deliveries an applier claims and merges in one transaction",
    )
    apply_poll_interval: float = setting(
        0.05,
        "APPLY_POLL_INTERVAL",
        number,
        "seconds from one look for stored deliveries to the next, unless the last batch was "
        "full or took longer",
    )
    apply_sweep_after: float = setting(
        30.0,
        "APPLY_SWEEP_AFTER",
        number,
        "seconds after which reconciliation applies a delivery no applier has taken",
    )
    # Callbacks are taken only from these networks; empty means from anywhere.
    callback_allowed_networks: tuple[IPv4Network | IPv6Network, ...] = setting(
        (),
        "CALLBACK_ALLOWED_NETWORKS",
        networks,
        "comma-separated networks (`203.0.113.0/24`, `2001:db8::/32`, a bare address) "
        "callbacks are accepted from; others get 403",
        shown="unset: from anywhere",
    )
    # How many proxies in front of the app append to X-Forwarded-For (0: ignore the header).
    trust_proxy_hops: int = setting(
        0,
        "TRUST_PROXY_HOPS",
        whole_number,
        "how many proxies in front of the app append to `X-Forwarded-For` (`1` on Heroku); "
        "the client address is read from that header only when this is set",
    )
    # Archive of result images, completion notifications, logs and metrics.
    archive_dir: str = setting(
        "var/archive",
        "ARCHIVE_DIR",
        text,
        "where archived images are kept without S3",
        shown="`./var/archive`",
    )
    archive_s3_bucket: str | None = setting(
        None,
        "ARCHIVE_S3_BUCKET",
        text,
        "keep archived images in this S3-compatible bucket instead",
    )
    archive_s3_endpoint_url: str | None = setting(
        None,
        "ARCHIVE_S3_ENDPOINT_URL",
        text,
        "another S3-compatible service",
        shown="unset (AWS)",
    )
    archive_s3_prefix: str = setting(
        "",
        "ARCHIVE_S3_PREFIX",
        archive_prefix,
        "a key prefix in the bucket",
        shown="empty",
        related=(
            documented("AWS_ACCESS_KEY_ID", "S3 credentials (boto3's usual sources): the key id"),
            documented("AWS_SECRET_ACCESS_KEY", "the S3 credentials' secret key"),
            documented("AWS_DEFAULT_REGION", "the S3 bucket's region"),
        ),
    )
    archive_max_bytes: int = setting(
        20 * 1024 * 1024, "ARCHIVE_MAX_BYTES", at_least_one_byte, "largest image archived"
    )
    archive_timeout: float = setting(
        30.0, "ARCHIVE_TIMEOUT", nonzero(number, 30.0), "seconds to wait for image bytes"
    )
    on_job_done_task: str | None = setting(
        None,
        "ON_JOB_DONE_TASK",
        text,
        "a Celery task name sent with `job_id`, `status`, `items` when a job ends",
    )
    on_job_done_queue: str = setting(
        "celery",
        "ON_JOB_DONE_QUEUE",
        text,
        "the queue it is sent to; must differ from `CELERY_QUEUE`",
    )
    notify_timeout: float = setting(
        10.0,
        "NOTIFY_TIMEOUT",
        nonzero(number, 10.0),
        "seconds a subscriber has to answer a notification",
    )
    # Unset, json in production and text elsewhere: see from_env.
    log_format: str = setting(
        "text",
        "LOG_FORMAT",
        one_of("json", "text"),
        "log line format",
        shown="`json` in production, else `text`",
    )
    log_level: str = setting(
        "INFO",
        "LOG_LEVEL",
        one_of("DEBUG", "INFO", "WARNING", "ERROR", case=str.upper),
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`",
        related=(
            documented(
                "PROMETHEUS_MULTIPROC_DIR",
                "where processes write their metrics",
                "a fresh temporary directory per command",
            ),
        ),
    )
    worker_metrics_port: int | None = setting(
        None,
        "WORKER_METRICS_PORT",
        metrics_port,
        "also serve the worker's metrics on this port",
    )
    # The upstream's pace and price: shared by every process of the deployment.
    upstream_rate_limit: float = setting(
        10.0,
        "UPSTREAM_RATE_LIMIT",
        number,
        "upstream calls per second for the whole deployment (every worker on every machine); "
        "`0`: no limit",
    )
    rate_limited_pause: float = setting(
        5.0,
        "UPSTREAM_RATE_LIMITED_PAUSE",
        number,
        "seconds every worker waits after a rate-limited answer",
    )
    upstream_max_in_flight: int = setting(
        0,
        "UPSTREAM_MAX_IN_FLIGHT",
        whole_number,
        "generations submitted and not yet finished at once; `0`: no limit",
    )
    credentials_probe_interval: float = setting(
        5.0,
        "CREDENTIALS_PROBE_INTERVAL",
        nonzero(number, 5.0),
        "seconds before refused credentials are tried again (one probe at a time), doubling",
    )
    # Never below the first interval: see from_env.
    credentials_probe_max_interval: float = setting(
        300.0,
        "CREDENTIALS_PROBE_MAX_INTERVAL",
        number,
        "seconds: the cap on the wait between two probes of refused credentials",
    )
    daily_generation_budget: int | None = setting(
        None,
        "DAILY_GENERATION_BUDGET",
        budget,
        "jobs created per UTC day for the deployment; over it, 429",
        shown="unset: no limit",
    )
    # Not read from the environment.
    uses_sandbox: bool = True
    upstream_session_max_age: float = 2.5 * 3600
    max_callback_bytes: int = 1024 * 1024
    dev_defaults_used: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def recheck_after(self) -> timedelta:
        return timedelta(seconds=self.callback_overdue_after)

    @property
    def deadline(self) -> timedelta:
        return timedelta(seconds=self.job_deadline)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; outside development a missing secret stops start-up."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        given: set[str] = set()
        used_defaults: list[str] = []
        for name, variable, default in _declared():
            value = variable.read(env)
            if value is not UNSET:
                values[name] = value
                given.add(name)
                continue
            if variable.required_in_production:
                if values["environment"] == "production":
                    raise SettingsError(f"{variable.name} must be set when APP_ENV=production")
                used_defaults.append(variable.name)
            values[name] = variable.env_default() if variable.env_default else default
        _combine(values, given)
        return cls(**values, dev_defaults_used=tuple(used_defaults))


def _declared() -> Iterator[tuple[str, Variable, Any]]:
    """Each field read from the environment: its name, its variable, its default."""
    for declared in fields(Settings):
        variable = declared.metadata.get("variable")
        if variable is not None:
            yield declared.name, variable, declared.default


def _combine(values: dict[str, Any], given: set[str]) -> None:
    """The rules that tie several variables together, applied to the values read."""
    environment = values["environment"]
    values["uses_sandbox"] = "dp_api_key" not in given
    if values["uses_sandbox"]:
        if environment == "production":
            raise SettingsError("DP_API_KEY must be set when APP_ENV=production")
    else:
        if "dp_api_url" not in given:
            values["dp_api_url"] = DEFAULT_DP_API_URL
        for name, variable in (
            ("dp_login_user", "DP_LOGIN_USER"),
            ("dp_login_password", "DP_LOGIN_PASSWORD"),
        ):
            if name not in given:
                raise SettingsError(f"{variable} must be set when DP_API_KEY is set")

    # Heroku-style Redis add-ons hand out rediss:// URLs whose certificate is self-signed, so
    # checking is off by default there; AMQP add-ons present public certificates, so it is on.
    if "broker_tls_verify" not in given or values["broker_tls_verify"] is None:
        values["broker_tls_verify"] = values["broker_url"].startswith("amqps://")

    # 0 turns waiting off: with one thread a waiter would block everything else.
    if "max_waiters" not in given:
        values["max_waiters"] = values["web_threads"] // 2
    if values["max_waiters"] >= values["web_threads"]:
        raise SettingsError("MAX_WAITERS must be smaller than WEB_THREADS")

    if values["on_job_done_task"] and values["on_job_done_queue"] == values["queue"]:
        # Our workers would take the message, find no such task, and drop it.
        raise SettingsError("ON_JOB_DONE_QUEUE must name a queue other than CELERY_QUEUE")
    if "log_format" not in given:
        values["log_format"] = "json" if environment == "production" else "text"

    values["credentials_probe_max_interval"] = max(
        values["credentials_probe_interval"], values["credentials_probe_max_interval"]
    )


def read_setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One variable alone, read and checked as `from_env` does, else its default.

    For commands that need a single value and none of the rest (the sandbox's port, the
    CLI's way to a running service).
    """
    env = os.environ if environ is None else environ
    for _, variable, default in _declared():
        if variable.name == name:
            value = variable.read(env)
            return default if value is UNSET else value
    raise KeyError(name)


def configuration_table() -> str:
    """The README's table of variables, in declaration order."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for _, declared, _ in _declared():
        for variable in declared.rows():
            lines.append(f"| `{variable.name}` | {variable.shown_default} | {variable.help} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(configuration_table())
