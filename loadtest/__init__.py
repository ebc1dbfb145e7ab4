"""The locust harness that capacity-tests a broker with streamer's task traffic.

``locust -f loadtest/locustfile.py`` (run from the repository root) is the entry point; the
modules here are what it is built from, one noun each: ``traffic`` (simulated task workers
feeding a publisher at a set pace), ``ledger`` (streamer's accounting turned into locust's
request statistics), ``watcher`` (end-to-end latency, lost, out-of-order and duplicate
reports) and ``capacity`` (rate steps, the capacity search and its reports). See
docs/capacity-testing.md.
"""
