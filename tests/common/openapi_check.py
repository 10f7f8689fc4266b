"""Checking a real answer against the OpenAPI document the app serves."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator


def operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return dict(spec["paths"][path][method.lower()])


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        resolved: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            resolved = resolved[part]
        node = resolved
    return node


def assert_conforms(
    spec: dict[str, Any],
    method: str,
    path: str,
    status: int,
    body: Any,
    headers: Any = None,
) -> None:
    """The status is documented for the operation, and the body and headers match it."""
    responses = operation(spec, method, path)["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented"
    response = _resolve(spec, responses[str(status)])
    if "content" not in response:  # 304: no body at all
        assert body is None, f"{method} {path} {status}: a body where none is documented"
    else:
        schema = response["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": spec["components"]})
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method} {path} {status}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
        )
    for name, header in (response.get("headers") or {}).items():
        if header.get("required"):
            assert headers is not None and name in headers, f"{method} {path}: no {name} header"
