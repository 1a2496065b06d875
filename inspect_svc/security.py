"""Secrets: camera API keys (high-entropy, stored as sha256) and operator passwords (scrypt)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

API_KEY_PREFIX = "isk_"
# Characters of a key after its "isk_" that may be shown again (lists, logs) to tell keys apart: 36 of
# its 256 random bits, which leaves the rest far beyond guessing.
API_KEY_SHOWN_CHARS = 6
# scrypt cost: n=2**14, r=8 uses 16 MiB and ~50 ms per check, enough for interactive logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32


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
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """True when `password` produces `stored`; a malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=SCRYPT_DKLEN
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


def new_token() -> str:
    """An opaque random token (sessions, CSRF)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """How a session token is stored: stealing the table must not yield usable cookies."""
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
