"""Login abuse: throttling with backoff, the same work for unknown users, single-use forms, bounded hashing."""

from __future__ import annotations

import hashlib
import threading

import pytest
from fastapi.testclient import TestClient

from inspect_svc import security
from inspect_svc.dashboard.auth import SESSION_COOKIE
from inspect_svc.dashboard.login_guard import LoginForms, LoginThrottle
from inspect_svc.schemas import UserCreate
from inspect_svc.storage import repositories
from inspect_svc.storage.db import session_scope
from inspect_svc.storage.models import UserDB
from tests.utils.reviews import CSRF_FIELD, PASSWORD, add_user, dashboard_app, make_world


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path):
    world = make_world(tmp_path)
    add_user(world, "rita", "reviewer")
    return world


@pytest.fixture
def client(world):
    with TestClient(dashboard_app(world), base_url="http://testserver") as test_client:
        yield test_client


def attempt(client: TestClient, username: str, password: str):
    """One login through a freshly loaded form, as a browser (or a scripted attacker) would."""
    token = CSRF_FIELD.search(client.get("/dashboard/login").text).group(1)
    return client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def guard_on_fake_clock(client: TestClient):
    """The app's login guard (made by the first form load), its throttle on a clock the test moves."""
    client.get("/dashboard/login")
    guard = client.app.state.login_guard
    guard.throttle.clock = FakeClock()
    return guard, guard.throttle.clock


# --- throttling ----------------------------------------------------------------------------------------


def test_throttle_backoff_doubles_per_failure_beyond_the_allowance():
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=2, max_lockout_s=3600, clock=clock)
    seen = []
    for _ in range(6):
        assert throttle.begin("rita", "10.0.0.1") == 0  # each try waited out the previous lockout
        seen.append(throttle.retry_after("rita", "10.0.0.1"))
        clock.now += seen[-1]
    assert seen == [0, 1, 2, 4, 8, 16]


def test_throttle_wait_is_capped():
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=1, max_lockout_s=5, clock=clock)
    for _ in range(40):
        clock.now += throttle.retry_after("rita", "10.0.0.1")
        throttle.begin("rita", "10.0.0.1")
    assert throttle.retry_after("rita", "10.0.0.1") == 5


def test_parallel_tries_are_counted_before_their_passwords_are_checked():
    throttle = LoginThrottle(max_failures=5, max_lockout_s=60, clock=FakeClock())
    # Eight guesses in flight at once (none has finished its hash): only the allowance gets through.
    waits = [throttle.begin("rita", f"10.0.0.{index}") for index in range(8)]
    assert waits[:5] == [0] * 5 and all(wait > 0 for wait in waits[5:])


def test_throttle_counts_per_account_and_per_address():
    throttle = LoginThrottle(max_failures=2, max_lockout_s=60, clock=FakeClock())
    for _ in range(3):
        throttle.begin("rita", "10.0.0.1")
    assert throttle.retry_after("rita", "10.0.0.2") > 0  # the account is locked from anywhere
    assert throttle.retry_after("vera", "10.0.0.1") == 0  # the address still has tries left
    for index in range(8):  # one address spraying many accounts (allowance 2 x 4)
        throttle.begin(f"user-{index}", "10.0.0.9")
    assert throttle.retry_after("someone-new", "10.0.0.9") > 0
    assert throttle.retry_after("someone-new", "10.0.0.8") == 0


def test_success_clears_the_account_and_refunds_the_address():
    throttle = LoginThrottle(max_failures=2, max_lockout_s=60, clock=FakeClock())
    throttle.begin("Rita", "10.0.0.1")
    throttle.succeeded("RITA", "10.0.0.1")
    throttle.begin("rita", "10.0.0.2")
    assert throttle.retry_after("rita", "10.0.0.3") == 0  # one failure since the success
    for index in range(7):  # seven failures from a shared address (allowance 8) ...
        throttle.begin(f"user-{index}", "10.0.0.7")
    for _ in range(3):  # ... and operators logging in right from it do not use it up
        throttle.begin("ada", "10.0.0.7")
        throttle.succeeded("ada", "10.0.0.7")
    assert throttle.retry_after("someone", "10.0.0.7") == 0


def test_quiet_time_forgets_failures():
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=2, max_lockout_s=60, clock=clock)
    throttle.begin("rita", "10.0.0.1")
    throttle.begin("rita", "10.0.0.2")
    wait = throttle.retry_after("rita", "10.0.0.3")
    assert wait > 0
    clock.now += wait + 60 + 1  # the lockout, then a quiet spell as long as the longest lockout
    throttle.begin("rita", "10.0.0.4")
    assert throttle.retry_after("rita", "10.0.0.5") == 0


def test_brute_force_loop_gets_429_and_the_right_password_waits_too(world, client):
    _, clock = guard_on_fake_clock(client)
    statuses = [attempt(client, "rita", f"guess-{index}").status_code for index in range(8)]
    limit = world.settings.login_max_failures
    assert statuses == [401] * limit + [429] * (8 - limit)
    locked = attempt(client, "rita", PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert "Too many failed logins" in locked.text and SESSION_COOKIE not in client.cookies
    clock.now += int(locked.headers["retry-after"])
    assert attempt(client, "rita", PASSWORD).status_code == 303


def test_locked_attempts_cost_no_password_hash(client, monkeypatch):
    guard_on_fake_clock(client)
    for index in range(10):
        attempt(client, "rita", f"guess-{index}")
    hashes = count_hashes(monkeypatch)
    assert attempt(client, "rita", "another guess").status_code == 429
    assert hashes == []


# --- no user enumeration -------------------------------------------------------------------------------


def count_hashes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = security._scrypt

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(security, "_scrypt", counting)
    return calls


def test_unknown_and_disabled_users_cost_the_same_hash_as_real_ones(world, monkeypatch):
    security._dummy_password_hash()  # made once per process, not per login
    with session_scope(world.sessions) as session:
        disabled = repositories.create_user(session, user=UserCreate(username="gone", password=PASSWORD))
        session.get(UserDB, disabled.id).active = False
    hashes = count_hashes(monkeypatch)
    with session_scope(world.sessions) as session:
        for username in ("rita", "nobody", "gone"):
            before = len(hashes)
            assert (
                repositories.authenticate_user(session, username=username, password="wrong password") is None
            )
            assert len(hashes) - before == 1, username
        assert repositories.authenticate_user(session, username="rita", password=PASSWORD) is not None
    assert not security.verify_password(PASSWORD, None)


def test_unknown_user_and_wrong_password_answer_alike(client):
    unknown, wrong = attempt(client, "nobody", "whatever pw"), attempt(client, "rita", "whatever pw")
    assert unknown.status_code == wrong.status_code == 401
    assert (
        "Unknown user or wrong password." in unknown.text and "Unknown user or wrong password." in wrong.text
    )


# --- single-use login forms ----------------------------------------------------------------------------


def test_a_login_form_token_works_once(client):
    token = CSRF_FIELD.search(client.get("/dashboard/login").text).group(1)
    form = {"username": "rita", "password": "wrong", "csrf_token": token}
    assert client.post("/dashboard/login", data=form).status_code == 401
    reused = client.post("/dashboard/login", data={**form, "password": PASSWORD}, follow_redirects=False)
    assert reused.status_code == 403 and SESSION_COOKIE not in client.cookies
    # The failure page carries a fresh token, which does work.
    assert attempt(client, "rita", PASSWORD).status_code == 303


def test_a_token_that_logged_in_cannot_log_in_again(client):
    token = CSRF_FIELD.search(client.get("/dashboard/login").text).group(1)
    form = {"username": "rita", "password": PASSWORD, "csrf_token": token}
    assert client.post("/dashboard/login", data=form, follow_redirects=False).status_code == 303
    client.cookies.set("inspect_login_csrf", token, path="/dashboard")
    assert client.post("/dashboard/login", data=form, follow_redirects=False).status_code == 403


def test_forms_refuse_forged_expired_and_foreign_tokens():
    clock = FakeClock(now=1_000_000.0)
    forms = LoginForms(b"k" * 32, clock=clock)
    token = forms.issue()
    nonce, expires, signature = token.split(".")
    assert not forms.redeem(f"{nonce}.{int(expires) + 60}.{signature}")
    assert not forms.redeem(f"other.{expires}.{signature}")
    assert not LoginForms(b"x" * 32, clock=clock).redeem(token)
    assert not forms.redeem("garbage") and not forms.redeem("")
    clock.now += 2 * 3600
    assert not forms.redeem(token)
    fresh = forms.issue()
    assert forms.redeem(fresh) and not forms.redeem(fresh)


# --- hashing cannot take every core --------------------------------------------------------------------


def test_password_hashes_run_one_at_a_time(monkeypatch):
    active, most = [0], [0]
    lock = threading.Lock()
    original = hashlib.scrypt

    def watched(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            threading.Event().wait(0.02)  # hold the slot long enough for the other threads to queue
            return original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(hashlib, "scrypt", watched)
    stored = security.hash_password(PASSWORD)
    results: list[bool | str] = []

    def verify() -> None:
        try:
            results.append(security.verify_password(PASSWORD, stored))
        except security.PasswordHashBusy:
            results.append("busy")

    threads = [threading.Thread(target=verify) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The PASSWORD_HASH_MAX_WAITING first to queue always get their answer; later ones may be refused.
    assert set(results) <= {True, "busy"} and results.count(True) >= security.PASSWORD_HASH_MAX_WAITING
    assert most[0] == security.PASSWORD_HASH_CONCURRENCY == 1


def test_hashing_is_kept_to_its_share_of_the_time():
    clock = FakeClock()
    budget = security.HashBudget(duty=0.25, max_waiting=0, clock=clock)

    def hash_taking_100_ms() -> str:
        clock.now += 0.1
        return "digest"

    started = clock.now
    assert budget.run(hash_taking_100_ms, may_refuse=True) == "digest"
    # Busy a quarter of the time: 100 ms of hashing, then 300 ms before the next may start.
    assert budget.next_start == pytest.approx(started + 0.1 + 0.3)
    with pytest.raises(security.PasswordHashBusy):  # nobody may wait (max_waiting=0): refused at once
        budget.run(hash_taking_100_ms, may_refuse=True)
    clock.now = budget.next_start
    assert budget.run(hash_taking_100_ms, may_refuse=True) == "digest"


def test_a_login_beyond_the_hash_queue_gets_503_at_once_and_is_not_counted(client, monkeypatch):
    clock = FakeClock()
    budget = security.HashBudget(duty=0.25, max_waiting=0, clock=clock)
    budget.next_start = clock.now + 60.0  # the last hash's cool-down is still running
    monkeypatch.setattr(security, "_HASHES", budget)
    hashed: list[int] = []
    original = hashlib.scrypt
    monkeypatch.setattr(
        hashlib, "scrypt", lambda *args, **kwargs: hashed.append(1) or original(*args, **kwargs)
    )
    for _ in range(30):  # far beyond the allowance of the account and of the address
        busy = attempt(client, "rita", "wrong")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert "busy" in busy.text
    assert hashed == []
    clock.now = budget.next_start
    assert attempt(client, "rita", PASSWORD).status_code == 303  # no try was charged while none was checked
