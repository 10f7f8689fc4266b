"""GET /api/v1/jobs/<id>/items/<uuid>/image: our archived copy, else the upstream's preview."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, redirect, request

from webhook_app.archive.storage import StorageError
from webhook_app.extensions import services
from webhook_app.models import is_public_id
from webhook_app.services.archive import ARCHIVED, find_item
from webhook_app.web.auth import authenticate
from webhook_app.web.errors import ErrorAnswer

log = logging.getLogger(__name__)
blueprint = Blueprint("images", __name__, url_prefix="/api/v1")
blueprint.before_request(authenticate)

# The bytes behind an archived image's URL never change; only its holders may cache them.
CACHE_FOREVER = "private, max-age=31536000, immutable"


@blueprint.get("/jobs/<job_id>/items/<item_uuid>/image")
def item_image(job_id: str, item_uuid: str) -> Any:
    if not is_public_id(job_id) or "\x00" in item_uuid:
        raise _no_item()
    with services().db.read() as session:
        item = find_item(session, job_id, item_uuid[:64])
        if item is None:
            raise _no_item()
        archive, preview_url = item.archive, item.preview_url
    if archive is not None and archive.state == ARCHIVED and archive.sha256 and archive.storage_key:
        headers = {"Cache-Control": CACHE_FOREVER}
        if request.if_none_match.contains(archive.sha256):
            response = Response(status=304, headers=headers)
            response.set_etag(archive.sha256)
            return response
        try:
            chunks = services().storage.open(archive.storage_key)
        except StorageError as exc:
            log.error("archived image unreadable: %s", exc)
            raise ErrorAnswer(
                503,
                "storage_unavailable",
                "the archived image cannot be read now",
                headers={"Retry-After": "30"},
            ) from None
        response = Response(chunks, mimetype=archive.content_type, headers=headers)
        response.set_etag(archive.sha256)
        if archive.size is not None:
            response.content_length = archive.size
        return response
    if preview_url:
        # Not kept yet: the upstream's temporary copy, never cached.
        return redirect(preview_url, code=307), {"Cache-Control": "no-store"}
    raise ErrorAnswer(404, "no_image", "the item has no image yet")


def _no_item() -> ErrorAnswer:
    return ErrorAnswer(404, "not_found", "no such item in this job")
