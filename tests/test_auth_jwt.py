"""--auth=jwt through a real server and client: every refusal the issue lists, and JWKS."""

from __future__ import annotations

import asyncio
import signal
import time

import jwt
import pytest

from tests.support.auth_helpers import (
    SECRET,
    JwksServer,
    bearer,
    claims,
    forge_hs256,
    hs256,
    jwk,
    public_pem,
    refused,
    rsa_key,
    unsigned,
)
from tests.support.helpers import Client, ServerProcess, wait_for

JWT = dict(auth="jwt", jwt_secret=SECRET)


@pytest.fixture(scope="module")
def key():
    return rsa_key()


@pytest.fixture
def key_file(tmp_path, key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(key))
    return str(path)


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", ["header", "subprotocol", "query"])
async def test_a_valid_token_opens_the_session_over_every_transport(start_service, transport):
    service = await start_service(**JWT)
    token = hs256(claims("u1"))
    kwargs = {
        "header": dict(headers=bearer(token)),
        "subprotocol": dict(subprotocols=["study-time.v1", f"bearer.{token}"]),
        "query": dict(query=f"userId=u1&courseId=c1&token={token}"),
    }[transport]
    client = await Client.connect(service.url, **kwargs)
    await client.connected()
    if transport == "subprotocol":
        # The server picks the protocol and never echoes the credential back.
        assert client.conn.selected_subprotocol == "study-time.v1"
    await client.close()


@pytest.mark.gen_test
async def test_no_credential_is_unauthorized_and_no_session_opens(start_service):
    service = await start_service(**JWT)
    client = await Client.connect(service.url)
    message = await refused(client, 4401, "unauthorized")
    assert "no credential" in message["message"]
    assert client.conn.close_reason == "unauthorized"
    assert len(service.tracker) == 0


@pytest.mark.gen_test
async def test_a_token_for_another_user_is_forbidden(start_service):
    service = await start_service(**JWT)
    client = await Client.connect(service.url, "u2", "c1", headers=bearer(hs256(claims("u1"))))
    message = await refused(client, 4403, "forbidden")
    assert "another user" in message["message"]
    assert len(service.tracker) == 0


@pytest.mark.gen_test
async def test_an_admin_token_may_act_for_another_user(start_service):
    service = await start_service(**JWT)
    client = await Client.connect(
        service.url, "u2", "c1", headers=bearer(hs256(claims("ops", roles=["admin"])))
    )
    await client.connected()
    await client.close()


@pytest.mark.gen_test
async def test_the_courses_claim_limits_the_token(start_service):
    service = await start_service(**JWT)
    token = hs256(claims("u1", courses=["c1", "c2"]))
    allowed = await Client.connect(service.url, "u1", "c2", headers=bearer(token))
    await allowed.connected()
    await allowed.close()
    outside = await Client.connect(service.url, "u1", "c3", headers=bearer(token))
    message = await refused(outside, 4403, "forbidden")
    assert "course" in message["message"]


@pytest.mark.gen_test
async def test_a_custom_courses_claim_is_read(start_service):
    service = await start_service(**JWT, jwt_courses_claim="https://lms.example.com/courses")
    token = hs256(claims("u1", **{"https://lms.example.com/courses": ["c9"]}))
    client = await Client.connect(service.url, "u1", "c1", headers=bearer(token))
    await refused(client, 4403, "forbidden")


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("token", "why"),
    [
        (unsigned(claims("u1")), "algorithm"),
        (hs256(claims("u1"), secret="another-secret-that-is-at-least-32-bytes"), "signature"),
        (hs256(claims("u1", lifetime=-120)), "expired"),
        (hs256({"sub": "u1"}), "exp"),
        (hs256({"exp": 4102444800}), "sub"),
        ("not-a-jwt", "not a JWT"),
        (hs256(claims("u1", aud="another-service")), "audience"),  # aud given, none configured
    ],
    ids=["alg-none", "wrong-signature", "expired", "no-exp", "no-sub", "garbage", "unexpected-aud"],
)
async def test_invalid_tokens_are_unauthorized(start_service, token, why):
    service = await start_service(**JWT)
    client = await Client.connect(service.url, headers=bearer(token))
    message = await refused(client, 4401, "unauthorized")
    assert why in message["message"]


@pytest.mark.gen_test
async def test_expiry_tolerates_the_leeway_only(start_service):
    service = await start_service(**JWT, jwt_leeway=30.0)
    client = await Client.connect(service.url, headers=bearer(hs256(claims("u1", lifetime=-5))))
    await client.connected()
    await client.close()


@pytest.mark.gen_test
async def test_audience_and_issuer_are_checked(start_service):
    service = await start_service(**JWT, jwt_audience="study-time", jwt_issuer="https://idp.example.com")
    good = claims("u1", aud="study-time", iss="https://idp.example.com")
    client = await Client.connect(service.url, headers=bearer(hs256(good)))
    await client.connected()
    await client.close()
    for bad, why in [
        ({**good, "aud": "another-service"}, "audience"),
        ({**good, "iss": "https://evil.example.com"}, "issuer"),
        ({k: v for k, v in good.items() if k != "aud"}, "aud"),
    ]:
        client = await Client.connect(service.url, headers=bearer(hs256(bad)))
        message = await refused(client, 4401, "unauthorized")
        assert why in message["message"]


@pytest.mark.gen_test
async def test_rs256_with_a_public_key_file(start_service, key, key_file):
    service = await start_service(auth="jwt", jwt_algorithms=("RS256",), jwt_public_key_file=key_file)
    token = jwt.encode(claims("u1"), key, algorithm="RS256")
    client = await Client.connect(service.url, headers=bearer(token))
    await client.connected()
    await client.close()
    other = jwt.encode(claims("u1"), rsa_key(), algorithm="RS256")
    client = await Client.connect(service.url, headers=bearer(other))
    await refused(client, 4401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("algorithms", [("RS256",), ("HS256", "RS256")])
async def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused(
    start_service, key, key_file, algorithms
):
    """Algorithm confusion: the public key is public, so an HMAC made with it proves nothing."""
    extra = {"jwt_secret": SECRET} if "HS256" in algorithms else {}
    service = await start_service(
        auth="jwt", jwt_algorithms=algorithms, jwt_public_key_file=key_file, **extra
    )
    token = forge_hs256(claims("u1"), public_pem(key))
    client = await Client.connect(service.url, headers=bearer(token))
    await refused(client, 4401, "unauthorized")


@pytest.mark.gen_test
async def test_jwks_keys_are_fetched_once_and_cached(start_service, key):
    with JwksServer([jwk(key, "k1")]) as jwks:
        service = await start_service(auth="jwt", jwt_algorithms=("RS256",), jwt_jwks_url=jwks.url)
        for _ in range(3):
            token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
            client = await Client.connect(service.url, headers=bearer(token))
            await client.connected()
            await client.close()
        assert jwks.fetches == 1
        # A key the JWKS does not hold is refused, whatever kid it claims.
        forged = jwt.encode(claims("u1"), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        client = await Client.connect(service.url, headers=bearer(forged))
        await refused(client, 4401, "unauthorized")
        unknown = jwt.encode(claims("u1"), rsa_key(), algorithm="RS256", headers={"kid": "k2"})
        client = await Client.connect(service.url, headers=bearer(unknown))
        message = await refused(client, 4401, "unauthorized")
        assert "signing key" in message["message"]


async def session_error(url: str, token: str) -> dict | None:
    """Open a session with ``token``: None if it opened (then closed cleanly), else the error sent."""
    client = await Client.connect(url, headers=bearer(token))
    message = await client.recv()
    if message is not None and message["type"] == "connected":
        await client.close()
        return None
    code, _reason, messages = await client.closed()
    assert code == 4401, (code, message, messages)
    return message


async def session_opens(url: str, token: str) -> bool:
    return await session_error(url, token) is None


async def session_refused(url: str, token: str) -> bool:
    return await session_error(url, token) is not None


def jwks_server_args(tmp_path, jwks: JwksServer, *args: str) -> list[str]:
    return [
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--auth=jwt",
        "--jwt-algorithms=RS256",
        f"--jwt-jwks-url={jwks.url}",
        *args,
    ]


@pytest.mark.gen_test(timeout=60)
async def test_a_key_removed_from_the_jwks_stops_working_as_soon_as_the_set_is_fetched_again(tmp_path, key):
    old, new = key, rsa_key()
    old_token = jwt.encode(claims("u1"), old, algorithm="RS256", headers={"kid": "old"})
    new_token = jwt.encode(claims("u1"), new, algorithm="RS256", headers={"kid": "new"})
    with (
        JwksServer([jwk(old, "old")]) as jwks,
        ServerProcess(
            *jwks_server_args(tmp_path, jwks, "--jwt-jwks-lifespan=3600", "--jwt-jwks-refetch-interval=0.2")
        ) as server,
    ):
        assert await session_error(server.url, old_token) is None
        # The provider rotates: "new" replaces "old" (withdrawn, say because it leaked).
        jwks.keys = [jwk(new, "new")]
        # A token naming the unknown kid fetches the set again (once the refetch
        # interval has passed since the last fetch) and opens its session.
        await wait_for(lambda: session_opens(server.url, new_token), timeout=10, interval=0.1)
        assert jwks.fetches >= 2
        # The set fetched again no longer holds "old": its tokens are refused now,
        # not after the hour-long lifespan or a restart.
        error = await session_error(server.url, old_token)
        assert error is not None and error["code"] == "unauthorized", error
        assert "signing key" in error["message"]
        assert server.terminate() == 0
    assert "removed old" in server.log


@pytest.mark.gen_test(timeout=60)
async def test_a_removed_jwks_key_stops_working_within_the_lifespan_without_a_new_kid(tmp_path, key):
    token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    with (
        JwksServer([jwk(key, "k1"), jwk(rsa_key(), "k2")]) as jwks,
        ServerProcess(
            *jwks_server_args(tmp_path, jwks, "--jwt-jwks-lifespan=1", "--jwt-jwks-refetch-interval=3600")
        ) as server,
    ):
        assert await session_error(server.url, token) is None
        jwks.keys = [jwks.keys[1]]  # k1 withdrawn; nothing new appears to trigger a fetch
        started = time.monotonic()
        await wait_for(
            lambda: session_refused(server.url, token), timeout=10, interval=0.1, message="k1 refused"
        )
        assert time.monotonic() - started < 1 + 5  # the lifespan, plus generous slack
        assert jwks.fetches == 2  # one fetch at the end of the lifespan, whatever the refetch interval
        assert server.terminate() == 0


@pytest.mark.gen_test(timeout=60)
async def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval(tmp_path, key):
    with (
        JwksServer([jwk(key, "k1")]) as jwks,
        ServerProcess(*jwks_server_args(tmp_path, jwks, "--jwt-jwks-refetch-interval=3600")) as server,
    ):
        assert await session_error(server.url, jwt.encode(claims("u1"), key, "RS256", {"kid": "k1"})) is None
        for n in range(5):
            forged = jwt.encode(claims("u1"), rsa_key(), algorithm="RS256", headers={"kid": f"made-up-{n}"})
            error = await session_error(server.url, forged)
            assert error is not None and "signing key" in error["message"], error
        assert jwks.fetches == 1
        assert server.terminate() == 0


@pytest.mark.gen_test(timeout=60)
async def test_keys_past_their_lifespan_are_not_used_when_the_jwks_cannot_be_fetched(tmp_path, key):
    token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    with (
        JwksServer([jwk(key, "k1")]) as jwks,
        ServerProcess(
            *jwks_server_args(tmp_path, jwks, "--jwt-jwks-lifespan=0.5", "--jwt-jwks-refetch-interval=0.2")
        ) as server,
    ):
        assert await session_error(server.url, token) is None
        jwks.stop()  # the identity provider is unreachable from now on

        async def unavailable() -> bool:
            error = await session_error(server.url, token)
            return error is not None and "unavailable" in error["message"]

        await wait_for(unavailable, timeout=10, interval=0.1, message="keys unavailable")
        assert server.terminate() == 0
    assert "cannot fetch JWKS keys from --jwt-jwks-url http://127.0.0.1:" in server.log
    assert "Traceback" not in server.log


@pytest.mark.gen_test(timeout=60)
async def test_sighup_fetches_the_jwks_at_once_so_a_withdrawn_key_stops_working(tmp_path, key):
    token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    with (
        JwksServer([jwk(key, "k1"), jwk(rsa_key(), "k2")]) as jwks,
        ServerProcess(
            *jwks_server_args(tmp_path, jwks, "--jwt-jwks-lifespan=3600", "--jwt-jwks-refetch-interval=3600")
        ) as server,
    ):
        assert await session_error(server.url, token) is None
        jwks.keys = [jwks.keys[1]]  # k1 withdrawn: neither lifespan nor a new kid would notice for an hour
        server.signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the reload line")
        assert f"reloaded on SIGHUP: JWKS {jwks.url} (1 signing keys)" in server.log
        assert "removed k1" in server.log
        error = await session_error(server.url, token)
        assert error is not None and "signing key" in error["message"], error
        assert jwks.fetches == 2
        assert server.terminate() == 0


def with_credentials(url: str) -> str:
    """The JWKS URL with a user and password in it, which no log line may show."""
    return url.replace("http://", "http://idp-user:idp-pass-s3cret@", 1)


def refused_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "refused the JWKS key set" in line]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"keys": []}', "the set is empty"),
        (b"<html>maintenance</html>", "not JSON"),
        (b'{"keys": "none"}', "not a JWK set"),
        (b'{"keys": [{"kty": "oct"}]}', "not a JWK set"),
        (None, "the set has no signing key with a kid"),  # only an encryption key
    ],
)
async def test_an_empty_or_invalid_jwks_after_sighup_is_refused_loudly_and_the_good_set_kept(
    tmp_path, key, body, reason
):
    token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    with JwksServer([jwk(key, "k1")]) as jwks:
        url = with_credentials(jwks.url)
        args = jwks_server_args(tmp_path, jwks, "--jwt-jwks-lifespan=3600", "--jwt-jwks-refetch-interval=0.2")
        with ServerProcess(*[a.replace(jwks.url, url) for a in args]) as server:
            assert await session_error(server.url, token) is None
            if body is None:
                jwks.keys = [{**jwk(key, "k1"), "use": "enc"}]
            else:
                jwks.body = body
            server.signal(signal.SIGHUP)
            await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the reload line")
            # Refused at ERROR, naming the URL without its credentials and saying for how long the
            # last good set is still trusted; that set (the one key) keeps working meanwhile.
            (line,) = refused_lines(server.log)
            assert " ERROR " in line, line
            assert f"--jwt-jwks-url {jwks.url}: {reason}" in line, line
            assert "keeping the last good set (1 signing keys) for at most" in line, line
            assert f"reloaded on SIGHUP: JWKS {jwks.url} (fetch failed, see above)" in server.log
            assert await session_error(server.url, token) is None
            assert jwks.fetches == 2
            assert server.terminate() == 0
    assert jwks.authorizations[0] is not None and jwks.authorizations[0].startswith("Basic ")
    assert "idp-pass-s3cret" not in server.log and "idp-user" not in server.log


@pytest.mark.gen_test(timeout=60)
async def test_an_emptied_jwks_stops_tokens_at_the_end_of_the_lifespan_not_never(tmp_path, key):
    lifespan = 4.0
    token = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    with (
        JwksServer([jwk(key, "k1")]) as jwks,
        ServerProcess(
            *jwks_server_args(
                tmp_path, jwks, f"--jwt-jwks-lifespan={lifespan:g}", "--jwt-jwks-refetch-interval=0.2"
            )
        ) as server,
    ):
        before = time.monotonic()
        assert await session_error(server.url, token) is None  # the one good fetch happens here
        after = time.monotonic()
        jwks.keys = []
        server.signal(signal.SIGHUP)
        await wait_for(lambda: refused_lines(server.log), timeout=10, message="the refusal")

        async def unavailable() -> bool:
            error = await session_error(server.url, token)
            return error is not None and "unavailable" in error["message"]

        await wait_for(unavailable, timeout=lifespan + 10, interval=0.1, message="tokens refused")
        refused_at = time.monotonic()
        # The last good set was kept for its lifespan from the fetch that brought it, not longer.
        assert before + lifespan <= refused_at <= after + lifespan + 5, (refused_at - after, lifespan)
        # Logged by the next refused fetch (every 0.2 s), which may come just
        # after the request that found the set expired.
        await wait_for(
            lambda: "tokens are refused until one is fetched" in server.log,
            timeout=5,
            message="the log saying tokens are refused",
        )
        assert all(" ERROR " in line for line in refused_lines(server.log))
        # A good set published again is taken at the next attempt.
        jwks.keys = [jwk(key, "k1")]
        await wait_for(lambda: session_opens(server.url, token), timeout=10, interval=0.1)
        assert "a good set again" in server.log
        assert server.terminate() == 0


@pytest.mark.gen_test(timeout=60)
async def test_sighup_closes_the_sessions_whose_signing_key_left_the_jwks_and_keeps_the_others(tmp_path, key):
    # The documented policy for JWT sessions: a session lives while the key that
    # verified its token is trusted. A kid withdrawn from the set (because it
    # leaked, say) closes its sessions at the reload; a broken endpoint does not.
    other_key = rsa_key()
    withdrawn = jwt.encode(claims("u1"), key, algorithm="RS256", headers={"kid": "k1"})
    staying = jwt.encode(claims("u2"), other_key, algorithm="RS256", headers={"kid": "k2"})
    with (
        JwksServer([jwk(key, "k1"), jwk(other_key, "k2")]) as jwks,
        ServerProcess(
            *jwks_server_args(
                tmp_path,
                jwks,
                "--jwt-jwks-lifespan=3600",
                "--heartbeat-interval=10",
                "--heartbeat-timeout=30",
                "--min-heartbeat-interval=0.05",
            )
        ) as server,
    ):
        first = await Client.connect(server.url, "u1", "c1", headers=bearer(withdrawn))
        second = await Client.connect(server.url, "u2", "c1", headers=bearer(staying))
        await first.connected()
        await second.connected()
        # An endpoint that fails withdraws nothing: both sessions stay.
        jwks.body = b"<html>down for maintenance</html>"
        server.signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the first reload")
        assert "2 sessions kept open" in server.log
        jwks.body = None
        jwks.keys = [jwks.keys[1]]  # k1 withdrawn
        server.signal(signal.SIGHUP)
        code, reason, messages = await first.closed(timeout=10)
        assert (code, reason) == (4401, "unauthorized"), messages
        await wait_for(lambda: server.log.count("reloaded on SIGHUP") == 2, timeout=10, message="the reload")
        assert "1 sessions kept open, 1 closed (credential revoked)" in server.log
        assert (
            "user=u1 course=c1 session=" in server.log
            and "the token's signing key was withdrawn" in server.log
        )
        await asyncio.sleep(0.1)
        assert (await second.heartbeat())["status"] == "success"
        await second.close()
        assert server.terminate() == 0


@pytest.mark.gen_test(timeout=60)
async def test_sighup_closes_the_sessions_verified_with_a_replaced_key_file(tmp_path, key, key_file):
    token = jwt.encode(claims("u1"), key, algorithm="RS256")
    secret_token = hs256(claims("u2"))
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--auth=jwt",
        "--jwt-algorithms=RS256,HS256",
        f"--jwt-public-key-file={key_file}",
        "--heartbeat-interval=10",
        "--heartbeat-timeout=30",
        "--min-heartbeat-interval=0.05",
        env={"STUDY_TIME_JWT_SECRET": SECRET},
    ) as server:
        keyed = await Client.connect(server.url, "u1", "c1", headers=bearer(token))
        hmac = await Client.connect(server.url, "u2", "c1", headers=bearer(secret_token))
        await keyed.connected()
        await hmac.connected()
        # The same key written again is no rotation: nothing closes.
        server.signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the first reload")
        assert "2 sessions kept open" in server.log
        with open(key_file, "wb") as file:
            file.write(public_pem(rsa_key()))
        server.signal(signal.SIGHUP)
        code, _, _ = await keyed.closed(timeout=10)
        assert code == 4401
        await wait_for(lambda: server.log.count("reloaded on SIGHUP") == 2, timeout=10, message="the reload")
        assert "the token's signing key was replaced" in server.log
        # A token checked with the secret cannot lapse on a reload (the secret needs a restart).
        await asyncio.sleep(0.1)
        assert (await hmac.heartbeat())["status"] == "success"
        await hmac.close()
        assert server.terminate() == 0
