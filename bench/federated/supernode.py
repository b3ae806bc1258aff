"""``flower-supernode`` with shorter waits: ``python -m bench.federated.supernode``.

Flower 1.41's SuperNode asks the SuperLink for a message, and when there is none
sleeps 3 s before asking again (``flwr.supernode.start_client_internal``: a
literal ``time.sleep(3)``); having handed a message to its ClientApp it looks at
its own state for the reply every 0.5 s. A round's message therefore waited up
to 3 s at every site before its ClientApp started, and its reply up to 0.5 s
before it left, which dominates short rounds. This command is
``flower-supernode`` with the idle poll capped at ``BENCH_SUPERNODE_POLL``
seconds (default 0.25) and the local waits (those shorter than the idle poll) at
``LOCAL_WAIT`` (0.05 s), and with Flower's pull back-off shortened
(``bench.federated.flower_waits``): the same arguments, the same behaviour
otherwise. Each idle site then sends 4 small signed requests per second to the
SuperLink instead of one every 3 s.

    python -m bench.federated.supernode --superlink link.example.org:9092 ...
"""

from __future__ import annotations

import os
import time

from bench.federated.flower_waits import shorten_pull_backoff
from bench.federated.trace import TRACE_ENV, event

DEFAULT_POLL = 0.25
POLL_ENV = "BENCH_SUPERNODE_POLL"
IDLE_WAIT = 3.0  # Flower's sleep after asking the SuperLink and finding no message
LOCAL_WAIT = 0.05  # cap of its shorter waits: looks at its own state for a reply


class CappedSleep:
    """The ``time`` module, with ``sleep`` capped at ``cap`` seconds for Flower's idle poll and
    at ``local_cap`` for its shorter, local waits."""

    def __init__(self, cap: float, local_cap: float = LOCAL_WAIT):
        self.cap = cap
        self.local_cap = local_cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap if seconds >= IDLE_WAIT else self.local_cap))

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
    shorten_pull_backoff()
    if os.environ.get(TRACE_ENV):
        trace_supernode_loop()
    from flwr.supernode.cli import flower_supernode

    flower_supernode()


if __name__ == "__main__":
    main()
