"""The Depositphotos client over a scripted transport, and over real loopback sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from webhook_app.depositphotos.client import (
    AuthenticationError,
    CachedSession,
    ConnectionFailed,
    CredentialsRefused,
    DepositphotosClient,
    MemorySessionStore,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    TransientError,
    UpstreamError,
    ValidationError,
    unwrap,
)

BASE_URL = "https://api.upstream.test"
API_KEY = "apikey-7f3a9c0e5b"
LOGIN_USER = "login-user-b81d"
LOGIN_PASSWORD = "password-c4e2a6"
SESSION_1 = "session-one-5d1e08"
SESSION_2 = "session-two-a97f3c"
SECRETS = (API_KEY, LOGIN_USER, LOGIN_PASSWORD, SESSION_1, SESSION_2)
GENERATE = "imageGenerator.generate"
TS = "2024-09-24 12:27:04"
GENERATION_UUID = "3524139b-20c7-4cda-8860-8ede3f79306d"
GENERATION: dict[str, Any] = {
    "uuid": GENERATION_UUID,
    "status": "new",
    "purchaseStatus": "deferred",
    "items": [{"uuid": "328f2aa8-6e7f-4c65-8761-91f9110e80c0", "dpItemId": None}],
}


def success(data: Mapping[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {"timestamp": TS, "version": "1.3", "type": "success", **top}
    if data is not None:
        envelope["data"] = data
    return envelope


def failure(code: Any, message: str, exception: str | None) -> dict[str, Any]:
    error = {"errorcode": code, "errormsg": message, "exception": exception}
    return {"timestamp": TS, "version": "1.3", "type": "failure", "error": error}


def logged_in(session_id: str) -> dict[str, Any]:
    return success(sessionid=session_id, apiKey=API_KEY, userid=42)


EXPIRED = failure(403, "Session ID invalid or session is expired", "AuthenticationError")


class ScriptedTransport(BaseAdapter):
    """Records every request and answers the next scripted (status, body) in turn."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        self.requests.append(request)
        self.timeouts.append(timeout)
        if not self.answers:
            raise AssertionError(f"unexpected request: {self.form(-1)}")
        status, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass

    def form(self, index: int) -> dict[str, str]:
        body = self.requests[index].body
        text = body.decode() if isinstance(body, bytes) else body or ""
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))

    def commands(self) -> list[str]:
        return [self.form(i)["dp_command"] for i in range(len(self.requests))]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_client(
    transport: ScriptedTransport | None = None,
    *,
    store: MemorySessionStore | None = None,
    clock: FakeClock | None = None,
    http: requests.Session | None = None,
    base_url: str = BASE_URL,
    **options: Any,
) -> DepositphotosClient:
    if http is None:
        http = requests.Session()
        http.trust_env = False
        assert transport is not None
        http.mount("https://", transport)
        http.mount("http://", transport)
    return DepositphotosClient(
        base_url=base_url,
        api_key=API_KEY,
        login_user=LOGIN_USER,
        login_password=LOGIN_PASSWORD,
        sessions=store or MemorySessionStore(),
        http=http,
        clock=clock or FakeClock(),
        **options,
    )


def store_with(session_id: str, obtained_at: float) -> MemorySessionStore:
    store = MemorySessionStore()
    store.save(CachedSession(session_id, obtained_at))
    return store


def assert_discreet(exc: UpstreamError) -> None:
    """Neither the message, the record nor the traceback shows a credential or session id."""
    shown = "\n".join(
        [
            str(exc),
            repr(exc),
            json.dumps(exc.as_record()),
            "".join(traceback.format_exception(exc)),
        ]
    )
    for secret in SECRETS:
        assert secret not in shown


def generate(client: DepositphotosClient) -> Mapping[str, Any]:
    return client.generate(prompt="a red fox", callback_url="https://app.test/cb/job-1/tok")


# --- sessions and the request form ---------------------------------------------------------


def test_login_stores_the_session_and_generate_sends_a_form() -> None:
    transport = ScriptedTransport((200, logged_in(SESSION_1)), (200, success(GENERATION)))
    store = MemorySessionStore()
    client = make_client(transport, store=store, clock=FakeClock(5000.0), timeout=12.0)

    result = client.generate(
        prompt="a fox & a hare = 100% joy",
        callback_url="https://app.test/callbacks/job-1/tok?x=1",
        aspect_ratio="16:9",
        medium="photography",
    )

    assert result == GENERATION
    assert store.load() == CachedSession(SESSION_1, 5000.0)
    assert transport.form(0) == {
        "dp_apikey": API_KEY,
        "dp_command": "login",
        "dp_login_user": LOGIN_USER,
        "dp_login_password": LOGIN_PASSWORD,
    }
    assert transport.form(1) == {
        "dp_apikey": API_KEY,
        "dp_command": GENERATE,
        "dp_session_id": SESSION_1,
        "dp_prompt": "a fox & a hare = 100% joy",
        "dp_callback_url": "https://app.test/callbacks/job-1/tok?x=1",
        "dp_aspect_ratio": "16:9",
        "dp_medium": "photography",
    }
    for request in transport.requests:
        assert request.method == "POST"
        assert request.url == BASE_URL + "/"
        assert urlsplit(request.url).query == ""
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert transport.timeouts == [(5.0, 12.0), (5.0, 12.0)]


def test_optional_generate_parameters_are_left_out() -> None:
    transport = ScriptedTransport((200, success(GENERATION)))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))
    generate(client)
    assert set(transport.form(0)) == {
        "dp_apikey",
        "dp_command",
        "dp_session_id",
        "dp_prompt",
        "dp_callback_url",
    }


def test_login_session_id_under_data_is_accepted() -> None:
    transport = ScriptedTransport((200, success({"sessionid": SESSION_2})))
    store = MemorySessionStore()
    assert make_client(transport, store=store).login() == SESSION_2
    assert store.load() == CachedSession(SESSION_2, 1_000_000.0)


@pytest.mark.parametrize("answer", [success(), success(sessionid=""), success(sessionid=7)])
def test_login_without_a_session_id_is_outcome_unknown(answer: dict[str, Any]) -> None:
    store = MemorySessionStore()
    with pytest.raises(OutcomeUnknown, match="sessionid") as caught:
        make_client(ScriptedTransport((200, answer)), store=store).login()
    assert store.load() is None
    assert_discreet(caught.value)


def test_the_session_is_reused_for_the_next_call() -> None:
    transport = ScriptedTransport(
        (200, logged_in(SESSION_1)), (200, success(GENERATION)), (200, success(GENERATION))
    )
    client = make_client(transport)
    generate(client)
    assert client.get(GENERATION_UUID) == GENERATION
    assert transport.commands() == ["login", GENERATE, "imageGenerator.get"]
    assert transport.form(2)["dp_session_id"] == SESSION_1
    assert transport.form(2)["dp_uuid"] == GENERATION_UUID


def test_a_session_shared_through_the_store_needs_no_login() -> None:
    transport = ScriptedTransport((200, success({"id": 5, "width": 1024})))
    client = make_client(transport, store=store_with(SESSION_2, 999_000.0))
    assert client.get_media_data("item-1") == {"id": 5, "width": 1024}
    assert transport.commands() == ["imageGenerator.getMediaData"]
    assert transport.form(0)["dp_session_id"] == SESSION_2


@pytest.mark.parametrize(
    ("age", "logs_in"), [(0.0, False), (99.0, False), (100.0, True), (5000.0, True)]
)
def test_the_session_is_renewed_once_older_than_max_age(age: float, logs_in: bool) -> None:
    clock = FakeClock(1_000_000.0)
    store = store_with(SESSION_1, clock.now - age)
    answers = [(200, logged_in(SESSION_2))] if logs_in else []
    transport = ScriptedTransport(*answers, (200, success(GENERATION)))
    client = make_client(transport, store=store, clock=clock, session_max_age=100.0)

    generate(client)

    expected_session = SESSION_2 if logs_in else SESSION_1
    assert transport.commands() == (["login"] if logs_in else []) + [GENERATE]
    assert transport.form(-1)["dp_session_id"] == expected_session
    assert store.load() == CachedSession(
        expected_session, clock.now if logs_in else clock.now - age
    )


def test_an_expired_session_leads_to_one_login_and_one_repeat() -> None:
    transport = ScriptedTransport(
        (200, logged_in(SESSION_1)),
        (200, EXPIRED),
        (200, logged_in(SESSION_2)),
        (200, success(GENERATION)),
    )
    store = MemorySessionStore()
    assert generate(make_client(transport, store=store)) == GENERATION
    assert transport.commands() == ["login", GENERATE, "login", GENERATE]
    assert [transport.form(i)["dp_session_id"] for i in (1, 3)] == [SESSION_1, SESSION_2]
    assert transport.form(3)["dp_prompt"] == transport.form(1)["dp_prompt"]
    assert store.load() == CachedSession(SESSION_2, 1_000_000.0)


def test_a_second_refusal_is_final() -> None:
    transport = ScriptedTransport(
        (200, logged_in(SESSION_1)),
        (200, EXPIRED),
        (200, logged_in(SESSION_2)),
        (200, EXPIRED),
    )
    with pytest.raises(AuthenticationError) as caught:
        generate(make_client(transport))
    assert transport.commands() == ["login", GENERATE, "login", GENERATE]
    assert transport.answers == []
    assert (caught.value.code, caught.value.exception) == (403, "AuthenticationError")
    assert caught.value.message == "Session ID invalid or session is expired"
    assert_discreet(caught.value)


def test_a_refused_login_is_refused_credentials() -> None:
    transport = ScriptedTransport((200, failure(401, "Invalid login or password", None)))
    with pytest.raises(CredentialsRefused) as caught:
        generate(make_client(transport))
    assert transport.commands() == ["login"]
    assert caught.value.code == 401
    assert_discreet(caught.value)


# --- failure envelopes and HTTP answers -----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "exception", "error_class"),
    [
        (400, "Prompt is too long", "InvalidArgumentException", ValidationError),
        ("400", "Prompt is empty", None, ValidationError),
        (None, "Bad aspect ratio", "ValidationException", ValidationError),
        (429, "Too many requests", "TooManyRequestsException", RateLimited),
        (503, "Service temporarily unavailable", "ServiceUnavailable", ServerError),
        (500, "Internal error", None, ServerError),
        (42, "Something unforeseen happened", "OddException", ServerError),
        (None, "", None, ServerError),
    ],
)
def test_failure_envelopes_map_to_the_documented_errors(
    code: Any, message: str, exception: str | None, error_class: type[UpstreamError]
) -> None:
    transport = ScriptedTransport((200, failure(code, message, exception)))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))

    with pytest.raises(UpstreamError) as caught:
        generate(client)

    error = caught.value
    assert type(error) is error_class
    assert error.code == (int(code) if code is not None else None)
    assert error.message == (message or "upstream reported a failure")
    assert error.exception == exception
    record = error.as_record()
    assert {key: record[key] for key in ("kind", "code", "message", "exception")} == {
        "kind": error_class.kind,
        "code": error.code,
        "message": error.message,
        "exception": exception,
    }
    assert record["at"].endswith("+00:00")
    # Only authentication failures are repeated by the client itself.
    assert len(transport.requests) == 1
    assert_discreet(error)


def test_transient_failures_say_a_retry_is_safe() -> None:
    assert issubclass(RateLimited, TransientError)
    assert issubclass(ServerError, TransientError)
    assert issubclass(ConnectionFailed, TransientError)
    assert not issubclass(OutcomeUnknown, TransientError)
    assert not issubclass(ValidationError, TransientError)


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code", "message"),
    [
        (503, b"<html>Service Unavailable</html>", ServerError, 503, f"{GENERATE}: HTTP 503"),
        (429, b"slow down", RateLimited, 429, f"{GENERATE}: HTTP 429"),
        (502, b"<html>Bad Gateway</html>", OutcomeUnknown, 502, f"{GENERATE}: HTTP 502"),
        (504, success(GENERATION), OutcomeUnknown, 504, f"{GENERATE}: HTTP 504"),
        (500, b"", OutcomeUnknown, 500, f"{GENERATE}: HTTP 500"),
        (200, b"<html>maintenance</html>", OutcomeUnknown, None, f"{GENERATE}: answer is not JSON"),
        (200, b"", OutcomeUnknown, None, f"{GENERATE}: answer is not JSON"),
        (200, [1, 2], OutcomeUnknown, None, "upstream answer is not a JSON object"),
        (200, {"type": "pending"}, OutcomeUnknown, None, "unknown type: 'pending'"),
        (200, {"data": GENERATION}, OutcomeUnknown, None, "unknown type: 'None'"),
    ],
)
def test_http_answers_map_to_errors(
    status: int, body: Any, error_class: type[UpstreamError], code: int | None, message: str
) -> None:
    transport = ScriptedTransport((status, body))
    client = make_client(transport, store=store_with(SESSION_1, 1_000_000.0))
    with pytest.raises(UpstreamError) as caught:
        generate(client)
    assert type(caught.value) is error_class
    assert caught.value.code == code
    assert message in str(caught.value)
    assert len(transport.requests) == 1
    assert_discreet(caught.value)


def test_unwrap_returns_a_success_envelope_whole() -> None:
    answer = success(GENERATION, extra=1)
    assert unwrap(answer) is answer


def test_memory_store_discards_only_the_named_session() -> None:
    store = store_with(SESSION_2, 1.0)
    store.discard(SESSION_1)
    assert store.load() == CachedSession(SESSION_2, 1.0)
    store.discard(SESSION_2)
    assert store.load() is None


# --- real sockets on loopback ---------------------------------------------------------------


def loopback_session() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # no proxy between us and 127.0.0.1
    return http


def test_a_closed_port_is_a_connection_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(
        http=loopback_session(),
        base_url=f"http://127.0.0.1:{port}",
        store=store_with(SESSION_1, 1_000_000.0),
        timeout=2.0,
    )
    with pytest.raises(ConnectionFailed) as caught:
        generate(client)
    assert str(caught.value) == f"{GENERATE}: could not connect to the upstream"
    assert caught.value.as_record()["kind"] == "connection_failed"
    assert_discreet(caught.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept_and_hold() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        listener.close()


def test_no_answer_within_the_timeout_is_outcome_unknown(silent_server: int) -> None:
    client = make_client(
        http=loopback_session(),
        base_url=f"http://127.0.0.1:{silent_server}",
        store=store_with(SESSION_1, 1_000_000.0),
        timeout=0.5,
    )
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as caught:
        generate(client)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0
    assert str(caught.value) == f"{GENERATE}: no answer within 0.5s"
    assert caught.value.code is None
    assert_discreet(caught.value)


def test_an_upstream_message_echoing_the_session_id_is_not_repeated() -> None:
    echo = failure(400, f"Bad parameter dp_session_id={SESSION_1}", "InvalidArgumentException")
    client = make_client(ScriptedTransport((200, echo)), store=store_with(SESSION_1, 1_000_000.0))
    with pytest.raises(ValidationError) as caught:
        generate(client)
    assert_discreet(caught.value)
