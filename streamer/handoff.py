"""The hand-off of a report encoded in one thread to the publisher's loop in another.

A :class:`~streamer.embed.BackgroundPublisher` validates and encodes each report in the caller's
thread, so bad input raises where it was made and the loop thread never encodes. But a task's
sequence number is only known on the loop (it counts what the publisher accepted, in order), so
the caller encodes with ``seq`` 0 and notes where that digit is; the loop splices the real
number in with one bytes format instead of a second encode. This module is the whole
interface: :func:`encode_handoff` on the caller's side, :meth:`Handoff.sequenced` on the loop's
(``Publisher.publish_handoff``).

It relies on one layout fact, pinned by a test: ``seq`` and ``sent_at`` are the last two fields
of :class:`~streamer.report.Report`, so the last occurrence of ``,"seq":0,"sent_at":`` in a body
is theirs, whatever strings the report carries.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from .report import Report, encode_stamped

__all__ = ["Handoff", "encode_handoff"]

_SEQ_MARK: Final = b',"seq":0,"sent_at":'
_DIGIT: Final = len(b',"seq":')  # from the mark's start to seq's digit


class Handoff(NamedTuple):
    """One report on its way from a caller's thread to the loop, encoded with ``seq`` 0."""

    task_id: str
    state: str
    body: bytes
    seq_at: int  # offset of seq's single ``0`` digit in ``body``
    due: float = 0.0  # monotonic start of its confirm latency (0.0: when it is written)

    def sequenced(self, seq: int) -> bytes:
        """The body with ``seq`` in place of its ``0``."""
        body, at = self.body, self.seq_at
        return b"%b%d%b" % (body[:at], seq, body[at + 1 :])


def encode_handoff(report: Report, sent_at: float, max_body: int, due: float = 0.0) -> Handoff:
    """Encode a checked ``report`` stamped with ``sent_at`` (``seq`` 0) for the loop.

    ``due``: see :attr:`Handoff.due` (``Publisher.publish``'s ``due``, made monotonic).

    Raises:
        InvalidReport: the report is not serialisable, or larger than ``max_body`` encoded.
    """
    body = encode_stamped(report, 0, sent_at, max_body)
    return Handoff(report.task_id, report.state, body, body.rindex(_SEQ_MARK) + _DIGIT, due)
