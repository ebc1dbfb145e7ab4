"""The public surface is deliberate: this test fails when it drifts."""

from __future__ import annotations

import streamer


def test_public_api_is_pinned() -> None:
    assert streamer.__all__ == [
        "STATES",
        "TERMINAL_STATES",
        "AuthenticationError",
        "BackgroundPublisher",
        "BrokerError",
        "CallbackError",
        "ConfigError",
        "Consumer",
        "Drop",
        "HaltConsumer",
        "InvalidReport",
        "Message",
        "Nack",
        "Publisher",
        "Report",
        "Settings",
        "Stats",
        "StreamerError",
        "TaskError",
        "TaskReporter",
        "UntrustedCertificate",
        "__version__",
        "consume",
        "decode",
        "encode",
        "load_settings",
        "mask_url",
        "routing_key",
        "subscribe",
    ]
    assert streamer.__all__ == sorted(streamer.__all__, key=lambda n: (not n.isupper(), n))
    for name in streamer.__all__:
        assert hasattr(streamer, name), name
