"""No log line may contain a credential: capture everything while credentials travel every way."""

from __future__ import annotations

import logging

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.support.auth_helpers import SECRET, bearer, claims, create, hs256
from tests.support.helpers import Client, ServerProcess


async def use_credentials_every_way(ws_url: str, http_url: str, good: str, bad: str) -> None:
    """Connect with ``good`` and ``bad`` in the header, the subprotocol and the query, and more."""
    for token in (good, bad):
        for kwargs in (
            dict(headers=bearer(token)),
            dict(subprotocols=["study-time.v1", f"bearer.{token}"]),
            dict(query=f"userId=u1&courseId=c1&token={token}"),
            dict(query=f"userId=u2&courseId=c1&token={token}"),  # another user: 4403
            dict(query=f"userId=bad!id&courseId=c1&token={token}"),  # invalid id: 4400
        ):
            client = await Client.connect(ws_url, **kwargs)
            message = await client.recv()
            if message is not None and message["type"] == "connected":
                await client.close()
            else:
                await client.closed()
        # Refused before the upgrade: the access log line must not carry the query.
        with pytest.raises(HTTPClientError):
            await Client.connect(
                ws_url,
                query=f"userId=u1&courseId=c1&token={token}",
                headers={"Origin": "https://evil.example"},
            )
        response = await AsyncHTTPClient().fetch(f"{http_url}/healthz?token={token}")
        assert response.code == 200
        with pytest.raises(HTTPClientError):
            await AsyncHTTPClient().fetch(f"{http_url}/no-such-page?token={token}")


def assert_nowhere(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a credential appears in the log:\n{text}"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("backend", ["jwt", "token"])
async def test_in_process_logs_never_contain_a_credential(start_service, tmp_path, caplog, backend):
    caplog.set_level(logging.DEBUG)
    if backend == "jwt":
        good = hs256(claims("u1"))
        service = await start_service(auth="jwt", jwt_secret=SECRET)
    else:
        good = create(tmp_path / "tokens.json", "--user", "u1")
        service = await start_service(auth="token", tokens_file=str(tmp_path / "tokens.json"))
    bad = good[:-4] + "AAAA"
    await use_credentials_every_way(service.url, service.http_url, good, bad)
    await service.shutdown()
    text = caplog.text + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text}" for r in caplog.records)
    assert "auth refused" in text and "session opened" in text  # the log did record what happened
    assert_nowhere(text, good, bad, good[-20:], SECRET)


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("backend", ["jwt", "token"])
async def test_a_real_server_process_never_logs_a_credential(tmp_path, backend):
    args = [f"--store=sqlite:///{tmp_path}/study_time.db", "--log-level=DEBUG"]
    if backend == "jwt":
        good = hs256(claims("u1"))
        args += ["--auth=jwt", f"--jwt-secret={SECRET}"]
    else:
        good = create(tmp_path / "tokens.json", "--user", "u1")
        args += ["--auth=token", f"--tokens-file={tmp_path / 'tokens.json'}"]
    bad = good[:-4] + "AAAA"
    with ServerProcess(*args) as server:
        await use_credentials_every_way(server.url, server.http_url, good, bad)
        assert server.terminate() == 0
    assert "auth refused" in server.log and "session opened" in server.log
    assert_nowhere(server.log, good, bad, good[-20:], SECRET)
