"""Configuration: one frozen object built from the environment, never at import time."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

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


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


def normalize_database_url(url: str) -> str:
    """Accept the PaaS `postgres://` form and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def _networks(environ: Mapping[str, str], name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for part in _split(environ.get(name, "")):
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError:
            message = f"{name} must be a comma-separated list of networks, got {part!r}"
            raise SettingsError(message) from None
    return tuple(networks)


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    database_url: str = "sqlite:///var/webhook_app.sqlite3"
    broker_url: str = "sqla+sqlite:///var/celery-broker.sqlite3"
    queue: str = "celery"
    dp_api_url: str = f"http://127.0.0.1:{SANDBOX_PORT}"
    dp_api_key: str = "sandbox"
    dp_login_user: str = "sandbox"
    dp_login_password: str = "sandbox"
    public_base_url: str = DEV_DEFAULTS["PUBLIC_BASE_URL"]
    callback_secrets: tuple[str, ...] = (DEV_DEFAULTS["CALLBACK_SECRET"],)
    api_tokens: tuple[str, ...] = (DEV_DEFAULTS["API_TOKENS"],)
    port: int = 8000
    uses_sandbox: bool = True
    upstream_timeout: float = 30.0
    upstream_session_max_age: float = 2.5 * 3600
    # A job with no callback for this long is confirmed with imageGenerator.get.
    callback_overdue_after: float = 120.0
    max_poll_interval: float = 900.0
    job_deadline: float = 3600.0
    # A submission claimed this long ago with no answer recorded is treated as outcome unknown.
    submission_stale_after: float = 300.0
    # A queued job whose submission task has not run by then is enqueued again (harmless:
    # a submission is claimed in the database before it is sent).
    resubmit_queued_after: float = 60.0
    reconcile_interval: float = 30.0
    submit_max_retries: int = 8
    retry_backoff_base: float = 2.0
    retry_backoff_max: float = 300.0
    max_callback_bytes: int = 1024 * 1024
    # Callbacks are taken only from these networks; empty means from anywhere.
    callback_allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # How many proxies in front of the app append to X-Forwarded-For (0: ignore the header).
    trust_proxy_hops: int = 0
    # Archive of result images, completion notifications, logs and metrics.
    archive_dir: str = "var/archive"
    archive_s3_bucket: str | None = None
    archive_s3_endpoint_url: str | None = None
    archive_s3_prefix: str = ""
    archive_max_bytes: int = 20 * 1024 * 1024
    archive_timeout: float = 30.0
    on_job_done_task: str | None = None
    on_job_done_queue: str = "celery"
    notify_timeout: float = 10.0
    log_format: str = "text"
    log_level: str = "INFO"
    worker_metrics_port: int | None = None
    # Signs the dashboard's session cookie.
    secret_key: str = DEV_DEFAULTS["SECRET_KEY"]
    web_threads: int = 8
    # Requests allowed to hold a thread while waiting for a job (?wait=), per web process.
    max_waiters: int = 4
    # The longest a request may be held (?wait=): below the 30 s a PaaS router allows.
    max_wait: float = 25.0
    # rediss:// and amqps://: whether the broker's certificate is checked, and against what.
    broker_tls_verify: bool = False
    broker_tls_ca_certs: str | None = None
    # Days after a job ends when its deliveries' bodies and its events are pruned (0: never).
    retention_days: float = 0.0
    # The upstream's pace and price: shared by every process of the deployment.
    upstream_rate_limit: float = 10.0  # calls per second; 0: no limit
    upstream_max_in_flight: int = 0  # generations submitted and not finished; 0: no limit
    rate_limited_pause: float = 5.0  # every worker waits this long after a rate-limited answer
    credentials_probe_interval: float = 5.0  # first wait before refused credentials are tried
    credentials_probe_max_interval: float = 300.0
    daily_generation_budget: int | None = None  # generations a UTC day; None: no budget
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
        environment = env.get("APP_ENV", "development").strip() or "development"
        if environment not in ("development", "production", "test"):
            raise SettingsError(
                f"APP_ENV must be development, test or production, not {environment!r}"
            )
        relaxed = environment != "production"

        used_defaults: list[str] = []

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if value:
                return value
            if relaxed and name in DEV_DEFAULTS:
                used_defaults.append(name)
                return DEV_DEFAULTS[name]
            raise SettingsError(f"{name} must be set when APP_ENV={environment}")

        def listed(name: str) -> tuple[str, ...]:
            values = _split(required(name))
            if not values:
                raise SettingsError(f"{name} must hold at least one non-empty entry")
            return values

        callback_secrets = listed("CALLBACK_SECRET")
        api_tokens = listed("API_TOKENS")
        public_base_url = required("PUBLIC_BASE_URL").rstrip("/")
        if not public_base_url.startswith(("http://", "https://")):
            raise SettingsError("PUBLIC_BASE_URL must start with http:// or https://")

        dp_api_key = env.get("DP_API_KEY", "").strip()
        uses_sandbox = not dp_api_key
        if uses_sandbox and not relaxed:
            raise SettingsError("DP_API_KEY must be set when APP_ENV=production")
        if uses_sandbox:
            dp_api_url = env.get("DP_API_URL") or f"http://127.0.0.1:{SANDBOX_PORT}"
            login_user = env.get("DP_LOGIN_USER") or "sandbox"
            login_password = env.get("DP_LOGIN_PASSWORD") or "sandbox"
            dp_api_key = "sandbox"
        else:
            dp_api_url = env.get("DP_API_URL") or DEFAULT_DP_API_URL
            login_user = env.get("DP_LOGIN_USER", "")
            login_password = env.get("DP_LOGIN_PASSWORD", "")
            for name, value in (
                ("DP_LOGIN_USER", login_user),
                ("DP_LOGIN_PASSWORD", login_password),
            ):
                if not value:
                    raise SettingsError(f"{name} must be set when DP_API_KEY is set")

        database_url = normalize_database_url(
            env.get("DATABASE_URL") or f"sqlite:///{Path('var/webhook_app.sqlite3').absolute()}"
        )
        # Redis add-ons set (and rotate) REDIS_URL; an explicit CELERY_BROKER_URL wins.
        broker_url = (
            env.get("CELERY_BROKER_URL", "").strip()
            or env.get("REDIS_URL", "").strip()
            or f"sqla+sqlite:///{Path('var/celery-broker.sqlite3').absolute()}"
        )
        if not broker_url.startswith(BROKER_SCHEMES):
            raise SettingsError(
                "CELERY_BROKER_URL (or REDIS_URL) must be a redis://, rediss://, amqp://, "
                "amqps:// or sqla+ URL"
            )

        try:
            port = int(env.get("PORT") or 8000)
        except ValueError:
            raise SettingsError("PORT must be an integer") from None
        if not 0 < port < 65536:
            raise SettingsError("PORT must be between 1 and 65535")

        trust_proxy_hops = _number(env, "TRUST_PROXY_HOPS", 0.0)
        if not trust_proxy_hops.is_integer():
            raise SettingsError("TRUST_PROXY_HOPS must be a whole number")
        web_threads = int(_number(env, "WEB_THREADS", 8)) or 1
        # 0 turns waiting off: with one thread a waiter would block everything else.
        max_waiters = int(_number(env, "MAX_WAITERS", web_threads // 2))
        if max_waiters >= web_threads:
            raise SettingsError("MAX_WAITERS must be smaller than WEB_THREADS")
        max_wait = _number(env, "MAX_WAIT", 25.0)
        if max_wait >= ROUTER_TIMEOUT:
            raise SettingsError(
                f"MAX_WAIT must be under {ROUTER_TIMEOUT:g} seconds, the PaaS router's limit"
            )

        return cls(
            environment=environment,
            database_url=database_url,
            broker_url=broker_url,
            queue=env.get("CELERY_QUEUE", "").strip() or "celery",
            dp_api_url=dp_api_url.rstrip("/"),
            dp_api_key=dp_api_key,
            dp_login_user=login_user,
            dp_login_password=login_password,
            public_base_url=public_base_url,
            callback_secrets=callback_secrets,
            api_tokens=api_tokens,
            port=port,
            uses_sandbox=uses_sandbox,
            upstream_timeout=_number(env, "DP_TIMEOUT", 30.0),
            callback_overdue_after=_number(env, "CALLBACK_OVERDUE_AFTER", 120.0),
            max_poll_interval=_number(env, "MAX_POLL_INTERVAL", 900.0),
            job_deadline=_number(env, "JOB_DEADLINE", 3600.0),
            submission_stale_after=_number(env, "SUBMISSION_STALE_AFTER", 300.0),
            resubmit_queued_after=_number(env, "RESUBMIT_QUEUED_AFTER", 60.0),
            reconcile_interval=_number(env, "RECONCILE_INTERVAL", 30.0),
            submit_max_retries=int(_number(env, "SUBMIT_MAX_RETRIES", 8)),
            retry_backoff_base=_number(env, "RETRY_BACKOFF_BASE", 2.0),
            retry_backoff_max=_number(env, "RETRY_BACKOFF_MAX", 300.0),
            callback_allowed_networks=_networks(env, "CALLBACK_ALLOWED_NETWORKS"),
            trust_proxy_hops=int(trust_proxy_hops),
            secret_key=required("SECRET_KEY"),
            web_threads=web_threads,
            max_waiters=max_waiters,
            max_wait=max_wait,
            **_broker_tls(env, broker_url),
            retention_days=_retention_days(env),
            dev_defaults_used=tuple(used_defaults),
            **_follow_up_settings(env, environment),
            **_pace_and_price_settings(env),
        )


def _retention_days(env: Mapping[str, str]) -> float:
    days = _number(env, "RETENTION_DAYS", 0.0)
    # A timed-out job is still polled for a day, and may yet complete: keep its history.
    if 0 < days < 2:
        raise SettingsError("RETENTION_DAYS must be 0 (keep everything) or at least 2")
    return days


def _broker_tls(env: Mapping[str, str], broker_url: str) -> dict[str, Any]:
    """Certificate checking for TLS brokers.

    Heroku-style Redis add-ons hand out rediss:// URLs whose certificate is self-signed, so
    checking is off by default there; AMQP add-ons present public certificates, so it is on.
    """
    raw = env.get("BROKER_TLS_VERIFY", "").strip().lower()
    if raw in ("", "default"):
        verify = broker_url.startswith("amqps://")
    elif raw in ("required", "true", "1", "yes"):
        verify = True
    elif raw in ("none", "false", "0", "no"):
        verify = False
    else:
        raise SettingsError(f"BROKER_TLS_VERIFY must be required or none, not {raw!r}")
    ca_certs = env.get("BROKER_TLS_CA_CERTS", "").strip() or None
    if ca_certs and not Path(ca_certs).is_file():
        raise SettingsError(f"BROKER_TLS_CA_CERTS names no file: {ca_certs!r}")
    return {"broker_tls_verify": verify, "broker_tls_ca_certs": ca_certs}


def _follow_up_settings(env: Mapping[str, str], environment: str) -> dict[str, Any]:
    """Archive, completion hooks, logs and metrics."""
    hook_task = env.get("ON_JOB_DONE_TASK", "").strip() or None
    hook_queue = env.get("ON_JOB_DONE_QUEUE", "").strip() or "celery"
    if hook_task and hook_queue == (env.get("CELERY_QUEUE", "").strip() or "celery"):
        # Our workers would take the message, find no such task, and drop it.
        raise SettingsError("ON_JOB_DONE_QUEUE must name a queue other than CELERY_QUEUE")
    log_format = env.get("LOG_FORMAT", "").strip().lower() or (
        "json" if environment == "production" else "text"
    )
    if log_format not in ("json", "text"):
        raise SettingsError(f"LOG_FORMAT must be json or text, not {log_format!r}")
    log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
    metrics_port = env.get("WORKER_METRICS_PORT", "").strip()
    if metrics_port and not (metrics_port.isdigit() and 0 < int(metrics_port) < 65536):
        raise SettingsError("WORKER_METRICS_PORT must be a port number")
    max_bytes = int(_number(env, "ARCHIVE_MAX_BYTES", 20 * 1024 * 1024))
    if max_bytes < 1:
        raise SettingsError("ARCHIVE_MAX_BYTES must be at least 1")
    return {
        "archive_dir": env.get("ARCHIVE_DIR", "").strip() or "var/archive",
        "archive_s3_bucket": env.get("ARCHIVE_S3_BUCKET", "").strip() or None,
        "archive_s3_endpoint_url": env.get("ARCHIVE_S3_ENDPOINT_URL", "").strip() or None,
        "archive_s3_prefix": env.get("ARCHIVE_S3_PREFIX", "").strip().strip("/"),
        "archive_max_bytes": max_bytes,
        "archive_timeout": _number(env, "ARCHIVE_TIMEOUT", 30.0) or 30.0,
        "on_job_done_task": hook_task,
        "on_job_done_queue": hook_queue,
        "notify_timeout": _number(env, "NOTIFY_TIMEOUT", 10.0) or 10.0,
        "log_format": log_format,
        "log_level": log_level,
        "worker_metrics_port": int(metrics_port) if metrics_port else None,
    }


def _pace_and_price_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The upstream's shared pace, the pause on refused credentials, the daily budget."""
    in_flight = _number(env, "UPSTREAM_MAX_IN_FLIGHT", 0.0)
    budget = env.get("DAILY_GENERATION_BUDGET", "").strip()
    if budget and not budget.isdigit():
        raise SettingsError(f"DAILY_GENERATION_BUDGET must be a whole number, got {budget!r}")
    if not in_flight.is_integer():
        raise SettingsError("UPSTREAM_MAX_IN_FLIGHT must be a whole number")
    probe = _number(env, "CREDENTIALS_PROBE_INTERVAL", 5.0) or 5.0
    return {
        "upstream_rate_limit": _number(env, "UPSTREAM_RATE_LIMIT", 10.0),
        "upstream_max_in_flight": int(in_flight),
        "rate_limited_pause": _number(env, "UPSTREAM_RATE_LIMITED_PAUSE", 5.0),
        "credentials_probe_interval": probe,
        "credentials_probe_max_interval": max(
            probe, _number(env, "CREDENTIALS_PROBE_MAX_INTERVAL", 300.0)
        ),
        "daily_generation_budget": int(budget) if budget else None,
    }
