"""Start-up: insecure configurations and bad auth settings stop a real server process."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from settings import Settings, SettingsError, from_sources, is_loopback
from tests.support.helpers import Client, ServerProcess, run_server


def start(*args: str) -> subprocess.CompletedProcess:
    """Run ``python server.py ARGS`` expecting it to refuse to start."""
    return run_server("--port=0", *args)


def test_none_on_a_public_address_refuses_to_start(tmp_path):
    result = start("--host=0.0.0.0", f"--store=sqlite:///{tmp_path}/db")
    assert result.returncode == 2
    assert "--allow-insecure-auth" in result.stderr and "--auth" in result.stderr
    assert "listening" not in result.stderr


@pytest.mark.gen_test(timeout=60)
async def test_allow_insecure_auth_starts_and_warns(tmp_path):
    with ServerProcess(
        "--host=0.0.0.0", "--allow-insecure-auth", f"--store=sqlite:///{tmp_path}/db"
    ) as server:
        client = await Client.connect(server.url)
        await client.connected()
        await client.close()
        assert server.terminate() == 0
    assert "WARNING" in server.log and "--auth=none on --host=0.0.0.0" in server.log


def test_none_with_every_origin_allowed_refuses_to_start(tmp_path):
    result = start("--allowed-origins=*", f"--store=sqlite:///{tmp_path}/db")
    assert result.returncode == 2
    assert "invalid --allowed-origins" in result.stderr and "--auth=none" in result.stderr
    assert "--allow-insecure-auth" in result.stderr and "Traceback" not in result.stderr
    # The same in the environment, and the origins listed one by one are fine.
    result = run_server("--port=0", env={"STUDY_TIME_ALLOWED_ORIGINS": "https://lms.example.com,*"})
    assert result.returncode == 2 and "invalid --allowed-origins" in result.stderr


@pytest.mark.gen_test(timeout=60)
async def test_none_with_every_origin_starts_with_allow_insecure_auth_and_warns(tmp_path):
    with ServerProcess(
        "--allowed-origins=*", "--allow-insecure-auth", f"--store=sqlite:///{tmp_path}/db"
    ) as server:
        client = await Client.connect(server.url, headers={"Origin": "https://elsewhere.example"})
        await client.connected()
        await client.close()
        assert server.terminate() == 0
    assert "WARNING" in server.log and "--auth=none with --allowed-origins=*" in server.log


@pytest.mark.gen_test(timeout=60)
async def test_none_with_listed_origins_starts(tmp_path):
    with ServerProcess(
        "--allowed-origins=https://lms.example.com", f"--store=sqlite:///{tmp_path}/db"
    ) as server:
        client = await Client.connect(server.url, headers={"Origin": "https://lms.example.com"})
        await client.connected()
        await client.close()
        assert server.terminate() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth=jwt"], "invalid --jwt-secret: required"),
        (["--auth=jwt", "--jwt-secret=short"], "at least 32 bytes (256 bits) long for HS256 (RFC 7518"),
        (["--auth=jwt", "--jwt-secret=" + "x" * 31], "invalid --jwt-secret: must be at least 32 bytes"),
        (
            ["--auth=jwt", "--jwt-algorithms=HS256,HS512", "--jwt-secret=" + "x" * 63],
            "invalid --jwt-secret: must be at least 64 bytes (512 bits) long for HS512",
        ),
        (
            # deploy/study-time.env.example's placeholder: long enough, and public.
            ["--auth=jwt", "--jwt-secret=change-me-to-at-least-32-random-bytes-of-secret"],
            "invalid --jwt-secret: this is the placeholder of the example settings",
        ),
        (
            ["--auth=jwt", "--jwt-secret=" + "x" * 40 + "CHANGEME"],
            "invalid --jwt-secret: this is the placeholder",
        ),
        (["--auth=jwt", "--jwt-algorithms=none"], "invalid --jwt-algorithms"),
        (["--auth=jwt", "--jwt-algorithms=RS256", "--jwt-public-key-file=/nonexistent.pem"], "cannot read"),
        (["--auth=token", "--tokens-file=/"], "invalid --tokens-file: cannot read /"),
        (["--auth=no_such_module:Auth"], "invalid --auth: cannot import module"),
        (["--auth=not a backend"], "invalid --auth"),
        (["--allowed-origins=https://lms.example.com/path"], "invalid --allowed-origins"),
        (["--allowed-hosts=http://study.example.lan"], "invalid --allowed-hosts"),
        (["--allowed-hosts=study.example.lan:8080"], "invalid --allowed-hosts"),
        (
            ["--auth=jwt", "--jwt-algorithms=RS256", "--jwt-jwks-url=http://idp.example.com/jwks.json"],
            "invalid --jwt-jwks-url: keys fetched over plain http",
        ),
    ],
)
def test_bad_auth_settings_stop_start_up_naming_the_setting(tmp_path, args, message):
    result = start(f"--store=sqlite:///{tmp_path}/db", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("algorithms", "length"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_a_secret_as_long_as_the_hash_output_starts(tmp_path, algorithms, length):
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/db",
        "--auth=jwt",
        f"--jwt-algorithms={algorithms}",
        env={"STUDY_TIME_JWT_SECRET": "k" * length},
    ) as server:
        assert server.terminate() == 0
    assert f"authentication: jwt ({algorithms}; secret)" in server.log


def test_the_start_up_line_names_the_jwks_url_before_any_key_is_fetched(tmp_path):
    url = "http://127.0.0.1:9/.well-known/jwks.json"  # nothing answers: no key is fetched
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/db", "--auth=jwt", "--jwt-algorithms=RS256", f"--jwt-jwks-url={url}"
    ) as server:
        assert server.terminate() == 0
    assert f"authentication: jwt (RS256; JWKS {url}, keys trusted 300s)" in server.log


def test_the_jwt_secret_is_never_echoed(tmp_path):
    result = start(f"--store=sqlite:///{tmp_path}/db", "--auth=jwt", "--jwt-secret=hunter2-too-short")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def test_settings_parse_and_validate():
    settings = from_sources(
        {
            "jwt_algorithms": "HS256, RS256",
            "allowed_origins": "https://LMS.example.com/, http://localhost:3000",
        },
        {},
    )
    assert settings.jwt_algorithms == ("HS256", "RS256")
    assert settings.allowed_origins == ("https://lms.example.com", "http://localhost:3000")
    assert from_sources({"host": "0.0.0.0", "allow_insecure_auth": "true"}, {}).auth == "none"
    with pytest.raises(SettingsError, match="--allow-insecure-auth"):
        from_sources({"host": "::"}, {})
    with pytest.raises(SettingsError, match="STUDY_TIME_AUTH"):
        from_sources({}, {"STUDY_TIME_AUTH": "kerberos"})
    for host, loopback in [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ]:
        assert is_loopback(host) is loopback, host
    replace(Settings(), auth="jwt", host="0.0.0.0").validate()  # a real backend may listen anywhere
