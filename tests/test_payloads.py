"""Callback bodies, one fixture file per shape, read into Reports; and the decoder's edges."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from webhook_app.depositphotos.kinds.image_generation import UPSTREAM_STATUSES, read_generation
from webhook_app.depositphotos.payloads import (
    MAX_DEPTH,
    PayloadError,
    ReportedFailure,
    decode_body,
    unwrap_envelope,
)
from webhook_app.depositphotos.reports import Report
from webhook_app.states import JobStatus

FIXTURES = Path(__file__).parent / "fixtures" / "callbacks"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())
ERRORS: dict[str, type[Exception]] = {
    "PayloadError": PayloadError,
    "ReportedFailure": ReportedFailure,
}
FORM = "application/x-www-form-urlencoded"
GEN = "3524139b-20c7-4cda-8860-8ede3f79306d"


def read_callback(body: bytes, content_type: str | None) -> Report:
    return read_generation(unwrap_envelope(decode_body(body, content_type)))


def as_fields(report: Report) -> dict[str, Any]:
    return {
        "reference": report.reference,
        "upstream_status": report.upstream_status,
        "status": None if report.status is None else report.status.value,
        "purchase_status": report.purchase_status,
        "items": [[item.uuid, item.dp_item_id, item.preview_url] for item in report.items],
    }


def test_every_fixture_has_an_expectation() -> None:
    on_disk = {path.name for path in FIXTURES.iterdir() if path.name != "expected.json"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reads_as_expected(name: str) -> None:
    case = EXPECTED[name]
    body = (FIXTURES / name).read_bytes()
    expected = case["expected"]
    if "error" in expected:
        error = ERRORS[expected["error"]]
        with pytest.raises(PayloadError) as caught:
            read_callback(body, case["content_type"])
        assert type(caught.value) is error
        return
    report = read_callback(body, case["content_type"])
    assert as_fields(report) == expected


def test_json_and_form_fixtures_agree_on_the_same_result() -> None:
    as_json = read_callback(
        (FIXTURES / "json_envelope_final.json").read_bytes(), "application/json"
    )
    as_form = read_callback((FIXTURES / "form_envelope_final.txt").read_bytes(), FORM)
    assert as_form.items == as_json.items[:3]
    assert (as_form.reference, as_form.status) == (as_json.reference, JobStatus.COMPLETED)


def test_reported_failure_keeps_the_upstream_error() -> None:
    body = (FIXTURES / "failure_envelope.json").read_bytes()
    with pytest.raises(ReportedFailure) as caught:
        read_callback(body, "application/json")
    assert caught.value.error["errorcode"] == 500
    assert "Image generation failed" in str(caught.value)


def test_form_failure_envelope_is_a_reported_failure() -> None:
    body = (FIXTURES / "form_failure_envelope.txt").read_bytes()
    with pytest.raises(ReportedFailure) as caught:
        read_callback(body, FORM)
    assert caught.value.error["errorcode"] == "500"


@pytest.mark.parametrize("body", [b"\xff\xfe{\x00", b'{"uuid": "caf\xe9"}'])
def test_non_utf8_body_is_refused(body: bytes) -> None:
    with pytest.raises(PayloadError, match="UTF-8"):
        decode_body(body, "application/json")


@pytest.mark.parametrize("body", [b"", b"   \r\n\t"])
@pytest.mark.parametrize("content_type", ["application/json", FORM, None])
def test_empty_body_is_refused(body: bytes, content_type: str | None) -> None:
    with pytest.raises(PayloadError, match="empty"):
        decode_body(body, content_type)


def nested_json(levels: int) -> bytes:
    return ('{"a": ' * levels + "1" + "}" * levels).encode()


def test_json_nesting_up_to_the_limit_is_accepted() -> None:
    value = decode_body(nested_json(MAX_DEPTH), "application/json")
    for _ in range(MAX_DEPTH - 1):
        value = value["a"]
    assert value == {"a": 1}


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 50, 100_000])
def test_json_nesting_over_the_limit_is_refused(levels: int) -> None:
    with pytest.raises(PayloadError, match=r"nesting|malformed"):
        decode_body(nested_json(levels), "application/json")


def test_json_nesting_in_lists_counts_too() -> None:
    body = ('{"a": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}").encode()
    with pytest.raises(PayloadError, match="nesting"):
        decode_body(body, "application/json")


def test_form_key_up_to_the_limit_is_accepted() -> None:
    key = "a" + "[b]" * (MAX_DEPTH - 1)
    expected: Any = "1"
    for _ in range(MAX_DEPTH - 1):
        expected = {"b": expected}
    assert decode_body(f"{key}=1".encode(), FORM) == {"a": expected}


def test_form_key_over_the_limit_is_refused() -> None:
    key = "a" + "[b]" * MAX_DEPTH
    with pytest.raises(PayloadError, match="deeper"):
        decode_body(f"{key}=1".encode(), FORM)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<callback><uuid>x</uuid></callback>", "application/xml"),
        (b"uuid=x", "multipart/form-data; boundary=xyz"),
        (b"uuid=x", "text/html"),
    ],
)
def test_unsupported_content_type_is_refused(body: bytes, content_type: str) -> None:
    with pytest.raises(PayloadError, match="unsupported content type"):
        decode_body(body, content_type)


def test_json_without_a_json_content_type_is_still_read() -> None:
    body = (FIXTURES / "json_bare_final.json").read_bytes()
    assert read_callback(body, "text/plain").reference == GEN
    assert read_callback(body, None).status is JobStatus.COMPLETED


def test_php_indexes_out_of_order_are_sorted_numerically() -> None:
    body = (
        f"uuid={GEN}&status=preview"
        "&items[10][uuid]=item-ten&items[2][uuid]=item-two"
        "&items[0][uuid]=item-zero&items[2][previewUrl]=https%3A%2F%2Fcdn.example%2F2.jpg"
    ).encode()
    report = read_callback(body, FORM)
    assert [item.uuid for item in report.items] == ["item-zero", "item-two", "item-ten"]
    assert report.items[1].preview_url == "https://cdn.example/2.jpg"
    assert report.status is JobStatus.PROCESSING


def test_blank_form_values_become_none() -> None:
    report = read_callback(
        f"uuid={GEN}&status=&purchaseStatus=&items[0][uuid]=i&items[0][dpItemId]=".encode(), FORM
    )
    assert (report.upstream_status, report.status, report.purchase_status) == (None, None, None)
    assert report.items[0].dp_item_id is None


@pytest.mark.parametrize(
    "body",
    [
        f"uuid={GEN}&items[]=a&items[]=b",
        f"uuid={GEN}&items[][uuid]=a&items[][uuid]=b",
        f"uuid={GEN}&items[0][]=a",
        f"uuid={GEN}&items[0][uuid]=a&items[0][uuid][]=b",
        f"uuid={GEN}&items=a&items[0][uuid]=b",
        f"uuid[]={GEN}",
        f"data[]={GEN}&type=success",
        f"[]={GEN}",
        f"uuid={GEN}&items[0=x&items]]=y&items[[0]]=z",
        f"uuid={GEN}&a[b[c]d]=1",
        "uuid",
        "=&=&",
        f"uuid={GEN}&items[0][uuid]=%ff%fe",
        pytest.param(
            f"uuid={GEN}&items[\u00b2][uuid]=a",
            id="superscript-index",
        ),
    ],
)
def test_odd_form_keys_never_raise_anything_but_payload_error(body: str) -> None:
    try:
        report = read_callback(body.encode(), FORM)
    except PayloadError:
        return
    except Exception as exc:  # the point of the test: any other exception is a crash
        raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
    assert report.reference == GEN
    assert all(isinstance(item.uuid, str) and item.uuid for item in report.items)


def test_empty_bracket_keys_do_not_make_a_list() -> None:
    decoded = decode_body(b"items[]=a&items[]=b", FORM)
    assert not isinstance(decoded["items"], list)
    with pytest.raises(PayloadError, match="items is not a list"):
        read_generation({"uuid": GEN, **decoded})


def test_too_many_form_fields_are_refused() -> None:
    body = "&".join(f"k{i}=v" for i in range(5000)).encode()
    with pytest.raises(PayloadError, match="malformed form"):
        decode_body(body, FORM)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "success", "data": None},
        {"type": "success", "data": [1, 2]},
        {"type": "success", "data": "x"},
        {"data": "x"},
    ],
)
def test_envelope_without_a_data_object_is_refused(payload: Mapping[str, Any]) -> None:
    with pytest.raises(PayloadError, match="no data object"):
        unwrap_envelope(payload)


def test_failure_envelope_without_error_object_is_still_a_failure() -> None:
    with pytest.raises(ReportedFailure) as caught:
        unwrap_envelope({"type": "failure", "error": "boom"})
    assert caught.value.error == {}


def test_bare_payload_with_its_own_data_field_is_not_unwrapped() -> None:
    payload = {"uuid": GEN, "data": {"uuid": "inner"}}
    assert unwrap_envelope(payload) is payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"status": "new"}, "generation uuid"),
        ({"uuid": 12, "status": "new"}, "generation uuid"),
        ({"uuid": "x" * 65}, "generation uuid"),
        ({"uuid": GEN, "status": 3}, "status is not a string"),
        ({"uuid": GEN, "purchaseStatus": ["paid"]}, "purchaseStatus"),
        ({"uuid": GEN, "items": {"0": {"uuid": "a"}}}, "items is not a list"),
        ({"uuid": GEN, "items": [{"uuid": str(n)} for n in range(65)]}, "more than 64"),
        ({"uuid": GEN, "items": ["a"]}, "not an object"),
        ({"uuid": GEN, "items": [{"dpItemId": 1}]}, "no uuid"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": True}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": 0}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": -5}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": 1.5}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": 2**63}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": "12a"}]}, "dpItemId"),
        ({"uuid": GEN, "items": [{"uuid": "a", "previewUrl": "javascript:x"}]}, "previewUrl"),
        ({"uuid": GEN, "items": [{"uuid": "a", "previewUrl": 7}]}, "previewUrl"),
        ({"uuid": GEN, "items": [{"uuid": "a", "previewUrl": "https://x/" + "a" * 2040}]}, "URL"),
    ],
)
def test_wrong_types_are_refused_with_a_reason(data: Mapping[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        read_generation(data)


def test_dp_item_id_with_a_non_decimal_digit_is_a_payload_error() -> None:
    try:
        read_generation({"uuid": GEN, "items": [{"uuid": "a", "dpItemId": "\u00b2"}]})
    except PayloadError:
        return
    raise AssertionError("no PayloadError")


@pytest.mark.parametrize(("raw", "status"), sorted(UPSTREAM_STATUSES.items()))
def test_every_known_status_maps_whatever_its_case(raw: str, status: JobStatus) -> None:
    report = read_generation({"uuid": GEN, "status": f" {raw.upper()} "})
    assert report.status is status
    assert report.upstream_status == f" {raw.upper()} "


def test_unknown_status_keeps_items_and_the_raw_status() -> None:
    report = read_generation(
        {"uuid": GEN, "status": "x" * 100, "items": [{"uuid": "a", "dpItemId": 5}]}
    )
    assert report.status is None
    assert report.upstream_status == "x" * 64
    assert report.items[0].dp_item_id == 5
