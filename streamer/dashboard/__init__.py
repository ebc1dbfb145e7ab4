"""The web dashboard: every task on the exchange in a browser, live, with /metrics beside it.

``app`` holds the :class:`Dashboard` (consumer, board, routes), ``stream`` the server-sent
event stream, ``api`` the JSON API, ``auth`` who may look, ``rows`` the JSON shapes, and
``static/`` the page itself (no build step). Nothing here imports rich: the terminal view's
dependencies are not the web server's.
"""

from __future__ import annotations

from .app import Dashboard
from .auth import Auth, is_loopback
from .rows import Row

__all__ = ["Auth", "Dashboard", "Row", "is_loopback"]
