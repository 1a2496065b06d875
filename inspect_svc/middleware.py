"""ASGI middleware: the request-body cap and read deadline, and per-route request metrics."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspect_svc.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyReadTimeout(HTTPException):
    def __init__(self, seconds: float, received: int) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {seconds:g} s ({received} bytes received)",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    """Guards request bodies: 413 once a body passes `max_bytes`, counting streamed bytes (Content-Length
    can lie or be absent); 408 when the whole body has not arrived `read_timeout_s` after the app began
    reading it (a client declaring 100 kB and trickling, or stopping, would otherwise hold the request
    forever); a client that disconnects mid-body is logged in one line, not as a server error.

    Neither uvicorn nor Starlette caps bodies or their read time, and multipart uploads would otherwise
    spool to disk unbounded.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, read_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline: float | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # later reads only wait for a disconnect: no deadline on those
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.read_timeout_s
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise BodyReadTimeout(self.read_timeout_s, received) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)
        except ClientDisconnect:
            # Nobody is left to answer: one line for the log, no traceback, no 500.
            log.info(
                "client disconnected during %s %s after %d of %s body bytes",
                scope["method"],
                scope["path"],
                received,
                declared.decode() if declared else "unknown",
            )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": BodyTooLarge(self.max_bytes).detail}, status_code=413)
        await response(scope, receive, send)


class MetricsMiddleware:
    """Counts requests by method, route template and status, and times them per route."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_code = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            # The template, not the raw path: ids in paths would explode the label set.
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(method=scope["method"], route=label, status=str(status_code)).inc()
            self.metrics.request_seconds.labels(route=label).observe(time.perf_counter() - started)
