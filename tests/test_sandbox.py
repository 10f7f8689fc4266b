"""The sandbox upstream, driven over HTTP like the real Depositphotos API."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from tests.common.subscriber import Subscriber
from webhook_app.sandbox import SandboxKnobs, SandboxServer, knobs_from_env
from webhook_app.sandbox.callbacks import flatten_php

FAST_KNOBS = SandboxKnobs(preview_delay=0.2, final_delay=0.4)
API_KEY = "test-api-key"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Delivery:
    content_type: str
    body: bytes

    def decoded(self) -> dict[str, Any]:
        if self.content_type.startswith("application/json"):
            decoded: dict[str, Any] = json.loads(self.body)
            return decoded
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class CallbackReceiver(Subscriber):
    """A callback URL on loopback: the sandbox's POSTs, as deliveries."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        super().__init__(statuses, path="/callback/secret-token")

    def wait_for(self, count: int, timeout: float = 3.0, settle: float = 0.3) -> list[Delivery]:
        received = super().wait_for(count, timeout, settle)
        return [Delivery(post.headers["Content-Type"], post.body) for post in received]


class ApiClient:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, command: str, **params: Any) -> dict[str, Any]:
        response = requests.post(
            self.url, data={"dp_command": command, "dp_apikey": API_KEY, **params}, timeout=5
        )
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    def login(self) -> str:
        answer = self.call("login", dp_login_user="user", dp_login_password="secret")
        assert answer["type"] == "success"
        session_id: str = answer["sessionid"]
        return session_id

    def generate(self, session_id: str, prompt: str = "a red fox", **params: Any) -> dict[str, Any]:
        return self.call(
            "imageGenerator.generate", dp_session_id=session_id, dp_prompt=prompt, **params
        )

    def get(self, session_id: str, generation_uuid: str) -> dict[str, Any]:
        return self.call("imageGenerator.get", dp_session_id=session_id, dp_uuid=generation_uuid)

    def wait_until_finished(self, session_id: str, generation_uuid: str) -> list[dict[str, Any]]:
        """Poll `imageGenerator.get`; answers every `data` seen, the finished one last."""
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            data = self.get(session_id, generation_uuid)["data"]
            seen.append(data)
            if data["status"] in ("completed", "failed"):
                return seen
            time.sleep(0.03)
        raise AssertionError(f"generation never finished: {seen[-1]}")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(knobs=SandboxKnobs(**FAST_KNOBS.as_dict())) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> ApiClient:
    restored = requests.post(f"{sandbox.url}/_sandbox/knobs", json=FAST_KNOBS.as_dict(), timeout=5)
    assert restored.status_code == 200
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=5).raise_for_status()
    return ApiClient(sandbox.url)


@pytest.fixture
def set_knobs(sandbox: SandboxServer) -> Callable[..., None]:
    def set_knobs(**changes: Any) -> None:
        response = requests.post(f"{sandbox.url}/_sandbox/knobs", json=changes, timeout=5)
        assert response.status_code == 200, response.text

    return set_knobs


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


def stats(sandbox: SandboxServer) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
    return answer


def assert_failure(answer: dict[str, Any], errorcode: int, exception: str) -> dict[str, Any]:
    assert answer["type"] == "failure", answer
    assert answer["version"] == "1.3"
    assert answer["error"]["errorcode"] == errorcode, answer
    assert answer["error"]["exception"] == exception
    error: dict[str, Any] = answer["error"]
    return error


# Requests and the generation lifecycle


def test_generation_moves_from_new_through_preview_to_completed(client: ApiClient) -> None:
    session_id = client.login()
    answer = client.generate(session_id)

    assert answer["type"] == "success"
    assert answer["version"] == "1.3"
    created = answer["data"]
    assert created["status"] == "new"
    assert created["purchaseStatus"] == "deferred"
    assert created["prompt"] == "a red fox"
    assert len(created["items"]) == 4
    assert all(item["dpItemId"] is None and item["previewUrl"] is None for item in created["items"])

    seen = client.wait_until_finished(session_id, created["uuid"])
    statuses = [data["status"] for data in seen]
    assert "processing" in statuses
    assert statuses.index("processing") < statuses.index("completed")
    processing = seen[statuses.index("processing")]
    assert all(item["previewUrl"] and item["dpItemId"] is None for item in processing["items"])

    final = seen[-1]
    assert final["status"] == "completed"
    assert final["purchaseStatus"] == "paid"
    assert [item["uuid"] for item in final["items"]] == [item["uuid"] for item in created["items"]]
    item_ids = [item["dpItemId"] for item in final["items"]]
    assert all(isinstance(item_id, int) and item_id > 0 for item_id in item_ids)
    assert len(set(item_ids)) == 4
    for item in final["items"]:
        assert item["previewUrl"] == f"{client.url}/previews/{item['uuid']}.png"


def test_json_requests_take_the_command_from_the_query_string(client: ApiClient) -> None:
    def json_call(command: str, **params: Any) -> dict[str, Any]:
        response = requests.post(
            client.url,
            params={"dp_command": command},
            json={"dp_apikey": API_KEY, **params},
            timeout=5,
        )
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    login = json_call("login", dp_login_user="user", dp_login_password="secret")
    assert login["type"] == "success"
    answer = json_call(
        "imageGenerator.generate",
        dp_session_id=login["sessionid"],
        dp_prompt="a lighthouse",
        dp_aspect_ratio="16:9",
        dp_medium="photography",
    )

    assert answer["type"] == "success", answer
    assert answer["data"]["prompt"] == "a lighthouse"
    assert answer["data"]["aspectRatio"] == "16:9"
    assert answer["data"]["medium"] == "photography"


def test_get_accepts_parameters_in_the_query_string(client: ApiClient) -> None:
    session_id = client.login()
    generation_uuid = client.generate(session_id)["data"]["uuid"]

    answer = requests.get(
        client.url,
        params={
            "dp_command": "imageGenerator.get",
            "dp_apikey": API_KEY,
            "dp_session_id": session_id,
            "dp_uuid": generation_uuid,
        },
        timeout=5,
    ).json()

    assert answer["type"] == "success"
    assert answer["data"]["uuid"] == generation_uuid


def test_fail_marker_ends_in_a_failed_generation(client: ApiClient) -> None:
    session_id = client.login()
    created = client.generate(session_id, prompt="a storm [sandbox:fail]")["data"]

    final = client.wait_until_finished(session_id, created["uuid"])[-1]

    assert final["status"] == "failed"
    assert final["purchaseStatus"] == "deferred"
    assert all(item["dpItemId"] is None and item["previewUrl"] is None for item in final["items"])


# Failures


def test_bad_session_is_a_403_failure_with_http_200(client: ApiClient) -> None:
    response = requests.post(
        client.url,
        data={
            "dp_command": "imageGenerator.generate",
            "dp_apikey": API_KEY,
            "dp_session_id": "0" * 32,
            "dp_prompt": "a red fox",
        },
        timeout=5,
    )

    assert response.status_code == 200
    error = assert_failure(response.json(), 403, "EAPI\\EIllegalSession")
    assert error["errormsg"] == "Session ID invalid or session is expired"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"dp_prompt": "x" * 401}, "dp_prompt"),
        ({"dp_prompt": "  "}, "dp_prompt"),
        ({"dp_aspect_ratio": "7:5"}, "dp_aspect_ratio"),
        ({"dp_medium": "sculpture"}, "dp_medium"),
    ],
)
def test_invalid_generate_parameters_are_validation_errors(
    client: ApiClient, sandbox: SandboxServer, params: dict[str, str], named: str
) -> None:
    session_id = client.login()

    answer = client.call(
        "imageGenerator.generate",
        dp_session_id=session_id,
        **{"dp_prompt": "a red fox", **params},
    )

    error = assert_failure(answer, 400, "EApi\\EInvalidParam")
    assert named in error["errormsg"]
    assert stats(sandbox)["generations"] == 0


def test_a_prompt_of_400_characters_is_accepted(client: ApiClient) -> None:
    answer = client.generate(client.login(), prompt="x" * 400)

    assert answer["type"] == "success"


def test_wrong_api_key_is_refused_by_name_when_a_key_is_configured(
    client: ApiClient, set_knobs: Callable[..., None]
) -> None:
    set_knobs(api_key="the-right-key")

    answer = client.call("login", dp_login_user="user", dp_login_password="secret")

    error = assert_failure(answer, 403, "EAPI\\EIllegalApiKey")
    assert "API key is illegal" in error["errormsg"]


def test_a_refused_login_is_an_authentication_of_the_user(
    client: ApiClient, set_knobs: Callable[..., None]
) -> None:
    set_knobs(refuse_login=True)

    answer = client.call("login", dp_login_user="user", dp_login_password="secret")

    error = assert_failure(answer, 404, "EUser\\Authentication")
    assert error["errormsg"] == "This login does not exist. Please try again."


def test_plain_error_names_keep_the_generic_shapes(
    client: ApiClient, set_knobs: Callable[..., None]
) -> None:
    set_knobs(api_key="the-right-key", error_names="plain")

    answer = client.call("login", dp_login_user="user", dp_login_password="secret")
    set_knobs(api_key=None)
    unknown = client.call("imageGenerator.paint")

    assert assert_failure(answer, 401, "AuthenticationError")["errormsg"] == "Invalid API key"
    assert_failure(unknown, 400, "ValidationError")


def test_unknown_command_is_an_undefined_command(client: ApiClient) -> None:
    error = assert_failure(client.call("imageGenerator.paint"), 400, "EAPI\\EUndefinedCommand")

    assert error["errormsg"] == "Unknown command 'imageGenerator.paint'"


def test_a_value_not_allowed_is_a_403_of_its_own_name(
    client: ApiClient, sandbox: SandboxServer
) -> None:
    answer = client.generate(client.login(), prompt="a fox [sandbox:not-allowed]")

    assert_failure(answer, 403, "EAPI\\EValueNotAllowed")
    assert stats(sandbox)["generations"] == 0


def test_an_unknown_generation_is_not_found(client: ApiClient) -> None:
    answer = client.call("imageGenerator.get", dp_session_id=client.login(), dp_uuid="nope")

    assert_failure(answer, 0, "NotFoundItemException")


def test_calls_above_the_rate_limit_are_refused_as_too_many(
    client: ApiClient, sandbox: SandboxServer, set_knobs: Callable[..., None]
) -> None:
    set_knobs(rate_limit=3)

    answers = [client.call("logout", dp_session_id="x") for _ in range(5)]
    time.sleep(1.05)
    later = client.call("login", dp_login_user="user", dp_login_password="secret")

    refused = [a for a in answers if a["error"]["exception"] == "TooManyRequestsError"]
    assert [a["error"]["errorcode"] for a in refused] == [429, 429]
    assert later["type"] == "success"
    assert stats(sandbox)["rate_limited"] == 2


def test_session_expires_after_its_ttl(
    client: ApiClient, sandbox: SandboxServer, set_knobs: Callable[..., None]
) -> None:
    set_knobs(session_ttl=0.3)
    session_id = client.login()
    assert client.generate(session_id)["type"] == "success"

    time.sleep(0.4)

    assert_failure(client.generate(session_id), 403, "EAPI\\EIllegalSession")
    assert stats(sandbox)["sessions"] == {"issued": 1, "expired_rejections": 1}


def test_expire_sessions_route_ends_every_session(client: ApiClient) -> None:
    session_id = client.login()

    requests.post(f"{client.url}/_sandbox/expire-sessions", timeout=5).raise_for_status()

    assert_failure(client.generate(session_id), 403, "EAPI\\EIllegalSession")


def test_failure_rate_one_answers_internal_errors_and_503_in_turn(
    client: ApiClient, set_knobs: Callable[..., None]
) -> None:
    set_knobs(failure_rate=1.0)

    first = client.call("login", dp_login_user="user", dp_login_password="secret")
    second = client.call("login", dp_login_user="user", dp_login_password="secret")

    assert_failure(first, 0, "EApi\\EInternalError")
    assert_failure(second, 503, "ServiceUnavailableError")


def test_hang_rate_delays_the_answer_of_a_generation_that_was_created(
    client: ApiClient, sandbox: SandboxServer, set_knobs: Callable[..., None]
) -> None:
    session_id = client.login()
    set_knobs(hang_rate=1.0, hang_seconds=2.0)

    with pytest.raises(requests.Timeout):
        requests.post(
            client.url,
            data={
                "dp_command": "imageGenerator.generate",
                "dp_apikey": API_KEY,
                "dp_session_id": session_id,
                "dp_prompt": "a slow fox",
            },
            timeout=0.5,
        )

    listed = requests.get(f"{client.url}/_sandbox/generations", timeout=5).json()
    assert [generation["prompt"] for generation in listed] == ["a slow fox"]


# Callbacks


def _stage_statuses(deliveries: list[Delivery], status_key: str) -> list[str]:
    return [delivery.decoded()[status_key] for delivery in deliveries]


def _stage_fields(callback_format: str, delivery: Delivery) -> tuple[str, str, Any]:
    """(generation uuid, status, first item's dpItemId) of one callback, whatever its format."""
    message = delivery.decoded()
    enveloped = callback_format.endswith("-envelope")
    if enveloped:
        assert message["type"] == "success"
        assert message["version"] == "1.3"
    if callback_format.startswith("json"):
        data = message["data"] if enveloped else message
        return data["uuid"], data["status"], data["items"][0]["dpItemId"]

    def key(path: str) -> str:
        head, bracket, rest = path.partition("[")
        return f"data[{head}]{bracket}{rest}" if enveloped else path

    return message[key("uuid")], message[key("status")], message[key("items[0][dpItemId]")]


@pytest.mark.parametrize(
    ("callback_format", "content_type"),
    [
        ("json-envelope", "application/json"),
        ("json-bare", "application/json"),
        ("form-envelope", "application/x-www-form-urlencoded"),
        ("form-bare", "application/x-www-form-urlencoded"),
    ],
)
def test_callbacks_arrive_preview_then_final_in_each_format(
    client: ApiClient,
    set_knobs: Callable[..., None],
    receiver: CallbackReceiver,
    callback_format: str,
    content_type: str,
) -> None:
    set_knobs(callback_format=callback_format)
    created = client.generate(client.login(), dp_callback_url=receiver.url)["data"]

    deliveries = receiver.wait_for(2)

    assert [delivery.content_type for delivery in deliveries] == [content_type] * 2
    preview, final = (_stage_fields(callback_format, delivery) for delivery in deliveries)
    empty_id = None if callback_format.startswith("json") else ""
    assert preview == (created["uuid"], "processing", empty_id)
    assert final[:2] == (created["uuid"], "completed")
    assert int(final[2]) >= 700_000_000


def test_duplicates_send_each_message_that_many_times(
    client: ApiClient,
    sandbox: SandboxServer,
    set_knobs: Callable[..., None],
    receiver: CallbackReceiver,
) -> None:
    set_knobs(duplicates=3, callback_format="json-bare")
    client.generate(client.login(), dp_callback_url=receiver.url)

    deliveries = receiver.wait_for(6)

    # The preview and the final are sent by separate senders when each is due, so on a slow
    # machine the final's copies may start before the preview's last copy: count, not order.
    statuses = _stage_statuses(deliveries, "status")
    assert sorted(statuses) == ["completed"] * 3 + ["processing"] * 3
    assert len({delivery.body for delivery in deliveries}) == 2
    assert stats(sandbox)["callbacks"]["sent"] == 6


def test_reverse_sends_the_final_message_before_the_preview(
    client: ApiClient, set_knobs: Callable[..., None], receiver: CallbackReceiver
) -> None:
    set_knobs(reverse=True, callback_format="json-bare")
    client.generate(client.login(), dp_callback_url=receiver.url)

    deliveries = receiver.wait_for(2)

    assert _stage_statuses(deliveries, "status") == ["completed", "processing"]


def test_drop_rate_one_sends_nothing_but_polling_still_completes(
    client: ApiClient,
    sandbox: SandboxServer,
    set_knobs: Callable[..., None],
    receiver: CallbackReceiver,
) -> None:
    set_knobs(drop_rate=1.0)
    session_id = client.login()
    created = client.generate(session_id, dp_callback_url=receiver.url)["data"]

    final = client.wait_until_finished(session_id, created["uuid"])[-1]
    deliveries = receiver.wait_for(1, timeout=0.2)

    assert final["status"] == "completed"
    assert deliveries == []
    assert stats(sandbox)["callbacks"] == {"sent": 0, "failed": 0, "dropped": 2}


def test_a_rejected_callback_is_retried(
    client: ApiClient, sandbox: SandboxServer, set_knobs: Callable[..., None]
) -> None:
    receiver = CallbackReceiver(statuses=(500,))
    try:
        set_knobs(callback_retries=1, callback_format="json-bare")
        client.generate(client.login(), dp_callback_url=receiver.url)

        deliveries = receiver.wait_for(3)
    finally:
        receiver.close()

    # The retry waits 0.5 s, so it may land after the final message.
    assert sorted(_stage_statuses(deliveries, "status")) == [
        "completed",
        "processing",
        "processing",
    ]
    assert stats(sandbox)["callbacks"] == {"sent": 2, "failed": 0, "dropped": 0}


def test_a_callback_that_keeps_failing_is_counted_as_failed(
    client: ApiClient, sandbox: SandboxServer, set_knobs: Callable[..., None]
) -> None:
    receiver = CallbackReceiver(statuses=(500, 500))
    try:
        set_knobs(callback_retries=0)
        client.generate(client.login(), dp_callback_url=receiver.url)
        deliveries = receiver.wait_for(2)
    finally:
        receiver.close()

    assert len(deliveries) == 2
    assert stats(sandbox)["callbacks"] == {"sent": 0, "failed": 2, "dropped": 0}


def test_form_callbacks_flatten_php_style() -> None:
    snapshot = {"uuid": "g", "items": [{"uuid": "i", "dpItemId": None}], "paid": True}

    assert flatten_php({"type": "success", "data": snapshot}) == [
        ("type", "success"),
        ("data[uuid]", "g"),
        ("data[items][0][uuid]", "i"),
        ("data[items][0][dpItemId]", ""),
        ("data[paid]", "1"),
    ]


# Previews and media data


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of each chunk after the signature, checking every CRC."""
    chunks = []
    offset = len(PNG_SIGNATURE)
    while offset < len(png):
        length, tag = struct.unpack(">I4s", png[offset : offset + 8])
        payload = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(tag + payload), tag
        chunks.append((tag, payload))
        offset += 12 + length
    return chunks


def test_preview_is_a_valid_png(client: ApiClient) -> None:
    session_id = client.login()
    created = client.generate(session_id)["data"]
    final = client.wait_until_finished(session_id, created["uuid"])[-1]

    response = requests.get(final["items"][0]["previewUrl"], timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    png = response.content
    assert png.startswith(PNG_SIGNATURE)
    chunks = _png_chunks(png)
    assert [tag for tag, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    assert width > 0 and height > 0
    assert (depth, colour_type) == (8, 2)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == height * (1 + width * 3)


def test_preview_of_an_unknown_item_is_404(client: ApiClient) -> None:
    response = requests.get(f"{client.url}/previews/not-an-item.png", timeout=5)

    assert response.status_code == 404


def test_media_data_is_ready_only_after_completion(client: ApiClient) -> None:
    session_id = client.login()
    created = client.generate(session_id, dp_aspect_ratio="16:9")["data"]
    item_uuid = created["items"][0]["uuid"]

    early = client.call("imageGenerator.getMediaData", dp_session_id=session_id, dp_uuid=item_uuid)
    final = client.wait_until_finished(session_id, created["uuid"])[-1]
    late = client.call("imageGenerator.getMediaData", dp_session_id=session_id, dp_uuid=item_uuid)

    error = assert_failure(early, 400, "EApi\\EInvalidParam")
    assert error["errormsg"] == "Media data not ready"
    assert late["type"] == "success", late
    assert late["data"] == {
        "id": final["items"][0]["dpItemId"],
        "width": 1024,
        "height": 576,
        "type": "image",
        "aiGenerated": True,
        "title": "a red fox",
    }


# Control routes and configuration


def test_stats_count_generate_calls_including_refused_ones(
    client: ApiClient, sandbox: SandboxServer
) -> None:
    session_id = client.login()
    client.generate(session_id)
    client.generate(session_id, prompt="a red fox")
    refused = client.generate(session_id, prompt="forbidden [sandbox:reject]")

    assert_failure(refused, 400, "EApi\\EInvalidParam")
    counted = stats(sandbox)
    assert counted["generate_calls"] == 3
    assert counted["generations"] == 2
    assert counted["calls"] == {"login": 1, "imageGenerator.generate": 3}


def test_reset_clears_generations_and_counters(client: ApiClient, sandbox: SandboxServer) -> None:
    client.generate(client.login())

    requests.post(f"{client.url}/_sandbox/reset", timeout=5).raise_for_status()

    assert requests.get(f"{client.url}/_sandbox/generations", timeout=5).json() == []
    assert stats(sandbox)["generate_calls"] == 0


def test_knobs_route_answers_knobs_and_rejects_unknown_names(client: ApiClient) -> None:
    updated = requests.post(f"{client.url}/_sandbox/knobs", json={"duplicates": 2}, timeout=5)
    unknown = requests.post(f"{client.url}/_sandbox/knobs", json={"colour": "red"}, timeout=5)
    invalid = requests.post(f"{client.url}/_sandbox/knobs", json={"drop_rate": 2}, timeout=5)

    assert updated.json()["duplicates"] == 2
    assert requests.get(f"{client.url}/_sandbox/knobs", timeout=5).json()["duplicates"] == 2
    assert unknown.status_code == 400
    assert "colour" in unknown.json()["error"]
    assert invalid.status_code == 400


def test_knobs_from_env_reads_every_variable() -> None:
    knobs = knobs_from_env(
        {
            "SANDBOX_PREVIEW_DELAY": "0.5",
            "SANDBOX_FINAL_DELAY": "1.5",
            "SANDBOX_DUPLICATES": "2",
            "SANDBOX_REVERSE": "true",
            "SANDBOX_CALLBACK_FORMAT": "form-bare",
            "SANDBOX_API_KEY": "k",
            "SANDBOX_SEED": "7",
            "SANDBOX_RATE_LIMIT": "4",
            "SANDBOX_ERROR_NAMES": "plain",
        }
    )

    assert knobs == SandboxKnobs(
        preview_delay=0.5,
        final_delay=1.5,
        duplicates=2,
        reverse=True,
        callback_format="form-bare",
        api_key="k",
        seed=7,
        rate_limit=4.0,
        error_names="plain",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SANDBOX_DROP_RATE", "lots"),
        ("SANDBOX_DROP_RATE", "1.5"),
        ("SANDBOX_REVERSE", "maybe"),
        ("SANDBOX_CALLBACK_FORMAT", "xml"),
        ("SANDBOX_ERROR_NAMES", "loud"),
    ],
)
def test_knobs_from_env_names_the_invalid_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        knobs_from_env({variable: value})


def test_preview_urls_expire_after_preview_ttl(
    client: ApiClient, set_knobs: Callable[..., None]
) -> None:
    session_id = client.login()
    created = client.generate(session_id)["data"]
    final = client.wait_until_finished(session_id, created["uuid"])[-1]
    url = final["items"][0]["previewUrl"]
    assert requests.get(url, timeout=5).status_code == 200

    set_knobs(preview_ttl=0.001)

    assert requests.get(url, timeout=5).status_code == 410
    assert requests.get(f"{client.url}/previews/not-an-item.png", timeout=5).status_code == 404
    assert knobs_from_env({"SANDBOX_PREVIEW_TTL": "60"}).preview_ttl == 60
