"""A requests transport that hands each request to a WSGI app in-process (a seam fake)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class WSGIAdapter(BaseAdapter):
    def __init__(self, app: Any) -> None:
        super().__init__()
        self._client = app.test_client()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        answer = self._client.open(
            url.path,
            method=request.method,
            query_string=url.query,
            headers=dict(request.headers),
            data=request.body,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response._content = answer.get_data()
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def session_for(app: Any) -> requests.Session:
    """A requests session whose http://app/... URLs are served by `app`."""
    session = requests.Session()
    session.mount("http://app/", WSGIAdapter(app))
    return session
