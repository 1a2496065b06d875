"""Short-lived signed links to one inspection's pictures, for browsers and `<img>` tags that cannot send
the `X-API-Key` header.

A link is the picture's path with `expires` (Unix seconds) and `signature`, the HMAC-SHA256 of the path
and the expiry under the server's signing key. It grants that one picture of that one inspection,
nothing else, until it expires; a changed path, expiry or signature is refused.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Literal

from inspect_svc.schemas import SignedLinks
from inspect_svc.security import server_signing_key, sign, signature_matches
from inspect_svc.settings import Settings
from inspect_svc.storage.repositories import inspection_links

Picture = Literal["image", "map", "mask", "overlay"]


def signed_links(settings: Settings, inspection_id: str, *, now: float | None = None) -> SignedLinks:
    """Every picture of the inspection as a URL valid for `settings.signed_link_ttl_s`."""
    expires = int((time.time() if now is None else now) + settings.signed_link_ttl_s)
    key = server_signing_key(settings)
    paths = inspection_links(inspection_id).model_dump()
    signed = {
        name: f"{path}?expires={expires}&signature={sign(key, _message(path, expires))}"
        for name, path in paths.items()
    }
    return SignedLinks(**signed, expires_at=datetime.fromtimestamp(expires, timezone.utc))


def link_is_valid(
    settings: Settings,
    inspection_id: str,
    picture: Picture,
    *,
    expires: int,
    signature: str,
    now: float | None = None,
) -> bool:
    """True when `signature` was made by this server for this picture and `expires` has not passed."""
    if expires < (time.time() if now is None else now):
        return False
    path = getattr(inspection_links(inspection_id), picture)
    return signature_matches(server_signing_key(settings), _message(path, expires), signature)


def _message(path: str, expires: int) -> str:
    return f"{path}\n{expires}"
