"""imageGenerator: submit with generate, read callbacks and get answers, enrich with media data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook_app.depositphotos.client import DepositphotosClient
from webhook_app.depositphotos.payloads import PayloadError
from webhook_app.depositphotos.reports import ItemReport, Report
from webhook_app.states import JobStatus

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9")
MEDIUMS = ("art", "photography")
MAX_PROMPT = 400
MAX_ITEMS = 64

# The documentation names only `new` and `completed`; the others are the plausible spellings
# of progress and failure. Anything else is recorded and confirmed by polling.
UPSTREAM_STATUSES: dict[str, JobStatus] = {
    "new": JobStatus.SUBMITTED,
    "queued": JobStatus.SUBMITTED,
    "pending": JobStatus.SUBMITTED,
    "processing": JobStatus.PROCESSING,
    "in_progress": JobStatus.PROCESSING,
    "inprogress": JobStatus.PROCESSING,
    "generating": JobStatus.PROCESSING,
    "preview": JobStatus.PROCESSING,
    "completed": JobStatus.COMPLETED,
    "complete": JobStatus.COMPLETED,
    "done": JobStatus.COMPLETED,
    "finished": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "failure": JobStatus.FAILED,
    "error": JobStatus.FAILED,
    "rejected": JobStatus.FAILED,
    "cancelled": JobStatus.FAILED,
    "canceled": JobStatus.FAILED,
}


def read_generation(data: Mapping[str, Any]) -> Report:
    """Read the `data` of a generate/get answer or of a callback into a Report."""
    reference = data.get("uuid")
    if not isinstance(reference, str) or not 0 < len(reference) <= 64:
        raise PayloadError("generation uuid missing, not a string or over 64 characters")
    raw_status = data.get("status")
    if raw_status is not None and not isinstance(raw_status, str):
        raise PayloadError("status is not a string")
    purchase = data.get("purchaseStatus")
    if purchase is not None and not isinstance(purchase, str):
        raise PayloadError("purchaseStatus is not a string")
    _printable("generation uuid", reference)
    _printable("status", raw_status)
    _printable("purchaseStatus", purchase)
    raw_items = data.get("items") or []
    if not isinstance(raw_items, list):
        raise PayloadError("items is not a list")
    if len(raw_items) > MAX_ITEMS:
        raise PayloadError(f"more than {MAX_ITEMS} items")
    status = UPSTREAM_STATUSES.get(raw_status.strip().lower()) if raw_status else None
    return Report(
        reference=reference,
        upstream_status=raw_status[:64] if raw_status else None,
        status=status,
        purchase_status=purchase[:64] if purchase else None,
        items=tuple(_read_item(item) for item in raw_items),
    )


def _read_item(raw: Any) -> ItemReport:
    if not isinstance(raw, Mapping):
        raise PayloadError("an item is not an object")
    uuid = raw.get("uuid")
    if not isinstance(uuid, str) or not 0 < len(uuid) <= 64:
        raise PayloadError("an item has no uuid")
    _printable("item uuid", uuid)
    return ItemReport(
        uuid=uuid,
        dp_item_id=_item_id(raw.get("dpItemId")),
        preview_url=_url(raw.get("previewUrl")),
    )


def _item_id(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError("dpItemId is not an integer")
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        number = int(value)
        if 0 < number < 2**63:
            return number
    raise PayloadError("dpItemId is not a positive integer")


def _url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) <= 2048:
        _printable("previewUrl", value)
        return value
    raise PayloadError("previewUrl is not an http(s) URL")


def _printable(name: str, value: str | None) -> None:
    # Control characters and lone surrogates are never meant, and some databases refuse them.
    if value is not None and not value.isprintable():
        raise PayloadError(f"{name} contains unprintable characters")


def submit(
    client: DepositphotosClient,
    *,
    prompt: str,
    callback_url: str,
    aspect_ratio: str | None,
    medium: str | None,
) -> Report:
    data = client.generate(
        prompt=prompt, callback_url=callback_url, aspect_ratio=aspect_ratio, medium=medium
    )
    return read_generation(data)


def poll(client: DepositphotosClient, reference: str) -> Report:
    return read_generation(client.get(reference))


def media_data(
    client: DepositphotosClient, item_uuid: str
) -> tuple[int | None, int | None, str | None]:
    """Width, height and type of a finished item."""
    data = client.get_media_data(item_uuid)

    def number(key: str) -> int | None:
        value = data.get(key)
        return (
            int(value)
            if isinstance(value, int | str) and str(value).isascii() and str(value).isdigit()
            else None
        )

    kind = data.get("type")
    return number("width"), number("height"), str(kind)[:32] if kind is not None else None
