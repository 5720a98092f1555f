"""``--auth=token``: opaque API tokens for services and kiosks.

Tokens live in ``--tokens-file``, a JSON file holding only their SHA-256
hashes, each mapped to a user id and optional roles and courses::

    {"version": 1, "tokens": [{"id": "3f9c2a1b", "sha256": "<64 hex>", "user": "123",
      "roles": ["teacher"], "courses": ["math-101"], "created": "2024-05-01T08:00:00+00:00"}]}

``python server.py tokens create --user 123`` makes one and prints it once;
``tokens list`` and ``tokens revoke ID`` manage them. The server notices a
changed file (its mtime, size or inode) on the next request and reloads it, so
adding or revoking a token needs no restart; SIGHUP reloads it at once.

Why a plain SHA-256 and not a slow password hash (scrypt, bcrypt): the
tokens are 256 random bits, not passwords a person chose, so nobody can
guess one from its hash whatever the hash speed; a slow hash would only make
every connection cost milliseconds of CPU (an easy denial of service) for no
gain. An HMAC with a server key would not help either: whoever can read the
file can usually read the key. Lookups are by hash in a dict, so there is no
secret-dependent string comparison to time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Self

from settings import Settings, SettingsError, command, env_name, program
from tracking.protocol import valid_id

from .access import may_study
from .base import Authenticator, AuthError, AuthRequest, Identity, require_credential, unauthorized

log = logging.getLogger("study_time.auth")

TOKEN_PREFIX = "stt_"  # noqa: S105 (recognisable in a leaked-secret scan; not entropy)
TOKEN_BYTES = 32
FILE_VERSION = 1


class TokensFileError(ValueError):
    """The tokens file cannot be read or is not a valid tokens file."""


@dataclass(frozen=True)
class TokenEntry:
    id: str
    sha256: str
    user: str
    roles: frozenset[str]
    courses: frozenset[str] | None
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "user": self.user,
            "roles": sorted(self.roles),
            "courses": None if self.courses is None else sorted(self.courses),
            "created": self.created,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def parse_entries(data: Any) -> list[TokenEntry]:
    """Validate a tokens file's JSON; raise :class:`TokensFileError` saying what is wrong."""
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
        raise TokensFileError(f"expected an object with version {FILE_VERSION}")
    items = data.get("tokens")
    if not isinstance(items, list):
        raise TokensFileError("expected a 'tokens' list")
    entries = []
    for index, item in enumerate(items):
        try:
            entries.append(_entry(item))
        except (TypeError, ValueError, KeyError) as exc:
            raise TokensFileError(f"token #{index + 1}: {exc}") from None
    return entries


def _entry(item: Mapping[str, Any]) -> TokenEntry:
    digest, user = item["sha256"], item["user"]
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    if not isinstance(user, str) or not valid_id(user):
        raise ValueError("user must be a valid user id")
    roles = item.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise ValueError("roles must be a list of names")
    courses = item.get("courses")
    if courses is not None and (not isinstance(courses, list) or not all(valid_id(c) for c in courses)):
        raise ValueError("courses must be null or a list of course ids")
    return TokenEntry(
        id=str(item.get("id") or digest[:8]),
        sha256=digest,
        user=user,
        roles=frozenset(roles),
        courses=None if courses is None else frozenset(courses),
        created=item.get("created"),
    )


def check_not_writable_by_others(path: str, mode: int) -> None:
    """Refuse a tokens file that users other than its owner may write (as OpenSSH refuses keys).

    Whoever can write the file can add a token for any user, admins
    included: such a file is not trusted, whatever it holds.
    """
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if mode & stat.S_IWOTH else "its group"
        raise TokensFileError(
            f"{path} is writable by {who} (mode {stat.S_IMODE(mode):04o}), so anyone there could add"
            f" a token; refused until it is not: chmod 600 {path}"
        )


def read_entries(path: str) -> list[TokenEntry]:
    try:
        with open(path, encoding="utf-8") as file:
            check_not_writable_by_others(path, os.fstat(file.fileno()).st_mode)
            data = json.load(file)
    except OSError as exc:
        raise TokensFileError(f"cannot read {path}: {exc.strerror}") from None
    except TokensFileError:
        raise
    except ValueError as exc:
        raise TokensFileError(f"{path} is not valid JSON: {exc}") from None
    return parse_entries(data)


def write_entries(path: str, entries: Iterable[TokenEntry]) -> None:
    """Replace the file atomically (a reader sees the old or the new file, never half), mode 0600."""
    directory = private_directory(path)
    data = {"version": FILE_VERSION, "tokens": [entry.to_json() for entry in entries]}
    fd, temporary = tempfile.mkstemp(prefix=".tokens-", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def private_directory(path: str) -> str:
    """The directory of ``path``, with every missing folder up to it created mode 0700
    (``os.makedirs`` gives intermediate folders the umask's mode, 0777 under umask 000)."""
    directory = os.path.dirname(os.path.abspath(path))
    missing = []
    head = directory
    while not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another command made it meanwhile
            os.mkdir(folder, 0o700)  # the umask can only take bits away
    return directory


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of the tokens file at ``path``.

    The lock is ``flock`` on a separate ``PATH.lock`` file (created owner-only):
    the tokens file itself is replaced on every write (:func:`write_entries`),
    so a lock on it would be taken on an inode the next writer no longer
    uses. The lock is released when the descriptor closes, also if the
    process dies. The server only reads the file, and never needs the lock:
    each write replaces it atomically.
    """
    private_directory(path)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class TokenAuthenticator(Authenticator):
    name = "token"

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int] | None = None
        self._by_hash: dict[str, TokenEntry] = {}
        self.load(strict=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        try:
            return cls(settings.tokens_file)
        except TokensFileError as exc:
            raise SettingsError(
                f"invalid --tokens-file: {exc} ({create_hint(settings.tokens_file)})"
            ) from None

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        token = require_credential(request)
        self.reload_if_changed()
        entry = self._by_hash.get(hash_token(token))
        if entry is None:
            raise unauthorized("unknown or revoked token")
        return _identity(entry)

    def revoked(self, grant: str, user_id: str, course_id: str) -> str | None:
        """A session's token (``grant`` is its hash) lapses when the file reloaded last no longer
        lists it, or lists it for another user or fewer courses."""
        entry = self._by_hash.get(grant)
        if entry is None:
            return "the token was revoked"
        try:
            may_study(_identity(entry), user_id, course_id)
        except AuthError as exc:
            return exc.reason
        return None

    def reload_if_changed(self) -> None:
        """Reload when the file changed (or its mode); one ``stat`` per request, microseconds."""
        if self._stat() != self._signature:
            self.load()

    def _stat(self) -> tuple[int, int, int, int] | None:
        """What tells a changed file: mtime, size, inode, and mode (a ``chmod o+w`` is noticed)."""
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino, found.st_mode)

    async def reload(self) -> str:
        """SIGHUP: read the file now, changed or not (an edit within the mtime's granularity
        keeping the size and inode is otherwise not noticed)."""
        self.load()
        return f"--tokens-file {self.path} ({len(self)} tokens)"

    def load(self, *, strict: bool = False) -> None:
        """Read the file again. A missing file means no tokens: at the first
        start, none made yet (logged, with the command that makes one); later,
        deleting it revokes them all.

        At start-up (``strict``) an unreadable or invalid file is an error.
        Later it keeps the tokens loaded last and logs an error: a
        half-finished hand edit must not lock everyone out.
        """
        signature = self._stat()
        try:
            if signature is None:
                raise FileNotFoundError(self.path)
            entries = read_entries(self.path)
        except FileNotFoundError:
            if strict:
                # The first start, before any token was made: nothing to accept yet.
                log.warning(
                    "--tokens-file %s does not exist yet: every token is refused until it does (%s;"
                    " no restart needed)",
                    self.path,
                    create_hint(self.path),
                )
            else:
                log.warning("--tokens-file %s is gone: every token is refused until it is back", self.path)
            self._signature, self._by_hash = None, {}
            return
        except TokensFileError as exc:
            if strict:
                raise
            log.error("--tokens-file not reloaded, keeping the %d tokens loaded before: %s", len(self), exc)
            self._signature = signature  # not retried until the file changes again
            return
        self._by_hash = {entry.sha256: entry for entry in entries}
        self._signature = signature
        log.info("loaded %d tokens from --tokens-file %s", len(self._by_hash), self.path)

    def __len__(self) -> int:
        return len(self._by_hash)

    def describe(self) -> str:
        return f"token ({len(self)} tokens in {self.path})"


def _identity(entry: TokenEntry) -> Identity:
    return Identity(
        user_id=entry.user,
        courses=entry.courses,
        roles=entry.roles,
        claims=MappingProxyType({"token_id": entry.id}),
        grant=entry.sha256,  # what the file stores; the token itself is never kept
    )


# The command line: python server.py tokens create|list|revoke


def create_hint(path: str) -> str:
    """How to make the first token, with the command the user is running (``study-time`` installed)."""
    return f"create tokens with: {command()} tokens create --user ID --tokens-file {path}"


def default_tokens_file() -> str:
    return os.environ.get(env_name("tokens_file")) or Settings.tokens_file


def _list_of_ids(text: str) -> list[str]:
    values = [item.strip() for item in text.split(",") if item.strip()]
    for value in values:
        if not valid_id(value):
            raise argparse.ArgumentTypeError(f"{value!r} is not a valid id")
    return values


def _course_ids(text: str) -> list[str]:
    """At least one course: a token valid for none would be refused on every connection (4403)."""
    values = _list_of_ids(text)
    if not values:
        raise argparse.ArgumentTypeError("must list at least one course id (omit --courses for every course)")
    return values


def _user_id(text: str) -> str:
    if not valid_id(text):
        raise argparse.ArgumentTypeError("must be 1-128 characters of letters, digits and _ . : @ -")
    return text


def cli(argv: Sequence[str]) -> int:
    """``python server.py tokens ...``: create, list and revoke API tokens."""
    prog = f"{program()} tokens"
    parser = argparse.ArgumentParser(prog=prog, description="Manage --auth=token API tokens.")
    parser.add_argument(
        "--tokens-file",
        default=default_tokens_file(),
        help=f"the tokens file (default: {Settings.tokens_file}; env {env_name('tokens_file')})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a token, store its hash and print it once")
    create.add_argument("--user", required=True, type=_user_id, help="the user id the token stands for")
    create.add_argument(
        "--roles", type=_list_of_ids, default=[], help="comma-separated roles (admin, teacher)"
    )
    create.add_argument(
        "--courses",
        type=_course_ids,
        default=None,
        help="comma-separated course ids the token is limited to (omit for every course)",
    )
    listing = commands.add_parser("list", help="list tokens (ids, users, roles, courses; never the tokens)")
    revoke = commands.add_parser("revoke", help="remove a token by its id")
    revoke.add_argument("id")
    # Let --tokens-file come after the command too, as in `tokens create --tokens-file PATH`.
    for sub in (create, listing, revoke):
        sub.add_argument("--tokens-file", dest="tokens_file_late", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    path = getattr(args, "tokens_file_late", None) or args.tokens_file

    if args.command == "list":
        try:
            entries = read_entries(path)  # a missing file is an error here: a wrong path lists nothing
        except TokensFileError as exc:
            print(f"{program()} tokens: error: {exc}", file=sys.stderr)
            return 1
        for entry in entries:
            courses = "all" if entry.courses is None else ",".join(sorted(entry.courses))
            roles = ",".join(sorted(entry.roles)) or "-"
            print(f"{entry.id}\tuser={entry.user}\troles={roles}\tcourses={courses}\tcreated={entry.created}")
        return 0
    # create and revoke read, change and write the file: under the lock, so
    # that a create racing a revoke cannot write the revoked token back.
    with locked(path):
        try:
            entries = read_entries(path) if os.path.exists(path) else []
        except TokensFileError as exc:
            print(f"{program()} tokens: error: {exc}", file=sys.stderr)
            return 2
        if args.command == "create":
            return _create(path, entries, args)
        return _revoke(path, entries, args.id)


def _create(path: str, entries: list[TokenEntry], args: argparse.Namespace) -> int:
    token = new_token()
    entry = TokenEntry(
        id=secrets.token_hex(4),
        sha256=hash_token(token),
        user=args.user,
        roles=frozenset(args.roles),
        courses=None if args.courses is None else frozenset(args.courses),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_entries(path, [*entries, entry])
    print(f"token {entry.id} for user {entry.user} stored in {path}; it is shown only once:", file=sys.stderr)
    print(token)
    return 0


def _revoke(path: str, entries: list[TokenEntry], token_id: str) -> int:
    kept = [entry for entry in entries if entry.id != token_id]
    if len(kept) == len(entries):
        print(f"{program()} tokens: error: no token with id {token_id!r} in {path}", file=sys.stderr)
        return 1
    write_entries(path, kept)
    print(f"revoked token {token_id}", file=sys.stderr)
    return 0
