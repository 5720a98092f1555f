"""``--auth=jwt``: JSON Web Tokens checked with PyJWT.

Only the algorithms in ``--jwt-algorithms`` are accepted (``none`` can never
be listed), and each family is verified with its own key: HS* with
``--jwt-secret``, the asymmetric ones with ``--jwt-public-key-file`` or the
keys at ``--jwt-jwks-url``. Choosing the key by family is what defeats
algorithm confusion (an HS256 token "signed" with the RSA public key as its
HMAC secret): an HS* token is only ever checked against the secret.

``exp`` and ``sub`` are required (``aud`` and ``iss`` too when configured),
with ``--jwt-leeway`` seconds of clock skew. An optional claim
(``--jwt-courses-claim``, default ``courses``) limits a token to some
courses; ``--jwt-roles-claim`` (default ``roles``) carries roles.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Self
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import get_default_algorithms

from settings import Settings, SettingsError, is_loopback

from .base import Authenticator, AuthRequest, Identity, require_credential, unauthorized
from .jwks import JwksKeys, JwksUnavailable, public_url

log = logging.getLogger("study_time.auth")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: RFC 7518 3.2: an HMAC key must be at least as long as the hash output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
#: Placeholders such as deploy/study-time.env.example's: long enough, and known to everyone.
PLACEHOLDER = re.compile(r"change[-_ .]?me", re.IGNORECASE)
MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"  # noqa: S105 (a command, not a secret)
JWKS_TIMEOUT = 5.0

# Fixed, credential-free reasons for PyJWT's errors, most specific first.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidSignatureError, "the token's signature is not valid"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.exceptions.InvalidSubjectError, "the token's sub claim must be a string"),
    (jwt.DecodeError, "the token is malformed"),
)


class JwtAuthenticator(Authenticator):
    name = "jwt"

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        secret: str | None = None,
        public_key: bytes | None = None,
        public_key_file: str | None = None,
        jwks: JwksKeys | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 10.0,
        courses_claim: str = "courses",
        roles_claim: str = "roles",
    ) -> None:
        self.hmac_algorithms = [a for a in algorithms if a in HMAC_ALGORITHMS]
        self.key_algorithms = [a for a in algorithms if a not in HMAC_ALGORITHMS]
        self.secret = secret
        self.public_key = public_key
        self.public_key_file = public_key_file
        self.jwks = jwks
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.courses_claim = courses_claim
        self.roles_claim = roles_claim
        self.required = ["exp", "sub"] + (["aud"] if audience else []) + (["iss"] if issuer else [])

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The backend for ``settings``, each key source checked by its own function."""
        algorithms = settings.jwt_algorithms
        keyed = [a for a in algorithms if a not in HMAC_ALGORITHMS]
        _check_key_sources(settings, keyed)
        return cls(
            algorithms=algorithms,
            secret=_secret(settings),
            public_key=_public_key(settings, keyed),
            public_key_file=settings.jwt_public_key_file,
            jwks=_jwks(settings),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            courses_claim=settings.jwt_courses_claim,
            roles_claim=settings.jwt_roles_claim,
        )

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        token = require_credential(request)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the credential is not a JWT") from None
        alg = header.get("alg")
        if alg in self.hmac_algorithms:
            key: Any = self.secret
            grant = None  # the secret changes only with a restart
            algorithms = self.hmac_algorithms
        elif alg in self.key_algorithms:
            key, grant = await self._verification_key(token, header)
            algorithms = self.key_algorithms
        else:
            raise unauthorized("the token's algorithm is not allowed")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self.required},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(_reason(exc)) from None
        return Identity(
            user_id=payload["sub"],
            courses=self._courses(payload),
            roles=self._roles(payload),
            claims=MappingProxyType(payload),
            grant=grant,
        )

    def revoked(self, grant: str, user_id: str, course_id: str) -> str | None:
        """A session lapses when the key that verified its token is no longer trusted: its
        ``kid`` left the JWKS set fetched last, or the key file now holds another key."""
        kind, _, value = grant.partition(":")
        if kind == "kid" and self.jwks is not None and self.jwks.withdrawn(value):
            return "the token's signing key was withdrawn"
        if kind == "file" and value != _fingerprint(self.public_key):
            return "the token's signing key was replaced"
        return None

    async def _verification_key(self, token: str, header: dict) -> tuple[Any, str]:
        """The key to verify an asymmetric token with, and the session's grant naming it."""
        if self.jwks is not None and (self.public_key is None or "kid" in header):
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise unauthorized("the token names no signing key (kid)")
            try:
                signing_key = await self.jwks.key(kid)
            except JwksUnavailable:
                raise unauthorized("the signing keys are unavailable, try again later") from None
            if signing_key is None:
                raise unauthorized("the token's signing key is unknown")
            return signing_key.key, f"kid:{kid}"
        return self.public_key, f"file:{_fingerprint(self.public_key)}"

    def _courses(self, payload: dict) -> frozenset[str] | None:
        value = payload.get(self.courses_claim)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise unauthorized(f"the token's {self.courses_claim} claim must be a list of course ids")
        return frozenset(value)

    def _roles(self, payload: dict) -> frozenset[str]:
        value = payload.get(self.roles_claim)
        if value is None:
            return frozenset()
        if isinstance(value, str):  # OAuth-style space-separated list
            return frozenset(value.split())
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise unauthorized(f"the token's {self.roles_claim} claim must be a list of role names")
        return frozenset(value)

    async def reload(self) -> str | None:
        """SIGHUP: read ``--jwt-public-key-file`` again and fetch the JWKS key set now.

        A key file that no longer reads as a usable key keeps the key loaded
        before (logged); the secret and the other settings need a restart.
        """
        done = []
        if self.public_key_file:
            try:
                self.public_key = _read_public_key(self.public_key_file, self.key_algorithms)
                done.append(f"--jwt-public-key-file {self.public_key_file}")
            except SettingsError as exc:
                log.error("not reloaded, keeping the key loaded before: %s", exc)
                done.append(f"--jwt-public-key-file {self.public_key_file} (unreadable: kept the old key)")
        if self.jwks is not None:
            fetched = await self.jwks.refresh()
            outcome = f"{len(self.jwks)} signing keys" if fetched else "fetch failed, see above"
            done.append(f"JWKS {public_url(self.jwks.url)} ({outcome})")
        return "; ".join(done) or None

    def describe(self) -> str:
        keys = []
        if self.secret:
            keys.append("secret")
        if self.public_key:
            keys.append("public key file")
        if self.jwks is not None:  # its keys may not be fetched yet: no length
            keys.append(f"JWKS {public_url(self.jwks.url)}, keys trusted {self.jwks.lifespan:g}s")
        algorithms = ",".join(self.hmac_algorithms + self.key_algorithms)
        return f"jwt ({algorithms}; {', '.join(keys)})"


def _fingerprint(pem: bytes | None) -> str:
    """A short digest telling one public key file's content from another (not a secret)."""
    return hashlib.sha256(pem or b"").hexdigest()[:16]


def _secret(settings: Settings) -> str | None:
    """``--jwt-secret``: required with an HS* algorithm, never with none; long enough, not a placeholder."""
    secret = settings.jwt_secret
    hmac = [a for a in settings.jwt_algorithms if a in HMAC_ALGORITHMS]
    if hmac and not secret:
        raise SettingsError(f"invalid --jwt-secret: required because --jwt-algorithms lists {hmac[0]}")
    if not secret:
        return None
    if not hmac:
        listed = ",".join(settings.jwt_algorithms)
        raise SettingsError(f"invalid --jwt-secret: given, but --jwt-algorithms={listed} has no HS*")
    if PLACEHOLDER.search(secret):
        raise SettingsError(
            "invalid --jwt-secret: this is the placeholder of the example settings, not a secret;"
            f" make one with: {MAKE_SECRET}"
        )
    strongest = max(hmac, key=MIN_SECRET_BYTES.__getitem__)
    needed = MIN_SECRET_BYTES[strongest]
    if len(secret.encode()) < needed:
        raise SettingsError(
            f"invalid --jwt-secret: must be at least {needed} bytes ({needed * 8} bits) long for"
            f" {strongest} (RFC 7518, section 3.2); make one with: {MAKE_SECRET}"
        )
    return secret


def _check_key_sources(settings: Settings, keyed: Sequence[str]) -> None:
    """RS*/PS*/ES*/EdDSA need a key file or a JWKS URL, and those need such an algorithm."""
    keyfile, jwks_url = settings.jwt_public_key_file, settings.jwt_jwks_url
    if keyed and not (keyfile or jwks_url):
        raise SettingsError(
            f"invalid --jwt-public-key-file: --jwt-algorithms lists {keyed[0]}, which needs"
            " --jwt-public-key-file or --jwt-jwks-url"
        )
    if (keyfile or jwks_url) and not keyed:
        which = "--jwt-public-key-file" if keyfile else "--jwt-jwks-url"
        listed = ",".join(settings.jwt_algorithms)
        raise SettingsError(
            f"invalid {which}: given, but --jwt-algorithms={listed} lists no RS*/PS*/ES*/EdDSA algorithm"
        )


def _public_key(settings: Settings, keyed: Sequence[str]) -> bytes | None:
    """``--jwt-public-key-file``, read and checked against every asymmetric algorithm listed."""
    keyfile = settings.jwt_public_key_file
    return _read_public_key(keyfile, keyed) if keyfile else None


def _jwks(settings: Settings) -> JwksKeys | None:
    """The key set at ``--jwt-jwks-url`` (fetched when first needed), over https unless on loopback."""
    url = settings.jwt_jwks_url
    if not url:
        return None
    host = urlsplit(url).hostname or ""
    if url.startswith("http://") and not is_loopback(host) and not settings.allow_insecure_auth:
        raise SettingsError(
            "invalid --jwt-jwks-url: keys fetched over plain http can be replaced in transit;"
            " use https (or --allow-insecure-auth)"
        )
    # Our own key cache, not PyJWKClient's: its per-kid cache never
    # forgets a key the provider has withdrawn (see auth/jwks.py).
    return JwksKeys(
        url,
        lifespan=settings.jwt_jwks_lifespan,
        min_refetch_interval=settings.jwt_jwks_refetch_interval,
        timeout=JWKS_TIMEOUT,
    )


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"the token is not valid ({type(exc).__name__})"


def _read_public_key(path: str, algorithms: Sequence[str]) -> bytes:
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as exc:
        raise SettingsError(f"invalid --jwt-public-key-file: cannot read {path}: {exc.strerror}") from None
    implementations = get_default_algorithms()
    for name in algorithms:
        try:
            implementations[name].prepare_key(pem)
        except Exception:
            raise SettingsError(
                f"invalid --jwt-public-key-file: {path} is not a PEM public key usable with {name}"
            ) from None
    return pem
