"""Refusal counting, source networks, the new settings, and hardening headers."""

from __future__ import annotations

import logging
from ipaddress import ip_network
from typing import Any

import pytest

from webhook_app.infra.refusals import Refusals, source_allowed
from webhook_app.settings import Settings, SettingsError
from webhook_app.web.headers import HTML_POLICY, OTHER_POLICY


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_counted_and_the_log_is_throttled(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    refusals = Refusals(window=10, lines=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="webhook_app.infra.refusals"):
        for n in range(10):
            refusals.refuse("callback_not_found", f"203.0.113.{n}")
        clock.now = 10.5
        refusals.refuse("api_unauthenticated", "198.51.100.7")
    assert refusals.counts() == {"callback_not_found": 10, "api_unauthenticated": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [f"refused callback_not_found from 203.0.113.{n}" for n in range(3)]
    assert lines[3] == (
        "refused api_unauthenticated from 198.51.100.7 (7 more refused without a log line)"
    )
    assert len(lines) == 4


NETWORKS = (ip_network("203.0.113.0/24"), ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("203.0.113.9", True),
        ("::ffff:203.0.113.9", True),
        ("2001:db8::1", True),
        ("198.51.100.1", False),
        ("2001:db9::1", False),
        ("not an address", False),
        ("", False),
        (None, False),
    ],
)
def test_source_allowed(address: str | None, allowed: bool) -> None:
    assert source_allowed(address, NETWORKS) is allowed


def test_without_networks_every_source_is_allowed() -> None:
    assert source_allowed("198.51.100.1", ()) and source_allowed(None, ())


def test_networks_and_proxy_hops_are_read() -> None:
    settings = Settings.from_env(
        {
            "CALLBACK_ALLOWED_NETWORKS": "10.0.0.0/8, 192.0.2.7,2001:db8::/32",
            "TRUST_PROXY_HOPS": "1",
        }
    )
    assert [str(n) for n in settings.callback_allowed_networks] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
    ]
    assert settings.trust_proxy_hops == 1
    defaults = Settings.from_env({})
    assert defaults.callback_allowed_networks == () and defaults.trust_proxy_hops == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8,example.com"),
        ("CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("TRUST_PROXY_HOPS", "1.5"),
        ("TRUST_PROXY_HOPS", "-1"),
        ("TRUST_PROXY_HOPS", "many"),
    ],
)
def test_bad_network_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


# --- headers ------------------------------------------------------------------------------


def test_api_answers_are_never_cached_and_carry_the_hardening_headers(
    client: Any, auth: dict[str, str]
) -> None:
    listed = client.get("/api/v1/jobs", headers=auth)
    # A private cache may keep a page of jobs, asking each time whether it still stands (ETag).
    assert listed.headers["Cache-Control"] == "private, no-cache" and listed.headers["ETag"]
    for response in (
        client.get("/api/v1/jobs", query_string={"changed_after": "now"}, headers=auth),
        client.get("/api/v1/jobs"),  # 401
        client.post("/callbacks/x/y"),  # 404
        client.get("/healthz"),
    ):
        headers = response.headers
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Content-Security-Policy"] == OTHER_POLICY
        assert "Strict-Transport-Security" not in headers


def test_html_gets_the_strict_policy_and_authenticated_pages_are_not_cached(app: Any) -> None:
    @app.get("/_test/page")
    def page() -> Any:
        return "<p>hello</p>", 200, {"Cache-Control": "max-age=600"}

    client = app.test_client()
    public = client.get("/_test/page")
    assert public.headers["Content-Security-Policy"] == HTML_POLICY
    assert "'unsafe-inline'" not in HTML_POLICY and "frame-ancestors 'none'" in HTML_POLICY
    assert public.headers["Cache-Control"] == "max-age=600"  # the view's choice stands
    private = client.get("/_test/page", headers={"Authorization": "Bearer x"})
    assert private.headers["Cache-Control"] == "no-store"


def test_https_deployments_get_hsts(settings: Settings, enqueuer: Any) -> None:
    import dataclasses

    from webhook_app.app import create_app

    app = create_app(
        dataclasses.replace(settings, public_base_url="https://images.example.com"),
        enqueuer=enqueuer,
    )
    try:
        response = app.test_client().get("/healthz")
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        app.extensions["webhook_app"].db.dispose()
