"""The locust harness that capacity-tests a broker with streamer's task traffic.

``streamer loadtest`` (the package ships in streamer's wheel) or, in a checkout, ``locust -f
loadtest/locustfile.py`` runs the locustfile; the modules here are what it is built from, one
noun each: ``traffic`` (simulated task workers feeding a publisher at a set pace), ``ledger``
(streamer's accounting turned into locust's request statistics), ``watcher`` (end-to-end
latency, lost, out-of-order and duplicate reports), ``capacity`` (rate steps, the capacity
search and its reports) and ``options`` (the harness's command-line options). See
docs/capacity-testing.md.
"""
