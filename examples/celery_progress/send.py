"""Queue ``sync_repository`` tasks for the worker; prints each repository with its task id.

Usage::

    python send.py zoo fedora broken          # one task per repository
    python send.py --count 8 --items 400      # repo-1 .. repo-8
    python send.py --queue q1 --json repo-1   # to the queue a worker consumes with -Q q1
"""

from __future__ import annotations

import argparse
import json

from tasks import app, sync_repository


def main() -> None:
    parser = argparse.ArgumentParser(description="Queue sync_repository tasks for the worker.")
    parser.add_argument("repos", nargs="*", help='repository names ("broken" fails half-way)')
    parser.add_argument("--count", type=int, default=0, help="also send repo-1 .. repo-COUNT")
    parser.add_argument("--items", type=int, default=400, help="content units per repository")
    parser.add_argument("--queue", default=None, help="Celery queue (default: celery)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    repos = [*args.repos, *(f"repo-{n}" for n in range(1, args.count + 1))] or ["zoo"]

    # Wait for the broker's confirm of each task message, so nothing is lost when we exit.
    app.conf.broker_transport_options = {"confirm_publish": True}
    sent = {}
    with app.connection_for_write() as conn:
        for repo in repos:
            result = sync_repository.apply_async(
                (repo, args.items), queue=args.queue, connection=conn
            )
            sent[repo] = result.id
    if args.json:
        print(json.dumps(sent))
    else:
        for repo, task_id in sent.items():
            print(f"{task_id}  {repo}")


if __name__ == "__main__":
    main()
