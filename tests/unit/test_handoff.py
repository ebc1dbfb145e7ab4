"""The hand-off from a caller's thread to the loop: encode with seq 0, splice the real seq in."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streamer import Report, decode, encode
from streamer.handoff import encode_handoff
from streamer.report import MAX_SEQ
from tests.unit.test_report import reports


def test_seq_and_sent_at_are_the_last_fields() -> None:
    """The splice relies on it: a new Report field must go before these two."""
    assert Report.__struct_fields__[-2:] == ("seq", "sent_at")


@given(reports, st.integers(1, MAX_SEQ))  # a publisher never goes beyond it
def test_spliced_body_is_the_stamped_encoding(report: Report, seq: int) -> None:
    """Whatever strings the report holds (even the mark itself), the sequenced body is exactly
    what encoding the report with that seq gives."""
    item = encode_handoff(report, 1_700_000_000.5, 1 << 20)
    stamped = msgspec.structs.replace(report, seq=seq, sent_at=1_700_000_000.5)
    assert item.sequenced(seq) == encode(stamped)
    assert decode(item.sequenced(seq)).seq == seq


def test_a_report_carrying_the_mark_in_its_strings() -> None:
    mark = ',"seq":0,"sent_at":'
    report = Report(task_id="t", state="running", task_type=mark, result={mark: mark})
    assert decode(encode_handoff(report, 5.0, 4096).sequenced(42)) == msgspec.structs.replace(
        report, seq=42, sent_at=5.0
    )
