"""Authentication at the socket: transports, subprotocols, origins, none and plugins."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tornado.httpclient import HTTPClientError

from auth import build_authenticator
from settings import Settings, SettingsError
from tests.support.auth_helpers import SECRET, bearer, claims, hs256, refused
from tests.support.helpers import Client

JWT = dict(auth="jwt", jwt_secret=SECRET)


@pytest.mark.gen_test
async def test_none_trusts_the_user_id_on_loopback(start_service):
    service = await start_service()
    assert service.auth.name == "none"
    client = await Client.connect(service.url, "anyone", "c1")
    await client.connected()
    await client.close()


@pytest.mark.gen_test
async def test_the_server_selects_study_time_v1_and_never_the_bearer_protocol(start_service):
    service = await start_service()
    client = await Client.connect(service.url, subprotocols=["bearer.abc", "study-time.v1"])
    await client.connected()
    assert client.conn.selected_subprotocol == "study-time.v1"
    await client.close()
    plain = await Client.connect(service.url)
    await plain.connected()
    assert plain.conn.selected_subprotocol is None
    await plain.close()


@pytest.mark.gen_test
async def test_different_credentials_in_two_transports_are_refused(start_service):
    service = await start_service(**JWT)
    mine, other = hs256(claims("u1")), hs256(claims("u2"))
    client = await Client.connect(
        service.url, headers=bearer(mine), subprotocols=["study-time.v1", f"bearer.{other}"]
    )
    message = await refused(client, 4401, "unauthorized")
    assert "more than one" in message["message"]
    same = await Client.connect(
        service.url, headers=bearer(mine), query=f"userId=u1&courseId=c1&token={mine}"
    )
    await same.connected()
    await same.close()


@pytest.mark.gen_test
async def test_a_non_bearer_authorization_header_is_unauthorized(start_service):
    service = await start_service(**JWT)
    client = await Client.connect(service.url, headers={"Authorization": "Basic dTE6cGFzc3dvcmQ="})
    await refused(client, 4401, "unauthorized")


@pytest.mark.gen_test
async def test_invalid_ids_are_refused_before_authentication(start_service):
    service = await start_service(**JWT)
    client = await Client.connect(service.url, "bad!id", "c1", headers=bearer(hs256(claims("u1"))))
    await refused(client, 4400, "invalid_params")


# Origins: Tornado asks check_origin only when an Origin header is present.


@pytest.mark.gen_test
async def test_by_default_only_the_same_host_may_open_the_socket(start_service):
    service = await start_service()
    host = service.url.removeprefix("ws://")
    same = await Client.connect(service.url, headers={"Origin": f"http://{host}"})
    await same.connected()
    await same.close()
    with pytest.raises(HTTPClientError) as refusal:
        await Client.connect(service.url, headers={"Origin": "https://evil.example.com"})
    assert refusal.value.code == 403
    assert len(service.tracker) == 0


@pytest.mark.gen_test
async def test_allowed_origins_are_exact(start_service):
    service = await start_service(allowed_origins=("https://lms.example.com",))
    ok = await Client.connect(service.url, headers={"Origin": "https://LMS.example.com"})
    await ok.connected()
    await ok.close()
    for origin in ("https://lms.example.com.evil.com", "http://lms.example.com", "null"):
        with pytest.raises(HTTPClientError) as refusal:
            await Client.connect(service.url, headers={"Origin": origin})
        assert refusal.value.code == 403, origin
    # The server's own origin stays allowed (Tornado accepts same-origin requests before asking).
    host = service.url.removeprefix("ws://")
    same = await Client.connect(service.url, headers={"Origin": f"http://{host}"})
    await same.connected()
    await same.close()


@pytest.mark.gen_test
async def test_star_allows_every_origin_and_no_origin_is_judged_by_credential(start_service):
    service = await start_service(**JWT, allowed_origins=("*",))
    anywhere = await Client.connect(
        service.url, headers={"Origin": "https://elsewhere.example", **bearer(hs256(claims("u1")))}
    )
    await anywhere.connected()
    await anywhere.close()
    no_origin = await Client.connect(service.url)
    await refused(no_origin, 4401, "unauthorized")


# Plugins by dotted path.


@pytest.mark.gen_test
async def test_the_example_plugin_loads_by_dotted_path(start_service):
    service = await start_service(auth="examples.header_auth:HeaderAuthenticator")
    assert service.auth.name == "header"
    client = await Client.connect(service.url, "u1", "c1", headers={"X-Remote-User": "u1"})
    await client.connected()
    await client.close()
    nobody = await Client.connect(service.url, "u1", "c1")
    await refused(nobody, 4401, "unauthorized")
    someone_else = await Client.connect(service.url, "u1", "c1", headers={"X-Remote-User": "u2"})
    await refused(someone_else, 4403, "forbidden")


@pytest.mark.gen_test
async def test_a_reload_closes_the_sessions_whose_grant_a_plugin_says_lapsed(start_service, caplog):
    service = await start_service(auth="tests.support.auth_plugins:Revocable", min_heartbeat_interval=0.01)
    clients = {}
    for user, grant in (("u1", "g1"), ("u2", "g2"), ("u3", None)):
        headers = {"X-User": user, **({"X-Grant": grant} if grant else {})}
        clients[user] = await Client.connect(service.url, user, "c1", headers=headers)
        await clients[user].connected()
    service.auth.lapsed = frozenset({"g1"})
    await service.reload()
    code, _, messages = await clients["u1"].closed()
    assert code == 4401 and messages[-1]["code"] == "unauthorized", messages
    assert "lapsed in the plugin" in caplog.text
    # A plugin whose check fails closes nothing and the server lives on.
    bug = await Client.connect(service.url, "u4", "c1", headers={"X-User": "u4", "X-Grant": "bug"})
    await bug.connected()
    service.auth.lapsed = frozenset({"bug", "g2"})
    await service.reload()
    assert "failed to check sessions: RuntimeError" in caplog.text
    for user in ("u2", "u3"):
        assert (await clients[user].heartbeat())["status"] == "success"
        await clients[user].close()
    assert (await bug.heartbeat())["status"] == "success"
    await bug.close()


@pytest.mark.gen_test
async def test_a_plugin_that_raises_refuses_the_connection_and_the_server_lives_on(start_service):
    service = await start_service(auth="tests.support.auth_plugins:Broken")
    client = await Client.connect(service.url)
    await refused(client, 4401, "unauthorized")
    again = await Client.connect(service.url)
    await refused(again, 4401, "unauthorized")


@pytest.mark.parametrize(
    ("dotted", "why"),
    [
        ("no_such_module:Thing", "cannot import module 'no_such_module'"),
        ("tests.support.auth_plugins:Missing", "has no 'Missing'"),
        ("tests.support.auth_plugins:not_a_class", "not a subclass of auth.Authenticator"),
        ("tests.support.auth_plugins:NotAnAuthenticator", "not a subclass of auth.Authenticator"),
        ("tests.support.auth_plugins:Unfinished", "does not implement authenticate"),
        ("tests.support.auth_plugins:Blocking", "must be 'async def'"),
    ],
)
def test_bad_plugins_stop_start_up_with_a_clear_message(dotted, why):
    with pytest.raises(SettingsError) as error:
        build_authenticator(replace(Settings(), auth=dotted))
    assert str(error.value).startswith("invalid --auth: ")
    assert why in str(error.value)
