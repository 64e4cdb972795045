"""API-token check for the staging services (a plain ASGI middleware).

With ``COLDSTART_API_TOKEN`` set in the service's environment, every request except the health probes must
carry ``Authorization: Bearer <token>``; anything else gets a 401 JSON answer. Without it the check is off
(local development).
"""

from __future__ import annotations

import hmac
import json

from pipelines.settings import get_settings

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


class TokenMiddleware:
    """Answers 401 to API calls without the bearer token (``token``, else the ``api_token`` setting)."""

    def __init__(self, app, token: str | None = None) -> None:
        self.app = app
        self.token = token if token is not None else get_settings().api_token.get_secret_value()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.token or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if hmac.compare_digest(given, f"Bearer {self.token}"):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "missing or wrong API token (Authorization: Bearer <token>)"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
