"""Operator login for the dashboard: server-side sessions, CSRF tokens and roles.

- The cookie holds an opaque random token; the database keeps only its sha256 (`SessionDB`), so a
  session can be revoked and a stolen table yields no usable cookie. HttpOnly, SameSite=Lax, and
  Secure unless the settings say the dashboard is served over plain HTTP.
- Every POST carries the session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`).
  The login form, which has no session yet, carries a server-signed token that is also set as a
  cookie (double submit) and is good for one try (`login_guard.LoginForms`).
- Failed logins are throttled per account and per address with a doubling wait (429 and
  `Retry-After`); an unknown username costs the same password hash as a known one.
- Roles are ordered viewer < reviewer < admin. Only the session cookie is looked at: a camera's
  `X-API-Key` means nothing here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from inspect_svc.dashboard.deps import TEMPLATES, AppSettings, DbSession
from inspect_svc.dashboard.login_guard import (
    LOGIN_FORM_TTL_S,
    LoginGuard,
    get_login_guard,
    retry_after_header,
)
from inspect_svc.schemas import SessionPublic
from inspect_svc.security import PasswordHashBusy, tokens_match
from inspect_svc.settings import Settings
from inspect_svc.storage import repositories

SESSION_COOKIE = "inspect_session"
LOGIN_CSRF_COOKIE = "inspect_login_csrf"
COOKIE_PATH = "/dashboard"
ROLE_RANK = {"viewer": 0, "reviewer": 1, "admin": 2}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

router = APIRouter(prefix="/dashboard")


def _login_redirect(request: Request) -> HTTPException:
    """A 303 to the login page that comes back to where the operator was going."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{request.url_for('dashboard_login').path}?next={quote(target, safe='')}"
    return HTTPException(status.HTTP_303_SEE_OTHER, "log in first", headers={"Location": location})


def current_session(request: Request, db: DbSession) -> SessionPublic:
    """The operator's live session; GETs without one go to the login page, other requests get 401."""
    token = request.cookies.get(SESSION_COOKIE)
    login = repositories.get_login_session(db, token=token) if token else None
    if login is not None:
        return login
    if request.method in SAFE_METHODS:
        raise _login_redirect(request)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in first")


async def check_csrf(request: Request, login: Annotated[SessionPublic, Depends(current_session)]) -> None:
    """Refuse a state-changing request whose CSRF token is not this session's."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get("X-CSRF-Token")
    if given is None:
        form = await request.form()
        field = form.get("csrf_token")
        given = field if isinstance(field, str) else None
    if not given or not tokens_match(given, login.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token; reload the page")


def require_role(role: str) -> Callable[[SessionPublic, None], SessionPublic]:
    """A dependency that admits operators of `role` or higher, and checks CSRF on POSTs."""
    needed = ROLE_RANK[role]

    def dependency(
        login: Annotated[SessionPublic, Depends(current_session)], _: Annotated[None, Depends(check_csrf)]
    ) -> SessionPublic:
        if ROLE_RANK.get(login.user.role, -1) < needed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role")
        return login

    return dependency


Viewer = Annotated[SessionPublic, Depends(require_role("viewer"))]
Reviewer = Annotated[SessionPublic, Depends(require_role("reviewer"))]
Admin = Annotated[SessionPublic, Depends(require_role("admin"))]


def page_context(login: SessionPublic, nav: str, **values: object) -> dict[str, object]:
    """What every logged-in page template needs: the operator, their CSRF token, the active tab."""
    return {"user": login.user, "csrf_token": login.csrf_token, "nav": nav, **values}


def _safe_next(next_url: str | None, default: str) -> str:
    # Only paths inside the dashboard: an absolute or protocol-relative URL would be an open redirect.
    if next_url and next_url.startswith(COOKIE_PATH + "/") and not next_url.startswith("//"):
        return next_url
    return default


def _set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.dashboard_secure_cookies,
    )


def _login_page(
    request: Request,
    settings: Settings,
    guard: LoginGuard,
    *,
    next_url: str,
    error: str | None,
    username: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    token = guard.forms.issue()
    context = {"login_csrf": token, "next_url": next_url, "error": error, "username": username, "user": None}
    response = TEMPLATES.TemplateResponse(
        request, "login.html", context, status_code=status_code, headers=headers
    )
    _set_cookie(response, settings, LOGIN_CSRF_COOKIE, token, max_age=LOGIN_FORM_TTL_S)
    return response


Guard = Annotated[LoginGuard, Depends(get_login_guard)]


@router.get("/login", name="dashboard_login", response_class=HTMLResponse)
def login_form(
    request: Request, settings: AppSettings, guard: Guard, next: str | None = None
) -> HTMLResponse:
    """The login form."""
    return _login_page(request, settings, guard, next_url=_safe_next(next, ""), error=None)


@router.post("/login", name="dashboard_login_submit")
def login_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    guard: Guard,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Check the credentials and open a fresh session (a new token on every login: no fixation)."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    same_browser = bool(csrf_token and expected and tokens_match(csrf_token, expected))
    if not same_browser or not guard.forms.redeem(csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the login form expired; reload the page")
    address = request.client.host if request.client else "unknown"
    next_url = _safe_next(next, "")  # the form echoes only a target the redirect would accept
    wait_s = guard.throttle.begin(username, address)
    if wait_s > 0:
        error = "Too many failed logins: wait a little before trying again."
        return _login_page(
            request,
            settings,
            guard,
            next_url=next_url,
            error=error,
            username=username,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers=retry_after_header(wait_s),
        )
    try:
        user = repositories.authenticate_user(db, username=username, password=password)
    except PasswordHashBusy:
        guard.throttle.not_checked(username, address)
        return _login_page(
            request,
            settings,
            guard,
            next_url=next_url,
            error="The server is busy: try again in a moment.",
            username=username,
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=retry_after_header(1.0),
        )
    if user is None:
        error = "Unknown user or wrong password."
        return _login_page(
            request, settings, guard, next_url=next_url, error=error, username=username, status_code=401
        )
    guard.throttle.succeeded(username, address)
    ttl = timedelta(hours=settings.dashboard_session_hours)
    token, _ = repositories.create_login_session(db, user_id=user.id, ttl=ttl)
    db.commit()
    target = _safe_next(next, request.url_for("dashboard_queue").path)
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    _set_cookie(response, settings, SESSION_COOKIE, token, max_age=int(ttl.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout", name="dashboard_logout")
def logout(request: Request, db: DbSession, _: Viewer) -> Response:
    """Revoke the session server-side, then drop the cookie."""
    repositories.revoke_login_session(db, token=request.cookies[SESSION_COOKIE])
    db.commit()
    response = RedirectResponse(
        request.url_for("dashboard_login").path, status_code=status.HTTP_303_SEE_OTHER
    )
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
