"""Failure envelopes classified by exception name first, errorcode second, text last; and
what the client does with each class (renew the session once, or not at all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_upstream import (
    GENERATE,
    GENERATION,
    SESSION_1,
    SESSION_2,
    ScriptedTransport,
    assert_discreet,
    failure,
    generate,
    logged_in,
    make_client,
    store_with,
    success,
)
from webhook_app.depositphotos.client import (
    AuthenticationError,
    CredentialsRefused,
    NotFound,
    RateLimited,
    ServerError,
    Throttled,
    UpstreamError,
    ValidationError,
    classify,
    unwrap,
)

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"

# The SDK's documented failure answers, and what each means for us.
DOCUMENTED = {
    "illegal_session.json": AuthenticationError,
    "illegal_api_key.json": CredentialsRefused,
    "login_refused.json": CredentialsRefused,
    "invalid_param.json": ValidationError,
    "undefined_command.json": ValidationError,
    "value_not_allowed.json": ValidationError,
    "item_not_found.json": NotFound,
    "internal_error.json": ServerError,
    "no_error.json": ServerError,
}


@pytest.mark.parametrize(("fixture", "expected"), sorted(DOCUMENTED.items()))
def test_each_documented_answer_is_classified(fixture: str, expected: type[UpstreamError]) -> None:
    answer = json.loads((FIXTURES / fixture).read_text())
    with pytest.raises(UpstreamError) as caught:
        unwrap(answer)
    assert type(caught.value) is expected
    error = answer.get("error", {})
    assert caught.value.exception == error.get("exception")
    assert caught.value.code == error.get("errorcode")


def test_every_fixture_is_listed() -> None:
    assert {path.name for path in FIXTURES.glob("*.json")} == set(DOCUMENTED)


# Every name, each with an errorcode that would say something else, so the name must win.
@pytest.mark.parametrize(
    ("name", "misleading_code", "expected"),
    [
        ("EAPI\\EIllegalSession", 400, AuthenticationError),
        ("EIllegalSession", 404, AuthenticationError),
        ("EApi\\EIllegalSession", 400, AuthenticationError),
        ("EAPI\\EIllegalApiKey", 403, CredentialsRefused),
        ("EUser\\Authentication", 404, CredentialsRefused),
        ("EInternal\\InvalidParam", 403, ValidationError),
        ("EApi\\EInvalidParam", 429, ValidationError),
        ("InvalidParam", 500, ValidationError),
        ("EAPI\\EValueNotAllowed", 403, ValidationError),
        ("EAPI\\EApiTypeNotAllowed", 403, ValidationError),
        ("EAPI\\EUndefinedCommand", 403, ValidationError),
        ("NotFoundItemException", 400, NotFound),
        ("EApi\\EInternalError", 400, ServerError),
        ("eapi\\einternalerror", 400, ServerError),
        ("TooManyRequestsError", 400, RateLimited),
    ],
)
def test_the_exception_name_comes_first(
    name: str, misleading_code: int, expected: type[UpstreamError]
) -> None:
    assert classify(name, misleading_code, "Session ID invalid") is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (400, ValidationError),
        (401, CredentialsRefused),
        (403, AuthenticationError),
        (404, NotFound),
        (418, ValidationError),
        (422, ValidationError),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
        (0, ServerError),
        (42, ServerError),
    ],
)
def test_each_errorcode_alone(code: int, expected: type[UpstreamError]) -> None:
    assert classify(None, code, "") is expected


@pytest.mark.parametrize(
    ("name", "code", "message", "expected"),
    [
        ("EAPI\\ESomethingNew", None, "", ServerError),
        ("EAPI\\ESomethingNew", 400, "", ValidationError),
        ("ECompletelyUnknown", 0, "an odd failure", ServerError),
        (None, None, "Session ID invalid or session is expired", AuthenticationError),
        (None, None, "Your API key is blocked", CredentialsRefused),
        (None, None, "Too many requests, slow down", RateLimited),
        ("EAPI\\ERateLimit", None, "", RateLimited),
        (None, None, "", ServerError),
    ],
)
def test_unknown_names_fall_back_on_the_code_then_the_text(
    name: str | None, code: int | None, message: str, expected: type[UpstreamError]
) -> None:
    assert classify(name, code, message) is expected


# --- what the client does with each ---------------------------------------------------------


def sdk_failure(fixture: str) -> dict[str, Any]:
    error = json.loads((FIXTURES / fixture).read_text())["error"]
    return failure(error["errorcode"], error["errormsg"], error["exception"])


def test_a_value_not_allowed_fails_at_once_without_a_new_login() -> None:
    transport = ScriptedTransport((200, sdk_failure("value_not_allowed.json")))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))
    with pytest.raises(ValidationError):
        generate(client)
    assert transport.commands() == [GENERATE]


def test_an_illegal_session_is_renewed_once_and_repeated() -> None:
    transport = ScriptedTransport(
        (200, sdk_failure("illegal_session.json")),
        (200, logged_in(SESSION_2)),
        (200, success(GENERATION)),
    )
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))
    assert generate(client) == GENERATION
    assert transport.commands() == [GENERATE, "login", GENERATE]


def test_a_refused_api_key_is_not_answered_with_a_login() -> None:
    transport = ScriptedTransport((200, sdk_failure("illegal_api_key.json")))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))
    with pytest.raises(CredentialsRefused) as caught:
        generate(client)
    assert transport.commands() == [GENERATE]
    assert caught.value.as_record()["kind"] == "credentials_refused"
    assert_discreet(caught.value)


def test_a_refused_login_is_refused_credentials() -> None:
    transport = ScriptedTransport((200, sdk_failure("login_refused.json")))
    with pytest.raises(CredentialsRefused):
        generate(make_client(transport))
    assert transport.commands() == ["login"]


# --- the shared pace, as the client uses it -------------------------------------------------


class ScriptedPacer:
    def __init__(self, *waits: float) -> None:
        self.waits = list(waits)
        self.reserved: list[float] = []
        self.backed_off: list[float] = []

    def reserve(self, max_wait: float) -> float:
        self.reserved.append(max_wait)
        return self.waits.pop(0) if self.waits else 0.0

    def slowed_for(self) -> float:
        return 0.0

    def back_off(self, seconds: float) -> None:
        self.backed_off.append(seconds)


def test_a_near_slot_is_slept_for_and_a_far_one_is_throttled_unsent() -> None:
    slept: list[float] = []
    pacer = ScriptedPacer(0.25, 7.0)
    transport = ScriptedTransport((200, success(GENERATION)))
    client = make_client(
        transport, store=store_with(SESSION_1, 1_000_000.0), pacer=pacer, sleep=slept.append
    )
    assert generate(client) == GENERATION
    with pytest.raises(Throttled) as caught:
        generate(client)
    assert slept == [0.25]
    assert caught.value.retry_after == 7.0
    assert len(transport.requests) == 1


def test_a_prepaid_call_takes_no_slot_and_the_next_one_does() -> None:
    pacer = ScriptedPacer()
    transport = ScriptedTransport((200, success(GENERATION)), (200, success(GENERATION)))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0), pacer=pacer)
    with client.prepaid():
        generate(client)
    generate(client)
    assert len(pacer.reserved) == 1


def test_a_rate_limited_answer_slows_every_worker() -> None:
    pacer = ScriptedPacer()
    transport = ScriptedTransport((200, failure(429, "Too many requests", None)))
    client = make_client(
        transport, store=store_with(SESSION_1, 1_000_000.0), pacer=pacer, rate_limited_pause=3.0
    )
    with pytest.raises(RateLimited):
        generate(client)
    assert pacer.backed_off == [3.0]
