"""Defences of the login form: failed logins throttled with backoff, and login forms good for one try.

Both keep their state in the memory of the process: a quick retry loop meets them at once, a restart
forgets them, and with several replicas each counts the tries it sees (docs/RELIABILITY.md).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from inspect_svc.security import server_signing_key, sign, signature_matches
from inspect_svc.settings import Settings

# Several operators can sit behind one address (a plant's NAT): an address gets more tries than an account.
ADDRESS_ALLOWANCE_FACTOR = 4
FIRST_LOCKOUT_S = 1.0
LOGIN_FORM_TTL_S = 3600
# Bounds on the memory an attacker can make us spend; beyond them the oldest entries are dropped.
MAX_TRACKED_KEYS = 10_000
MAX_REDEEMED_FORMS = 100_000


@dataclass
class _Failures:
    count: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Counts login tries per account and per address; from the allowance on each failure doubles the wait.

    A try is charged as a failure before its password is checked (`begin`) and refunded when it was
    right (`succeeded`): guesses sent in parallel are counted as they arrive, not after their hashes.
    While a key is locked its logins are refused without checking the password (429 with `Retry-After`),
    so a locked-out guesser costs no password hash at all.
    """

    def __init__(
        self, *, max_failures: int, max_lockout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.max_lockout_s = max_lockout_s
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until this account may try again from this address; 0 when it may try now."""
        with self._lock:
            return self._wait(account, address, self.clock())

    def begin(self, account: str, address: str) -> float:
        """Charge a try to the account and the address; if either is locked, charge nothing, return the wait."""
        now = self.clock()
        with self._lock:
            wait = self._wait(account, address, now)
            if wait > 0:
                return wait
            for key, allowance in self._keys(account, address):
                entry = self._live(key, now) or _Failures()
                self._remember(key, entry)
                entry.count += 1
                entry.last_failure = now
                beyond = entry.count - allowance  # the allowance-th failure locks for FIRST_LOCKOUT_S
                if beyond >= 0:
                    lockout = min(self.max_lockout_s, FIRST_LOCKOUT_S * 2 ** min(beyond, 32))
                    entry.locked_until = now + lockout
        return 0.0

    def succeeded(self, account: str, address: str) -> None:
        """A right password clears the account's count and refunds the address the try `begin` charged."""
        with self._lock:
            self._failures.pop(_account_key(account), None)
            self._refund(*self._keys(account, address)[1])

    def not_checked(self, account: str, address: str) -> None:
        """Refund both the try `begin` charged: its password was never checked (the server was busy)."""
        with self._lock:
            for key, allowance in self._keys(account, address):
                self._refund(key, allowance)

    def _refund(self, key: str, allowance: int) -> None:
        entry = self._failures.get(key)
        if entry is not None:
            entry.count = max(0, entry.count - 1)
            if entry.count < allowance:
                entry.locked_until = 0.0

    def _wait(self, account: str, address: str, now: float) -> float:
        entries = [self._live(key, now) for key, _ in self._keys(account, address)]
        return max([0.0] + [entry.locked_until - now for entry in entries if entry is not None])

    def _keys(self, account: str, address: str) -> list[tuple[str, int]]:
        return [
            (_account_key(account), self.max_failures),
            (f"address:{address}", self.max_failures * ADDRESS_ALLOWANCE_FACTOR),
        ]

    def _live(self, key: str, now: float) -> _Failures | None:
        """The key's failures, unless a quiet spell as long as the longest lockout has passed since."""
        entry = self._failures.get(key)
        if entry is not None and now > max(entry.last_failure, entry.locked_until) + self.max_lockout_s:
            del self._failures[key]
            return None
        return entry

    def _remember(self, key: str, entry: _Failures) -> None:
        self._failures[key] = entry
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED_KEYS:
            self._failures.popitem(last=False)


def _account_key(account: str) -> str:
    return f"account:{account.strip().lower()}"


class LoginForms:
    """Login form tokens: signed by the server, valid for an hour, and redeemable once.

    The token is `nonce.expires.signature`; any replica with the same signing key accepts it, and the
    nonces already redeemed are remembered until they expire.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.clock = clock
        self._redeemed: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(16)
        expires = int(self.clock() + LOGIN_FORM_TTL_S)
        return f"{nonce}.{expires}.{sign(self._key, _form_message(nonce, expires))}"

    def redeem(self, token: str) -> bool:
        """True once for a token this server issued and that has not expired; False ever after."""
        nonce, _, rest = token.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not (nonce and expires_text.isdigit() and signature):
            return False
        expires, now = int(expires_text), self.clock()
        if expires < now or not signature_matches(self._key, _form_message(nonce, expires), signature):
            return False
        with self._lock:
            self._forget_expired(now)
            if nonce in self._redeemed:
                return False
            self._redeemed[nonce] = expires
            if len(self._redeemed) > MAX_REDEEMED_FORMS:
                self._redeemed.popitem(last=False)
        return True

    def _forget_expired(self, now: float) -> None:
        # Tokens are issued with one lifetime, so the oldest redeemed nonce is the first to expire.
        while self._redeemed and next(iter(self._redeemed.values())) < now:
            self._redeemed.popitem(last=False)


def _form_message(nonce: str, expires: int) -> str:
    return f"login-form\n{nonce}\n{expires}"


@dataclass
class LoginGuard:
    throttle: LoginThrottle
    forms: LoginForms

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginGuard:
        return cls(
            throttle=LoginThrottle(
                max_failures=settings.login_max_failures, max_lockout_s=settings.login_lockout_max_s
            ),
            forms=LoginForms(server_signing_key(settings)),
        )


_CREATING = threading.Lock()


def get_login_guard(request: Request) -> LoginGuard:
    """The app's guard, made on first use from the service settings (one per app, so one per process)."""
    state = request.app.state
    guard = getattr(state, "login_guard", None)
    if guard is None:
        with _CREATING:
            guard = getattr(state, "login_guard", None)
            if guard is None:
                guard = state.login_guard = LoginGuard.from_settings(state.service.settings)
    return guard


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
