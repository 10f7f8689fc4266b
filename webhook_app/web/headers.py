"""Response headers on every answer: no caching of what needs a token, and the usual hardening.

HTML gets a strict Content Security Policy (scripts, styles and fonts only from this origin,
no inline code, no framing); every other answer a policy that allows nothing at all.
"""

from __future__ import annotations

from flask import Flask, Response, request

HTML_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"

HARDENING = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STRICT_TRANSPORT = "max-age=31536000"


def plain_answer_headers(*, https: bool = False) -> list[tuple[str, str]]:
    """What `install_security_headers` adds to an answer that is not HTML and whose view chose
    no caching policy: for answers made outside Flask (the callback receiver)."""
    headers = [*HARDENING.items(), ("Content-Security-Policy", OTHER_POLICY)]
    headers.append(("Cache-Control", "no-store"))
    if https:
        headers.append(("Strict-Transport-Security", STRICT_TRANSPORT))
    return headers


def install_security_headers(app: Flask, *, https: bool = False) -> None:
    """Add the headers to every response of `app`; HSTS too when it is served over HTTPS."""

    @app.after_request
    def _harden(response: Response) -> Response:
        headers = response.headers
        # One pass over the headers a view set, instead of a scan per header added (this runs
        # on every answer, the cheapest ones included).
        present = {name.lower() for name, _ in headers}
        for name, value in HARDENING.items():
            if name.lower() not in present:
                headers.add(name, value)
        if "content-security-policy" not in present:
            html = response.mimetype == "text/html"
            headers.add("Content-Security-Policy", HTML_POLICY if html else OTHER_POLICY)
        # An answer to a request that carried credentials is never stored by a shared cache:
        # only a view that chose a `private` policy (immutable archived images) keeps its own.
        # Others are not stored either unless their view chose a policy (static files do).
        credentials = "Authorization" in request.headers or "Cookie" in request.headers
        chosen = headers.get("Cache-Control")
        if chosen is None or (credentials and "private" not in chosen):
            headers["Cache-Control"] = "no-store"
        if https:
            headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT)
        return response
