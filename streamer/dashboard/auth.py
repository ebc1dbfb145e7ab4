"""Who may see the dashboard: a bearer token, HTTP basic auth, or anyone on loopback.

A page that lists every task is not for everyone who can reach a port, so the command refuses
a non-loopback address without credentials (:func:`is_loopback`). Credentials never appear in
a ``repr``, a log line or a page.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from ..errors import ConfigError

__all__ = ["Auth", "guard", "is_loopback"]

COOKIE: Final = "streamer_dashboard"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (only this machine can connect).

    ``0.0.0.0``, ``::`` and names that resolve to any other address are not loopback.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """Credentials a client must present: a bearer token, basic auth, or either.

    A browser gives the token once as ``?token=...``; it is swapped for an HttpOnly cookie
    (holding a digest, not the token) and the address bar is cleaned. API clients send
    ``Authorization: Bearer <token>``. Credentials never appear in ``repr``.
    """

    token: str | None = None
    basic: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.token is None and self.basic is None:
            raise ConfigError("auth needs a token or a user:password")
        if self.token is not None and not self.token:
            raise ConfigError("the dashboard token must not be empty")

    @classmethod
    def parse_basic(cls, value: str) -> tuple[str, str]:
        """``user:password`` as a pair.

        Raises:
            ConfigError: no colon, or an empty user or password.
        """
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError("basic auth must be given as user:password (both non-empty)")
        return user, password

    @property
    def cookie(self) -> str:
        """What the session cookie holds: a digest of the token (the token is never stored)."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"streamer dashboard", "sha256").hexdigest()

    def allows(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token is not None:
            if scheme.lower() == "bearer" and same(value.strip(), self.token):
                return True
            cookie = request.cookies.get(COOKIE)
            if cookie is not None and same(cookie, self.cookie):
                return True
        if self.basic is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return same(user, self.basic[0]) & same(password, self.basic[1])
        return False

    def describe(self) -> str:
        """What is required, for the start-up line: never the secrets themselves."""
        kinds = []
        if self.token is not None:
            kinds.append("token ***")
        if self.basic is not None:
            kinds.append(f"basic auth {self.basic[0]}:***")
        return " or ".join(kinds)

    def __repr__(self) -> str:
        return f"Auth({self.describe()})"


def same(given: str, expected: str) -> bool:
    """Constant-time comparison: how long it takes says nothing about the secret."""
    return hmac.compare_digest(given.encode(), expected.encode())


def guard(auth: Auth | None) -> Any:
    """The middleware that lets through only requests ``auth`` allows (``/healthz`` always)."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if auth is None or request.path == "/healthz":
            return await handler(request)
        if auth.token is not None and "token" in request.query and request.method == "GET":
            if same(request.query["token"], auth.token):
                rest = {k: v for k, v in request.query.items() if k != "token"}
                location = request.path + (f"?{urlencode(rest)}" if rest else "")
                response = web.Response(status=303, headers={"Location": location})
                response.set_cookie(COOKIE, auth.cookie, httponly=True, samesite="Strict", path="/")
                return response
        elif auth.allows(request):
            return await handler(request)
        challenge = 'Basic realm="streamer", charset="UTF-8"' if auth.basic else "Bearer"
        return web.Response(
            status=401, text="authentication required\n", headers={"WWW-Authenticate": challenge}
        )

    return middleware
