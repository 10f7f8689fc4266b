"""The OpenAPI 3.1 document of the query API and the callback receiver.

Served without authentication at /api/v1/openapi.json. `OPERATIONS` describes every route;
the served document holds those the running app actually has, so an operation described here
ahead of its route appears once the route exists. tests/test_openapi.py checks the reverse
(every route is described) and checks real answers against the schemas.

The schemas of the answers (jobs, items, archives, deliveries, events, pages, stats) are made
from their one declaration in `webhook_app.shapes` (`shape_schemas`); tests/test_shapes.py
checks the serializer's answers against them.
"""

from __future__ import annotations

import re
import types
from importlib import metadata
from typing import (
    Annotated,
    Any,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from flask import Blueprint, Flask, current_app, jsonify

from webhook_app import shapes
from webhook_app.depositphotos.kinds.image_generation import ASPECT_RATIOS, MAX_PROMPT, MEDIUMS
from webhook_app.services.jobs import MAX_BATCH, MAX_PAGE
from webhook_app.states import JobStatus
from webhook_app.web import receiver

blueprint = Blueprint("openapi", __name__)

STATUSES = [s.value for s in JobStatus]
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def answer(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def json_body(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def obj(properties: dict[str, Any], *optional: str, **extra: Any) -> dict[str, Any]:
    """An object schema whose properties are all required except `optional`."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties, **extra}


_SCALARS = {str: "string", int: "integer", bool: "boolean", float: "number"}


def shape_schema(shape: Any, *, closed: bool = False) -> dict[str, Any]:
    """The JSON Schema of an answer declared in `shapes`: every key required, the answers
    named in `shapes.COMPONENTS` by reference. `closed` refuses keys it does not declare."""
    hints = get_type_hints(shape, include_extras=True)
    schema = obj(
        {name: _schema_of(hint, closed) for name, hint in hints.items()},
        *(name for name in hints if name not in shape.__required_keys__),
    )
    return {**schema, "additionalProperties": False} if closed else schema


def _schema_of(hint: Any, closed: bool) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        for extra in extras:
            if isinstance(extra, shapes.Schema):
                if extra.ref:
                    return ref(extra.ref)
                keywords.update(extra.keywords)
    return {**_type_schema(hint, closed), **keywords}


def _type_schema(hint: Any, closed: bool) -> dict[str, Any]:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1 or len(present) == len(args):
            raise TypeError(f"only `T | None` unions are described: {hint}")
        schema = _schema_of(present[0], closed)
        if "type" in schema:
            return {**schema, "type": [schema["type"], "null"]}
        if "enum" in schema:
            return {**schema, "enum": [*schema["enum"], None]}
        return {"anyOf": [schema, {"type": "null"}]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0], closed)}
    if origin is dict:
        key, value = args
        if get_origin(key) is Literal:
            return obj({name: _schema_of(value, closed) for name in get_args(key)})
        if value is Any:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": _schema_of(value, closed)}
    if is_typeddict(hint):
        named = hint in shapes.COMPONENTS
        return ref(hint.__name__) if named else shape_schema(hint, closed=closed)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    raise TypeError(f"no JSON Schema for {hint!r}")


def shape_schemas(*, closed: bool = False) -> dict[str, Any]:
    """The component schemas of every answer in `shapes.COMPONENTS`, by name."""
    return {shape.__name__: shape_schema(shape, closed=closed) for shape in shapes.COMPONENTS}


SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the parameter or field at fault"},
                },
                "field",
            )
        }
    ),
    "BudgetError": obj(
        {
            "error": obj(
                {
                    "code": {"const": "budget_exceeded"},
                    "message": {"type": "string"},
                    "budget": {"enum": ["deployment", "token"]},
                    "limit": {"type": "integer"},
                    "resets_at": TIME,
                }
            )
        }
    ),
    "BudgetUsage": obj(
        {
            "used": {"type": "integer", "minimum": 0},
            "limit": NULLABLE_INT,
            "remaining": NULLABLE_INT,
        }
    ),
    "JobRequest": obj(
        {
            "prompt": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_PROMPT,
                "pattern": r"\S",
                "description": "what to draw; not only spaces",
            },
            "aspect_ratio": {"enum": [*ASPECT_RATIOS, None]},
            "medium": {"enum": [*MEDIUMS, None]},
            "metadata": {
                "type": ["object", "null"],
                "description": "stored with the job and returned as given; at most 8 KiB as JSON",
            },
        },
        "aspect_ratio",
        "medium",
        "metadata",
        additionalProperties=False,
    ),
    "LastError": {
        "type": ["object", "null"],
        "properties": {
            "kind": {"type": "string"},
            "code": {"type": ["string", "integer", "null"]},
            "message": NULLABLE_STRING,
            "exception": NULLABLE_STRING,
            "at": NULLABLE_TIME,
        },
    },
    "Subscription": obj(
        {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "description": NULLABLE_STRING,
            "statuses": {"type": ["array", "null"], "items": {"type": "string"}},
            "metadata": {"type": ["object", "null"]},
            "created_at": TIME,
            "secret": {
                "type": "string",
                "description": "the `whsec_` signing secret; only in the answer that creates it",
            },
        },
        "secret",
    ),
    "SubscriptionRequest": obj(
        {
            "url": {"type": "string", "format": "uri", "maxLength": 2048},
            "statuses": {
                "type": ["array", "null"],
                "minItems": 1,
                "items": {"enum": ["completed", "failed", "timed_out"]},
            },
            "metadata": {"type": ["object", "null"], "minProperties": 1},
            "description": {"type": ["string", "null"], "maxLength": 200},
        },
        "statuses",
        "metadata",
        "description",
        additionalProperties=False,
    ),
    "Notification": obj(
        {
            "id": {"type": "string"},
            "subscription_id": {"type": "string"},
            "job_id": {"type": "string"},
            "type": {"type": "string"},
            "state": {"enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": NULLABLE_STRING,
            "created_at": TIME,
            "delivered_at": NULLABLE_TIME,
            "next_attempt_at": NULLABLE_TIME,
            "payload": {"type": "object", "description": "the signed body, as sent"},
            "attempt_log": {"type": "array", "items": {"type": "object"}},
        },
        "payload",
        "attempt_log",
    ),
    "BatchGet": obj(
        {
            "ids": {
                "type": "array",
                "maxItems": MAX_BATCH,
                "items": {"type": "string"},
                "description": f"job ids, at most {MAX_BATCH}",
            }
        },
        additionalProperties=False,
    ),
    "CallbackAnswer": obj({"received": {"const": True}, "duplicate": {"type": "boolean"}}),
    **shape_schemas(),
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return json_body(ref("Error"), description, **extra)


RESPONSES = {
    "BadRequest": _error("a query parameter, header or body is malformed; `field` names it"),
    "Unauthorized": _error(
        "no valid bearer token",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "Forbidden": _error(
        "the token's scope does not allow this (a `read` token may only read)",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "NotFound": _error("no such job"),
    "TooLarge": _error("the body is over the size limit (1 MiB)"),
    "Unavailable": _error(
        "the database is unreachable; nothing was done, retry later",
        headers={"Retry-After": {"schema": {"type": "string"}}},
    ),
    "OverBudget": json_body(
        ref("BudgetError"),
        "a daily budget of generations is used up: nothing was created or sent; "
        "`budget` names it and `resets_at` says when it resets (UTC midnight)",
        headers={"Retry-After": {"schema": {"type": "string"}, "required": True}},
    ),
}

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the job's `id`",
}
SUBSCRIPTION_ID = {
    "name": "subscription_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
NOTIFICATION_ID = {
    "name": "notification_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
CREATED_AFTER = {
    "name": "created_after",
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
    "description": (
        "only jobs created after this instant: ISO-8601 date and time, UTC when no offset"
    ),
}
TEXT = {
    "name": "q",
    "in": "query",
    "schema": {"type": "string", "maxLength": 200},
    "description": "only jobs whose prompt contains this text (case-insensitive)",
}

IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": "the ETag of the answer already held: 304 when it still stands",
}
ETAG = {"ETag": {"schema": {"type": "string"}, "required": True}}
NOT_MODIFIED = {
    "description": "unchanged since the ETag given; ask again after Retry-After seconds",
    "headers": {**ETAG, "Retry-After": {"schema": {"type": "string"}, "required": True}},
}

READ = {"401": answer("Unauthorized"), "503": answer("Unavailable")}
WRITE = {**READ, "403": answer("Forbidden")}
ONE_JOB = {**READ, "404": answer("NotFound")}


def job_action(summary: str, conflict: str, **responses: Any) -> dict[str, Any]:
    """An operator action on one job: accepted (202) or refused in the job's state (409)."""
    return {
        "summary": summary,
        "parameters": [JOB_ID],
        "responses": {
            "202": json_body(
                ref("Job"),
                "accepted: the job (for a retry, the new job linked to this one)",
                headers={"Location": {"schema": {"type": "string"}, "required": True}},
            ),
            "409": _error(conflict),
            "403": answer("Forbidden"),
            **responses,
            **ONE_JOB,
        },
    }


# (path, method) -> operation. Paths use OpenAPI's {name}; Flask's <name> maps onto them.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v1/jobs", "post"): {
        "operationId": "createJob",
        "summary": "Create a job; its submission is queued",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "the same key again returns the same job and creates nothing",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("JobRequest")}},
        },
        "responses": {
            "202": json_body(
                ref("Job"),
                "created (or, for a replayed Idempotency-Key, the job it created)",
                headers={
                    "Location": {"schema": {"type": "string"}, "required": True},
                    "Idempotent-Replayed": {"schema": {"const": "true"}},
                },
            ),
            "400": answer("BadRequest"),
            "409": _error("the Idempotency-Key was used for a different request"),
            "413": answer("TooLarge"),
            "422": _error("a field of the request is invalid; `field` names it"),
            "429": answer("OverBudget"),
            **WRITE,
        },
    },
    ("/api/v1/usage", "get"): {
        "operationId": "usage",
        "summary": "Generations counted today against the daily budgets, and their limits",
        "responses": {
            "200": json_body(
                obj(
                    {
                        "day": {"type": "string", "format": "date"},
                        "resets_at": TIME,
                        "deployment": ref("BudgetUsage"),
                        "token": {
                            "oneOf": [
                                {"type": "null"},
                                {
                                    **ref("BudgetUsage"),
                                    "description": "the calling token's own budget (tokens "
                                    "made with `webhook-app tokens create`), with its id and name",
                                },
                            ]
                        },
                    }
                ),
                "usage today (UTC); `limit` null means no limit",
            ),
            **READ,
        },
    },
    ("/api/v1/workers", "get"): {
        "operationId": "workers",
        "summary": "The workers heard from in the last minute, and whether they reach the broker",
        "responses": {
            "200": json_body(
                obj(
                    {
                        "summary": {"type": "string"},
                        "workers": {
                            "type": "array",
                            "items": obj(
                                {
                                    "name": {"type": "string"},
                                    "state": {"enum": ["ok", "broker_unreachable"]},
                                    "detail": NULLABLE_STRING,
                                    "broker": {"type": "string"},
                                    "seen_at": TIME,
                                }
                            ),
                        },
                    }
                ),
                "`summary` is `ok`, or why no job is being worked on",
            ),
            **READ,
        },
    },
    ("/api/v1/upstream", "get"): {
        "operationId": "upstreamState",
        "summary": "Whether submissions are paused because the upstream refuses the credentials",
        "responses": {
            "200": json_body(
                obj(
                    {
                        "paused": {"type": "boolean"},
                        "since": NULLABLE_TIME,
                        "reason": {
                            **ref("LastError"),
                            "description": "the refusal that paused submissions",
                        },
                        "next_probe_at": NULLABLE_TIME,
                        "probes_failed": {"type": "integer"},
                    },
                    "probes_failed",
                ),
                "while paused, jobs wait `queued` and a probe logs in again now and then",
            ),
            **READ,
        },
    },
    ("/api/v1/jobs", "get"): {
        "operationId": "listJobs",
        "summary": "Jobs, newest first, a page at a time; or, with `changed_after`, the changes",
        "description": (
            "Without `changed_after`: a page of jobs, newest first (`JobPage`), with an ETag "
            "made of its jobs' versions. With `changed_after`: the changes feed "
            "(`ChangesPage`), every job changed after the cursor in the order of the changes, "
            "filtered like the list; an empty page says Retry-After."
        ),
        "parameters": [
            {
                "name": "changed_after",
                "in": "query",
                "schema": {"type": "string"},
                "description": (
                    "the changes feed: a `next_cursor` of the feed, `now` (only changes from "
                    "now on) or `0` (every job, then its changes)"
                ),
            },
            {
                "name": "wait",
                "in": "query",
                "schema": {"type": "number", "minimum": 0},
                "description": (
                    "with `changed_after`: hold an empty page up to this many seconds (at most "
                    "MAX_WAIT, 25 by default)"
                ),
            },
            {
                "name": "metadata",
                "in": "query",
                "schema": {"type": "string"},
                "description": (
                    "with `changed_after`: a JSON object; only jobs whose metadata has each "
                    "of its keys with that value"
                ),
            },
            IF_NONE_MATCH,
            {"name": "status", "in": "query", "schema": {"enum": STATUSES}},
            CREATED_AFTER,
            TEXT,
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
            },
            {
                "name": "cursor",
                "in": "query",
                "schema": {"type": "string"},
                "description": "the `next_cursor` of the previous page",
            },
        ],
        "responses": {
            "200": json_body(
                {"anyOf": [ref("JobPage"), ref("ChangesPage")]},
                "a page of jobs, or of changes",
                headers={
                    "ETag": {"schema": {"type": "string"}, "description": "list pages"},
                    "Retry-After": {
                        "schema": {"type": "string"},
                        "description": "an empty page of changes: when to ask again",
                    },
                },
            ),
            "304": NOT_MODIFIED,
            "400": answer("BadRequest"),
            **READ,
        },
    },
    ("/api/v1/jobs/batch-get", "post"): {
        "operationId": "batchGetJobs",
        "summary": f"Up to {MAX_BATCH} jobs by id in one request",
        "description": "A read: a `read` token may use it.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("BatchGet")}},
        },
        "responses": {
            "200": json_body(ref("BatchJobs"), "the jobs found and the ids not found"),
            "400": answer("BadRequest"),
            "413": answer("TooLarge"),
            "422": _error(f"`ids` is not a list of strings, or names over {MAX_BATCH} jobs"),
            **READ,
        },
    },
    ("/api/v1/jobs/{job_id}", "get"): {
        "operationId": "getJob",
        "summary": "One job; with `wait`, once it is terminal or the wait runs out",
        "parameters": [
            JOB_ID,
            {
                "name": "wait",
                "in": "query",
                "schema": {"type": "number", "minimum": 0},
                "description": (
                    "seconds to hold the request until the job is completed, failed or "
                    "timed_out; the job is answered either way. Held at most MAX_WAIT "
                    "seconds (25 by default, under a PaaS router's 30 s), which every answer "
                    "names in X-Max-Wait"
                ),
            },
            IF_NONE_MATCH,
        ],
        "responses": {
            "200": json_body(ref("Job"), "the job, with its version as ETag", headers=ETAG),
            "304": NOT_MODIFIED,
            "400": answer("BadRequest"),
            **ONE_JOB,
        },
    },
    ("/api/v1/jobs/{job_id}/events", "get"): {
        "operationId": "jobEvents",
        "summary": "Every transition of the job, oldest first",
        "parameters": [JOB_ID],
        "responses": {
            "200": json_body(
                obj({"events": {"type": "array", "items": ref("Event")}}), "the events"
            ),
            **ONE_JOB,
        },
    },
    ("/api/v1/jobs/{job_id}/deliveries", "get"): {
        "operationId": "jobDeliveries",
        "summary": "Every callback body received for the job, as it arrived",
        "parameters": [JOB_ID],
        "responses": {
            "200": json_body(
                obj({"deliveries": {"type": "array", "items": ref("Delivery")}}),
                "the deliveries",
            ),
            **ONE_JOB,
        },
    },
    ("/api/v1/jobs/{job_id}/refresh", "post"): {
        "operationId": "refreshJob",
        **job_action(
            "Ask the upstream about the job now", "the job has no upstream generation yet"
        ),
    },
    ("/api/v1/jobs/{job_id}/retry", "post"): {
        "operationId": "retryJob",
        **job_action(
            "Submit a failed or timed-out job again",
            "the job cannot be retried now",
            **{"429": answer("OverBudget")},
        ),
    },
    ("/api/v1/jobs/{job_id}/cancel", "post"): {
        "operationId": "cancelJob",
        **job_action("Cancel a job that has not finished", "the job can no longer be cancelled"),
    },
    ("/api/v1/jobs/{job_id}/items/{item_uuid}/image", "get"): {
        "operationId": "itemImage",
        "summary": "An item's image: our archived copy, or the upstream's while we have none",
        "parameters": [
            JOB_ID,
            {"name": "item_uuid", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "the archived image, with its sha256 as ETag",
                "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            "304": {"description": "the copy matches If-None-Match"},
            "307": {"description": "not archived yet: the upstream's preview URL (Location)"},
            **ONE_JOB,
        },
    },
    ("/api/v1/subscriptions", "post"): {
        "operationId": "createSubscription",
        "summary": "Subscribe a URL to finished jobs (Standard Webhooks, signed)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("SubscriptionRequest")}},
        },
        "responses": {
            "201": json_body(ref("Subscription"), "created; the answer holds its secret"),
            "400": answer("BadRequest"),
            "422": _error("a field of the request is invalid; `field` names it"),
            **WRITE,
        },
    },
    ("/api/v1/subscriptions", "get"): {
        "operationId": "listSubscriptions",
        "summary": "Every subscription (never its secret)",
        "responses": {
            "200": json_body(
                obj({"subscriptions": {"type": "array", "items": ref("Subscription")}}),
                "the subscriptions",
            ),
            **READ,
        },
    },
    ("/api/v1/subscriptions/{subscription_id}", "get"): {
        "operationId": "getSubscription",
        "summary": "One subscription (never its secret)",
        "parameters": [SUBSCRIPTION_ID],
        "responses": {"200": json_body(ref("Subscription"), "the subscription"), **ONE_JOB},
    },
    ("/api/v1/subscriptions/{subscription_id}", "delete"): {
        "operationId": "deleteSubscription",
        "summary": "Delete a subscription and its notifications",
        "parameters": [SUBSCRIPTION_ID],
        "responses": {
            "204": {"description": "deleted"},
            "403": answer("Forbidden"),
            **ONE_JOB,
        },
    },
    ("/api/v1/notifications", "get"): {
        "operationId": "listNotifications",
        "summary": "Notifications sent to subscribers, newest first",
        "parameters": [
            {"name": "job_id", "in": "query", "schema": {"type": "string"}},
            {"name": "subscription_id", "in": "query", "schema": {"type": "string"}},
            {
                "name": "state",
                "in": "query",
                "schema": {"enum": ["pending", "delivered", "failed"]},
            },
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
            },
        ],
        "responses": {
            "200": json_body(
                obj({"notifications": {"type": "array", "items": ref("Notification")}}),
                "the notifications",
            ),
            "400": answer("BadRequest"),
            **ONE_JOB,
        },
    },
    ("/api/v1/notifications/{notification_id}", "get"): {
        "operationId": "getNotification",
        "summary": "One notification, its payload and every attempt",
        "parameters": [NOTIFICATION_ID],
        "responses": {"200": json_body(ref("Notification"), "the notification"), **ONE_JOB},
    },
    ("/api/v1/notifications/{notification_id}/replay", "post"): {
        "operationId": "replayNotification",
        "summary": "Send a notification again, whatever became of it",
        "parameters": [NOTIFICATION_ID],
        "responses": {
            "202": json_body(ref("Notification"), "queued to be sent again"),
            "403": answer("Forbidden"),
            **ONE_JOB,
        },
    },
    ("/api/v1/stats", "get"): {
        "operationId": "jobStats",
        "summary": "How many jobs are in each status",
        "parameters": [CREATED_AFTER, TEXT, IF_NONE_MATCH],
        "responses": {
            "200": json_body(ref("Stats"), "counts per status", headers=ETAG),
            "304": NOT_MODIFIED,
            "400": answer("BadRequest"),
            **READ,
        },
    },
    ("/api/v1/openapi.json", "get"): {
        "operationId": "openapi",
        "summary": "This document",
        "security": [],
        "responses": {"200": json_body({"type": "object"}, "the OpenAPI document")},
    },
    ("/callbacks/{job_id}/{token}", "post"): {
        "operationId": "receiveCallback",
        "summary": "The upstream's callback for one job",
        "description": (
            "The URL handed to the upstream carries a per-job token (an HMAC of the job id), "
            "checked before the body is read. Every authenticated delivery is stored, then "
            "answered; what it says is applied to its job soon after, off the request path, "
            "and its outcome is on the job's deliveries."
        ),
        "security": [],
        "parameters": [
            JOB_ID,
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "content": {
                "application/json": {"schema": {}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            }
        },
        "responses": {
            "200": json_body(ref("CallbackAnswer"), "stored and committed (or a repeat, counted)"),
            "403": _error("the source address is outside CALLBACK_ALLOWED_NETWORKS"),
            "404": _error("wrong token or unknown job (the same answer for both)"),
            "413": answer("TooLarge"),
            "503": answer("Unavailable"),
        },
    },
    ("/callbacks/{anything}", "post"): {
        "operationId": "refuseCallback",
        "summary": "Any other callback path: refused exactly like a wrong token",
        "security": [],
        "parameters": [
            {"name": "anything", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "403": _error("the source address is outside CALLBACK_ALLOWED_NETWORKS"),
            "404": _error("no such callback"),
        },
    },
    ("/healthz", "get"): {
        "operationId": "healthz",
        "summary": "The process is running",
        "security": [],
        "responses": {"200": json_body(obj({"status": {"const": "ok"}}), "alive")},
    },
    ("/readyz", "get"): {
        "operationId": "readyz",
        "summary": "The database and the broker answer; the workers and the upstream are reported",
        "security": [],
        "responses": {
            status: json_body(
                obj(
                    {
                        "status": {"enum": ["ready", "degraded", "unavailable"]},
                        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                        "workers": {"type": "string"},
                        "broker": {"type": "string"},
                    }
                ),
                description,
            )
            for status, description in (("200", "ready"), ("503", "a dependency is down"))
        },
    },
}


def openapi_path(rule: str) -> str:
    """Flask's `/jobs/<job_id>` (or `<string:job_id>`) as OpenAPI's `/jobs/{job_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def routes(app: Flask) -> set[tuple[str, str]]:
    """Every (path, method) the app serves, in OpenAPI's terms (the callback receiver's too,
    which answers in front of the app)."""
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    return {(openapi_path(rule), method.lower()) for rule, method in served | set(receiver.ROUTES)}


def document(app: Flask) -> dict[str, Any]:
    """The document for this app: the described operations whose routes it has."""
    served = routes(app)
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), operation in OPERATIONS.items():
        if (path, method) in served:
            paths.setdefault(path, {})[method] = operation
    try:
        version = metadata.version("webhook-app")
    except metadata.PackageNotFoundError:
        version = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook_app",
            "version": version,
            "description": (
                "Orders AI-generated images from the Depositphotos API and reports each job. "
                'Errors are `{"error": {"code", "message", "field"?}}`.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of API_TOKENS",
                }
            },
        },
    }


@blueprint.get("/api/v1/openapi.json")
def openapi_json() -> Any:
    cached = current_app.extensions.get("webhook_app.openapi")
    if cached is None:
        cached = current_app.extensions["webhook_app.openapi"] = document(current_app)
    return jsonify(cached)
