"""Hand-built ``basic.publish`` frames: the one hot path we do not leave to pamqp.

A report becomes three AMQP frames (method, content header, body). Building them through
pamqp's generic marshaller costs tens of microseconds per message; here everything that is
constant for a task (method frame, most of the properties) is encoded once and the rest is a
few ``struct`` packs. The property layout is documented in ``docs/wire-format.md``.

By default the task id, state and sender travel in plain string properties
(``correlation_id``, ``type``, ``app_id``) rather than in a header table: a message with
headers makes RabbitMQ decode every property (it looks for ``CC``/``BCC`` routing headers),
which measured ~28% more broker CPU per report and cost as much throughput.
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
# frame header (type, channel, size) + content header (class, weight, body size, flags)
_HEADER_START = struct.Struct(">BHIHHQH")
_CONTENT_HEADER_SIZE: Final = 14  # class, weight, body size, flags
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")

# Property flag bits (AMQP 0-9-1, basic class). The fields follow in this order on the wire.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _CORRELATION_ID = 0x8000, 0x2000, 0x1000, 0x0400
_MESSAGE_ID, _TIMESTAMP, _TYPE, _APP_ID = 0x0080, 0x0040, 0x0020, 0x0008
_FLAGS: Final = (
    _CONTENT_TYPE | _DELIVERY_MODE | _CORRELATION_ID | _MESSAGE_ID | _TIMESTAMP | _TYPE | _APP_ID
)
_TRANSIENT: Final = b"\x01"
_JSON: Final = b"\x10application/json"
_SEQ_KEY: Final = b"\x03seql"  # header-table entry name "seq", type signed 64-bit


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _longstr_entry(name: str, value: str) -> bytes:
    raw = value.encode()
    return _shortstr(name) + b"S" + _U32.pack(len(raw)) + raw


class TaskFrames:
    """The bytes of a task's publishes that never change.

    Attributes:
        method: the complete ``basic.publish`` method frame (exchange, routing key).
        head: per state, the properties up to the ``seq`` header value (content_type and,
            with headers on, the table's length and entries).
        mid: the properties between ``seq`` and ``message_id``: the rest of the table,
            delivery_mode and correlation_id (the task id).
    """

    __slots__ = ("head", "method", "mid")

    def __init__(self, method: bytes, head: dict[str, bytes], mid: bytes) -> None:
        self.method = method
        self.head = head
        self.mid = mid


class Framer:
    """Encodes reports of one publisher into ``basic.publish`` frame sequences.

    Args:
        exchange: the exchange every report goes to.
        app_id: the ``app_id`` property (the sender's fingerprint).
        fingerprint: headers naming the sender (e.g. host and pid), sent with ``headers``.
        headers: also send a header table (task_id, state, seq, fingerprint).
        frame_max: negotiated maximum frame size; larger bodies are split.
        mandatory: ask the broker to return unroutable publishes.
    """

    def __init__(
        self,
        *,
        exchange: str,
        app_id: str,
        fingerprint: dict[str, str | int],
        headers: bool = False,
        frame_max: int = 131072,
        mandatory: bool = False,
    ) -> None:
        self._exchange = _shortstr(exchange)
        self._bits = b"\x01" if mandatory else b"\x00"
        self._headers = headers
        self._flags = _FLAGS | _HEADERS if headers else _FLAGS
        fp = b""
        for name, value in fingerprint.items():
            if isinstance(value, int):
                fp += _shortstr(name) + b"l" + _I64.pack(value)
            else:
                fp += _longstr_entry(name, value)
        self._fp = fp
        app = _shortstr(app_id) + _FRAME_END
        # After the timestamp: type (the state), app_id and the header frame's end.
        self._tail = {state: _shortstr(state) + app for state in STATES}
        self.frame_max = frame_max

    def task(self, channel: int, key: str, task_id: str) -> TaskFrames:
        """Encode what never changes for one task on one channel."""
        payload = _BASIC_PUBLISH + self._exchange + _shortstr(key) + self._bits
        method = _FRAME_HDR.pack(1, channel, len(payload)) + payload + _FRAME_END
        mid = _TRANSIENT + _shortstr(task_id)
        if not self._headers:
            return TaskFrames(method, dict.fromkeys(STATES, _JSON), mid)
        head = {}
        for state in STATES:
            entries = _longstr_entry("task_id", task_id) + _longstr_entry("state", state)
            entries += _SEQ_KEY  # its 8-byte value is the one per-message part of the table
            table_len = len(entries) + 8 + len(self._fp)
            head[state] = _JSON + _U32.pack(table_len) + entries
        return TaskFrames(method, head, self._fp + mid)

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
        head = task.head[state]
        tail = self._tail[state]
        seq_value = _I64.pack(seq) if self._headers else b""
        size = len(body)
        props = len(head) + len(seq_value) + len(task.mid) + 1 + len(message_id) + 8 + len(tail)
        parts += (
            task.method,
            _HEADER_START.pack(
                2, channel, _CONTENT_HEADER_SIZE + props - 1, 60, 0, size, self._flags
            ),
            head,
            seq_value,
            task.mid,
            bytes((len(message_id),)),
            message_id,
            _U64.pack(timestamp),
            tail,
        )
        chunk = self.frame_max - FRAME_OVERHEAD
        if size <= chunk:
            parts += (_FRAME_HDR.pack(3, channel, size), body, _FRAME_END)
            return
        view = memoryview(body)
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            parts += (_FRAME_HDR.pack(3, channel, len(piece)), bytes(piece), _FRAME_END)
