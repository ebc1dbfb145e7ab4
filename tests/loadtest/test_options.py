"""The harness's publisher settings: ``--publisher-option`` and the shared publisher's sizes."""

from __future__ import annotations

from loadtest.options import SHARED_PUBLISHER, publisher_settings
from streamer.settings import Settings


def test_the_shared_publisher_is_sized_for_all_its_workers() -> None:
    settings = publisher_settings([])
    assert settings == {"confirm_window": 10_000, "max_pending": 20_000} == SHARED_PUBLISHER
    # larger than one worker's, and room for a full window of reports waiting behind it
    assert settings["confirm_window"] > Settings().confirm_window
    assert settings["max_pending"] > settings["confirm_window"]


def test_what_the_user_sets_wins() -> None:
    given = publisher_settings(["confirm_window=2000", "connections = 2", "app_id=load"])
    assert given == {
        "confirm_window": 2000,
        "max_pending": 20_000,
        "connections": 2,
        "app_id": "load",
    }
    # set in a settings file or a STREAMER_* variable: left to the publisher to read
    assert publisher_settings([], configured={"confirm_window"}) == {"max_pending": 20_000}
    assert publisher_settings(["headers=true"], configured=SHARED_PUBLISHER) == {"headers": True}
