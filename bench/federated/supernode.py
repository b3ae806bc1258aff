"""``flower-supernode`` with a shorter idle poll: ``python -m bench.federated.supernode``.

Flower 1.41's SuperNode asks the SuperLink for a message, and when there is none
sleeps 3 s before asking again (``flwr.supernode.start_client_internal``: a
literal ``time.sleep(3)``; its waits for a reply to push are 0.5 s). A round's
message therefore waits up to 3 s at every site before its ClientApp starts,
which dominates short rounds. This command is ``flower-supernode`` with every
one of those waits capped at ``BENCH_SUPERNODE_POLL`` seconds (default 0.25):
the same arguments, the same behaviour otherwise. Each idle site then sends
4 small signed requests per second to the SuperLink instead of one every 3 s.

    python -m bench.federated.supernode --superlink link.example.org:9092 ...
"""

from __future__ import annotations

import os
import time

from bench.federated.trace import TRACE_ENV, event

DEFAULT_POLL = 0.25
POLL_ENV = "BENCH_SUPERNODE_POLL"


class CappedSleep:
    """The ``time`` module, with ``sleep`` capped at ``cap`` seconds."""

    def __init__(self, cap: float):
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str):
        return getattr(time, name)


def shorten_supernode_polls(cap: float) -> None:
    """Caps the waits of Flower's SuperNode loop (the pinned flwr 1.41.0's module)."""
    from flwr.supernode import start_client_internal

    start_client_internal.time = CappedSleep(cap)  # type: ignore[assignment]


def trace_supernode_loop() -> None:
    """Traces (``bench.federated.trace``) each message the SuperNode pulls and each reply it
    pushes, by wrapping the two steps of Flower 1.41's loop."""
    from flwr.supernode import start_client_internal as loop

    pull, push = loop._pull_and_store_message, loop._push_messages

    def traced_pull(**kwargs):
        begin = time.time()
        run_id = pull(**kwargs)
        if run_id is not None:
            event("supernode.pulled", began=begin)
        return run_id

    def traced_push(**kwargs):
        begin = time.time()
        push(**kwargs)
        event("supernode.pushed", began=begin)

    loop._pull_and_store_message = traced_pull  # type: ignore[assignment]
    loop._push_messages = traced_push  # type: ignore[assignment]


def main() -> None:
    cap = float(os.environ.get(POLL_ENV, DEFAULT_POLL))
    if not 0.01 <= cap <= 3.0:
        raise SystemExit(f"bench: error: {POLL_ENV}={cap:g} is outside 0.01..3 seconds")
    shorten_supernode_polls(cap)
    if os.environ.get(TRACE_ENV):
        trace_supernode_loop()
    from flwr.supernode.cli import flower_supernode

    flower_supernode()


if __name__ == "__main__":
    main()
