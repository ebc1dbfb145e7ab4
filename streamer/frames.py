"""Hand-built ``basic.publish`` frames: the one hot path we do not leave to pamqp.

A report becomes three AMQP frames (method, content header, body). Building them through
pamqp's generic marshaller costs tens of microseconds per message; here everything that is
constant for a task (method frame, ``task_id`` header) is encoded once and the rest is a few
``struct`` packs. The property layout is documented in ``docs/wire-format.md``.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["FRAME_OVERHEAD", "Framer"]

FRAME_OVERHEAD: Final = 8  # type (1) + channel (2) + size (4) + frame-end (1)
_FRAME_END: Final = b"\xce"
_BASIC_PUBLISH: Final = struct.pack(">HHH", 60, 40, 0)  # class, method, ticket
_FRAME_HDR = struct.Struct(">BHI")
# content header: class, weight, body size, property flags
_CONTENT_HDR = struct.Struct(">HHQH")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")

# Property flag bits (AMQP 0-9-1, basic class), in wire order of the fields we send.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE = 0x8000, 0x2000, 0x1000
_MESSAGE_ID, _TIMESTAMP, _APP_ID = 0x0080, 0x0040, 0x0008
_FLAGS: Final = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP | _APP_ID
_TRANSIENT: Final = b"\x01"


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _longstr_entry(name: str, value: str) -> bytes:
    raw = value.encode()
    return _shortstr(name) + b"S" + _U32.pack(len(raw)) + raw


class Framer:
    """Encodes reports of one publisher into ``basic.publish`` frame sequences.

    Args:
        exchange: the exchange every report goes to.
        app_id: the ``app_id`` property.
        fingerprint: constant headers naming the sender (e.g. host and pid).
        frame_max: negotiated maximum frame size; larger bodies are split.
    """

    def __init__(
        self,
        *,
        exchange: str,
        app_id: str,
        fingerprint: dict[str, str | int],
        frame_max: int = 131072,
        mandatory: bool = False,
    ) -> None:
        self._exchange = _shortstr(exchange)
        self._bits = b"\x01" if mandatory else b"\x00"
        self._content_type = _shortstr("application/json")
        tail = b""
        for name, value in fingerprint.items():
            if isinstance(value, int):
                tail += _shortstr(name) + b"l" + _I64.pack(value)
            else:
                tail += _longstr_entry(name, value)
        self._fp = tail
        self._app_id = _shortstr(app_id)
        self._states = {
            s: _longstr_entry("state", s)
            for s in (
                "waiting",
                "accepted",
                "running",
                "suspended",
                "skipped",
                "finished",
                "error",
                "canceled",
            )
        }
        self.frame_max = frame_max

    def task_prefix(self, channel: int, key: str, task_id: str) -> tuple[bytes, bytes]:
        """Encode what never changes for one task on one channel.

        Returns:
            the complete method frame, and the ``task_id`` header-table entry.
        """
        payload = _BASIC_PUBLISH + self._exchange + _shortstr(key) + self._bits
        method = _FRAME_HDR.pack(1, channel, len(payload)) + payload + _FRAME_END
        return method, _longstr_entry("task_id", task_id)

    def message(
        self,
        parts: list[bytes],
        channel: int,
        method: bytes,
        task_entry: bytes,
        state: str,
        seq: int,
        message_id: bytes,
        timestamp: int,
        body: bytes,
    ) -> None:
        """Append the frames of one report to ``parts`` (joined later, written in one go)."""
        table = task_entry + self._states[state] + b"\x03seql" + _I64.pack(seq) + self._fp
        props = (
            self._content_type
            + _U32.pack(len(table))
            + table
            + _TRANSIENT
            + bytes((len(message_id),))
            + message_id
            + _U64.pack(timestamp)
            + self._app_id
        )
        size = len(body)
        header = _CONTENT_HDR.pack(60, 0, size, _FLAGS) + props
        parts.append(method)
        parts.append(_FRAME_HDR.pack(2, channel, len(header)) + header + _FRAME_END)
        chunk = self.frame_max - FRAME_OVERHEAD
        if size <= chunk:
            parts.append(_FRAME_HDR.pack(3, channel, size) + body + _FRAME_END)
            return
        view = memoryview(body)
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            parts.append(_FRAME_HDR.pack(3, channel, len(piece)) + bytes(piece) + _FRAME_END)
