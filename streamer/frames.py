"""Hand-built ``basic.publish`` frames: the one hot path we do not leave to pamqp.

A report becomes three AMQP frames (method, content header, body). Building them through
pamqp's generic marshaller costs tens of microseconds per message; here everything that is
constant for a task (method frame, ``task_id`` header) is encoded once and the rest is a few
``struct`` packs. The property layout is documented in ``docs/wire-format.md``.
"""

from __future__ import annotations

import struct
from typing import Final

from .report import STATES

__all__ = ["FRAME_OVERHEAD", "Framer", "TaskFrames"]

FRAME_OVERHEAD: Final = 8  # type (1) + channel (2) + size (4) + frame-end (1)
_FRAME_END: Final = b"\xce"
_BASIC_PUBLISH: Final = struct.pack(">HHH", 60, 40, 0)  # class, method, ticket
_FRAME_HDR = struct.Struct(">BHI")
# content header: class, weight, body size, property flags
# frame header (type, channel, size) + content header (class, weight, body size, flags)
_HEADER_START = struct.Struct(">BHIHHQH")
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


class TaskFrames:
    """The bytes of a task's publishes that never change: method frame, header prefixes."""

    __slots__ = ("by_state", "method")

    def __init__(self, method: bytes, by_state: dict[str, bytes]) -> None:
        self.method = method
        # Per state: content_type, the header table's length and its entries up to the
        # value of ``seq`` (the only per-message entry; its 8 bytes come right after).
        self.by_state = by_state


class Framer:
    """Encodes reports of one publisher into ``basic.publish`` frame sequences.

    Args:
        exchange: the exchange every report goes to.
        app_id: the ``app_id`` property.
        fingerprint: constant headers naming the sender (e.g. host and pid).
        headers: send the header table (task_id, state, seq, fingerprint) at all; without
            it the broker does less work per message, consumers read the body only.
        frame_max: negotiated maximum frame size; larger bodies are split.
        mandatory: ask the broker to return unroutable publishes.
    """

    def __init__(
        self,
        *,
        exchange: str,
        app_id: str,
        fingerprint: dict[str, str | int],
        headers: bool = True,
        frame_max: int = 131072,
        mandatory: bool = False,
    ) -> None:
        self._exchange = _shortstr(exchange)
        self._bits = b"\x01" if mandatory else b"\x00"
        self._headers = headers
        self._flags = _FLAGS if headers else _FLAGS & ~_HEADERS
        fp = b""
        for name, value in fingerprint.items():
            if isinstance(value, int):
                fp += _shortstr(name) + b"l" + _I64.pack(value)
            else:
                fp += _longstr_entry(name, value)
        # After the seq value: the fingerprint entries, then delivery_mode.
        self._after_seq = fp + _TRANSIENT if headers else _TRANSIENT
        self._app_id_end = _shortstr(app_id) + _FRAME_END
        # Bytes of the properties besides the per-task prefix and the message id: the seq
        # value, the fingerprint, delivery_mode, the message id's length, timestamp, app_id.
        seq_len = 8 if headers else 0
        self._fixed = seq_len + len(self._after_seq) + 1 + 8 + len(self._app_id_end) - 1
        self.frame_max = frame_max

    def task(self, channel: int, key: str, task_id: str) -> TaskFrames:
        """Encode what never changes for one task on one channel."""
        payload = _BASIC_PUBLISH + self._exchange + _shortstr(key) + self._bits
        method = _FRAME_HDR.pack(1, channel, len(payload)) + payload + _FRAME_END
        content_type = _shortstr("application/json")
        by_state: dict[str, bytes] = {}
        task_entry = _longstr_entry("task_id", task_id)
        fp_len = len(self._after_seq) - 1
        for state in STATES:
            if not self._headers:
                by_state[state] = content_type
                continue
            entries = task_entry + _longstr_entry("state", state) + b"\x03seql"
            table_len = len(entries) + 8 + fp_len
            by_state[state] = content_type + _U32.pack(table_len) + entries
        return TaskFrames(method, by_state)

    def message(
        self,
        parts: list[bytes],
        channel: int,
        task: TaskFrames,
        state: str,
        seq: int,
        message_id: bytes,
        timestamp: int,
        body: bytes,
    ) -> None:
        """Append the frames of one report to ``parts`` (joined later, written in one go)."""
        head = task.by_state[state]
        size = len(body)
        chunk = self.frame_max - FRAME_OVERHEAD
        parts += (
            task.method,
            _HEADER_START.pack(
                2,
                channel,
                14 + len(head) + self._fixed + len(message_id),
                60,
                0,
                size,
                self._flags,
            ),
            head,
            _I64.pack(seq) if self._headers else b"",
            self._after_seq,
            bytes((len(message_id),)),
            message_id,
            _U64.pack(timestamp),
            self._app_id_end,
        )
        if size <= chunk:
            parts += (_FRAME_HDR.pack(3, channel, size), body, _FRAME_END)
            return
        view = memoryview(body)
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            parts += (_FRAME_HDR.pack(3, channel, len(piece)), bytes(piece), _FRAME_END)
