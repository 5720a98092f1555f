"""Helpers for the authentication tests: keys, tokens, refusals, a JWKS server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.helpers import Client, run_server

SECRET = "test-secret-that-is-at-least-32-bytes-long"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(sub: str = "u1", lifetime: float = 300, **extra) -> dict:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + lifetime, **extra}


def hs256(payload: dict, secret: str = SECRET, **headers) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(payload: dict, key: bytes) -> str:
    """An HS256 token whose HMAC key is ``key`` (PyJWT itself refuses to make one with a PEM key)."""
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(payload).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def unsigned(payload: dict) -> str:
    """A token with ``alg: none`` and no signature."""
    return (
        _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(payload).encode())
        + "."
    )


async def refused(client: Client, close_code: int, error_code: str) -> dict:
    """Wait for the server to close ``client``; check the close code and the error message sent first."""
    code, _reason, messages = await client.closed()
    assert code == close_code, (code, messages)
    assert messages, "no error message before the close"
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == error_code, messages
    return messages[-1]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 in a thread, counting how often it is fetched."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        #: When set, served instead of the set of ``keys`` (a broken endpoint).
        self.body: bytes | None = None
        self.fetches = 0
        #: The Authorization header of each request (credentials in the URL become Basic auth).
        self.authorizations: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                outer.authorizations.append(self.headers.get("Authorization"))
                body = outer.body if outer.body is not None else json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering (the identity provider becomes unreachable); stopping twice is harmless."""
        self.server.shutdown()
        self.server.server_close()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


def tokens(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python server.py tokens ARGS`` for real."""
    result = run_server("tokens", *args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def create(path, *args: str) -> str:
    result = tokens("create", *args, "--tokens-file", str(path))
    token = result.stdout.strip()
    assert "\n" not in token and token.startswith("stt_")
    return token
