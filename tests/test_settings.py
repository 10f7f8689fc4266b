"""Settings.from_env: development defaults, production refusals, URL and number parsing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from webhook_app.settings import (
    DEFAULT_DP_API_URL,
    Settings,
    SettingsError,
    configuration_table,
    normalize_database_url,
    read_setting,
)
from webhook_app.tools.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"

PRODUCTION = {
    "APP_ENV": "production",
    "CALLBACK_SECRET": "callback-secret-prod",
    "API_TOKENS": "token-prod",
    "PUBLIC_BASE_URL": "https://images.example.com",
    "SECRET_KEY": "session-signing-key-prod",
    "DP_API_KEY": "dp-key",
    "DP_LOGIN_USER": "dp-user",
    "DP_LOGIN_PASSWORD": "dp-password",
    "DATABASE_URL": "postgres://app:pw@db.internal:5432/app",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
}
NUMBERS = {
    "DP_TIMEOUT": "upstream_timeout",
    "CALLBACK_OVERDUE_AFTER": "callback_overdue_after",
    "MAX_POLL_INTERVAL": "max_poll_interval",
    "JOB_DEADLINE": "job_deadline",
    "SUBMISSION_STALE_AFTER": "submission_stale_after",
    "RECONCILE_INTERVAL": "reconcile_interval",
    "SUBMIT_MAX_RETRIES": "submit_max_retries",
}


def production(**changes: str | None) -> dict[str, str]:
    env = dict(PRODUCTION)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def test_development_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings == dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{tmp_path}/var/webhook_app.sqlite3",
        broker_url=f"sqla+sqlite:///{tmp_path}/var/celery-broker.sqlite3",
    )
    assert settings.is_development
    assert settings.dev_defaults_used == (
        "CALLBACK_SECRET",
        "API_TOKENS",
        "PUBLIC_BASE_URL",
        "SECRET_KEY",
    )
    assert settings.callback_secrets == ("dev-callback-secret",)
    assert settings.api_tokens == ("dev-token",)
    assert settings.public_base_url == "http://127.0.0.1:8000"
    assert settings.uses_sandbox
    assert (settings.dp_api_url, settings.dp_api_key) == ("http://127.0.0.1:8001", "sandbox")
    assert (settings.dp_login_user, settings.dp_login_password) == ("sandbox", "sandbox")
    assert settings.recheck_after.total_seconds() == 120.0
    assert settings.deadline.total_seconds() == 3600.0


def test_only_the_missing_variables_are_reported_as_dev_defaults() -> None:
    settings = Settings.from_env({"CALLBACK_SECRET": "mine", "API_TOKENS": "  "})
    assert settings.callback_secrets == ("mine",)
    assert settings.dev_defaults_used == ("API_TOKENS", "PUBLIC_BASE_URL", "SECRET_KEY")


def test_the_test_environment_is_relaxed_too() -> None:
    settings = Settings.from_env({"APP_ENV": "test"})
    assert settings.environment == "test"
    assert not settings.is_development
    assert settings.dev_defaults_used == (
        "CALLBACK_SECRET",
        "API_TOKENS",
        "PUBLIC_BASE_URL",
        "SECRET_KEY",
    )


def test_blank_app_env_means_development() -> None:
    assert Settings.from_env({"APP_ENV": "  "}).environment == "development"


@pytest.mark.parametrize("value", ["prod", "Production", "staging"])
def test_unknown_app_env_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="APP_ENV"):
        Settings.from_env({"APP_ENV": value})


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("CALLBACK_SECRET", "from-os-environ")
    settings = Settings.from_env()
    assert settings.environment == "test"
    assert settings.callback_secrets == ("from-os-environ",)


def test_complete_production_settings() -> None:
    settings = Settings.from_env(PRODUCTION)
    assert settings.environment == "production"
    assert settings.dev_defaults_used == ()
    assert not settings.uses_sandbox
    assert settings.dp_api_url == DEFAULT_DP_API_URL
    assert (settings.dp_api_key, settings.dp_login_user, settings.dp_login_password) == (
        "dp-key",
        "dp-user",
        "dp-password",
    )
    assert settings.database_url == "postgresql+psycopg://app:pw@db.internal:5432/app"
    assert settings.broker_url == "redis://redis.internal:6379/0"
    assert settings.public_base_url == "https://images.example.com"
    assert settings.secret_key == "session-signing-key-prod"


@pytest.mark.parametrize(
    "name", ["CALLBACK_SECRET", "API_TOKENS", "PUBLIC_BASE_URL", "SECRET_KEY", "DP_API_KEY"]
)
@pytest.mark.parametrize("value", [None, "", "   "])
def test_production_refuses_a_missing_secret(name: str, value: str | None) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be set when APP_ENV=production"):
        Settings.from_env(production(**{name: value}))


@pytest.mark.parametrize("name", ["DP_LOGIN_USER", "DP_LOGIN_PASSWORD"])
@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_real_api_key_needs_the_login(name: str, environment: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be set when DP_API_KEY is set"):
        Settings.from_env(production(APP_ENV=environment, **{name: None}))


@pytest.mark.parametrize("name", ["CALLBACK_SECRET", "API_TOKENS"])
def test_production_refuses_a_list_with_no_entries(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(production(**{name: " , ,"}))


def test_sandbox_settings_follow_the_environment() -> None:
    settings = Settings.from_env(
        {"DP_API_URL": "http://127.0.0.1:9001/", "DP_LOGIN_USER": "u", "DP_LOGIN_PASSWORD": "p"}
    )
    assert settings.uses_sandbox
    assert (settings.dp_api_url, settings.dp_api_key) == ("http://127.0.0.1:9001", "sandbox")
    assert (settings.dp_login_user, settings.dp_login_password) == ("u", "p")


def test_production_api_url_can_be_overridden_and_loses_its_slash() -> None:
    settings = Settings.from_env(production(DP_API_URL="https://api.example.net/"))
    assert settings.dp_api_url == "https://api.example.net"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db?sslmode=require", "postgresql+psycopg://u:p@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:////tmp/app.sqlite3", "sqlite:////tmp/app.sqlite3"),
        ("mysql://u@h/postgres://x", "mysql://u@h/postgres://x"),
    ],
)
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_database_url_from_the_environment_gets_the_psycopg_driver(scheme: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": f"{scheme}://app@db/app"})
    assert settings.database_url == "postgresql+psycopg://app@db/app"


def test_secret_and_token_lists_are_split_on_commas() -> None:
    settings = Settings.from_env(
        production(CALLBACK_SECRET=" newest , older,,oldest ", API_TOKENS="tok-a,tok-b , ")
    )
    assert settings.callback_secrets == ("newest", "older", "oldest")
    assert settings.api_tokens == ("tok-a", "tok-b")


def test_public_base_url_loses_its_trailing_slash() -> None:
    settings = Settings.from_env(production(PUBLIC_BASE_URL="https://images.example.com/"))
    assert settings.public_base_url == "https://images.example.com"


@pytest.mark.parametrize("url", ["images.example.com", "ftp://images.example.com"])
def test_public_base_url_must_be_http(url: str) -> None:
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        Settings.from_env(production(PUBLIC_BASE_URL=url))


def test_numbers_are_read() -> None:
    env = {name: str(index + 2.5) for index, name in enumerate(NUMBERS)}
    env["SUBMIT_MAX_RETRIES"] = "3"
    env["PORT"] = "9000"
    settings = Settings.from_env(env)
    for index, (name, attribute) in enumerate(NUMBERS.items()):
        expected = 3 if name == "SUBMIT_MAX_RETRIES" else index + 2.5
        assert getattr(settings, attribute) == expected
    assert settings.port == 9000
    assert isinstance(settings.submit_max_retries, int)


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("value", ["abc", "1,5", "10s"])
def test_a_number_that_is_not_one_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be a number, got '{value}'"):
        Settings.from_env({name: value})


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_a_negative_number_is_refused_by_name(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must not be negative"):
        Settings.from_env({name: "-1"})


@pytest.mark.parametrize("value", ["http", "80.5", "8000x"])
def test_a_port_that_is_not_an_integer_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="PORT must be an integer"):
        Settings.from_env({"PORT": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DP_TIMEOUT", "nan"),
        ("RECONCILE_INTERVAL", "nan"),
        ("SUBMIT_MAX_RETRIES", "nan"),
        ("SUBMIT_MAX_RETRIES", "inf"),
        ("PORT", "-5"),
        ("PORT", "70000"),
    ],
)
def test_a_number_outside_its_range_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:pw@cache.example.com:6380/1",
        "amqp://guest:guest@localhost:5672//",
        "amqps://mq.example.com//",
        "sqla+sqlite:////tmp/broker.sqlite3",
        "sqla+postgresql://u@h/db",
    ],
)
def test_supported_broker_urls_are_kept(url: str) -> None:
    assert Settings.from_env({"CELERY_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    "url", ["http://localhost:6379", "memory://", "redis", "sqlite:///broker.db", "REDIS://x"]
)
def test_other_broker_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL"):
        Settings.from_env({"CELERY_BROKER_URL": url})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_waiters_leave_threads_for_everything_else() -> None:
    assert (Settings.from_env({}).web_threads, Settings.from_env({}).max_waiters) == (8, 4)
    assert Settings.from_env({"WEB_THREADS": "3"}).max_waiters == 1
    assert Settings.from_env({"WEB_THREADS": "1"}).max_waiters == 0
    assert Settings.from_env({"WEB_THREADS": "16", "MAX_WAITERS": "10"}).max_waiters == 10
    with pytest.raises(SettingsError, match="MAX_WAITERS must be smaller than WEB_THREADS"):
        Settings.from_env({"WEB_THREADS": "4", "MAX_WAITERS": "4"})


def test_the_broker_is_celery_broker_url_else_the_platforms_redis_url() -> None:
    redis = "rediss://:pw@redis.internal:6380/0"
    assert Settings.from_env({"REDIS_URL": redis}).broker_url == redis
    both = {"REDIS_URL": redis, "CELERY_BROKER_URL": "amqp://guest:guest@mq.internal//"}
    assert Settings.from_env(both).broker_url == both["CELERY_BROKER_URL"]
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "http://redis.internal"})


def test_tls_brokers_check_certificates_as_their_platforms_require() -> None:
    rediss = Settings.from_env({"REDIS_URL": "rediss://:pw@redis.internal:6380/0"})
    amqps = Settings.from_env({"CELERY_BROKER_URL": "amqps://u:p@mq.internal/vhost"})
    assert (rediss.broker_tls_verify, amqps.broker_tls_verify) == (False, True)
    forced = {"REDIS_URL": "rediss://redis.internal:6380", "BROKER_TLS_VERIFY": "required"}
    assert Settings.from_env(forced).broker_tls_verify is True
    with pytest.raises(SettingsError, match="BROKER_TLS_VERIFY"):
        Settings.from_env({"BROKER_TLS_VERIFY": "sometimes"})
    with pytest.raises(SettingsError, match="BROKER_TLS_CA_CERTS"):
        Settings.from_env({"BROKER_TLS_CA_CERTS": "/nonexistent/ca.pem"})


def test_no_request_is_held_as_long_as_a_paas_router_allows() -> None:
    assert Settings.from_env({}).max_wait == 25.0
    assert Settings.from_env({"MAX_WAIT": "10"}).max_wait == 10.0
    with pytest.raises(SettingsError, match="MAX_WAIT must be under 30"):
        Settings.from_env({"MAX_WAIT": "30"})


def test_retention_is_off_or_at_least_two_days() -> None:
    assert Settings.from_env({}).retention_days == 0
    assert Settings.from_env({"RETENTION_DAYS": "30"}).retention_days == 30
    with pytest.raises(SettingsError, match="RETENTION_DAYS"):
        Settings.from_env({"RETENTION_DAYS": "1"})


def test_pace_and_price_settings_are_read_and_checked() -> None:
    defaults = Settings.from_env({})
    assert (defaults.upstream_rate_limit, defaults.daily_generation_budget) == (10.0, None)
    settings = Settings.from_env(
        {
            "UPSTREAM_RATE_LIMIT": "2.5",
            "UPSTREAM_MAX_IN_FLIGHT": "40",
            "UPSTREAM_RATE_LIMITED_PAUSE": "3",
            "CREDENTIALS_PROBE_INTERVAL": "2",
            "CREDENTIALS_PROBE_MAX_INTERVAL": "1",  # raised to the first interval
            "DAILY_GENERATION_BUDGET": "500",
        }
    )
    assert settings.upstream_rate_limit == 2.5 and settings.upstream_max_in_flight == 40
    assert settings.rate_limited_pause == 3.0
    assert (settings.credentials_probe_interval, settings.credentials_probe_max_interval) == (2, 2)
    assert settings.daily_generation_budget == 500
    for name, value in (
        ("DAILY_GENERATION_BUDGET", "lots"),
        ("DAILY_GENERATION_BUDGET", "-3"),
        ("UPSTREAM_MAX_IN_FLIGHT", "1.5"),
        ("UPSTREAM_RATE_LIMIT", "-1"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


def test_the_commands_settings_are_read_and_checked_by_name() -> None:
    defaults = Settings.from_env({})
    assert (defaults.web_concurrency, defaults.worker_concurrency) == (2, 2)
    assert defaults.sandbox_port == 8001
    settings = Settings.from_env(
        {"WEB_CONCURRENCY": "3", "WORKER_CONCURRENCY": " 5 ", "SANDBOX_PORT": "9101"}
    )
    assert (settings.web_concurrency, settings.worker_concurrency) == (3, 5)
    assert settings.sandbox_port == 9101
    for name, value, problem in (
        ("WEB_CONCURRENCY", "two", "must be a whole number, got 'two'"),
        ("WEB_CONCURRENCY", "0", "must be at least 1"),
        ("WORKER_CONCURRENCY", "2.5", "must be a whole number, got '2.5'"),
        ("SANDBOX_PORT", "http", "must be an integer"),
        ("SANDBOX_PORT", "70000", "must be between 1 and 65535"),
    ):
        with pytest.raises(SettingsError, match=re.escape(f"{name} {problem}")):
            Settings.from_env({name: value})


def test_one_setting_is_read_without_the_others() -> None:
    incomplete_production = {"APP_ENV": "production", "SANDBOX_PORT": "9101"}
    assert read_setting("SANDBOX_PORT", incomplete_production) == 9101
    assert read_setting("API_TOKENS", {}) == ("dev-token",)
    assert read_setting("API_TOKENS", {"API_TOKENS": " a, b"}) == ("a", "b")
    assert read_setting("PORT", {}) == 8000
    with pytest.raises(SettingsError, match="PORT must be an integer"):
        read_setting("PORT", {"PORT": "80a"})


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        (["serve"], {"WEB_CONCURRENCY": "two"}, "WEB_CONCURRENCY must be a whole number"),
        (["worker"], {"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be at least 1"),
        (["sandbox"], {"SANDBOX_PORT": "x"}, "SANDBOX_PORT must be an integer"),
        (["jobs"], {"PORT": "80a"}, "PORT must be an integer"),
        (["migrate"], {"MAX_WAIT": "40"}, "MAX_WAIT must be under 30 seconds"),
        (["migrate"], {"APP_ENV": "production"}, "must be set when APP_ENV=production"),
    ],
)
def test_the_cli_names_a_bad_setting_in_one_line(
    command: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 2
    assert result.output.startswith("Error: configuration: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PUBLIC_BASE_URL", "ftp://user:hunter2@example.com"),
        ("CELERY_BROKER_URL", "http://:hunter2@redis.internal"),
        ("REDIS_URL", "http://:hunter2@redis.internal"),
    ],
)
def test_a_bad_url_is_refused_without_repeating_its_password(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name) as refused:
        Settings.from_env(production(**{"CELERY_BROKER_URL": None, name: value}))
    assert "hunter2" not in str(refused.value)


def _readme_table() -> list[str]:
    text = README.read_text()
    start = text.index("| variable | default | meaning |")
    return text[start : text.index("\n\n", start)].splitlines()


def test_readme_lists_every_setting() -> None:
    """The README's table is the one the declarations write: no variable missing, none extra,
    each with the default and meaning declared."""
    declared = configuration_table().splitlines()
    written = _readme_table()

    def names(rows: list[str]) -> list[str]:
        return [row.split("|")[1].strip().strip("`") for row in rows[2:]]

    missing = sorted(set(names(declared)) - set(names(written)))
    unknown = sorted(set(names(written)) - set(names(declared)))
    assert not missing, (
        f"README.md lacks {missing}; python -m webhook_app.settings prints the table"
    )
    assert not unknown, f"README.md lists {unknown}, which nothing declares"
    assert written == declared, (
        "README.md's table differs; python -m webhook_app.settings prints it"
    )
