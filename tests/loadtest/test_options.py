"""The harness's publisher settings: ``--publisher-option`` and the shared publisher's sizes."""

from __future__ import annotations

from loadtest.options import SHARED_PUBLISHER, publisher_options
from streamer.settings import Settings, load_settings


def _harness(items: list[str], env: dict[str, str] | None = None) -> Settings:
    """The settings the harness gives its publisher (as the locustfile builds them)."""
    return load_settings(env=env or {}, defaults=SHARED_PUBLISHER, **publisher_options(items))


def test_the_shared_publisher_is_sized_for_all_its_workers() -> None:
    settings = _harness([])
    sizes = {"confirm_window": settings.confirm_window, "max_pending": settings.max_pending}
    assert sizes == {"confirm_window": 10_000, "max_pending": 20_000} == SHARED_PUBLISHER
    # larger than one worker's, and room for a full window of reports waiting behind it
    assert settings.confirm_window > Settings().confirm_window
    assert settings.max_pending > settings.confirm_window


def test_what_the_user_sets_wins() -> None:
    given = publisher_options(["confirm_window=2000", "connections = 2", "app_id=load"])
    assert given == {"confirm_window": 2000, "connections": 2, "app_id": "load"}
    settings = _harness(["confirm_window=2000", "connections = 2", "app_id=load"])
    assert (settings.confirm_window, settings.max_pending) == (2000, 20_000)
    assert (settings.connections, settings.app_id) == (2, "load")
    # set by a STREAMER_* variable, even to the library's own default: that value stands
    settings = _harness([], env={"STREAMER_CONFIRM_WINDOW": "1000"})
    assert (settings.confirm_window, settings.max_pending) == (1000, 20_000)
    settings = _harness(["headers=true"], env={"STREAMER_MAX_PENDING": "5000"})
    assert (settings.confirm_window, settings.max_pending, settings.headers) == (10_000, 5000, True)
