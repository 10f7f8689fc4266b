"""The OpenAPI document: valid 3.1, served without a token, describing every route, and true
to what the app really answers (checked on real responses, on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from openapi_spec_validator import validate

from tests.common.doubles import TEST_SECRET
from tests.common.factories import envelope, generation
from tests.common.openapi_check import assert_conforms
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.web import openapi


def served_document(client: Any) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return dict(response.get_json())


def test_the_document_is_valid_openapi_3_1_and_needs_no_token(client: Any) -> None:
    document = served_document(client)
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_api_and_callback_route_is_described(app: Any) -> None:
    """A route added under /api/v1 or /callbacks fails here until OPERATIONS describes it."""
    document = openapi.document(app)
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    served = {
        (path, method)
        for path, method in openapi.routes(app)
        if path.startswith(("/api/v1/", "/callbacks/"))
    }
    assert served - described == set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


def test_an_operation_is_published_exactly_when_its_route_exists(app: Any) -> None:
    served = openapi.routes(app)
    paths = openapi.document(app)["paths"]
    for path, method in openapi.OPERATIONS:
        assert (method in paths.get(path, {})) == ((path, method) in served), (method, path)
    ahead = [key for key in openapi.OPERATIONS if key not in served]
    if ahead:  # described ahead of its route: adding the route publishes it
        path, method = ahead[0]
        rule = re.sub(r"{(\w+)}", r"<\1>", path)
        app.add_url_rule(rule, "stand_in", lambda **_: ("", 204), methods=[method.upper()])
        assert method in openapi.document(app)["paths"][path]


def test_real_answers_match_the_document(client: Any, auth: dict[str, str]) -> None:
    spec = served_document(client)

    def check(response: Any, method: str, template: str) -> Any:
        assert_conforms(
            spec, method, template, response.status_code, response.get_json(), response.headers
        )
        return response.get_json()

    jobs, one = "/api/v1/jobs", "/api/v1/jobs/{job_id}"
    check(client.get(jobs), "get", jobs)  # 401
    key = str(uuid.uuid4())
    body = {"prompt": "a fox", "aspect_ratio": "1:1", "metadata": {"team": "a"}}
    job = check(
        client.post(jobs, json=body, headers={**auth, "Idempotency-Key": key}), "post", jobs
    )
    check(client.post(jobs, json=body, headers={**auth, "Idempotency-Key": key}), "post", jobs)
    other = {**body, "prompt": "a wolf"}
    check(client.post(jobs, json=other, headers={**auth, "Idempotency-Key": key}), "post", jobs)
    check(client.post(jobs, json={"prompt": "x", "medium": "oil"}, headers=auth), "post", jobs)
    check(client.post(jobs, data="prompt=x", headers=auth), "post", jobs)

    page = check(client.get(jobs, query_string={"q": "FOX", "limit": 1}, headers=auth), "get", jobs)
    assert page["jobs"][0]["id"] == job["id"]
    check(client.get(jobs, query_string={"limit": 0}, headers=auth), "get", jobs)
    check(client.get("/api/v1/stats", headers=auth), "get", "/api/v1/stats")

    path = f"/api/v1/jobs/{job['id']}"
    check(client.get(path, headers=auth), "get", one)
    check(client.get(path, query_string={"wait": "0.1"}, headers=auth), "get", one)
    check(client.get(path, query_string={"wait": "61"}, headers=auth), "get", one)
    tagged = client.get(path, headers=auth)
    check(client.get(path, headers={**auth, "If-None-Match": tagged.headers["ETag"]}), "get", one)
    listed = client.get(jobs, headers=auth)
    check(client.get(jobs, headers={**auth, "If-None-Match": listed.headers["ETag"]}), "get", jobs)
    changes = check(
        client.get(jobs, query_string={"changed_after": "0"}, headers=auth), "get", jobs
    )
    assert changes["jobs"] and "more" in changes
    after = {"changed_after": changes["next_cursor"], "metadata": '{"team": "a"}', "wait": "0.1"}
    check(client.get(jobs, query_string=after, headers=auth), "get", jobs)
    check(client.get(jobs, query_string={"changed_after": "x"}, headers=auth), "get", jobs)
    batch = "/api/v1/jobs/batch-get"
    found = check(
        client.post(batch, json={"ids": [job["id"], "nope"]}, headers=auth), "post", batch
    )
    assert found["missing"] == ["nope"]
    check(client.post(batch, json={"ids": ["x"] * 201}, headers=auth), "post", batch)
    check(client.post(batch, data="ids=1", headers=auth), "post", batch)
    counted = client.get("/api/v1/stats", headers=auth)
    again = {**auth, "If-None-Match": counted.headers["ETag"]}
    check(client.get("/api/v1/stats", headers=again), "get", "/api/v1/stats")
    check(client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=auth), "get", one)
    check(client.post(f"{path}/refresh", headers=auth), "post", one + "/refresh")  # 409

    receiver = "/callbacks/{job_id}/{token}"
    callback = f"/callbacks/{job['id']}/{callback_token(TEST_SECRET, job['id'])}"
    preview = generation("preview")
    final = envelope(generation("final", preview["uuid"], [i["uuid"] for i in preview["items"]]))
    json_type = "application/json"
    check(client.post(callback, data=envelope(preview), content_type=json_type), "post", receiver)
    check(client.post(callback, data=final, content_type=json_type), "post", receiver)
    check(client.post(callback, data=final, content_type=json_type), "post", receiver)  # repeat
    check(client.post(callback, data=b"{not json", content_type=json_type), "post", receiver)
    elsewhere = envelope(generation("final"))
    check(client.post(callback, data=elsewhere, content_type=json_type), "post", receiver)
    kept = check(client.get(f"{path}/deliveries", headers=auth), "get", one + "/deliveries")
    assert {d["outcome"] for d in kept["deliveries"]} >= {"applied", "unparseable", "mismatch"}
    check(client.post(f"/callbacks/{job['id']}/{'A' * 32}", data=final), "post", receiver)

    completed = check(client.get(path, headers=auth), "get", one)
    assert completed["status"] == "completed" and len(completed["items"]) == 4
    events = check(client.get(f"{path}/events", headers=auth), "get", one + "/events")
    assert events["events"][-1]["to"] == "completed"
    deliveries = check(client.get(f"{path}/deliveries", headers=auth), "get", one + "/deliveries")
    assert {d["body_encoding"] for d in deliveries["deliveries"]} == {"utf-8"}
    check(client.post(f"{path}/refresh", headers=auth), "post", one + "/refresh")  # 202
    check(client.get(f"{path}/events"), "get", one + "/events")  # 401
    check(client.get("/healthz"), "get", "/healthz")
    check(client.get("/readyz"), "get", "/readyz")
