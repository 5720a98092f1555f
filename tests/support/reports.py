"""Asking a real server for a report."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPResponse


async def get(service, path: str, headers: dict | None = None, **query) -> HTTPResponse:
    url = f"{service.http_url}{path}" + (f"?{urlencode(query)}" if query else "")
    return await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False, request_timeout=20)


def body(response: HTTPResponse) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return json.loads(response.body)
