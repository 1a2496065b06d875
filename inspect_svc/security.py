"""Secrets: camera API keys (high-entropy, stored as sha256), operator passwords (scrypt), and what the
server signs with its signing key (short-lived image links, single-use login forms)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from inspect_svc.settings import Settings

T = TypeVar("T")

API_KEY_PREFIX = "isk_"
# Characters of a key after its "isk_" that may be shown again (lists, logs) to tell keys apart: 36 of
# its 256 random bits, which leaves the rest far beyond guessing.
API_KEY_SHOWN_CHARS = 6
# scrypt cost: n=2**14, r=8 uses 16 MiB and ~50 ms per check, enough for interactive logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
# scrypt is CPU- and memory-hard on purpose, so a login flood must not take the CPU inference needs.
# One hash at a time per process; after a hash, the next waits three times as long as it took (hashing
# gets at most a quarter of one core, on any machine); beyond two logins waiting, a login is refused at
# once (503) instead of holding a worker thread and a database connection while it waits.
PASSWORD_HASH_CONCURRENCY = 1
PASSWORD_HASH_DUTY = 0.25
PASSWORD_HASH_MAX_WAITING = 2
# A process without a configured or derivable key signs with this one: its links and login forms are
# then valid only in this process and until it restarts.
_PROCESS_SIGNING_KEY = secrets.token_bytes(32)


def new_api_key() -> str:
    """A fresh camera key with 256 bits of entropy; show it once, store only `hash_api_key(key)`."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_prefix(api_key: str) -> str:
    """The start of a key that may be shown again, so an operator can tell which key a camera holds."""
    return api_key[: len(API_KEY_PREFIX) + API_KEY_SHOWN_CHARS]


def hash_api_key(api_key: str) -> str:
    """sha256 of the key. A slow hash is unnecessary: the key is random, not a password."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_matches(api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(api_key), stored_hash)


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (timing must not reveal a common prefix)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash`, salt and hash in base64."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """True when `password` produces `stored`; a malformed stored hash never matches.

    `stored=None` (no such user) hashes against a dummy hash and answers False, so an unknown username
    costs the same scrypt work as a known one and the answer time does not tell them apart.

    Raises:
        PasswordHashBusy: too many checks are waiting; nothing was checked.
    """
    encoded = stored if stored is not None else _dummy_password_hash()
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), may_refuse=True
        )
    except (ValueError, TypeError):
        return False
    return stored is not None and hmac.compare_digest(digest, base64.b64decode(expected))


@functools.cache
def _dummy_password_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


class PasswordHashBusy(RuntimeError):
    """Too many password checks are already waiting; the login should be answered 503 with Retry-After."""


class HashBudget:
    """Runs password hashes one at a time, busy at most `duty` of the time, with a bounded queue.

    A refusal costs nothing, so a login flood degrades into cheap refusals instead of a CPU-bound
    queue; creating a user (`may_refuse=False`) always waits its turn.
    """

    def __init__(self, *, duty: float, max_waiting: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.duty, self.max_waiting, self.clock = duty, max_waiting, clock
        self.next_start = float("-inf")  # no hash may start before this (clock time)
        self._busy = False
        self._waiting = 0
        self._changed = threading.Condition()

    def run(self, work: Callable[[], T], *, may_refuse: bool) -> T:
        with self._changed:
            must_wait = self._busy or self.clock() < self.next_start
            if may_refuse and must_wait and self._waiting >= self.max_waiting:
                raise PasswordHashBusy("the server is busy checking other logins")
            self._waiting += 1
            try:
                while self._busy or self.clock() < self.next_start:
                    self._changed.wait(None if self._busy else self.next_start - self.clock())
            finally:
                self._waiting -= 1
            self._busy = True
        started = self.clock()
        try:
            return work()
        finally:
            with self._changed:
                self._busy = False
                self.next_start = self.clock() + (self.clock() - started) * (1.0 / self.duty - 1.0)
                self._changed.notify_all()


_HASHES = HashBudget(duty=PASSWORD_HASH_DUTY, max_waiting=PASSWORD_HASH_MAX_WAITING)


def _scrypt(password: bytes, *, salt: bytes, n: int, r: int, p: int, may_refuse: bool = False) -> bytes:
    """Every password hash of the process goes through here, within the process's `HashBudget`."""
    return _HASHES.run(
        lambda: hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN), may_refuse=may_refuse
    )


def new_token() -> str:
    """An opaque random token (sessions, CSRF)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """How a session token is stored: stealing the table must not yield usable cookies."""
    return hashlib.sha256(token.encode()).hexdigest()


def signing_key(configured: str | None, admin_token: str | None) -> bytes:
    """The key the server signs links and login forms with.

    The configured key if any; else one derived from the admin token (replicas that share the token
    then share the key, and the token itself cannot be recovered from a signature); else a key of
    this process alone.
    """
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    if admin_token:
        return hmac.new(admin_token.encode(), b"inspect-svc signing key v1", hashlib.sha256).digest()
    return _PROCESS_SIGNING_KEY


def server_signing_key(settings: Settings) -> bytes:
    """The signing key these settings give."""
    configured = settings.signing_key.get_secret_value() if settings.signing_key else None
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return signing_key(configured, admin_token)


def sign(key: bytes, message: str) -> str:
    """HMAC-SHA256 of `message`, URL-safe base64 without padding."""
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signature_matches(key: bytes, message: str, signature: str) -> bool:
    return tokens_match(signature, sign(key, message))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
